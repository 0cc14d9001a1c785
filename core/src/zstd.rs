//! Content-aware zstd analysis: a zstd blob (BuildKit's and podman's zstd
//! layers, `skopeo --dest-compress-format zstd`) becomes its decoded content
//! plus correction records that recreate the compressed bytes exactly
//! ([`ZstdRecreator`]), so the content goes into shared blocks like a gzip
//! layer's does.
//!
//! No encoder is modelled: the stream keeps its own structure. What the
//! content determines is left out of the records — a raw block's bytes, an
//! RLE block's run, a compressed block's literals (raw, or Huffman-coded with
//! the block's own table: given the table and the literals the bit stream is
//! unique, so it is re-encoded and checked here). What it does not — frame
//! and block headers, Huffman tree descriptions, the sequences section (the
//! encoder's parse: literal lengths, match lengths, offsets, FSE-coded),
//! skippable frames, checksums — is kept verbatim. The literals of a block
//! are found again in its content from the sequences' literal and match
//! lengths, so offsets are never needed to recreate.
//!
//! Decoding uses the vendored `ruzstd` (`third_party/ruzstd/PATCHED.md`):
//! its literals and sequences decoders, FSE and Huffman tables; the matches
//! are executed here against a window of at most [`ZstdConfig::max_window`]
//! bytes.
//!
//! Events ([`Event`]) are those of the gzip analysis: `ZstdStart`, then
//! `Plain` bytes and `SegmentEnd { corrections }` at block boundaries every
//! [`ZstdConfig::segment_plain`] decoded bytes, then `StreamEnd`. The
//! records of a segment ([`Record`]) refer to the plain bytes of that
//! segment only; Huffman and FSE tables carry over from segment to segment
//! inside a frame, so segments are recreated in order by one recreator.
//!
//! Error policy: anything not analysable (not zstd, a dictionary frame, a
//! window above the limit, corrupt or truncated data, bytes after the last
//! frame) yields a [`ZstdError`], never a panic; the caller stores the blob
//! as it is. The caller verifies the digest of the recreated blob before
//! trusting a recipe built from the events.

use ruzstd::blocks::literals_section::{LiteralsSection, LiteralsSectionType};
use ruzstd::blocks::sequence_section::{Sequence, SequencesHeader};
use ruzstd::decoding::literals_section_decoder::decode_literals;
use ruzstd::decoding::scratch::{FSEScratch, HuffmanScratch};
use ruzstd::decoding::sequence_execution::do_offset_history;
use ruzstd::decoding::sequence_section_decoder::decode_sequences;
use ruzstd::huff0::HuffmanTable;

use crate::deflate::Event;
use crate::varint;

/// The first four bytes of a zstd frame (`0xFD2FB528`, little-endian).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Skippable frames: magic `0x184D2A50..=0x184D2A5F` (zstd:chunked's
/// table of contents lives in one).
const SKIPPABLE_MASK: u32 = 0xffff_fff0;
const SKIPPABLE_MAGIC: u32 = 0x184d_2a50;
const FRAME_MAGIC: u32 = 0xfd2f_b528;
/// RFC 8878 §3.1.1.2.4: no block decodes to more than 128 KiB.
const MAX_BLOCK: usize = 128 * 1024;

/// Whether `prefix` (at least 4 bytes) starts like a zstd frame or a
/// skippable frame.
#[must_use]
pub fn is_zstd(prefix: &[u8]) -> bool {
    prefix.starts_with(&ZSTD_MAGIC)
        || prefix.get(..4).is_some_and(|m| {
            u32::from_le_bytes([m[0], m[1], m[2], m[3]]) & SKIPPABLE_MASK == SKIPPABLE_MAGIC
        })
}

/// Limits and tuning of a [`ZstdAnalyzer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdConfig {
    /// Decoded bytes after which a segment ends (at the next block end).
    pub segment_plain: usize,
    /// Most history kept for matches: a frame whose matches reach further
    /// back (a `--long` window) fails with [`ZstdError::Unsupported`].
    pub max_window: usize,
    /// Largest skippable frame accepted (its bytes are kept verbatim).
    pub max_skippable: usize,
}

impl Default for ZstdConfig {
    fn default() -> Self {
        Self {
            segment_plain: 1 << 20,
            max_window: 64 << 20,
            max_skippable: 16 << 20,
        }
    }
}

/// Why a blob could not be analysed; `E` is the event callback's error.
#[derive(Debug, thiserror::Error)]
pub enum ZstdError<E> {
    /// The input does not start with a zstd frame.
    #[error("not a zstd stream")]
    NotZstd,
    /// Valid zstd this analysis does not take (a dictionary, a window or a
    /// skippable frame above the limits).
    #[error("unsupported zstd stream: {0}")]
    Unsupported(String),
    /// The data is not valid zstd, or bytes follow the last frame.
    #[error("corrupt zstd stream: {0}")]
    Corrupt(String),
    /// The input ended inside a frame.
    #[error("truncated zstd stream")]
    Truncated,
    /// The event callback failed.
    #[error("event consumer failed: {0}")]
    Callback(E),
}

/// Totals of a finished analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZstdSummary {
    /// Frames (skippable ones included).
    pub frames: u64,
    /// Decoded bytes.
    pub plain_bytes: u64,
    /// Correction bytes over all segments.
    pub correction_bytes: u64,
    /// Segments.
    pub segments: u64,
    /// Compressed blocks whose literals were Huffman-coded and re-encoded
    /// exactly (not kept).
    pub reencoded_blocks: u64,
    /// Compressed blocks whose literal bytes had to be kept.
    pub kept_literal_blocks: u64,
}

/// The correction records of a segment, in output order. Encoded as a tag
/// byte and LEB128 varints (`data/FORMAT.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Tag 0: a frame starts; Huffman and FSE tables are reset.
    Frame,
    /// Tag 1: bytes written as they are (headers, checksums, skippable
    /// frames).
    Bytes(Vec<u8>),
    /// Tag 2: the next `n` plain bytes written as they are (a raw block).
    Plain(u64),
    /// Tag 3: the next `n` plain bytes are not written (an RLE block's run;
    /// its byte is in the preceding `Bytes`).
    Skip(u64),
    /// Tag 4: a compressed block decoding to the next `plain` bytes.
    Block {
        /// Decoded bytes of the block.
        plain: u64,
        /// Block header, literals section header and Huffman tree
        /// description, verbatim.
        head: Vec<u8>,
        /// How the literals' bytes are written.
        literals: Literals,
        /// The sequences section, verbatim.
        sequences: Vec<u8>,
    },
}

/// How a compressed block's literal bytes are produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literals {
    /// Mode 0: raw literals, taken from the plain bytes.
    Raw,
    /// Mode 1: Huffman-coded with the block's (or the previous) table,
    /// re-encoded from the plain bytes.
    Huffman,
    /// Mode 2: kept verbatim (an RLE literal, or streams that do not
    /// re-encode).
    Kept(Vec<u8>),
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Frame => out.push(0),
            Record::Bytes(b) => {
                out.push(1);
                put_bytes(out, b);
            }
            Record::Plain(n) => {
                out.push(2);
                varint::put(out, *n);
            }
            Record::Skip(n) => {
                out.push(3);
                varint::put(out, *n);
            }
            Record::Block {
                plain,
                head,
                literals,
                sequences,
            } => {
                out.push(4);
                varint::put(out, *plain);
                put_bytes(out, head);
                match literals {
                    Literals::Raw => out.push(0),
                    Literals::Huffman => out.push(1),
                    Literals::Kept(b) => {
                        out.push(2);
                        put_bytes(out, b);
                    }
                }
                put_bytes(out, sequences);
            }
        }
    }

    /// Decodes the record at `*pos`.
    fn decode(bytes: &[u8], pos: &mut usize) -> Result<Self, RecreateError> {
        let tag = take(bytes, pos, 1)?[0];
        Ok(match tag {
            0 => Record::Frame,
            1 => Record::Bytes(get_bytes(bytes, pos)?.to_vec()),
            2 => Record::Plain(get_varint(bytes, pos)?),
            3 => Record::Skip(get_varint(bytes, pos)?),
            4 => {
                let plain = get_varint(bytes, pos)?;
                let head = get_bytes(bytes, pos)?.to_vec();
                let literals = match take(bytes, pos, 1)?[0] {
                    0 => Literals::Raw,
                    1 => Literals::Huffman,
                    2 => Literals::Kept(get_bytes(bytes, pos)?.to_vec()),
                    m => return Err(RecreateError(format!("unknown literals mode {m}"))),
                };
                let sequences = get_bytes(bytes, pos)?.to_vec();
                Record::Block {
                    plain,
                    head,
                    literals,
                    sequences,
                }
            }
            t => return Err(RecreateError(format!("unknown record tag {t}"))),
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint::put(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn take<'b>(bytes: &'b [u8], pos: &mut usize, n: usize) -> Result<&'b [u8], RecreateError> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| RecreateError("correction records cut short".into()))?;
    let b = &bytes[*pos..end];
    *pos = end;
    Ok(b)
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, RecreateError> {
    varint::get(bytes, pos).ok_or_else(|| RecreateError("correction varint cut short".into()))
}

fn get_bytes<'b>(bytes: &'b [u8], pos: &mut usize) -> Result<&'b [u8], RecreateError> {
    let n = usize::try_from(get_varint(bytes, pos)?)
        .map_err(|_| RecreateError("correction length too large".into()))?;
    take(bytes, pos, n)
}

/// The Huffman and FSE tables of a frame, which later blocks may repeat.
struct Tables {
    huf: HuffmanScratch,
    fse: FSEScratch,
    sequences: Vec<Sequence>,
}

impl Tables {
    fn new() -> Self {
        Self {
            huf: HuffmanScratch::new(),
            fse: FSEScratch::new(),
            sequences: Vec::new(),
        }
    }

    /// Decodes a sequences section (header included) into `self.sequences`,
    /// updating the FSE tables as a decoder does.
    fn sequences(&mut self, section: &[u8]) -> Result<(), String> {
        self.sequences.clear();
        let mut header = SequencesHeader::new();
        let n = header
            .parse_from_header(section)
            .map_err(|e| format!("sequences header: {e}"))? as usize;
        if header.num_sequences == 0 {
            return if section.len() == n {
                Ok(())
            } else {
                Err("bytes after an empty sequences section".into())
            };
        }
        decode_sequences(&header, &section[n..], &mut self.fse, &mut self.sequences)
            .map_err(|e| format!("sequences: {e}"))?;
        if self.sequences.len() != header.num_sequences as usize {
            return Err("sequence count differs from the header".into());
        }
        Ok(())
    }

    /// The literals of a block: the plain bytes that no match covers, in
    /// order, given its decoded sequences.
    fn gather_literals(&self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        let mut pos = 0usize;
        for s in &self.sequences {
            let lit_end = pos
                .checked_add(s.ll as usize)
                .filter(|&e| e <= plain.len())
                .ok_or("sequences run past the block")?;
            out.extend_from_slice(&plain[pos..lit_end]);
            pos = lit_end
                .checked_add(s.ml as usize)
                .filter(|&e| e <= plain.len())
                .ok_or("sequences run past the block")?;
        }
        out.extend_from_slice(&plain[pos..]);
        Ok(())
    }
}

/// Splits a compressed block's content into its literals section header
/// length, Huffman tree description length and literal payload length.
struct BlockParts {
    section: LiteralsSection,
    header_len: usize,
    tree_len: usize,
    /// Literal bytes after the tree description (raw literals, the RLE byte,
    /// or jump table plus Huffman streams).
    payload_len: usize,
}

fn split_block(content: &[u8]) -> Result<BlockParts, String> {
    let mut section = LiteralsSection::new();
    let header_len = section
        .parse_from_header(content)
        .map_err(|e| format!("literals header: {e}"))? as usize;
    let total = match section.ls_type {
        LiteralsSectionType::Raw => section.regenerated_size as usize,
        LiteralsSectionType::RLE => 1,
        LiteralsSectionType::Compressed | LiteralsSectionType::Treeless => {
            section
                .compressed_size
                .ok_or("compressed literals without a size")? as usize
        }
    };
    if content.len() < header_len + total {
        return Err("literals section runs past the block".into());
    }
    let tree_len = if matches!(section.ls_type, LiteralsSectionType::Compressed) {
        let first = *content.get(header_len).ok_or("missing Huffman tree")?;
        let len = if first < 128 {
            1 + first as usize
        } else {
            1 + (first as usize - 127).div_ceil(2)
        };
        if len > total {
            return Err("Huffman tree runs past the literals".into());
        }
        len
    } else {
        0
    };
    Ok(BlockParts {
        header_len,
        tree_len,
        payload_len: total - tree_len,
        section,
    })
}

/// Re-encodes `literals` with `table` as zstd writes Huffman-coded literals:
/// one stream, or four (`(n + 3) / 4` literals each, the last taking the
/// rest) behind a jump table of the first three streams' sizes. `None` when
/// a literal has no code or a stream does not fit the jump table.
fn huffman_encode(table: &HuffmanTable, literals: &[u8], four: bool) -> Option<Vec<u8>> {
    let max = table.max_num_bits;
    let mut codes = [(0u32, 0u8); 256];
    for (i, (symbol, bits)) in table.decode_entries().enumerate() {
        if bits > 0 && bits <= max && codes[symbol as usize].1 == 0 {
            codes[symbol as usize] = ((i >> (max - bits)) as u32, bits);
        }
    }
    let mut out = Vec::with_capacity(literals.len());
    if !four {
        encode_stream(&codes, literals, &mut out)?;
        return Some(out);
    }
    let seg = literals.len().div_ceil(4);
    out.extend_from_slice(&[0; 6]);
    let mut sizes = [0usize; 3];
    for (i, part) in literals.chunks(seg.max(1)).enumerate().take(4) {
        let before = out.len();
        encode_stream(&codes, part, &mut out)?;
        if i < 3 {
            sizes[i] = out.len() - before;
        }
    }
    // Fewer than four chunks (fewer than four literals): empty streams.
    let chunks = literals.chunks(seg.max(1)).count();
    for _ in chunks..4 {
        encode_stream(&codes, &[], &mut out)?;
    }
    for (i, s) in sizes.iter().enumerate() {
        let s = u16::try_from(*s).ok()?;
        out[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
    }
    Some(out)
}

/// One Huffman stream: the decoder reads it backwards, so the literals are
/// written last to first, then a 1 bit ends the stream and zeros pad the
/// last byte.
fn encode_stream(codes: &[(u32, u8); 256], literals: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in literals.iter().rev() {
        let (code, len) = codes[b as usize];
        if len == 0 {
            return None;
        }
        acc |= u64::from(code) << bits;
        bits += u32::from(len);
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    acc |= 1 << bits;
    out.push(acc as u8);
    if bits == 8 {
        out.push((acc >> 8) as u8);
    }
    Some(())
}

/// Where the parser is between frames and blocks.
enum State {
    /// Expecting a frame (or the end).
    Top,
    /// Inside a frame, expecting a block header; `checksum` says whether
    /// the frame ends with one.
    Blocks { checksum: bool },
    /// Expecting a frame's 4-byte checksum.
    Checksum,
}

/// Streaming analysis of a zstd blob into [`Event`]s.
pub struct ZstdAnalyzer {
    cfg: ZstdConfig,
    state: State,
    /// Input received and not yet parsed.
    pending: Vec<u8>,
    /// Decoded bytes of the current frame still in reach of a match.
    history: Vec<u8>,
    /// How much of `history` a match may reach: the frame's window, capped.
    keep: usize,
    /// The largest block of the frame: min(window, 128 KiB).
    max_block: usize,
    offsets: [u32; 3],
    tables: Tables,
    literals: Vec<u8>,
    /// Encoded records of the segment in progress.
    segment: Vec<u8>,
    segment_plain: usize,
    summary: ZstdSummary,
    started: bool,
}

impl ZstdAnalyzer {
    /// An analyzer expecting the start of a zstd blob.
    #[must_use]
    pub fn new(cfg: ZstdConfig) -> Self {
        Self {
            cfg,
            state: State::Top,
            pending: Vec::new(),
            history: Vec::new(),
            keep: 0,
            max_block: MAX_BLOCK,
            offsets: [1, 4, 8],
            tables: Tables::new(),
            literals: Vec::new(),
            segment: Vec::new(),
            segment_plain: 0,
            summary: ZstdSummary::default(),
            started: false,
        }
    }

    /// Takes the next input bytes, emitting the events they complete.
    ///
    /// # Errors
    /// [`ZstdError`] as soon as the input is found not analysable, or the
    /// callback fails.
    pub fn feed<E>(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), ZstdError<E>> {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        let result = loop {
            match self.step(pos, out) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..pos);
        result
    }

    /// Ends the input: checks that it ended between frames and emits the
    /// last segment and `StreamEnd`.
    ///
    /// # Errors
    /// [`ZstdError::Truncated`] inside a frame, [`ZstdError::NotZstd`] for
    /// an empty input; the callback's error.
    pub fn finish<E>(
        mut self,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<ZstdSummary, ZstdError<E>> {
        if !self.started {
            return Err(ZstdError::NotZstd);
        }
        if !matches!(self.state, State::Top) || !self.pending.is_empty() {
            return Err(ZstdError::Truncated);
        }
        self.end_segment(out)?;
        out(Event::StreamEnd).map_err(ZstdError::Callback)?;
        Ok(self.summary)
    }

    fn record(&mut self, r: &Record) {
        r.encode(&mut self.segment);
    }

    fn end_segment<E>(
        &mut self,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), ZstdError<E>> {
        if self.segment.is_empty() && self.segment_plain == 0 {
            return Ok(());
        }
        let corrections = std::mem::take(&mut self.segment);
        self.summary.correction_bytes += corrections.len() as u64;
        self.summary.segments += 1;
        self.segment_plain = 0;
        out(Event::SegmentEnd { corrections }).map_err(ZstdError::Callback)
    }

    /// Parses one unit (frame header, skippable frame, block, checksum) at
    /// `pos` of `pending`; the bytes used, or `None` when more input is
    /// needed.
    fn step<E>(
        &mut self,
        pos: usize,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<Option<usize>, ZstdError<E>> {
        let avail = self.pending.len() - pos;
        match self.state {
            State::Top => {
                if avail < 4 {
                    return Ok(None);
                }
                let buf = &self.pending[pos..];
                let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let skippable = magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC;
                if (magic == FRAME_MAGIC || skippable) && !self.started {
                    self.started = true;
                    out(Event::ZstdStart).map_err(ZstdError::Callback)?;
                }
                if magic == FRAME_MAGIC {
                    self.frame_header(pos)
                } else if skippable {
                    self.skippable(pos)
                } else if self.started {
                    Err(ZstdError::Corrupt("bytes after the last frame".into()))
                } else {
                    Err(ZstdError::NotZstd)
                }
            }
            State::Blocks { checksum } => self.block(pos, checksum, out),
            State::Checksum => {
                if avail < 4 {
                    return Ok(None);
                }
                let sum = self.pending[pos..pos + 4].to_vec();
                self.record(&Record::Bytes(sum));
                self.state = State::Top;
                Ok(Some(4))
            }
        }
    }

    fn frame_header<E>(&mut self, pos: usize) -> Result<Option<usize>, ZstdError<E>> {
        let buf = &self.pending[pos..];
        let Some(&fhd) = buf.get(4) else {
            return Ok(None);
        };
        let fcs_flag = fhd >> 6;
        let single = fhd & 0x20 != 0;
        if fhd & 0x08 != 0 {
            return Err(ZstdError::Corrupt("reserved frame header bit set".into()));
        }
        let checksum = fhd & 0x04 != 0;
        let dict_len = [0usize, 1, 2, 4][(fhd & 3) as usize];
        let fcs_len = match fcs_flag {
            0 => usize::from(single),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let len = 5 + usize::from(!single) + dict_len + fcs_len;
        if buf.len() < len {
            return Ok(None);
        }
        let mut at = 5;
        let mut window = 0u64;
        if !single {
            let wd = buf[at];
            at += 1;
            let base = 1u64 << (10 + (wd >> 3));
            window = base + (base / 8) * u64::from(wd & 7);
        }
        let mut dict = 0u64;
        for (i, b) in buf[at..at + dict_len].iter().enumerate() {
            dict |= u64::from(*b) << (8 * i);
        }
        at += dict_len;
        if dict != 0 {
            return Err(ZstdError::Unsupported(format!(
                "frame needs dictionary {dict}"
            )));
        }
        if single {
            let mut fcs = 0u64;
            for (i, b) in buf[at..at + fcs_len].iter().enumerate() {
                fcs |= u64::from(*b) << (8 * i);
            }
            window = if fcs_len == 2 { fcs + 256 } else { fcs };
        }
        let header = buf[..len].to_vec();
        self.record(&Record::Frame);
        self.record(&Record::Bytes(header));
        self.summary.frames += 1;
        self.keep = usize::try_from(window)
            .unwrap_or(usize::MAX)
            .min(self.cfg.max_window);
        self.max_block = usize::try_from(window).unwrap_or(usize::MAX).min(MAX_BLOCK);
        self.history.clear();
        self.offsets = [1, 4, 8];
        self.tables = Tables::new();
        self.state = State::Blocks { checksum };
        Ok(Some(len))
    }

    fn skippable<E>(&mut self, pos: usize) -> Result<Option<usize>, ZstdError<E>> {
        let buf = &self.pending[pos..];
        if buf.len() < 8 {
            return Ok(None);
        }
        let size = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if size > self.cfg.max_skippable {
            return Err(ZstdError::Unsupported(format!(
                "skippable frame of {size} bytes (limit {})",
                self.cfg.max_skippable
            )));
        }
        if buf.len() < 8 + size {
            return Ok(None);
        }
        let bytes = buf[..8 + size].to_vec();
        self.record(&Record::Bytes(bytes));
        self.summary.frames += 1;
        Ok(Some(8 + size))
    }

    fn block<E>(
        &mut self,
        pos: usize,
        checksum: bool,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<Option<usize>, ZstdError<E>> {
        let buf = &self.pending[pos..];
        if buf.len() < 3 {
            return Ok(None);
        }
        let h = u32::from(buf[0]) | u32::from(buf[1]) << 8 | u32::from(buf[2]) << 16;
        let last = h & 1 != 0;
        let kind = (h >> 1) & 3;
        let size = (h >> 3) as usize;
        if size > self.max_block {
            return Err(ZstdError::Corrupt(format!(
                "block of {size} bytes (at most {})",
                self.max_block
            )));
        }
        let used = match kind {
            0 => 3 + size,
            1 => 4,
            2 => 3 + size,
            _ => return Err(ZstdError::Corrupt("reserved block type".into())),
        };
        if buf.len() < used {
            return Ok(None);
        }
        let start = self.history.len();
        match kind {
            0 => {
                let header = buf[..3].to_vec();
                self.history.extend_from_slice(&buf[3..3 + size]);
                self.record(&Record::Bytes(header));
                self.record(&Record::Plain(size as u64));
            }
            1 => {
                let header = buf[..4].to_vec();
                let byte = buf[3];
                self.history.resize(start + size, byte);
                self.record(&Record::Bytes(header));
                self.record(&Record::Skip(size as u64));
            }
            _ => {
                let block = buf[..3 + size].to_vec();
                self.compressed(&block).map_err(ZstdError::Corrupt)?;
            }
        }
        let plain = self.history.len() - start;
        self.summary.plain_bytes += plain as u64;
        self.segment_plain += plain;
        if plain > 0 {
            out(Event::Plain(&self.history[start..])).map_err(ZstdError::Callback)?;
        }
        self.trim_history();
        if last {
            self.state = if checksum {
                State::Checksum
            } else {
                State::Top
            };
        }
        if self.segment_plain >= self.cfg.segment_plain {
            self.end_segment(out)?;
        }
        Ok(Some(used))
    }

    /// Decodes a compressed block (header included) onto the history and
    /// records how to recreate it.
    fn compressed(&mut self, block: &[u8]) -> Result<(), String> {
        let content = &block[3..];
        let parts = split_block(content)?;
        let lit_end = parts.header_len + parts.tree_len + parts.payload_len;
        self.literals.clear();
        decode_literals(
            &parts.section,
            &mut self.tables.huf,
            &content[parts.header_len..lit_end],
            &mut self.literals,
        )
        .map_err(|e| format!("literals: {e}"))?;
        if self.literals.len() != parts.section.regenerated_size as usize {
            return Err("literals differ from their stated size".into());
        }
        let sequences = &content[lit_end..];
        self.tables.sequences(sequences)?;
        let start = self.history.len();
        self.execute()?;
        if self.history.len() - start > self.max_block {
            return Err("block decodes past the block size limit".into());
        }
        let payload = &content[parts.header_len + parts.tree_len..lit_end];
        let literals = match parts.section.ls_type {
            LiteralsSectionType::Raw => Literals::Raw,
            LiteralsSectionType::RLE => Literals::Kept(payload.to_vec()),
            LiteralsSectionType::Compressed | LiteralsSectionType::Treeless => {
                let four = parts.section.num_streams == Some(4);
                if huffman_encode(&self.tables.huf.table, &self.literals, four).as_deref()
                    == Some(payload)
                {
                    self.summary.reencoded_blocks += 1;
                    Literals::Huffman
                } else {
                    self.summary.kept_literal_blocks += 1;
                    Literals::Kept(payload.to_vec())
                }
            }
        };
        let record = Record::Block {
            plain: (self.history.len() - start) as u64,
            head: block[..3 + parts.header_len + parts.tree_len].to_vec(),
            literals,
            sequences: sequences.to_vec(),
        };
        self.record(&record);
        Ok(())
    }

    /// Executes the block's sequences and trailing literals onto the
    /// history (RFC 8878 §3.1.1.4, repeat offsets included).
    fn execute(&mut self) -> Result<(), String> {
        let mut lit = 0usize;
        for s in &self.tables.sequences {
            let lit_end = lit
                .checked_add(s.ll as usize)
                .filter(|&e| e <= self.literals.len())
                .ok_or("sequences use more literals than the block has")?;
            self.history.extend_from_slice(&self.literals[lit..lit_end]);
            lit = lit_end;
            let offset = do_offset_history(s.of, s.ll, &mut self.offsets) as usize;
            if offset == 0 || offset > self.history.len() || offset > self.keep {
                return Err(format!(
                    "match offset {offset} before the start of the frame or the kept window"
                ));
            }
            let ml = s.ml as usize;
            if ml > MAX_BLOCK {
                return Err("match longer than a block".into());
            }
            let from = self.history.len() - offset;
            if offset >= ml {
                self.history.extend_from_within(from..from + ml);
            } else {
                for i in 0..ml {
                    let b = self.history[from + i];
                    self.history.push(b);
                }
            }
        }
        self.history.extend_from_slice(&self.literals[lit..]);
        Ok(())
    }

    /// Drops history no match can reach any more, in large steps.
    fn trim_history(&mut self) {
        if self.history.len() > self.keep + (4 << 20) {
            let cut = self.history.len() - self.keep;
            self.history.drain(..cut);
        }
    }
}

/// Why a segment could not be recreated.
#[derive(Debug, thiserror::Error)]
#[error("cannot recreate zstd segment: {0}")]
pub struct RecreateError(String);

/// Recreates a zstd blob segment by segment from the `Plain` bytes and
/// corrections of its [`Event`]s.
pub struct ZstdRecreator {
    tables: Tables,
    literals: Vec<u8>,
}

impl Default for ZstdRecreator {
    fn default() -> Self {
        Self::new()
    }
}

impl ZstdRecreator {
    /// A recreator positioned at the start of a blob.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tables: Tables::new(),
            literals: Vec::new(),
        }
    }

    /// Recreates the next segment from its plain bytes and corrections.
    ///
    /// # Errors
    /// [`RecreateError`] when the corrections are malformed or do not fit
    /// the plain bytes. The output is only as good as its inputs: the caller
    /// verifies the digest of the whole recreated blob.
    pub fn segment(&mut self, plain: &[u8], corrections: &[u8]) -> Result<Vec<u8>, RecreateError> {
        let mut out = Vec::with_capacity(plain.len() / 2);
        let mut pos = 0usize;
        let mut cur = 0usize;
        let advance = |cur: &mut usize, n: u64| -> Result<std::ops::Range<usize>, RecreateError> {
            let end = usize::try_from(n)
                .ok()
                .and_then(|n| cur.checked_add(n))
                .filter(|&e| e <= plain.len())
                .ok_or_else(|| RecreateError("records need more plain bytes".into()))?;
            let r = *cur..end;
            *cur = end;
            Ok(r)
        };
        while pos < corrections.len() {
            match Record::decode(corrections, &mut pos)? {
                Record::Frame => self.tables = Tables::new(),
                Record::Bytes(b) => out.extend_from_slice(&b),
                Record::Plain(n) => out.extend_from_slice(&plain[advance(&mut cur, n)?]),
                Record::Skip(n) => {
                    advance(&mut cur, n)?;
                }
                Record::Block {
                    plain: n,
                    head,
                    literals,
                    sequences,
                } => {
                    let range = advance(&mut cur, n)?;
                    self.block(&plain[range], &head, &literals, &sequences, &mut out)
                        .map_err(RecreateError)?;
                }
            }
        }
        if cur != plain.len() {
            return Err(RecreateError("plain bytes left over".into()));
        }
        Ok(out)
    }

    fn block(
        &mut self,
        plain: &[u8],
        head: &[u8],
        literals: &Literals,
        sequences: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let content = head.get(3..).ok_or("block head cut short")?;
        let mut section = LiteralsSection::new();
        let header_len = section
            .parse_from_header(content)
            .map_err(|e| format!("literals header: {e}"))? as usize;
        if matches!(section.ls_type, LiteralsSectionType::Compressed) {
            let tree = &content[header_len.min(content.len())..];
            let used = self
                .tables
                .huf
                .table
                .build_decoder(tree)
                .map_err(|e| format!("Huffman tree: {e}"))? as usize;
            if used != tree.len() {
                return Err("Huffman tree length differs from the head".into());
            }
        }
        self.tables.sequences(sequences)?;
        out.extend_from_slice(head);
        match literals {
            Literals::Kept(b) => out.extend_from_slice(b),
            Literals::Raw | Literals::Huffman => {
                let mut lits = std::mem::take(&mut self.literals);
                self.tables.gather_literals(plain, &mut lits)?;
                if lits.len() != section.regenerated_size as usize {
                    return Err("gathered literals differ from their stated size".into());
                }
                if matches!(literals, Literals::Raw) {
                    out.extend_from_slice(&lits);
                } else {
                    let four = section.num_streams == Some(4);
                    let coded = huffman_encode(&self.tables.huf.table, &lits, four)
                        .ok_or("literals do not Huffman-encode")?;
                    out.extend_from_slice(&coded);
                }
                self.literals = lits;
            }
        }
        out.extend_from_slice(sequences);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::test_support::{seeded_bytes, texty_bytes, zstd_of};

    /// What an analysis produced, owned.
    struct Analysed {
        plain: Vec<u8>,
        segments: Vec<(Vec<u8>, Vec<u8>)>,
        summary: ZstdSummary,
    }

    fn analyse(blob: &[u8], cfg: ZstdConfig, feed: usize) -> Result<Analysed, String> {
        let mut a = ZstdAnalyzer::new(cfg);
        let mut plain = Vec::new();
        let mut seg_plain = Vec::new();
        let mut segments = Vec::new();
        let mut started = false;
        let mut ended = false;
        let mut take = |ev: Event<'_>| -> Result<(), Infallible> {
            match ev {
                Event::ZstdStart => started = true,
                Event::Plain(b) => {
                    plain.extend_from_slice(b);
                    seg_plain.extend_from_slice(b);
                }
                Event::SegmentEnd { corrections } => {
                    segments.push((std::mem::take(&mut seg_plain), corrections));
                }
                Event::StreamEnd => ended = true,
                other => panic!("unexpected event {other:?}"),
            }
            Ok(())
        };
        for piece in blob.chunks(feed) {
            a.feed(piece, &mut take).map_err(|e| e.to_string())?;
        }
        let summary = a.finish(&mut take).map_err(|e| e.to_string())?;
        assert!(started && ended && seg_plain.is_empty());
        Ok(Analysed {
            plain,
            segments,
            summary,
        })
    }

    fn recreate(a: &Analysed) -> Vec<u8> {
        let mut r = ZstdRecreator::new();
        let mut out = Vec::new();
        for (plain, corr) in &a.segments {
            out.extend(r.segment(plain, corr).unwrap());
        }
        out
    }

    /// Analyses, checks the decoded content and the exact recreation.
    fn round_trip(blob: &[u8], content: &[u8]) -> ZstdSummary {
        let cfg = ZstdConfig {
            segment_plain: 200 << 10,
            ..ZstdConfig::default()
        };
        let a = analyse(blob, cfg, 70_001).unwrap();
        assert_eq!(a.plain.len(), content.len());
        assert!(a.plain == content, "decoded content differs");
        assert!(recreate(&a) == blob, "recreation differs");
        a.summary
    }

    fn zstd_level(data: &[u8], level: i32) -> Vec<u8> {
        zstd::bulk::compress(data, level).unwrap()
    }

    #[test]
    fn libzstd_streams_of_every_level_are_recreated_exactly() {
        // Text (mostly matches) and skewed noise (Huffman-coded literals).
        let mut data = texty_bytes(7, 2 << 20);
        data.extend(
            seeded_bytes(17, 1 << 20)
                .iter()
                .map(|b| b'a' + (b & (b >> 4)) % 20),
        );
        for level in [-5, 1, 3, 9, 19] {
            let blob = zstd_level(&data, level);
            let s = round_trip(&blob, &data);
            let share = s.correction_bytes as f64 / blob.len() as f64;
            // Negative levels write raw literals.
            assert!(
                level < 0 || s.reencoded_blocks > 0,
                "level {level}: none re-encoded"
            );
            assert_eq!(s.kept_literal_blocks, 0, "level {level}");
            // The literals are what the content gives back: the corrections
            // are the rest of the stream (on this very repetitive text, mostly
            // sequences).
            eprintln!(
                "level {level}: corrections {share:.3} of {} bytes",
                blob.len()
            );
            assert!(
                share < 1.0,
                "level {level}: corrections {share:.3} of the blob"
            );
        }
    }

    #[test]
    fn ruzstd_streams_round_trip() {
        let mut data = texty_bytes(12, 600_000);
        data.extend(seeded_bytes(13, 300_000));
        let s = round_trip(&zstd_of(&data), &data);
        assert!(s.plain_bytes == data.len() as u64 && s.frames == 1);
    }

    #[test]
    fn streamed_frames_with_checksums_and_skippable_frames_round_trip() {
        let data = texty_bytes(11, 1 << 20);
        let mut blob = Vec::new();
        // A skippable frame first and between frames, as zstd:chunked does.
        blob.extend_from_slice(&0x184d_2a5eu32.to_le_bytes());
        blob.extend_from_slice(&5u32.to_le_bytes());
        blob.extend_from_slice(b"hello");
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut enc, &data[..600_000]).unwrap();
        blob.extend(enc.finish().unwrap());
        blob.extend_from_slice(&0x184d_2a50u32.to_le_bytes());
        blob.extend_from_slice(&0u32.to_le_bytes());
        blob.extend(zstd_level(&data[600_000..], 1));
        // An empty frame.
        blob.extend(zstd_level(b"", 3));
        let s = round_trip(&blob, &data);
        assert_eq!(s.frames, 5);
    }

    #[test]
    fn incompressible_and_repetitive_content_round_trip() {
        let noise = seeded_bytes(5, 400_000);
        round_trip(&zstd_level(&noise, 3), &noise);
        let runs = vec![b'a'; 700_000];
        round_trip(&zstd_level(&runs, 3), &runs);
        let mut mixed = noise[..1000].to_vec();
        mixed.extend(vec![0u8; 300_000]);
        mixed.extend_from_slice(&noise);
        round_trip(&zstd_level(&mixed, 19), &mixed);
    }

    #[test]
    fn non_zstd_truncated_corrupt_and_trailing_input_are_errors() {
        let data = texty_bytes(3, 300_000);
        let blob = zstd_level(&data, 3);
        let cfg = ZstdConfig::default();
        assert!(analyse(b"\x1f\x8b\x08\0", cfg, 10).is_err());
        assert!(analyse(b"", cfg, 10).is_err());
        for cut in [1, 4, 6, blob.len() / 2, blob.len() - 1] {
            assert!(analyse(&blob[..cut], cfg, 4096).is_err(), "cut at {cut}");
        }
        let mut trailing = blob.clone();
        trailing.extend_from_slice(b"garbage!");
        assert!(analyse(&trailing, cfg, 4096).is_err());
        assert!(is_zstd(&blob) && !is_zstd(b"\x1f\x8b\x08\0"));
        // Flipped bytes: an error or a different decoding, never a panic;
        // whatever decodes must recreate the damaged bytes exactly.
        let picks = seeded_bytes(9, 800);
        for p in picks.chunks(4) {
            let mut bad = blob.clone();
            let i = 4 + usize::from(u16::from_le_bytes([p[0], p[1]])) * 7 % (bad.len() - 4);
            bad[i] ^= 1 << (p[2] % 8);
            if let Ok(a) = analyse(&bad, cfg, 65_536) {
                assert!(recreate(&a) == bad);
            }
        }
    }

    #[test]
    fn a_dictionary_frame_or_a_window_above_the_limit_is_unsupported() {
        let data = texty_bytes(4, 200_000);
        let dict = zstd::dict::from_continuous(&data, &[2000; 100], 4096).unwrap();
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let blob = c.compress(&data).unwrap();
        let Err(err) = analyse(&blob, ZstdConfig::default(), 4096) else {
            panic!("a dictionary frame was analysed");
        };
        assert!(err.contains("dictionary"), "{err}");
        let small = ZstdConfig {
            max_window: 1024,
            ..ZstdConfig::default()
        };
        let Err(err) = analyse(&zstd_level(&data, 3), small, 4096) else {
            panic!("a frame reaching past the window limit was analysed");
        };
        assert!(err.contains("kept window"), "{err}");
    }

    #[test]
    fn damaged_corrections_are_errors_never_panics() {
        let data = texty_bytes(8, 500_000);
        let blob = zstd_level(&data, 3);
        let a = analyse(&blob, ZstdConfig::default(), 65_536).unwrap();
        let (plain, corr) = &a.segments[0];
        let picks = seeded_bytes(2, 900);
        for p in picks.chunks(3) {
            let mut bad = corr.clone();
            let i = usize::from(u16::from_le_bytes([p[0], p[1]])) * 13 % bad.len();
            bad[i] = p[2];
            let _ = ZstdRecreator::new().segment(plain, &bad);
            let _ = ZstdRecreator::new().segment(&plain[..plain.len() / 2], corr);
        }
        assert!(ZstdRecreator::new()
            .segment(plain, &corr[..corr.len() - 1])
            .is_err());
    }
}
