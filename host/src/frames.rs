//! The `frames` import (`wit/frames.wit`): pack frames read and decoded by
//! the host, ahead of the guest.
//!
//! A guest rebuilding a blob asks for its frames one after the other and
//! spends its time recreating the stream from them; decoding them inside
//! the guest took about a third of a cold pull. Here a [`Reader`] is given
//! the frames the guest will ask for, in order (its plan), and keeps up to
//! [`AHEAD`] of them being read and decoded on tokio's blocking threads —
//! native code, on another core than the guest's — while the guest works.
//! A frame asked for out of order is decoded when asked, and the plan
//! resumes after it.
//!
//! An [`Encoder`] does the reverse for a conversion: it compresses the
//! frames the guest has filled, on blocking threads, while the guest cuts
//! and hashes the blocks of the next ones; the guest takes them back in
//! order and places them in its pack. Run by the converter, whose blocking
//! threads run at the request threads' priority (`convert.rs`), this work
//! takes only the share of the CPU requests would get.
//!
//! Bounds: a frame of more than [`MAX_FRAME_BYTES`] (either length) is
//! refused before anything is read; a reader holds at most [`AHEAD`]
//! decoded frames beyond the one it returns; an instance plans ahead for
//! at most [`MAX_PLANNED_READERS`] live readers at a time (more readers
//! still work, decoding each frame when asked); an encoder holds at most
//! [`MAX_ENCODING`] frames pushed and not taken.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;

use tokio::task::JoinHandle;
use wasmtime::component::Resource;

use crate::bindings::frames::{Codec, Encoded, Error, Frame, Host, HostEncoder, HostReader};
use crate::ctx::Sandbox;
use crate::objects::Backend;

/// Largest frame, stored or decoded: a frame closes once it holds 1 MiB, so
/// it is at most that plus one block (the guest's limit is the same).
pub(crate) const MAX_FRAME_BYTES: u32 = 16 << 20;
/// Frames a reader keeps in progress ahead of the one it returns.
const AHEAD: usize = 2;
/// Live readers of one instance that decode ahead.
const MAX_PLANNED_READERS: usize = 4;

/// Frames an encoder holds pushed and not yet taken.
const MAX_ENCODING: usize = 4;

/// A decode in progress.
type Pending = JoinHandle<Result<Vec<u8>, Error>>;

/// One `encoder` resource (`pub`: the generated bindings re-export it).
pub struct Encoder {
    quality: u32,
    window: u32,
    /// Frames being compressed, in the order they were pushed.
    in_progress: VecDeque<JoinHandle<Encoded>>,
}

/// `plain` compressed with Brotli, or as it is when that does not shrink
/// it (or, which writing to memory never does, fails).
fn encode(plain: Vec<u8>, quality: u32, window: u32) -> Encoded {
    let mut out = Vec::with_capacity(plain.len() / 2);
    let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, window);
    let written = w.write_all(&plain).and_then(|()| w.flush());
    // Dropping the writer ends the stream.
    drop(w);
    if written.is_ok() && out.len() < plain.len() {
        Encoded {
            codec: Codec::Brotli,
            bytes: out,
        }
    } else {
        Encoded {
            codec: Codec::Stored,
            bytes: plain,
        }
    }
}

/// One `reader` resource (`pub`: the generated bindings re-export it).
pub struct Reader {
    backend: Arc<Backend>,
    /// Frames still to come, in the order the guest will ask for them.
    plan: VecDeque<Frame>,
    /// Frames taken off the plan's front and being decoded, in plan order.
    ahead: VecDeque<(Frame, Pending)>,
    /// Whether this reader counts against [`MAX_PLANNED_READERS`].
    planned: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Nobody will ask for these any more; a decode already on a
        // blocking thread finishes there and is dropped.
        for (_, pending) in self.ahead.drain(..) {
            pending.abort();
        }
    }
}

fn same(a: &Frame, b: &Frame) -> bool {
    a.key == b.key
        && a.offset == b.offset
        && a.stored_len == b.stored_len
        && a.len == b.len
        && a.codec == b.codec
}

/// What is wrong with a frame before anything is read, if anything.
fn invalid(frame: &Frame) -> Option<Error> {
    if !crate::objects::valid_key(&frame.key) {
        return Some(Error::Invalid(format!("invalid key {:?}", frame.key)));
    }
    if frame.stored_len > MAX_FRAME_BYTES || frame.len > MAX_FRAME_BYTES {
        return Some(Error::Invalid(format!(
            "frame at {} of {} claims {} stored / {} bytes, over the {MAX_FRAME_BYTES} limit",
            frame.offset, frame.key, frame.stored_len, frame.len
        )));
    }
    None
}

/// The frame's bytes decoded with its codec, exactly `len` of them.
fn decode(frame: &Frame, stored: Vec<u8>) -> Result<Vec<u8>, Error> {
    let len = frame.len as usize;
    // One byte past `len` tells a frame that decodes to more.
    let limit = u64::from(frame.len) + 1;
    let mut out = Vec::with_capacity(len);
    let decoded = match frame.codec {
        Codec::Stored => {
            out = stored;
            Ok(out.len())
        }
        Codec::Deflate => flate2::read::DeflateDecoder::new(stored.as_slice())
            .take(limit)
            .read_to_end(&mut out),
        Codec::Brotli => brotli::Decompressor::new(stored.as_slice(), 64 * 1024)
            .take(limit)
            .read_to_end(&mut out),
    };
    match decoded {
        Ok(_) if out.len() == len => Ok(out),
        Ok(_) => Err(Error::Damaged(format!(
            "frame at {} of {} decodes to {} bytes, expected {len}",
            frame.offset,
            frame.key,
            out.len()
        ))),
        Err(e) => Err(Error::Damaged(format!(
            "frame at {} of {} does not decode: {e}",
            frame.offset, frame.key
        ))),
    }
}

/// The stored bytes of `frame`, as the backend answered them.
fn stored(
    frame: &Frame,
    read: Result<Option<Vec<u8>>, crate::bindings::objects::Error>,
) -> Result<Vec<u8>, Error> {
    use crate::bindings::objects::Error as E;
    let read = read.map_err(|e| match e {
        E::Unavailable(m) => Error::Unavailable(m),
        E::InvalidKey(m) => Error::Invalid(m),
        E::Full(m) | E::Other(m) => Error::Other(m),
        E::TooLarge(n) => Error::Other(format!("{}: {n} bytes, too large", frame.key)),
    })?;
    read.filter(|s| s.len() == frame.stored_len as usize)
        .ok_or_else(|| {
            Error::Missing(format!(
                "{} has no {} bytes at {}",
                frame.key, frame.stored_len, frame.offset
            ))
        })
}

/// Runs `work` on a blocking thread.
async fn blocking(
    work: impl FnOnce() -> Result<Vec<u8>, Error> + Send + 'static,
) -> Result<Vec<u8>, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Other(format!("frame decoding stopped: {e}")))?
}

/// Reads and decodes one frame: a file is read on the blocking thread that
/// decodes it; a bucket's range is awaited first.
async fn fetch(backend: Arc<Backend>, frame: Frame) -> Result<Vec<u8>, Error> {
    if let Some(e) = invalid(&frame) {
        return Err(e);
    }
    let (key, offset, len) = (frame.key.clone(), frame.offset, u64::from(frame.stored_len));
    if matches!(*backend, Backend::Local(_)) {
        return blocking(move || {
            let read = backend
                .read_range_blocking(key, offset, len)
                .unwrap_or(Ok(None));
            decode(&frame, stored(&frame, read)?)
        })
        .await;
    }
    let read = backend.read_range(key, offset, len).await;
    let bytes = stored(&frame, read)?;
    blocking(move || decode(&frame, bytes)).await
}

impl Reader {
    fn start(&self, frame: Frame) -> Pending {
        tokio::spawn(fetch(Arc::clone(&self.backend), frame))
    }

    /// Keeps [`AHEAD`] frames of the plan in progress.
    fn fill(&mut self) {
        while self.ahead.len() < AHEAD {
            let Some(next) = self.plan.pop_front() else {
                break;
            };
            let pending = self.start(next.clone());
            self.ahead.push_back((next, pending));
        }
    }

    /// The decode of `frame`: the one in progress when it is the next in
    /// the plan (dropping those it skips), else one started now, after
    /// which the plan resumes past its next place in it.
    fn take(&mut self, frame: &Frame) -> Pending {
        if let Some(i) = self.ahead.iter().position(|(f, _)| same(f, frame)) {
            for (_, skipped) in self.ahead.drain(..i) {
                skipped.abort();
            }
            let (_, pending) = self.ahead.pop_front().expect("found at index i");
            self.fill();
            return pending;
        }
        let pending = self.start(frame.clone());
        if let Some(i) = self.plan.iter().position(|f| same(f, frame)) {
            self.plan.drain(..=i);
            for (_, stale) in self.ahead.drain(..) {
                stale.abort();
            }
            self.fill();
        }
        pending
    }
}

impl HostReader for Sandbox {
    async fn new(&mut self, plan: Vec<Frame>) -> wasmtime::Result<Resource<Reader>> {
        let planned = self.planned_readers < MAX_PLANNED_READERS && !plan.is_empty();
        if planned {
            self.planned_readers += 1;
        }
        let mut reader = Reader {
            backend: self.objects_shared(),
            plan: if planned {
                plan.into()
            } else {
                VecDeque::new()
            },
            ahead: VecDeque::new(),
            planned,
        };
        reader.fill();
        Ok(self.table().push(reader)?)
    }

    async fn read(
        &mut self,
        reader: Resource<Reader>,
        frame: Frame,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let pending = self.table().get_mut(&reader)?.take(&frame);
        Ok(match pending.await {
            Ok(result) => result,
            Err(e) => Err(Error::Other(format!("frame decoding stopped: {e}"))),
        })
    }

    async fn drop(&mut self, reader: Resource<Reader>) -> wasmtime::Result<()> {
        if self.table().delete(reader)?.planned {
            self.planned_readers -= 1;
        }
        Ok(())
    }
}

impl HostEncoder for Sandbox {
    async fn new(&mut self, quality: u8, window: u8) -> wasmtime::Result<Resource<Encoder>> {
        Ok(self.table().push(Encoder {
            quality: u32::from(quality.min(11)),
            window: u32::from(window.clamp(10, 24)),
            in_progress: VecDeque::new(),
        })?)
    }

    async fn push(
        &mut self,
        encoder: Resource<Encoder>,
        plain: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let e = self.table().get_mut(&encoder)?;
        if plain.len() > MAX_FRAME_BYTES as usize {
            return Ok(Err(Error::Invalid(format!(
                "a frame of {} bytes, over the {MAX_FRAME_BYTES} limit",
                plain.len()
            ))));
        }
        if e.in_progress.len() >= MAX_ENCODING {
            return Ok(Err(Error::Invalid(format!(
                "{MAX_ENCODING} frames already wait to be taken"
            ))));
        }
        let (quality, window) = (e.quality, e.window);
        e.in_progress
            .push_back(tokio::task::spawn_blocking(move || {
                encode(plain, quality, window)
            }));
        Ok(Ok(()))
    }

    async fn next(
        &mut self,
        encoder: Resource<Encoder>,
    ) -> wasmtime::Result<Result<Encoded, Error>> {
        let Some(job) = self.table().get_mut(&encoder)?.in_progress.pop_front() else {
            return Ok(Err(Error::Invalid("no frame was pushed".into())));
        };
        Ok(job
            .await
            .map_err(|e| Error::Other(format!("frame compression stopped: {e}"))))
    }

    async fn drop(&mut self, encoder: Resource<Encoder>) -> wasmtime::Result<()> {
        // Frames still being compressed finish on their threads, unread.
        self.table().delete(encoder)?;
        Ok(())
    }
}

impl Host for Sandbox {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::LocalObjects;
    use std::io::Write;

    /// A Brotli frame as the guest writes them (`packs.rs`).
    fn brotli(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(bytes).unwrap();
        drop(w);
        out
    }

    /// A raw DEFLATE frame, as early stores' packs hold.
    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(bytes).unwrap();
        w.finish().unwrap()
    }

    fn frame(key: &str, offset: u64, stored_len: usize, len: usize, codec: Codec) -> Frame {
        Frame {
            key: key.to_string(),
            offset,
            stored_len: stored_len as u32,
            len: len as u32,
            codec,
        }
    }

    fn pack(dir: &std::path::Path, parts: &[&[u8]]) -> Vec<u64> {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for p in parts {
            offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(p);
        }
        std::fs::create_dir_all(dir.join("p")).unwrap();
        std::fs::write(dir.join("p/x.pack"), bytes).unwrap();
        offsets
    }

    fn reader(dir: &std::path::Path, plan: Vec<Frame>) -> Reader {
        let mut r = Reader {
            backend: Arc::new(Backend::Local(LocalObjects::open(dir).unwrap())),
            plan: plan.into(),
            ahead: VecDeque::new(),
            planned: true,
        };
        r.fill();
        r
    }

    #[tokio::test]
    async fn planned_frames_come_back_decoded_in_and_out_of_order() {
        let tmp = tempfile::tempdir().unwrap();
        let plain: Vec<Vec<u8>> = (0..5u8)
            .map(|i| (0..70_000u32).map(|j| (j % 251) as u8 ^ i).collect())
            .collect();
        // Every codec: Brotli, DEFLATE and stored frames in one pack.
        let stored: Vec<Vec<u8>> = plain
            .iter()
            .enumerate()
            .map(|(i, p)| match i % 3 {
                0 => brotli(p),
                1 => deflate(p),
                _ => p.clone(),
            })
            .collect();
        let codecs = [Codec::Brotli, Codec::Deflate, Codec::Stored];
        let offsets = pack(
            tmp.path(),
            &stored.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        );
        let frames: Vec<Frame> = (0..5)
            .map(|i| {
                frame(
                    "p/x.pack",
                    offsets[i],
                    stored[i].len(),
                    plain[i].len(),
                    codecs[i % 3],
                )
            })
            .collect();
        let mut r = reader(tmp.path(), frames.clone());
        assert_eq!(r.ahead.len(), AHEAD, "decoding starts with the plan");
        // In order, then one skipped (3 after 1), then one from the past.
        for i in [0, 1, 3, 0, 4] {
            let got = r.take(&frames[i]).await.unwrap().unwrap();
            assert_eq!(got, plain[i], "frame {i}");
            assert!(r.ahead.len() <= AHEAD);
        }
        assert!(
            r.plan.is_empty() && r.ahead.is_empty(),
            "nothing left to do"
        );
    }

    #[tokio::test]
    async fn encoded_frames_decode_to_what_was_pushed_and_incompressible_ones_are_stored() {
        let text: Vec<u8> = (0..300_000u32)
            .map(|j| b"abcdefgh"[(j % 7) as usize])
            .collect();
        // xorshift64: no pattern Brotli can use.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        let small = encode(text.clone(), 7, 22);
        assert_eq!(small.codec, Codec::Brotli);
        assert!(small.bytes.len() * 10 < text.len());
        let f = frame("k", 0, small.bytes.len(), text.len(), Codec::Brotli);
        assert_eq!(decode(&f, small.bytes).unwrap(), text);
        let same = encode(noise.clone(), 7, 22);
        assert_eq!(same.codec, Codec::Stored);
        assert!(same.bytes == noise, "stored frames are the frame as it was");
    }

    #[tokio::test]
    async fn damaged_missing_and_oversized_frames_are_errors_not_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let good = brotli(b"hello frames");
        let offsets = pack(tmp.path(), &[&good, b"not deflate at all \xff\xff"]);
        let packed = deflate(b"hello frames");
        std::fs::write(tmp.path().join("p/y.pack"), &packed).unwrap();
        let mut r = reader(tmp.path(), Vec::new());
        let mut read = |f: Frame| r.take(&f);
        let cases = [
            // Frames that decode to more, or fewer, bytes than they claim.
            (
                frame("p/x.pack", offsets[0], good.len(), 5, Codec::Brotli),
                "damaged",
            ),
            (
                frame("p/y.pack", 0, packed.len(), 13, Codec::Deflate),
                "damaged",
            ),
            (
                frame("p/x.pack", offsets[1], 21, 100, Codec::Deflate),
                "damaged",
            ),
            (
                frame("p/x.pack", offsets[1], 21, 100, Codec::Brotli),
                "damaged",
            ),
            (
                frame("p/x.pack", offsets[0], 10_000, 10, Codec::Stored),
                "missing",
            ),
            (frame("p/gone.pack", 0, 4, 4, Codec::Stored), "missing"),
            (frame("p/../x.pack", 0, 4, 4, Codec::Stored), "invalid"),
            (frame("p/x.pack", 0, 4, 17 << 20, Codec::Stored), "invalid"),
        ];
        for (f, want) in cases {
            let what = format!("{f:?}");
            let got = read(f).await.unwrap();
            let kind = match got {
                Err(Error::Damaged(_)) => "damaged",
                Err(Error::Missing(_)) => "missing",
                Err(Error::Invalid(_)) => "invalid",
                other => panic!("{what}: {other:?}"),
            };
            assert_eq!(kind, want, "{what}");
        }
        let ok = read(frame("p/x.pack", offsets[0], good.len(), 12, Codec::Brotli))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok, b"hello frames");
    }
}
