//! Recipes: how to rebuild one blob, stored as `layers/<digest>/recipe.json`.
//! Pure code; the store reads and writes them, `rebuild.rs` follows them.
//!
//! A blob is described in two layers:
//! - `content`: the decoded bytes as an ordered list of blocks (for a gzip
//!   layer, the uncompressed tar; otherwise the blob's own bytes). Each block
//!   names its SHA-1, its length and where it lives: a frame of a pack file
//!   (`frames` table) and its offset inside the decompressed frame, or — for
//!   format 1 stores — a loose file `blocks/<2 hex>/<sha1>`.
//! - `layout`: how the blob's bytes are produced from the content, in order:
//!   `{"lit":"<hex>"}` literal bytes (gzip headers, trailers), `{"copy":n}` the
//!   next `n` content bytes as they are, `{"deflate":[[plain, [blocks…]],…]}` a
//!   DEFLATE stream recreated bit for bit, segment by segment, from the next
//!   `plain` content bytes and the correction bytes held in `blocks`;
//!   `{"zstd":[[plain, [blocks…]],…]}` the same for a whole zstd blob, whose
//!   corrections are `zstd.rs`'s records; `{"replica":[encoder, level,
//!   plain]}` a DEFLATE stream recreated from the next `plain` content bytes
//!   by the named encoder replica (`replica.rs`; `"go1.26-flate"`,
//!   `"go1.27-flate"`, `"pgzip1.2-klauspost1.15"`), with no corrections;
//!   `{"replica":[encoder, level, plain, [checkpoint…]]}` the same with the
//!   checkpoints the replica recorded (`goflate126::Checkpoint`, each
//!   `[plain, out, window_end, index, block_start, byte_available, length,
//!   offset, hash_offset, bits, nbits]`), from which the stretches between
//!   them are recreated at once.
//!
//! Version 2 (written by this guest):
//! `{"version":2,"digest","size","chunker","encoding","frames":[[pack,offset,
//! stored_len,len,codec],…],"content":"<base64>","layout":[…]}`. `content`
//! packs one record per block, about 23 bytes instead of 60 as JSON arrays
//! (a large layer lists tens of thousands of blocks): a flag byte (bit 0: the
//! block follows the previous one in the same frame), unless flagged the
//! frame and offset as LEB128 varints, the length as a varint, the 20-byte
//! SHA-1.
//! Version 3 is version 2 plus one more record: flag 2 and a varint `n`
//! repeat the previous block `n` more times, so a run of identical blocks
//! (zeros of a sparse file, a layer of one repeated pattern) costs a few
//! bytes instead of ~23 per block. A recipe is written as version 3 only
//! when it has such a run, so guests that read version 2 still read all
//! other recipes.
//! Version 1 (`{"version":1,…,"blocks":[[sha1,len],…]}`, loose block files) is
//! still read. Every block carries its length and location, so a reader needs
//! no knowledge of the chunker that wrote the recipe: any guest rebuilds any
//! blob.

use serde::{Deserialize, Serialize};

use crate::block::BlockId;
use crate::goflate126::Checkpoint;
use crate::oci::Digest;
use crate::replica::Replica;
use crate::varint;

/// The newest recipe format version this guest writes (see the module doc:
/// version 2 unless the content has runs of a repeated block).
pub const RECIPE_VERSION: u32 = 3;
/// Most content blocks a recipe may expand to: a guard against a damaged
/// repeat count, far above what conversion writes (64 GiB of 4 KiB blocks).
const MAX_CONTENT_BLOCKS: usize = 1 << 24;

/// How a frame's bytes are stored in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// As they are.
    Stored,
    /// Raw DEFLATE (RFC 1951).
    Deflate,
    /// Brotli (RFC 7932): what new packs use.
    Brotli,
}

impl Codec {
    pub fn to_u8(self) -> u8 {
        match self {
            Codec::Stored => 0,
            Codec::Deflate => 1,
            Codec::Brotli => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Codec::Stored),
            1 => Some(Codec::Deflate),
            2 => Some(Codec::Brotli),
            _ => None,
        }
    }
}

/// A group of consecutive blocks compressed together inside a pack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The pack's id: 16 hex digits, file `blocks/packs/<id>.pack`.
    pub pack: u64,
    /// Where the frame starts in the pack.
    pub offset: u64,
    /// Its length in the pack.
    pub stored_len: u32,
    /// Its length once decompressed.
    pub len: u32,
    pub codec: Codec,
}

/// Where a block's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A loose file `blocks/<2 hex>/<sha1>` (format 1).
    Loose,
    /// Index into the recipe's frame table, and offset in the decompressed frame.
    Framed { frame: u32, offset: u32 },
}

/// One block of a recipe, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub id: BlockId,
    pub len: u32,
    pub at: Location,
}

/// One recreated segment of a DEFLATE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// How many content bytes it compresses.
    pub plain: u64,
    /// The blocks holding its correction bytes, in order.
    pub corrections: Vec<BlockRef>,
}

/// One step of producing the blob's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Lit(Vec<u8>),
    Copy(u64),
    Deflate(Vec<Segment>),
    /// A zstd stream (the whole blob) recreated segment by segment by
    /// `zstd::ZstdRecreator`; the layout's only op.
    Zstd(Vec<Segment>),
    /// A DEFLATE stream recreated from the next `plain` content bytes by
    /// the encoder replica that wrote it (`replica.rs`), with no
    /// corrections.
    Replica {
        replica: Replica,
        plain: u64,
        /// Where stretches of the stream may be recreated from on their
        /// own (`replica::check_checkpoints` holds: in order, inside
        /// `plain`); none for most replicas.
        checkpoints: Vec<Checkpoint>,
    },
}

/// What a blob is, relative to the content its blocks hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the blob, byte for byte.
    Raw,
    /// The content is the decoded bytes of a gzip blob, recreated bit for
    /// bit from the content and preflate corrections.
    Gzip,
    /// The content is the decoded bytes of a zstd blob, recreated exactly
    /// from the content and the stream's own structure (`zstd.rs`).
    Zstd,
}

impl Encoding {
    /// The name recipes and reports use: `raw`, `gzip` or `zstd`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to rebuild one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub digest: Digest,
    pub size: u64,
    /// The chunker that cut the content, e.g. `tar-4096` (informational).
    pub chunker: String,
    pub encoding: Encoding,
    pub frames: Vec<Frame>,
    pub content: Vec<BlockRef>,
    pub layout: Vec<Op>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawBlock {
    Framed(String, u32, u32, u32),
    Loose(String, u32),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawOp {
    Lit(String),
    Copy(u64),
    Deflate(Vec<(u64, Vec<RawBlock>)>),
    Zstd(Vec<(u64, Vec<RawBlock>)>),
    /// `[encoder name, level, plain bytes]`, then its checkpoints if any.
    Replica(RawReplica),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawReplica {
    Checkpointed(String, i32, u64, Vec<RawCheckpoint>),
    Plain(String, i32, u64),
}

/// A [`Checkpoint`]'s fields in order, `byte_available` as 0 or 1.
type RawCheckpoint = (u64, u64, u32, u32, u32, u8, i32, i32, i64, u64, u32);

fn checkpoint_to_raw(c: &Checkpoint) -> RawCheckpoint {
    (
        c.plain,
        c.out,
        c.window_end,
        c.index,
        c.block_start,
        u8::from(c.byte_available),
        c.length,
        c.offset,
        c.hash_offset,
        c.bits,
        c.nbits,
    )
}

fn checkpoint_from_raw(r: RawCheckpoint) -> Result<Checkpoint, RecipeError> {
    let (
        plain,
        out,
        window_end,
        index,
        block_start,
        avail,
        length,
        offset,
        hash_offset,
        bits,
        nbits,
    ) = r;
    let byte_available = match avail {
        0 => false,
        1 => true,
        _ => return Err(bad("checkpoint flag is not 0 or 1")),
    };
    Ok(Checkpoint {
        plain,
        out,
        window_end,
        index,
        block_start,
        byte_available,
        length,
        offset,
        hash_offset,
        bits,
        nbits,
    })
}

#[derive(Serialize, Deserialize)]
struct RawRecipe {
    version: u32,
    digest: String,
    size: u64,
    chunker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<Encoding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    frames: Vec<(String, u64, u32, u32, u8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<Vec<RawOp>>,
    /// Format 1's block list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocks: Option<Vec<RawBlock>>,
}

/// Why a recipe file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("recipe is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported recipe version {0}")]
    Version(u32),
    #[error("recipe is inconsistent: {0}")]
    Inconsistent(String),
}

fn bad(msg: impl Into<String>) -> RecipeError {
    RecipeError::Inconsistent(msg.into())
}

/// Pack ids are 64-bit numbers written as 16 hex digits.
pub fn pack_name(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_pack(s: &str) -> Result<u64, RecipeError> {
    if s.len() != 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(bad(format!("bad pack id {s:?}")));
    }
    u64::from_str_radix(s, 16).map_err(|_| bad(format!("bad pack id {s:?}")))
}

fn block_to_raw(b: &BlockRef) -> RawBlock {
    match b.at {
        Location::Loose => RawBlock::Loose(b.id.to_hex(), b.len),
        Location::Framed { frame, offset } => RawBlock::Framed(b.id.to_hex(), b.len, frame, offset),
    }
}

/// A block must name a frame of the table and lie inside it.
fn check_in_frame(frames: &[Frame], frame: u32, offset: u32, len: u32) -> Result<(), RecipeError> {
    let f = frames.get(frame as usize).ok_or_else(|| {
        bad(format!(
            "block names frame {frame}, table has {}",
            frames.len()
        ))
    })?;
    if u64::from(offset) + u64::from(len) > u64::from(f.len) {
        return Err(bad(format!(
            "block at {offset}+{len} overruns frame {frame} of {} bytes",
            f.len
        )));
    }
    Ok(())
}

fn block_from_raw(raw: RawBlock, frames: &[Frame]) -> Result<BlockRef, RecipeError> {
    let (id, len, at) = match raw {
        RawBlock::Loose(id, len) => (id, len, Location::Loose),
        RawBlock::Framed(id, len, frame, offset) => {
            check_in_frame(frames, frame, offset, len)?;
            (id, len, Location::Framed { frame, offset })
        }
    };
    Ok(BlockRef {
        id: id.parse().map_err(RecipeError::Inconsistent)?,
        len,
        at,
    })
}

fn segments_to_raw(segs: &[Segment]) -> Vec<(u64, Vec<RawBlock>)> {
    segs.iter()
        .map(|s| (s.plain, s.corrections.iter().map(block_to_raw).collect()))
        .collect()
}

fn segments_from_raw(
    segs: Vec<(u64, Vec<RawBlock>)>,
    frames: &[Frame],
) -> Result<Vec<Segment>, RecipeError> {
    segs.into_iter()
        .map(|(plain, blocks)| {
            Ok(Segment {
                plain,
                corrections: blocks
                    .into_iter()
                    .map(|b| block_from_raw(b, frames))
                    .collect::<Result<Vec<_>, _>>()?,
            })
        })
        .collect()
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    varint::put(out, v);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, RecipeError> {
    varint::get(bytes, pos).ok_or_else(|| bad("content record cut short or varint too long"))
}

/// Content blocks as the compact base64 record string (see the module doc),
/// and whether it uses repeat records (format 3). Loose (format-1) blocks
/// cannot be written in format 2 or 3.
fn encode_content(blocks: &[BlockRef]) -> (String, bool) {
    use base64::Engine as _;
    let mut out = Vec::with_capacity(blocks.len().min(1 << 20) * 24);
    let mut next: Option<(u32, u32)> = None;
    let mut repeats = false;
    let mut i = 0;
    while i < blocks.len() {
        let b = &blocks[i];
        let run = blocks[i + 1..].iter().take_while(|x| *x == b).count();
        i += 1 + run;
        let Location::Framed { frame, offset } = b.at else {
            panic!("format 2 recipes only hold framed blocks");
        };
        if next == Some((frame, offset)) {
            out.push(1);
        } else {
            out.push(0);
            put_varint(&mut out, u64::from(frame));
            put_varint(&mut out, u64::from(offset));
        }
        put_varint(&mut out, u64::from(b.len));
        out.extend_from_slice(b.id.as_bytes());
        if run > 0 {
            out.push(2);
            put_varint(&mut out, run as u64);
            repeats = true;
        }
        next = Some((frame, offset + b.len));
    }
    (
        base64::engine::general_purpose::STANDARD.encode(out),
        repeats,
    )
}

/// Parses the content records; `repeats` allows format 3's repeat records.
fn decode_content(
    text: &str,
    frames: &[Frame],
    repeats: bool,
) -> Result<Vec<BlockRef>, RecipeError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(format!("content is not base64: {e}")))?;
    let mut out = Vec::with_capacity(bytes.len() / 23);
    let mut pos = 0;
    let mut next: Option<(u32, u32)> = None;
    let small = |v: u64| u32::try_from(v).map_err(|_| bad("content number out of range"));
    while pos < bytes.len() {
        let flag = bytes[pos];
        pos += 1;
        if flag == 2 && repeats {
            let last = *out
                .last()
                .ok_or_else(|| bad("first content record repeats nothing"))?;
            let n = get_varint(&bytes, &mut pos)?;
            let n = usize::try_from(n)
                .ok()
                .filter(|n| out.len().saturating_add(*n) <= MAX_CONTENT_BLOCKS)
                .ok_or_else(|| bad(format!("content repeat count {n} too large")))?;
            out.extend(std::iter::repeat_n(last, n));
            continue;
        }
        let (frame, offset) = match flag {
            1 => next.ok_or_else(|| bad("first content record continues nothing"))?,
            0 => (
                small(get_varint(&bytes, &mut pos)?)?,
                small(get_varint(&bytes, &mut pos)?)?,
            ),
            f => return Err(bad(format!("unknown content flag {f}"))),
        };
        let len = small(get_varint(&bytes, &mut pos)?)?;
        let id: [u8; 20] = bytes
            .get(pos..pos + 20)
            .ok_or_else(|| bad("content record cut short"))?
            .try_into()
            .expect("20 bytes");
        pos += 20;
        check_in_frame(frames, frame, offset, len)?;
        out.push(BlockRef {
            id: BlockId::from_bytes(id),
            len,
            at: Location::Framed { frame, offset },
        });
        next = Some((frame, offset.saturating_add(len)));
    }
    Ok(out)
}

impl Recipe {
    /// A recipe whose blob is its content as it is (no encoding to recreate).
    pub fn raw(
        digest: Digest,
        chunker: String,
        frames: Vec<Frame>,
        content: Vec<BlockRef>,
    ) -> Self {
        let size = content.iter().map(|b| u64::from(b.len)).sum();
        Self {
            digest,
            size,
            chunker,
            encoding: Encoding::Raw,
            frames,
            layout: if size > 0 {
                vec![Op::Copy(size)]
            } else {
                Vec::new()
            },
            content,
        }
    }

    /// Whether the blob is its content verbatim, so any byte range can be
    /// served without recreating what comes before it.
    pub fn is_verbatim(&self) -> bool {
        self.layout.iter().all(|op| matches!(op, Op::Copy(_)))
    }

    /// Total length of the content blocks.
    pub fn content_len(&self) -> u64 {
        self.content.iter().map(|b| u64::from(b.len)).sum()
    }

    /// Serializes to the on-disk JSON form (version 2, or 3 when the content
    /// has runs of a repeated block).
    pub fn to_json(&self) -> Vec<u8> {
        let layout = self
            .layout
            .iter()
            .map(|op| match op {
                Op::Lit(b) => RawOp::Lit(crate::hex::encode(b)),
                Op::Copy(n) => RawOp::Copy(*n),
                Op::Deflate(segs) => RawOp::Deflate(segments_to_raw(segs)),
                Op::Zstd(segs) => RawOp::Zstd(segments_to_raw(segs)),
                Op::Replica {
                    replica,
                    plain,
                    checkpoints,
                } => {
                    let name = replica.name().to_string();
                    RawOp::Replica(if checkpoints.is_empty() {
                        RawReplica::Plain(name, replica.level(), *plain)
                    } else {
                        let cps = checkpoints.iter().map(checkpoint_to_raw).collect();
                        RawReplica::Checkpointed(name, replica.level(), *plain, cps)
                    })
                }
            })
            .collect();
        let (content, repeats) = encode_content(&self.content);
        let raw = RawRecipe {
            version: if repeats { RECIPE_VERSION } else { 2 },
            digest: self.digest.to_string(),
            size: self.size,
            chunker: self.chunker.clone(),
            encoding: Some(self.encoding),
            frames: self
                .frames
                .iter()
                .map(|f| {
                    (
                        pack_name(f.pack),
                        f.offset,
                        f.stored_len,
                        f.len,
                        f.codec.to_u8(),
                    )
                })
                .collect(),
            content: Some(content),
            layout: Some(layout),
            blocks: None,
        };
        serde_json::to_vec(&raw).expect("a recipe always serializes")
    }

    /// Parses and checks the on-disk form (version 1, 2 or 3).
    ///
    /// # Errors
    /// A [`RecipeError`] when the JSON is malformed, of another version, or
    /// inconsistent (block lengths that do not add up, a block outside its
    /// frame, a layout consuming more or less content than there is).
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecipeError> {
        let raw: RawRecipe = serde_json::from_slice(bytes)?;
        let digest = raw
            .digest
            .parse()
            .map_err(|_| bad(format!("bad digest {:?}", raw.digest)))?;
        match raw.version {
            1 => {
                let blocks = raw.blocks.ok_or_else(|| bad("version 1 without blocks"))?;
                let content = blocks
                    .into_iter()
                    .map(|b| match b {
                        RawBlock::Loose(..) => block_from_raw(b, &[]),
                        RawBlock::Framed(..) => Err(bad("version 1 block with a location")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let r = Recipe::raw(digest, raw.chunker, Vec::new(), content);
                if r.size != raw.size {
                    return Err(bad(format!(
                        "blocks add up to {} bytes, recipe says {}",
                        r.size, raw.size
                    )));
                }
                Ok(r)
            }
            v @ (2 | 3) => {
                let frames = raw
                    .frames
                    .into_iter()
                    .map(|(pack, offset, stored_len, len, codec)| {
                        Ok(Frame {
                            pack: parse_pack(&pack)?,
                            offset,
                            stored_len,
                            len,
                            codec: Codec::from_u8(codec)
                                .ok_or_else(|| bad(format!("unknown codec {codec}")))?,
                        })
                    })
                    .collect::<Result<Vec<_>, RecipeError>>()?;
                let content =
                    decode_content(raw.content.as_deref().unwrap_or(""), &frames, v == 3)?;
                let layout = raw
                    .layout
                    .unwrap_or_default()
                    .into_iter()
                    .map(|op| {
                        Ok(match op {
                            RawOp::Lit(h) => Op::Lit(
                                crate::hex::decode(&h).ok_or_else(|| bad("literal is not hex"))?,
                            ),
                            RawOp::Copy(n) => Op::Copy(n),
                            RawOp::Deflate(segs) => Op::Deflate(segments_from_raw(segs, &frames)?),
                            RawOp::Zstd(segs) => Op::Zstd(segments_from_raw(segs, &frames)?),
                            RawOp::Replica(r) => {
                                let (name, level, plain, raw) = match r {
                                    RawReplica::Plain(n, l, p) => (n, l, p, Vec::new()),
                                    RawReplica::Checkpointed(n, l, p, c) => (n, l, p, c),
                                };
                                let replica = Replica::parse(&name, level).ok_or_else(|| {
                                    bad(format!("unknown encoder replica {name} level {level}"))
                                })?;
                                let checkpoints = raw
                                    .into_iter()
                                    .map(checkpoint_from_raw)
                                    .collect::<Result<Vec<_>, _>>()?;
                                crate::replica::check_checkpoints(replica, &checkpoints, plain)
                                    .map_err(|e| bad(e.to_string()))?;
                                Op::Replica {
                                    replica,
                                    plain,
                                    checkpoints,
                                }
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, RecipeError>>()?;
                let r = Recipe {
                    digest,
                    size: raw.size,
                    chunker: raw.chunker,
                    encoding: raw.encoding.unwrap_or(Encoding::Raw),
                    frames,
                    content,
                    layout,
                };
                r.check()?;
                Ok(r)
            }
            v => Err(RecipeError::Version(v)),
        }
    }

    /// The layout must consume exactly the content, and a verbatim layout
    /// must add up to the size. Summed in `u128`: lengths come from disk,
    /// and `u64` sums of them can wrap around to the expected total.
    fn check(&self) -> Result<(), RecipeError> {
        let mut consumed = 0u128;
        let mut produced = 0u128;
        for op in &self.layout {
            match op {
                Op::Lit(b) => produced += b.len() as u128,
                Op::Copy(n) => {
                    consumed += u128::from(*n);
                    produced += u128::from(*n);
                }
                Op::Deflate(segs) | Op::Zstd(segs) => {
                    consumed += segs.iter().map(|s| u128::from(s.plain)).sum::<u128>();
                }
                Op::Replica { plain, .. } => consumed += u128::from(*plain),
            }
        }
        if consumed != u128::from(self.content_len()) {
            return Err(bad(format!(
                "layout uses {consumed} content bytes, content has {}",
                self.content_len()
            )));
        }
        if self.is_verbatim() && produced != u128::from(self.size) {
            return Err(bad(format!(
                "blocks add up to {produced} bytes, recipe says {}",
                self.size
            )));
        }
        Ok(())
    }

    /// The content block holding content byte `offset` and the offset in
    /// it; `(content.len(), 0)` at or past the end.
    pub fn locate(&self, offset: u64) -> (usize, usize) {
        let mut pos = 0u64;
        for (i, b) in self.content.iter().enumerate() {
            let len = u64::from(b.len);
            if pos + len > offset {
                return (i, (offset - pos) as usize);
            }
            pos += len;
        }
        (self.content.len(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn block(bytes: &[u8], at: Location) -> BlockRef {
        BlockRef {
            id: BlockId::compute(bytes).unwrap(),
            len: bytes.len() as u32,
            at,
        }
    }

    fn sample() -> Recipe {
        let frames = vec![Frame {
            pack: 0xabcdef0123456789,
            offset: 10,
            stored_len: 7,
            len: 10,
            codec: Codec::Deflate,
        }];
        let content = vec![
            block(
                b"aaaa",
                Location::Framed {
                    frame: 0,
                    offset: 0,
                },
            ),
            block(
                b"bbbb",
                Location::Framed {
                    frame: 0,
                    offset: 4,
                },
            ),
            block(
                b"cc",
                Location::Framed {
                    frame: 0,
                    offset: 8,
                },
            ),
        ];
        Recipe::raw(
            Digest::of(Algorithm::Sha256, b"aaaabbbbcc"),
            "fixed-4".into(),
            frames,
            content,
        )
    }

    #[test]
    fn recipe_round_trips_through_json() {
        let r = sample();
        assert_eq!(Recipe::from_json(&r.to_json()).unwrap(), r);
        let mut g = sample();
        g.encoding = Encoding::Gzip;
        g.size = 99;
        g.layout = vec![
            Op::Lit(vec![0x1f, 0x8b]),
            Op::Deflate(vec![
                Segment {
                    plain: 6,
                    corrections: vec![block(
                        b"aa",
                        Location::Framed {
                            frame: 0,
                            offset: 0,
                        },
                    )],
                },
                Segment {
                    plain: 4,
                    corrections: vec![],
                },
            ]),
            Op::Lit(vec![1, 2, 3]),
        ];
        assert_eq!(Recipe::from_json(&g.to_json()).unwrap(), g);
    }

    #[test]
    fn replica_ops_keep_their_checkpoints_and_refuse_disordered_ones() {
        use crate::replica::Replica;
        let cp = |plain, out| Checkpoint {
            plain,
            out,
            window_end: 40_000,
            index: 30_000,
            block_start: 30_000,
            byte_available: true,
            length: 7,
            offset: 12,
            hash_offset: 1 << 20,
            bits: 5,
            nbits: 3,
        };
        let mut g = sample();
        g.encoding = Encoding::Gzip;
        g.size = 99;
        let op = |replica, checkpoints| Op::Replica {
            replica,
            plain: 10,
            checkpoints,
        };
        // Without checkpoints, the op is written as before them.
        g.layout = vec![op(Replica::GoFlate126(6), vec![])];
        let json = String::from_utf8(g.to_json()).unwrap();
        assert!(
            json.contains(r#"{"replica":["go1.26-flate",6,10]}"#),
            "{json}"
        );
        assert_eq!(Recipe::from_json(json.as_bytes()).unwrap(), g);
        g.layout = vec![op(Replica::GoFlate126(6), vec![cp(4, 2), cp(9, 3)])];
        assert_eq!(Recipe::from_json(&g.to_json()).unwrap(), g);
        for bad in [
            op(Replica::GoFlate126(6), vec![cp(9, 2), cp(4, 3)]),
            op(Replica::GoFlate126(6), vec![cp(4, 3), cp(9, 3)]),
            op(Replica::GoFlate126(6), vec![cp(11, 3)]),
            op(Replica::GoFlate126(1), vec![cp(4, 3)]),
            op(Replica::GoFlate127(6), vec![cp(4, 3)]),
        ] {
            g.layout = vec![bad];
            let err = Recipe::from_json(&g.to_json()).unwrap_err();
            assert!(matches!(err, RecipeError::Inconsistent(_)), "{err}");
        }
        g.layout = vec![op(Replica::GoFlate126(6), vec![cp(4, 2)])];
        let flag = String::from_utf8(g.to_json())
            .unwrap()
            .replace(",30000,1,7,", ",30000,2,7,");
        assert!(Recipe::from_json(flag.as_bytes()).is_err());
    }

    #[test]
    fn version_1_recipes_are_still_read() {
        let v1 = br#"{"version":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":3,"chunker":"fixed-4096","blocks":[["a9993e364706816aba3e25717850c26c9cd0d89d",3]]}"#;
        let r = Recipe::from_json(v1).unwrap();
        assert_eq!(r.size, 3);
        assert_eq!(r.content[0].at, Location::Loose);
        assert!(r.is_verbatim());
    }

    #[test]
    fn recipe_whose_blocks_do_not_add_up_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["size"] = 11.into();
        let err = Recipe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, RecipeError::Inconsistent(_)));
        v["size"] = 10.into();
        v["version"] = 9.into();
        let err = Recipe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, RecipeError::Version(9)));
    }

    /// Finding of `recipes_from_disk_are_refused_or_consistent` once it ran
    /// natively with overflow checks: copies of 2^64 - 1 and 1 bytes summed
    /// to 0 in a release build, so this empty recipe was accepted.
    #[test]
    fn layout_whose_lengths_wrap_around_is_refused() {
        let json = br#"{"version":2,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"chunker":"","encoding":"raw","content":"","frames":[["0000000000000000",0,0,0,0]],"layout":[{"copy":18446744073709551615},{"copy":1}]}"#;
        let err = Recipe::from_json(json).unwrap_err();
        assert!(matches!(err, RecipeError::Inconsistent(_)), "{err}");
    }

    #[test]
    fn content_records_are_compact_and_round_trip() {
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame {
                pack: 7,
                offset: i * 1000,
                stored_len: 900,
                len: 300_000,
                codec: Codec::Deflate,
            })
            .collect();
        let content: Vec<BlockRef> = (0..1000u32)
            .map(|i| {
                let (frame, offset) = if i % 100 == 99 {
                    (2, 5)
                } else {
                    (i % 2, (i / 2) * 4096 % 200_000)
                };
                block(&i.to_le_bytes(), Location::Framed { frame, offset })
            })
            .map(|mut b| {
                b.len = 4096;
                b
            })
            .collect();
        let text = encode_content(&content).0;
        assert_eq!(decode_content(&text, &frames, false).unwrap(), content);
        // Contiguous blocks need no location: 1 + 2 + 20 bytes, base64.
        let run: Vec<BlockRef> = (0..1000u32)
            .map(|i| BlockRef {
                len: 4096,
                ..block(
                    &i.to_le_bytes(),
                    Location::Framed {
                        frame: 0,
                        offset: i * 4096,
                    },
                )
            })
            .collect();
        let big = vec![Frame {
            len: 1000 * 4096,
            ..frames[0]
        }];
        let text = encode_content(&run).0;
        assert!(
            text.len() < 1000 * 32,
            "{} bytes for 1000 blocks",
            text.len()
        );
        assert_eq!(decode_content(&text, &big, false).unwrap(), run);
    }

    #[test]
    fn damaged_content_records_are_refused() {
        let r = sample();
        let text = encode_content(&r.content).0;
        assert!(decode_content(&text[..text.len() - 8], &r.frames, false).is_err());
        assert!(decode_content("not base64!", &r.frames, false).is_err());
        assert!(
            decode_content(&text, &[], false).is_err(),
            "frame outside the table"
        );
        use base64::Engine as _;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap();
        raw[0] = 7;
        let bad_flag = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(decode_content(&bad_flag, &r.frames, false).is_err());
    }

    #[test]
    fn block_outside_its_frame_or_table_is_refused() {
        let mut small = sample();
        small.frames[0].len = 9;
        assert!(Recipe::from_json(&small.to_json()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["frames"][0][0] = "../../etc/passwd".into();
        assert!(Recipe::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn runs_of_a_repeated_block_cost_a_few_bytes_and_older_formats_still_parse() {
        // 1 GiB of zeros: 262 144 references to one 4 KiB block.
        let frames = vec![Frame {
            pack: 1,
            offset: 0,
            stored_len: 20,
            len: 4096 + 5,
            codec: Codec::Deflate,
        }];
        let zero = BlockRef {
            len: 4096,
            ..block(
                &[0u8; 4096],
                Location::Framed {
                    frame: 0,
                    offset: 0,
                },
            )
        };
        let tail = block(
            b"tail!",
            Location::Framed {
                frame: 0,
                offset: 4096,
            },
        );
        let mut content = vec![zero; 1 << 18];
        content.push(tail);
        content.push(zero);
        let r = Recipe::raw(
            Digest::of(Algorithm::Sha256, b"zeros"),
            "tar-4096".into(),
            frames,
            content,
        );
        let json = r.to_json();
        assert!(json.len() < 1024, "{} bytes of recipe", json.len());
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(Recipe::from_json(&json).unwrap(), r);
        // Without runs the recipe stays version 2, readable by older guests.
        let v2 = sample().to_json();
        let v: serde_json::Value = serde_json::from_slice(&v2).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(Recipe::from_json(&v2).unwrap(), sample());
        // A repeat record is not valid in version 2.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["version"] = 2.into();
        assert!(Recipe::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn locate_finds_the_block_holding_an_offset() {
        let r = sample();
        assert_eq!(r.locate(0), (0, 0));
        assert_eq!(r.locate(2), (0, 2));
        assert_eq!(r.locate(4), (1, 0));
        assert_eq!(r.locate(9), (2, 1));
        assert_eq!(r.locate(10), (3, 0));
        assert_eq!(r.locate(99), (3, 0));
    }
}
