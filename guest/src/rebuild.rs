//! Rebuilding a blob's exact bytes from its recipe, as a stream.
//!
//! [`Rebuild`] is a `Read` over the blob: literal bytes as they are, content
//! blocks read out of pack frames, DEFLATE streams recreated bit for bit one
//! segment at a time (preflate-rs) or by their encoder's replica, 256 KiB
//! of content at a time (on the host, a few pieces ahead: `replicas.rs`;
//! pgzip's 1 MiB at a time, its blocks compressed at once).
//! Memory stays bounded by one segment.
//! Verbatim recipes (no encoding to recreate) start at any offset directly;
//! others recreate from the start and discard what precedes the offset.

use std::io::{self, ErrorKind, Read};

use crate::block::BlockId;
use crate::deflate::DeflateRecreator;
use crate::layout::Layout;
use crate::packs::FrameReader;
use crate::recipe::{BlockRef, Frame, Location, Op, Recipe};
use crate::replicas::ReplicaStream;
use crate::zstd::ZstdRecreator;

/// How many content bytes a verbatim copy reads at a time.
const COPY_STEP: u64 = 256 * 1024;

/// A reader of one blob's bytes.
pub struct Rebuild {
    recipe: Recipe,
    frames: FrameReader,
    layout: Layout,
    /// Next content block, and bytes of it already used.
    block: usize,
    block_used: usize,
    /// Next layout op; bytes or segments of it already used.
    op: usize,
    op_used: u64,
    /// The recreator of the current DEFLATE or zstd stream op.
    recreator: Option<StreamRecreator>,
    out: Vec<u8>,
    out_pos: usize,
    discard: u64,
    /// Whether each block read is checked against its SHA-1 (a range read,
    /// which no digest covers).
    verify_blocks: bool,
    /// Whether the frame reader was told the frames to come.
    planned: bool,
    /// Blob offset of the next verbatim byte, and where reading stops
    /// (verbatim recipes; a recreated stream ends with its segment).
    pos: u64,
    end: u64,
}

fn damaged(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

impl Rebuild {
    /// Starts reading the blob at byte `start`.
    pub fn new(layout: &Layout, recipe: Recipe, start: u64) -> Self {
        let mut r = Self {
            frames: FrameReader::new(layout),
            layout: layout.clone(),
            block: 0,
            block_used: 0,
            op: 0,
            op_used: 0,
            recreator: None,
            out: Vec::new(),
            out_pos: 0,
            discard: 0,
            verify_blocks: false,
            planned: false,
            pos: start,
            end: u64::MAX,
            recipe,
        };
        if r.recipe.is_verbatim() {
            r.seek_verbatim(start);
        } else {
            r.discard = start;
        }
        r
    }

    /// Checks every block read against its SHA-1, so that a read of part
    /// of the blob (which the blob's digest cannot vouch for) fails on a
    /// damaged block instead of returning its bytes. Recreation from
    /// verified blocks gives the bytes proven when the recipe was committed.
    #[must_use]
    pub fn verifying_blocks(mut self) -> Self {
        self.verify_blocks = true;
        self
    }

    /// Reads no block of a verbatim recipe past blob offset `end` (the
    /// reader then ends there), so a
    /// range read touches (and with [`Rebuild::verifying_blocks`] checks)
    /// only the blocks it returns.
    #[must_use]
    pub fn until(mut self, end: u64) -> Self {
        // Other recipes recreate whole segments from the start; their
        // output offsets are not content offsets.
        if self.recipe.is_verbatim() {
            self.end = end;
        }
        self
    }

    /// Positions a verbatim recipe at `start`: content offset = blob offset.
    fn seek_verbatim(&mut self, start: u64) {
        (self.block, self.block_used) = self.recipe.locate(start);
        let mut left = start;
        self.op = 0;
        while let Some(Op::Copy(n)) = self.recipe.layout.get(self.op) {
            if left < *n {
                break;
            }
            left -= n;
            self.op += 1;
        }
        self.op_used = left;
    }

    /// The frames this rebuild will read from here on, in the order it
    /// reads them (consecutive repeats once): content blocks in order, and
    /// after each recreated segment's content the blocks of its
    /// corrections, as [`Rebuild::produce`] reads them.
    fn frames_to_come(&self) -> Vec<Frame> {
        let content = &self.recipe.content;
        let mut out: Vec<Frame> = Vec::new();
        let mut push = |b: &BlockRef| {
            if let Location::Framed { frame, .. } = b.at {
                if let Some(f) = self.recipe.frames.get(frame as usize) {
                    if out.last() != Some(f) {
                        out.push(*f);
                    }
                }
            }
        };
        if self.recipe.is_verbatim() {
            let last = if self.end == u64::MAX {
                content.len()
            } else {
                self.recipe.locate(self.end.saturating_sub(1)).0 + 1
            };
            for b in content
                .get(self.block..last.min(content.len()))
                .unwrap_or(&[])
            {
                push(b);
            }
            return out;
        }
        // `take(n)` pushes the content blocks holding the next `n` content
        // bytes: `next` is the first block not pushed yet, `at` the content
        // offset where it starts, `taken` the content bytes taken so far.
        let (mut next, mut at, mut taken) = (self.block, 0u64, 0u64);
        let mut take = |n: u64, push: &mut dyn FnMut(&BlockRef)| {
            taken += n;
            while at < taken {
                let Some(b) = content.get(next) else { break };
                push(b);
                at += u64::from(b.len);
                next += 1;
            }
        };
        for op in &self.recipe.layout[self.op..] {
            match op {
                Op::Lit(_) => {}
                Op::Copy(n) => take(*n, &mut push),
                Op::Replica { plain, .. } => take(*plain, &mut push),
                Op::Deflate(segments) | Op::Zstd(segments) => {
                    for seg in segments {
                        take(seg.plain, &mut push);
                        for b in &seg.corrections {
                            push(b);
                        }
                    }
                }
            }
        }
        out
    }

    /// The frames planned for the host, and those asked of it.
    #[cfg(test)]
    pub(crate) fn frame_log(&self) -> &(Vec<Frame>, Vec<Frame>) {
        &self.frames.log
    }

    fn block_bytes(&mut self, b: &BlockRef) -> io::Result<Vec<u8>> {
        if !self.planned {
            self.planned = true;
            let plan = self.frames_to_come();
            self.frames.plan(plan);
        }
        let bytes = self.read_block(b)?;
        if self.verify_blocks && BlockId::compute(&bytes).ok() != Some(b.id) {
            return Err(damaged(format!(
                "block {} does not match its SHA-1 (store damage)",
                b.id
            )));
        }
        Ok(bytes)
    }

    fn read_block(&mut self, b: &BlockRef) -> io::Result<Vec<u8>> {
        match b.at {
            Location::Loose => {
                let hex = b.id.to_hex();
                let bytes = std::fs::read(self.layout.loose_block(&hex))?;
                if bytes.len() != b.len as usize {
                    return Err(damaged(format!("block {hex} is truncated")));
                }
                Ok(bytes)
            }
            Location::Framed { frame, offset } => {
                let f = self.recipe.frames[frame as usize];
                let bytes = self.frames.frame(&f)?;
                let (lo, hi) = (offset as usize, offset as usize + b.len as usize);
                bytes
                    .get(lo..hi)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| damaged(format!("block {} overruns its frame", b.id)))
            }
        }
    }

    /// Appends the next `n` content bytes to `into`.
    fn take_content(&mut self, mut n: u64, into: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            let b = *self
                .recipe
                .content
                .get(self.block)
                .ok_or_else(|| damaged("recipe content ends early".into()))?;
            let bytes = self.block_bytes(&b)?;
            let avail = bytes.len() - self.block_used;
            let take = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            into.extend_from_slice(&bytes[self.block_used..self.block_used + take]);
            self.block_used += take;
            n -= take as u64;
            if self.block_used == bytes.len() {
                self.block += 1;
                self.block_used = 0;
            }
        }
        Ok(())
    }

    fn corrections(&mut self, blocks: &[BlockRef]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for b in blocks {
            out.extend(self.block_bytes(b)?);
        }
        Ok(out)
    }

    /// Produces the next piece of output into `self.out`; false at the end.
    fn produce(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.out_pos = 0;
        loop {
            let Some(op) = self.recipe.layout.get(self.op).cloned() else {
                return Ok(false);
            };
            let zstd = matches!(op, Op::Zstd(_));
            match op {
                Op::Lit(bytes) => {
                    self.out = bytes;
                    self.op += 1;
                    self.op_used = 0;
                }
                Op::Copy(n) => {
                    let step = (n - self.op_used)
                        .min(COPY_STEP)
                        .min(self.end.saturating_sub(self.pos));
                    if step == 0 {
                        return Ok(false);
                    }
                    let mut buf = std::mem::take(&mut self.out);
                    self.take_content(step, &mut buf)?;
                    self.out = buf;
                    self.pos += step;
                    self.op_used += step;
                    if self.op_used == n {
                        self.op += 1;
                        self.op_used = 0;
                    }
                }
                Op::Replica {
                    replica,
                    plain,
                    checkpoints,
                } => {
                    let mut rec = match self.recreator.take() {
                        Some(StreamRecreator::Replica(r)) => r,
                        Some(_) => {
                            return Err(damaged("a replica op inside another stream".into()))
                        }
                        None => ReplicaStream::new(replica, &checkpoints),
                    };
                    // Pieces go in ahead of the output taken, so that a
                    // host's replica compresses while this reads frames.
                    while rec.wants() {
                        if self.op_used < plain {
                            let step = (plain - self.op_used).min(rec.piece(self.op_used));
                            let mut content = Vec::with_capacity(step as usize);
                            self.take_content(step, &mut content)?;
                            rec.push(content)?;
                            self.op_used += step;
                        } else {
                            rec.finish()?;
                        }
                    }
                    self.out = rec.next()?.unwrap_or_default();
                    if rec.done() {
                        self.op += 1;
                        self.op_used = 0;
                    } else {
                        self.recreator = Some(StreamRecreator::Replica(rec));
                    }
                }
                Op::Deflate(segments) | Op::Zstd(segments) => {
                    let i = self.op_used as usize;
                    let Some(seg) = segments.get(i) else {
                        self.op += 1;
                        self.op_used = 0;
                        self.recreator = None;
                        continue;
                    };
                    let mut plain = Vec::with_capacity(seg.plain as usize);
                    self.take_content(seg.plain, &mut plain)?;
                    let corr = self.corrections(&seg.corrections)?;
                    let rec = self.recreator.get_or_insert_with(|| {
                        if zstd {
                            StreamRecreator::Zstd(Box::default())
                        } else {
                            StreamRecreator::Deflate(DeflateRecreator::new())
                        }
                    });
                    self.out = rec.segment(&plain, &corr)?;
                    self.op_used += 1;
                }
            }
            if !self.out.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// The recreator of the compressed stream in progress.
enum StreamRecreator {
    Deflate(DeflateRecreator),
    Zstd(Box<ZstdRecreator>),
    Replica(ReplicaStream),
}

impl StreamRecreator {
    fn segment(&mut self, plain: &[u8], corrections: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Self::Deflate(r) => r
                .segment(plain, corrections)
                .map_err(|e| damaged(format!("recreating DEFLATE: {e}"))),
            Self::Zstd(r) => r
                .segment(plain, corrections)
                .map_err(|e| damaged(format!("recreating zstd: {e}"))),
            Self::Replica(_) => Err(damaged("segments inside a replica stream".into())),
        }
    }
}

impl Read for Rebuild {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos == self.out.len() && !self.produce()? {
                return Ok(0);
            }
            let avail = self.out.len() - self.out_pos;
            if self.discard > 0 {
                let skip = avail.min(usize::try_from(self.discard).unwrap_or(usize::MAX));
                self.out_pos += skip;
                self.discard -= skip as u64;
                continue;
            }
            let n = avail.min(buf.len());
            buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
            self.out_pos += n;
            return Ok(n);
        }
    }
}
