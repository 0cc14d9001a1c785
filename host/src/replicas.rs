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
//! A Go ≤ 1.26 stream whose recipe has checkpoints is pushed stretch by
//! stretch (each push ends at the next checkpoint): each stretch is a job
//! that resumes the encoder from the checkpoint before it
//! ([`ReplicaRecreator::resume`], the window's plain bytes kept from the
//! pushes before), so the stretches waiting are compressed at once too; the
//! last stretch, from the last checkpoint to the end, is serial.
//!
//! Bounds: a piece of more than [`MAX_PIECE_BYTES`] is refused; an encoder
//! holds at most [`MAX_WAITING`] pieces pushed and not taken; an instance
//! has at most [`MAX_ENCODERS`] open (the guest then runs its own replica).
//! A job's memory is the replica's state (≈1.6 MiB) and its piece (or
//! block).

use std::collections::VecDeque;

use blockreg_core::goflate::Klauspost;
use blockreg_core::pgzip;
use blockreg_core::replica::{self, Checkpoint, Replica, ReplicaRecreator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

use crate::bindings::replicas::{self as wit, Error, Host, HostEncoder};
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
    /// is done (the finish's too).
    Serial(Option<oneshot::Receiver<ReplicaRecreator>>),
    /// pgzip: block by block, the blocks at once.
    Blocks {
        version: Klauspost,
        level: i32,
        cutter: pgzip::Cutter,
    },
    /// Stretch by stretch from checkpoints, the stretches at once.
    Stretches(Box<Stretches>),
}

/// Plain bytes kept from the pushes before a stretch: the most a
/// checkpoint's window holds (Go's 2 × 32 KiB).
const WINDOW_BYTES: usize = 64 << 10;

/// A stream pushed stretch by stretch.
struct Stretches {
    replica: Replica,
    checkpoints: Vec<Checkpoint>,
    /// The stretch the next push is: the one ending at `checkpoints[next]`
    /// (or the last, from the last checkpoint to the end).
    next: usize,
    /// Stream offset of the next push.
    at: u64,
    /// The last [`WINDOW_BYTES`] plain bytes pushed.
    history: Vec<u8>,
    /// Inside the last stretch: the replica's state once the job before is
    /// done.
    last: Option<oneshot::Receiver<ReplicaRecreator>>,
}

/// Where a job's replica comes from.
enum Start {
    /// The stream's start.
    Fresh(Replica),
    /// A checkpoint, with the window's plain bytes before it.
    At(Replica, Checkpoint, Vec<u8>),
    /// The state the job before hands on.
    After(oneshot::Receiver<ReplicaRecreator>),
}

impl Stretches {
    /// The job for the next push (or the finish).
    fn job(&mut self, work: Work) -> Result<JoinHandle<Result<Vec<u8>, Error>>, Error> {
        if let Some(prev) = self.last.take() {
            let next = match &work {
                Work::Piece(_) => {
                    let (tx, rx) = oneshot::channel();
                    self.last = Some(rx);
                    Some(tx)
                }
                Work::Finish => None,
            };
            return Ok(tokio::spawn(job(Start::After(prev), work, None, next)));
        }
        let k = self.next;
        let start = match k.checked_sub(1) {
            None => Start::Fresh(self.replica),
            Some(i) => {
                let cp = self.checkpoints[i];
                let w = cp.window_end as usize;
                let Some(from) = self.history.len().checked_sub(w) else {
                    return Err(Error::Invalid(format!(
                        "checkpoint {i} needs a window of {w} bytes, {} were pushed",
                        self.history.len()
                    )));
                };
                Start::At(self.replica, cp, self.history[from..].to_vec())
            }
        };
        let from_out = k.checked_sub(1).map_or(0, |i| self.checkpoints[i].out);
        match (work, self.checkpoints.get(k).copied()) {
            (Work::Piece(plain), Some(to)) => {
                let end = self.at + plain.len() as u64;
                if end != to.plain {
                    return Err(Error::Invalid(format!(
                        "stretch {k} ends at {}, the push at {end}",
                        to.plain
                    )));
                }
                self.at = end;
                self.next += 1;
                self.remember(&plain);
                let work = Work::Piece(plain);
                Ok(tokio::spawn(job(start, work, Some((to, from_out)), None)))
            }
            (Work::Finish, Some(_)) => {
                Err(Error::Invalid(format!("finished before checkpoint {k}")))
            }
            (work @ Work::Piece(_), None) => {
                let (tx, rx) = oneshot::channel();
                self.last = Some(rx);
                self.history = Vec::new();
                Ok(tokio::spawn(job(start, work, None, Some(tx))))
            }
            (Work::Finish, None) => Ok(tokio::spawn(job(start, Work::Finish, None, None))),
        }
    }

    fn remember(&mut self, plain: &[u8]) {
        if plain.len() >= WINDOW_BYTES {
            self.history.clear();
            self.history
                .extend_from_slice(&plain[plain.len() - WINDOW_BYTES..]);
        } else {
            self.history.extend_from_slice(plain);
            let extra = self.history.len().saturating_sub(WINDOW_BYTES);
            self.history.drain(..extra);
        }
    }
}

/// What a job does with the replica's state: feed a piece, or finish.
enum Work {
    Piece(Vec<u8>),
    Finish,
}

impl Encoder {
    /// A proof's encoder: pieces as given, checkpoints recorded (pgzip's
    /// blocks do not depend on the pieces and have none).
    fn proof(replica: Replica) -> Self {
        let mut e = Self::new(replica, Vec::new());
        if let Mode::Serial(_) = e.mode {
            let (tx, rx) = oneshot::channel();
            // The receiver is alive: sending cannot fail.
            let _ = tx.send(ReplicaRecreator::proof(replica));
            e.mode = Mode::Serial(Some(rx));
        }
        e
    }

    /// Where the checkpoints recorded come from: the replica once the
    /// finish is done (none for modes that record none).
    fn recorder(&mut self) -> Result<Option<oneshot::Receiver<ReplicaRecreator>>, Error> {
        if !self.finished {
            return Err(Error::Invalid("the stream is not finished".into()));
        }
        match &mut self.mode {
            Mode::Serial(state) => state
                .take()
                .map(Some)
                .ok_or_else(|| Error::Invalid("checkpoints already taken".into())),
            Mode::Blocks { .. } | Mode::Stretches(_) => Ok(None),
        }
    }

    fn new(replica: Replica, checkpoints: Vec<Checkpoint>) -> Self {
        let mode = match replica {
            Replica::GoFlate126(_) if !checkpoints.is_empty() => {
                Mode::Stretches(Box::new(Stretches {
                    replica,
                    checkpoints,
                    next: 0,
                    at: 0,
                    history: Vec::new(),
                    last: None,
                }))
            }
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
        let finishing = matches!(work, Work::Finish);
        let job = match &mut self.mode {
            Mode::Serial(state) => {
                let prev = state.take().expect("present until finished");
                let (tx, rx) = oneshot::channel();
                *state = Some(rx);
                tokio::spawn(job(Start::After(prev), work, None, Some(tx)))
            }
            Mode::Stretches(s) => s.job(work)?,
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
        self.finished = finishing;
        self.in_progress.push_back(job);
        Ok(())
    }
}

/// One job of a stream: takes the replica from `start`, feeds it the
/// piece (or finishes it) on a blocking thread, then either cuts the
/// output at the checkpoint `reach` (the end of a stretch, from the
/// checkpoint before's output offset) or hands the replica to the next
/// job.
async fn job(
    start: Start,
    work: Work,
    reach: Option<(Checkpoint, u64)>,
    next: Option<oneshot::Sender<ReplicaRecreator>>,
) -> Result<Vec<u8>, Error> {
    enum Begin {
        Ready(ReplicaRecreator),
        At(Replica, Checkpoint, Vec<u8>),
    }
    let begin = match start {
        Start::Fresh(r) => Begin::Ready(ReplicaRecreator::new(r)),
        Start::At(r, cp, window) => Begin::At(r, cp, window),
        Start::After(prev) => Begin::Ready(
            prev.await
                .map_err(|_| Error::Other("an earlier piece failed".into()))?,
        ),
    };
    let invalid = |e: replica::InvalidCheckpoint| Error::Invalid(e.to_string());
    let (replica, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut replica = match begin {
            Begin::Ready(r) => r,
            Begin::At(r, cp, window) => {
                ReplicaRecreator::resume(r, &cp, &window, &mut out).map_err(invalid)?
            }
        };
        match work {
            Work::Piece(plain) => {
                out.reserve(plain.len() / 2);
                replica.feed(&plain, &mut out);
            }
            Work::Finish => replica.finish(&mut out),
        }
        match reach {
            Some((to, from_out)) => {
                replica.reach(&to, from_out, &mut out).map_err(invalid)?;
                Ok((None, out))
            }
            None => Ok((Some(replica), out)),
        }
    })
    .await
    .map_err(|e| Error::Other(format!("the replica stopped: {e}")))??;
    if let (Some(next), Some(replica)) = (next, replica) {
        // A dropped encoder no longer wants the state.
        let _ = next.send(replica);
    }
    Ok(out)
}

fn to_wit(c: &Checkpoint) -> wit::Checkpoint {
    blockreg_core::checkpoint_as!(c, wit::Checkpoint)
}

fn from_wit(c: &wit::Checkpoint) -> Checkpoint {
    blockreg_core::checkpoint_as!(c, Checkpoint)
}

impl HostEncoder for Sandbox {
    async fn open(
        &mut self,
        name: String,
        level: i32,
        checkpoints: Vec<wit::Checkpoint>,
    ) -> wasmtime::Result<Result<Resource<Encoder>, Error>> {
        let Some(replica) = Replica::parse(&name, level) else {
            return Ok(Err(Error::Unknown(format!(
                "no replica {name} at level {level}"
            ))));
        };
        let checkpoints: Vec<_> = checkpoints.iter().map(from_wit).collect();
        // The stream's length is not known here: only the order is checked.
        if let Err(e) = replica::check_checkpoints(replica, &checkpoints, u64::MAX) {
            return Ok(Err(Error::Invalid(e.to_string())));
        }
        if self.replica_encoders >= MAX_ENCODERS {
            return Ok(Err(Error::Invalid(format!(
                "{MAX_ENCODERS} encoders are open"
            ))));
        }
        self.replica_encoders += 1;
        Ok(Ok(self.table().push(Encoder::new(replica, checkpoints))?))
    }

    async fn open_proof(
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
        Ok(Ok(self.table().push(Encoder::proof(replica))?))
    }

    async fn checkpoints(
        &mut self,
        encoder: Resource<Encoder>,
    ) -> wasmtime::Result<Result<Vec<wit::Checkpoint>, Error>> {
        let recorder = match self.table().get_mut(&encoder)?.recorder() {
            Ok(Some(rx)) => rx,
            Ok(None) => return Ok(Ok(Vec::new())),
            Err(e) => return Ok(Err(e)),
        };
        Ok(match recorder.await {
            Ok(replica) => Ok(replica.checkpoints().iter().map(to_wit).collect()),
            Err(_) => Err(Error::Other("the finish failed".into())),
        })
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
    async fn run(e: Encoder, plain: &[u8], piece: usize, ahead: usize) -> Vec<u8> {
        run_pieces(e, plain.chunks(piece), ahead).await
    }

    async fn run_pieces<'a>(
        mut e: Encoder,
        mut pieces: impl Iterator<Item = &'a [u8]>,
        ahead: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
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
                let got = run(
                    Encoder::new(replica, Vec::new()),
                    &plain,
                    piece,
                    MAX_WAITING,
                )
                .await;
                assert!(
                    got == expected,
                    "{name} level {level}, {piece}-byte pieces: other bytes"
                );
            }
        }
    }

    #[tokio::test]
    async fn pushes_beyond_the_queue_or_after_finish_are_refused() {
        let mut e = Encoder::new(Replica::parse("go1.26-flate", 6).unwrap(), Vec::new());
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

    /// Go 1.26's checkpoints for `plain` as a proof records them, and its
    /// stream.
    fn checkpointed(level: i32, plain: &[u8]) -> (Vec<Checkpoint>, Vec<u8>) {
        use blockreg_core::gozip::Deflate;
        let mut e = goflate126::Encoder::new(level).unwrap();
        e.checkpoint_every(replica::CHECKPOINT_OUT, replica::CHECKPOINT_PLAIN);
        let mut out = Vec::new();
        // Pieces as the inflater hands them to a proof: not aligned.
        for p in plain.chunks(300_000) {
            e.write(p, &mut out);
        }
        let cps = e.checkpoints().to_vec();
        e.finish(&mut out);
        (cps, out)
    }

    /// The pieces a guest pushes: up to each checkpoint, then 256 KiB.
    fn stretches<'a>(plain: &'a [u8], cps: &[Checkpoint]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for cp in cps {
            pieces.push(&plain[at..cp.plain as usize]);
            at = cp.plain as usize;
        }
        pieces.extend(plain[at..].chunks(256 << 10));
        pieces
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stretches_between_checkpoints_compressed_at_once_are_the_stream() {
        let mut plain = content(9 << 20);
        plain.extend(vec![0; 5 << 20]);
        plain.extend(content(3 << 20));
        for level in [6, 9, 4] {
            let (cps, expected) = checkpointed(level, &plain);
            assert!(cps.len() >= 4, "level {level}: {} checkpoints", cps.len());
            let replica = Replica::GoFlate126(level as i8);
            let pieces = stretches(&plain, &cps);
            let got = run_pieces(Encoder::new(replica, cps), pieces.into_iter(), MAX_WAITING).await;
            assert!(got == expected, "level {level}: other bytes");
        }
        // A stream that ends at its last checkpoint: the finish resumes.
        let (cps, _) = checkpointed(6, &plain);
        let cut = &plain[..cps[2].plain as usize];
        let expected = goflate126::deflate(6, cut);
        let pieces = stretches(cut, &cps[..3]);
        assert_eq!(pieces.len(), 3);
        let e = Encoder::new(Replica::GoFlate126(6), cps[..3].to_vec());
        let got = run_pieces(e, pieces.into_iter(), 2).await;
        assert!(got == expected, "ending at a checkpoint: other bytes");
    }

    #[tokio::test]
    async fn pushes_that_are_not_the_next_stretch_and_damaged_checkpoints_are_refused() {
        let plain = content(6 << 20);
        let (cps, _) = checkpointed(6, &plain);
        let replica = Replica::GoFlate126(6);
        let mut e = Encoder::new(replica, cps.clone());
        let short = cps[0].plain as usize - 1;
        assert!(matches!(
            e.queue(Work::Piece(plain[..short].to_vec())),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(e.queue(Work::Finish), Err(Error::Invalid(_))));
        // The second stretch, from a damaged checkpoint, is refused.
        let second_stretch = |bad: Vec<Checkpoint>| {
            let mut e = Encoder::new(replica, bad);
            e.queue(Work::Piece(plain[..cps[0].plain as usize].to_vec()))
                .unwrap();
            let range = cps[0].plain as usize..cps[1].plain as usize;
            e.queue(Work::Piece(plain[range].to_vec())).unwrap();
            async move {
                e.in_progress.pop_front().unwrap().await.unwrap().unwrap();
                e.in_progress.pop_front().unwrap().await.unwrap()
            }
        };
        // A state no encoder records: an error, never a panic.
        let mut bad = cps.clone();
        bad[0].index = bad[0].window_end;
        let second = second_stretch(bad).await;
        assert!(matches!(second, Err(Error::Invalid(_))), "{second:?}");
        // Output offsets that do not belong to this content.
        let mut bad = cps.clone();
        bad[1].out += 1 << 20;
        let second = second_stretch(bad).await;
        assert!(matches!(second, Err(Error::Invalid(_))), "{second:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_proof_encoder_takes_pieces_as_given_and_hands_out_its_checkpoints() {
        let plain = content(9 << 20);
        // `checkpointed` writes 300 000-byte pieces, as a proof may.
        let (cps, expected) = checkpointed(6, &plain);
        let mut e = Encoder::proof(Replica::GoFlate126(6));
        assert!(matches!(e.recorder(), Err(Error::Invalid(_))));
        let mut out = Vec::new();
        for piece in plain.chunks(300_000) {
            if e.in_progress.len() == 3 {
                out.extend(e.in_progress.pop_front().unwrap().await.unwrap().unwrap());
            }
            e.queue(Work::Piece(piece.to_vec())).unwrap();
        }
        e.queue(Work::Finish).unwrap();
        while let Some(job) = e.in_progress.pop_front() {
            out.extend(job.await.unwrap().unwrap());
        }
        assert!(out == expected, "other bytes");
        let recorded = e.recorder().unwrap().unwrap().await.unwrap();
        assert!(cps.len() >= 2, "{} checkpoints", cps.len());
        assert_eq!(recorded.checkpoints(), &cps[..]);
        // pgzip's blocks record none.
        let mut e = Encoder::proof(Replica::Pgzip(Klauspost::V1_15, 5));
        e.queue(Work::Piece(plain[..1 << 20].to_vec())).unwrap();
        e.queue(Work::Finish).unwrap();
        assert!(e.recorder().unwrap().is_none());
    }
}
