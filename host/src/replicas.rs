//! The `replicas` import (`wit/replicas.wit`): a guest recreating a
//! DEFLATE stream by its encoder's replica has the host compress the
//! content, natively and on another core, while it reads the next pieces
//! out of their frames.
//!
//! The replicas are the guest's own code (`blockreg-core`'s
//! [`ReplicaRecreator`]), compiled natively: the same bytes come out,
//! about 1.7 times faster than inside wasm, and in parallel with the
//! guest. Each piece is one job on a tokio blocking thread; the encoder's
//! state passes from each job to the next through a oneshot channel, so the
//! pieces are compressed one after the other, in the order pushed, without
//! a thread parked on an idle encoder.
//!
//! pgzip's streams are made of 1 MiB blocks that compress independently
//! ([`pgzip::Block`]): those are cut as pieces arrive and each block is a
//! job of its own, so the blocks of the pieces waiting are compressed at
//! once on every core, and a piece's bytes are its blocks' in order.
//!
//! Bounds: a piece of more than [`MAX_PIECE_BYTES`] is refused; an encoder
//! holds at most [`MAX_WAITING`] pieces pushed and not taken; an instance
//! has at most [`MAX_ENCODERS`] open (the guest then runs its own replica).
//! A job's memory is the replica's state (≈1.6 MiB) and its piece (or
//! block).

use std::collections::VecDeque;

use blockreg_core::goflate::Klauspost;
use blockreg_core::pgzip;
use blockreg_core::replica::{Replica, ReplicaRecreator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

use crate::bindings::replicas::{Error, Host, HostEncoder};
use crate::ctx::Sandbox;

/// Largest piece of content one push may carry (the guest pushes 256 KiB).
const MAX_PIECE_BYTES: usize = 16 << 20;
/// Pieces an encoder holds pushed and not yet taken.
const MAX_WAITING: usize = 4;
/// Encoders one instance may have open (a rebuild uses one at a time).
pub(crate) const MAX_ENCODERS: usize = 4;

/// One `encoder` resource (`pub`: the generated bindings re-export it).
pub struct Encoder {
    mode: Mode,
    /// Whether `finish` was queued.
    finished: bool,
    /// Jobs queued, in the order pushed: each gives the bytes its piece
    /// completed.
    in_progress: VecDeque<JoinHandle<Result<Vec<u8>, Error>>>,
}

/// How the pieces of a stream are compressed.
enum Mode {
    /// One after the other: the replica's state once the last queued job
    /// is done.
    Serial(Option<oneshot::Receiver<ReplicaRecreator>>),
    /// pgzip: block by block, the blocks at once.
    Blocks {
        version: Klauspost,
        level: i32,
        cutter: pgzip::Cutter,
    },
}

/// What a job does with the replica's state: feed a piece, or finish.
enum Work {
    Piece(Vec<u8>),
    Finish,
}

impl Encoder {
    fn new(replica: Replica) -> Self {
        let mode = match replica {
            Replica::Pgzip(version, level) => Mode::Blocks {
                version,
                level: i32::from(level),
                cutter: pgzip::Cutter::new(),
            },
            Replica::GoFlate126(_) | Replica::GoFlate127(_) => {
                let (tx, rx) = oneshot::channel();
                // The receiver is alive: sending cannot fail.
                let _ = tx.send(ReplicaRecreator::new(replica));
                Mode::Serial(Some(rx))
            }
        };
        Self {
            mode,
            finished: false,
            in_progress: VecDeque::new(),
        }
    }

    /// Queues `work` after the jobs already queued.
    fn queue(&mut self, work: Work) -> Result<(), Error> {
        if self.in_progress.len() >= MAX_WAITING {
            return Err(Error::Invalid(format!(
                "{MAX_WAITING} pieces already wait to be taken"
            )));
        }
        if self.finished {
            return Err(Error::Invalid("the stream was finished".into()));
        }
        self.finished = matches!(work, Work::Finish);
        let job = match &mut self.mode {
            Mode::Serial(state) => {
                let prev = state.take().expect("present until finished");
                let next = match work {
                    Work::Piece(_) => {
                        let (tx, rx) = oneshot::channel();
                        *state = Some(rx);
                        Some(tx)
                    }
                    Work::Finish => None,
                };
                tokio::spawn(serial(prev, work, next))
            }
            Mode::Blocks {
                version,
                level,
                cutter,
            } => {
                let blocks = match work {
                    Work::Piece(plain) => cutter.push(&plain),
                    Work::Finish => vec![cutter.finish()],
                };
                let (version, level) = (*version, *level);
                let jobs: Vec<_> = blocks
                    .into_iter()
                    .map(|block| {
                        tokio::task::spawn_blocking(move || {
                            let mut out = Vec::with_capacity(block.len() / 2);
                            block
                                .compress(version, level, &mut out)
                                .map(|()| out)
                                .map_err(|e| Error::Other(e.to_string()))
                        })
                    })
                    .collect();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for job in jobs {
                        out.extend(
                            job.await
                                .map_err(|e| Error::Other(format!("the replica stopped: {e}")))??,
                        );
                    }
                    Ok(out)
                })
            }
        };
        self.in_progress.push_back(job);
        Ok(())
    }
}

/// One piece of a serial stream: waits for the replica's state from the
/// job before, feeds it the piece (or finishes it) on a blocking thread,
/// and hands it to the next job.
async fn serial(
    prev: oneshot::Receiver<ReplicaRecreator>,
    work: Work,
    next: Option<oneshot::Sender<ReplicaRecreator>>,
) -> Result<Vec<u8>, Error> {
    let mut replica = prev
        .await
        .map_err(|_| Error::Other("an earlier piece failed".into()))?;
    let (replica, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        match work {
            Work::Piece(plain) => {
                out.reserve(plain.len() / 2);
                replica.feed(&plain, &mut out);
            }
            Work::Finish => replica.finish(&mut out),
        }
        (replica, out)
    })
    .await
    .map_err(|e| Error::Other(format!("the replica stopped: {e}")))?;
    if let Some(next) = next {
        // A dropped encoder no longer wants the state.
        let _ = next.send(replica);
    }
    Ok(out)
}

impl HostEncoder for Sandbox {
    async fn open(
        &mut self,
        name: String,
        level: i32,
    ) -> wasmtime::Result<Result<Resource<Encoder>, Error>> {
        let Some(replica) = Replica::parse(&name, level) else {
            return Ok(Err(Error::Unknown(format!(
                "no replica {name} at level {level}"
            ))));
        };
        if self.replica_encoders >= MAX_ENCODERS {
            return Ok(Err(Error::Invalid(format!(
                "{MAX_ENCODERS} encoders are open"
            ))));
        }
        self.replica_encoders += 1;
        Ok(Ok(self.table().push(Encoder::new(replica))?))
    }

    async fn push(
        &mut self,
        encoder: Resource<Encoder>,
        plain: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        if plain.len() > MAX_PIECE_BYTES {
            return Ok(Err(Error::Invalid(format!(
                "a piece of {} bytes, over the {MAX_PIECE_BYTES} limit",
                plain.len()
            ))));
        }
        Ok(self.table().get_mut(&encoder)?.queue(Work::Piece(plain)))
    }

    async fn finish(&mut self, encoder: Resource<Encoder>) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.table().get_mut(&encoder)?.queue(Work::Finish))
    }

    async fn next(
        &mut self,
        encoder: Resource<Encoder>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let Some(job) = self.table().get_mut(&encoder)?.in_progress.pop_front() else {
            return Ok(Err(Error::Invalid("nothing was pushed".into())));
        };
        Ok(job
            .await
            .unwrap_or_else(|e| Err(Error::Other(format!("the replica stopped: {e}")))))
    }

    async fn drop(&mut self, encoder: Resource<Encoder>) -> wasmtime::Result<()> {
        // Jobs already queued finish on their threads, unread; the state
        // they pass on is dropped with the last one.
        self.table().delete(encoder)?;
        self.replica_encoders -= 1;
        Ok(())
    }
}

impl Host for Sandbox {}

#[cfg(test)]
mod tests {
    use super::*;
    use blockreg_core::{goflate, goflate126};

    /// Content with long and short repeats, as layers have.
    fn content(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let word = format!("w{} ", state % 977);
            data.extend_from_slice(word.as_bytes());
        }
        data.truncate(len);
        data
    }

    /// pgzip's raw DEFLATE stream, its blocks compressed one after the
    /// other by the guest's own replica.
    fn pgzip_deflate(version: Klauspost, level: i32, plain: &[u8]) -> Vec<u8> {
        let mut r = ReplicaRecreator::new(Replica::Pgzip(version, level as i8));
        let mut out = Vec::new();
        r.feed(plain, &mut out);
        r.finish(&mut out);
        out
    }

    /// Pushes `plain` in `piece`-byte pieces, keeping `ahead` queued, and
    /// returns everything the encoder gave.
    async fn run(mut e: Encoder, plain: &[u8], piece: usize, ahead: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pieces = plain.chunks(piece);
        let mut finished = false;
        loop {
            while e.in_progress.len() < ahead && !finished {
                match pieces.next() {
                    Some(p) => e.queue(Work::Piece(p.to_vec())).unwrap(),
                    None => {
                        e.queue(Work::Finish).unwrap();
                        finished = true;
                    }
                }
            }
            let Some(job) = e.in_progress.pop_front() else {
                return out;
            };
            out.extend(job.await.unwrap().unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pieces_compressed_ahead_come_back_as_the_encoder_wrote_them() {
        let plain = content(5 << 20);
        for (name, level, expected) in [
            ("go1.26-flate", 6, goflate126::deflate(6, &plain)),
            ("go1.26-flate", 1, goflate126::deflate(1, &plain)),
            ("go1.27-flate", 6, goflate::deflate(6, &plain)),
            (
                "pgzip1.2-klauspost1.15",
                5,
                pgzip_deflate(Klauspost::V1_15, 5, &plain),
            ),
            (
                "pgzip1.2-klauspost1.18.2",
                1,
                pgzip_deflate(Klauspost::V1_18_2, 1, &plain),
            ),
        ] {
            let replica = Replica::parse(name, level).unwrap();
            // Go's Write calls of 256 KiB, as the guest makes them for Go's
            // replicas; pieces of 1.5 MiB complete one pgzip block or two.
            let pieces: &[usize] = if name.starts_with("pgzip") {
                &[256 << 10, 3 << 19]
            } else {
                &[256 << 10]
            };
            for &piece in pieces {
                let got = run(Encoder::new(replica), &plain, piece, MAX_WAITING).await;
                assert!(
                    got == expected,
                    "{name} level {level}, {piece}-byte pieces: other bytes"
                );
            }
        }
    }

    #[tokio::test]
    async fn pushes_beyond_the_queue_or_after_finish_are_refused() {
        let mut e = Encoder::new(Replica::parse("go1.26-flate", 6).unwrap());
        for _ in 0..MAX_WAITING {
            e.queue(Work::Piece(vec![1; 10])).unwrap();
        }
        assert!(matches!(
            e.queue(Work::Piece(vec![1])),
            Err(Error::Invalid(_))
        ));
        e.in_progress.pop_front().unwrap().await.unwrap().unwrap();
        e.queue(Work::Finish).unwrap();
        assert!(matches!(e.queue(Work::Finish), Err(Error::Invalid(_))));
        let mut tail = Vec::new();
        while let Some(job) = e.in_progress.pop_front() {
            tail.extend(job.await.unwrap().unwrap());
        }
        assert!(!tail.is_empty(), "the final block comes out at finish");
    }
}
