//! Block storage in pack files, and the index that finds a block by SHA-1.
//!
//! - `blocks/packs/<16 hex>.pack`: frames, one after the other. A frame is
//!   up to [`FRAME_TARGET`] bytes of consecutive new blocks compressed
//!   together with Brotli (quality 7, 4 MiB window; by the host's `frames`
//!   encoder, beside the guest), or stored as they are when that does not
//!   shrink them. Measured on 60 MB of a Debian rootfs
//!   tar: Brotli q7 in 1 MiB frames keeps 0.349 of the bytes, DEFLATE level 6
//!   in 64 KiB frames 0.416 (DEFLATE frames of earlier stores still read).
//!   Recipes name a block by pack, frame offset and offset in the
//!   decompressed frame, so reading needs no index.
//! - `blocks/index/<3 hex>`: 4,096 shards of the block index, each a sorted
//!   array of fixed [`RECORD_LEN`]-byte records (SHA-1 first). A lookup is a
//!   binary search of one shard: about 12 reads at 20 million blocks.
//!
//! Crash safety: a pack is written under a `.tmp-` name, fsynced and renamed;
//! only then are index shards rewritten (each temp + fsync + rename), and only
//! then does a recipe name the pack. A crash before the rename leaves a temp
//! file (removed by the next conversion); after it, at worst a pack whose
//! blocks are not indexed (space that a later garbage collection reclaims,
//! never a wrong byte: a recipe is committed only after the blob it describes
//! was rebuilt from the packs and its digest matched).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::rc::Rc;

use crate::bindings::blockreg::registry::frames;
use crate::block::BlockId;
use crate::layout::Layout;
use crate::objects::HostObjects;
use crate::recipe::{pack_name, Codec, Frame};
use crate::store::write_atomic;

/// Frames close once they hold this many uncompressed bytes.
pub const FRAME_TARGET: usize = 1024 * 1024;
/// Largest frame a reader accepts: a frame closes once it reaches
/// [`FRAME_TARGET`], so it holds at most that plus one block (the host's
/// `frames` import has the same limit).
const MAX_FRAME_BYTES: usize = 16 * FRAME_TARGET;
/// Brotli quality and window (log2) for new frames.
const BROTLI_QUALITY: u8 = 7;
const BROTLI_WINDOW: u8 = 22;
/// Bytes per index record: sha1 20, pack 8, frame offset 8, stored length 4,
/// frame length 4, codec 1, reserved 3, offset in frame 4, block length 4.
pub const RECORD_LEN: usize = 56;
/// Shards of the block index.
pub const SHARDS: usize = 4096;

/// Where a stored block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub frame: Frame,
    pub offset: u32,
    pub len: u32,
}

pub(crate) fn shard_of(id: &BlockId) -> usize {
    let b = id.as_bytes();
    (usize::from(b[0]) << 4) | usize::from(b[1] >> 4)
}

fn encode_record(id: &BlockId, at: &Located) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..20].copy_from_slice(id.as_bytes());
    r[20..28].copy_from_slice(&at.frame.pack.to_le_bytes());
    r[28..36].copy_from_slice(&at.frame.offset.to_le_bytes());
    r[36..40].copy_from_slice(&at.frame.stored_len.to_le_bytes());
    r[40..44].copy_from_slice(&at.frame.len.to_le_bytes());
    r[44] = at.frame.codec.to_u8();
    r[48..52].copy_from_slice(&at.offset.to_le_bytes());
    r[52..56].copy_from_slice(&at.len.to_le_bytes());
    r
}

fn u32_at(r: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(r: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"))
}

fn decode_record(r: &[u8]) -> io::Result<(BlockId, Located)> {
    let id = BlockId::from_bytes(r[..20].try_into().expect("20 bytes"));
    let codec = Codec::from_u8(r[44])
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "index record with unknown codec"))?;
    let at = Located {
        frame: Frame {
            pack: u64_at(r, 20),
            offset: u64_at(r, 28),
            stored_len: u32_at(r, 36),
            len: u32_at(r, 40),
            codec,
        },
        offset: u32_at(r, 48),
        len: u32_at(r, 52),
    };
    Ok((id, at))
}

/// Totals of the block index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexTotals {
    pub blocks: u64,
    pub bytes: u64,
}

/// The block index and the packs of a store.
#[derive(Debug)]
pub struct Packs {
    layout: Layout,
    open_shards: HashMap<usize, Option<File>>,
}

impl Packs {
    pub fn new(layout: &Layout) -> Self {
        Self {
            layout: layout.clone(),
            open_shards: HashMap::new(),
        }
    }

    fn packs_dir(&self) -> PathBuf {
        self.layout.packs()
    }

    fn shard_path(&self, shard: usize) -> PathBuf {
        self.layout.index_shard(shard)
    }

    /// Path of a pack file.
    pub fn pack_path(&self, pack: u64) -> PathBuf {
        self.layout.pack(pack)
    }

    /// Finds a block by SHA-1.
    ///
    /// # Errors
    /// I/O errors reading the shard, or a damaged shard.
    pub fn lookup(&mut self, id: &BlockId) -> io::Result<Option<Located>> {
        let shard = shard_of(id);
        if self.open_shards.len() > 512 {
            self.open_shards.clear();
        }
        if !self.open_shards.contains_key(&shard) {
            let f = match File::open(self.shard_path(shard)) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            self.open_shards.insert(shard, f);
        }
        let Some(Some(file)) = self.open_shards.get_mut(&shard) else {
            return Ok(None);
        };
        let n = file.metadata()?.len() / RECORD_LEN as u64;
        let (mut lo, mut hi) = (0u64, n);
        let mut rec = [0u8; RECORD_LEN];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            file.seek(SeekFrom::Start(mid * RECORD_LEN as u64))?;
            file.read_exact(&mut rec)?;
            match rec[..20].cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return decode_record(&rec).map(|(_, at)| Some(at)),
            }
        }
        Ok(None)
    }

    /// Adds records to the index, shard by shard (each rewrite atomic).
    ///
    /// # Errors
    /// I/O errors; shards already rewritten stay valid.
    pub fn index(&mut self, records: &[(BlockId, Located)]) -> io::Result<()> {
        let mut by_shard: HashMap<usize, Vec<[u8; RECORD_LEN]>> = HashMap::new();
        for (id, at) in records {
            by_shard
                .entry(shard_of(id))
                .or_default()
                .push(encode_record(id, at));
        }
        let mut shards: Vec<_> = by_shard.into_iter().collect();
        shards.sort_by_key(|(s, _)| *s);
        for (shard, mut new) in shards {
            let path = self.shard_path(shard);
            let old = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut all: Vec<[u8; RECORD_LEN]> = old
                .chunks_exact(RECORD_LEN)
                .map(|c| c.try_into().expect("record"))
                .collect();
            all.append(&mut new);
            // Stable sort keeps the existing record first; dedup keeps it.
            all.sort_by(|a, b| a[..20].cmp(&b[..20]));
            all.dedup_by(|b, a| a[..20] == b[..20]);
            write_atomic(&path, &all.concat())?;
            self.open_shards.remove(&shard);
        }
        Ok(())
    }

    /// Replaces index shard `shard` with `records` (in the order given,
    /// which must be SHA-1 order): a garbage collection dropping records
    /// of removed frames and pointing moved ones at their copies.
    ///
    /// # Errors
    /// I/O errors; the shard is then as it was.
    pub fn replace_shard(&self, shard: usize, records: &[(BlockId, Located)]) -> io::Result<()> {
        let bytes: Vec<u8> = records
            .iter()
            .flat_map(|(id, at)| encode_record(id, at))
            .collect();
        write_atomic(&self.shard_path(shard), &bytes)
    }

    /// The records of index shard `shard` as stored (SHA-1 order), and
    /// whether the order holds (no record out of order or repeated).
    ///
    /// # Errors
    /// I/O errors; `InvalidData` for a shard that is not a whole number of
    /// records or holds a record with an unknown codec.
    pub fn shard_records(&self, shard: usize) -> io::Result<(Vec<(BlockId, Located)>, bool)> {
        let bytes = match fs::read(self.shard_path(shard)) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), true)),
            Err(e) => return Err(e),
        };
        if bytes.len() % RECORD_LEN != 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "index shard {shard:03x} has {} bytes, not a whole number of {RECORD_LEN}-byte records",
                    bytes.len()
                ),
            ));
        }
        let sorted = bytes
            .chunks_exact(RECORD_LEN)
            .zip(bytes.chunks_exact(RECORD_LEN).skip(1))
            .all(|(a, b)| a[..20] < b[..20]);
        let records = bytes
            .chunks_exact(RECORD_LEN)
            .map(decode_record)
            .collect::<io::Result<Vec<_>>>()?;
        Ok((records, sorted))
    }

    /// Counts indexed blocks and their bytes.
    ///
    /// # Errors
    /// I/O errors, or a damaged shard.
    pub fn totals(&self) -> io::Result<IndexTotals> {
        let mut t = IndexTotals::default();
        for shard in 0..SHARDS {
            let bytes = match fs::read(self.shard_path(shard)) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for rec in bytes.chunks_exact(RECORD_LEN) {
                t.blocks += 1;
                t.bytes += u64::from(u32_at(rec, 52));
            }
        }
        Ok(t)
    }

    /// Removes packs left half-written by an interrupted conversion.
    ///
    /// # Errors
    /// I/O errors listing or removing them.
    pub fn remove_temporaries(&self) -> io::Result<()> {
        let dir = self.packs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            // An entry removed while the directory is read (the store serves
            // meanwhile) is not listed.
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// The packs present, by id, and their sizes (temporaries and names
    /// that are not a pack's left out).
    ///
    /// # Errors
    /// I/O errors listing them.
    pub fn present(&self) -> io::Result<std::collections::BTreeMap<u64, u64>> {
        let dir = self.packs_dir();
        let mut packs = std::collections::BTreeMap::new();
        for (name, ty) in crate::store::list_dir(&dir)? {
            let Some(hex) = name.strip_suffix(".pack") else {
                continue;
            };
            if !ty.is_file() || hex.len() != 16 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
                continue;
            }
            let Ok(id) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            match fs::metadata(dir.join(&name)) {
                Ok(m) => {
                    packs.insert(id, m.len());
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(packs)
    }

    /// Number of packs and their bytes on disk.
    ///
    /// # Errors
    /// I/O errors listing them.
    pub fn pack_totals(&self) -> io::Result<(u64, u64)> {
        let entries = match fs::read_dir(self.packs_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        let (mut n, mut bytes) = (0, 0);
        for entry in entries {
            // An entry removed while the directory is read (the store serves
            // meanwhile) is not listed.
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pack") && !name.starts_with(".tmp-") {
                // A `.tmp-` pack renamed or removed since the listing is
                // not counted.
                match entry.metadata() {
                    Ok(m) => {
                        n += 1;
                        bytes += m.len();
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((n, bytes))
    }
}

/// Where a block added to a [`PackWriter`] will be: its frame's sequence
/// number in this writer and its offset in that frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub seq: u32,
    pub offset: u32,
}

/// Where a [`PackWriter`]'s frames go.
enum Out {
    /// A pack of its own, under its temporary name until
    /// [`PackWriter::finish`].
    File { tmp: PathBuf, out: BufWriter<File> },
    /// Memory, to join the other blobs of a [`PackBatch`].
    Memory(Vec<u8>),
}

/// Writes one new pack: blocks go into frames, frames into the pack.
pub struct PackWriter {
    id: u64,
    out: Out,
    /// Pack bytes before this writer's first frame plus those it wrote:
    /// the offset of its next frame.
    written: u64,
    frame: Vec<u8>,
    frame_blocks: FrameBlocks,
    /// Frames filled and being compressed by the host, oldest first: their
    /// blocks and length.
    encoding: VecDeque<(FrameBlocks, u32)>,
    /// The host's compressor, made at the first frame compressed.
    encoder: Option<frames::Encoder>,
    frames: Vec<Frame>,
    records: Vec<(BlockId, Located)>,
    /// Whether frames are compressed (off for content known not to shrink,
    /// such as the bytes of a gzip blob).
    compress: bool,
}

/// The blocks of one frame: id, offset in the frame, length.
type FrameBlocks = Vec<(BlockId, u32, u32)>;

/// Frames a writer keeps being compressed by the host while it fills the
/// next one.
const ENCODING_AHEAD: usize = 2;

fn encode_error(e: frames::Error) -> io::Error {
    io::Error::other(format!("compressing a frame: {e:?}"))
}

impl PackWriter {
    /// Starts a pack with a random id.
    ///
    /// # Errors
    /// I/O errors creating the temporary file.
    pub fn create(packs: &Packs) -> io::Result<Self> {
        let id = u64::from_le_bytes(
            crate::sys::random_bytes(8)
                .try_into()
                .expect("8 random bytes"),
        );
        let dir = packs.packs_dir();
        fs::create_dir_all(&dir)?;
        let tmp = packs.layout.pack_temporary(id);
        let out = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        Ok(Self::new(id, Out::File { tmp, out }, 0))
    }

    fn new(id: u64, out: Out, written: u64) -> Self {
        Self {
            id,
            out,
            written,
            frame: Vec::with_capacity(FRAME_TARGET + 16 * 1024),
            frame_blocks: Vec::new(),
            encoding: VecDeque::new(),
            encoder: None,
            frames: Vec::new(),
            records: Vec::new(),
            compress: true,
        }
    }

    /// Stores the frames that follow as they are, without trying to
    /// compress them (already compressed content).
    pub fn store_only(&mut self) {
        self.compress = false;
    }

    /// Closes the frame being filled; returns the bytes the pack holds so
    /// far and how many blocks it indexes. Blocks added before this call
    /// have their final frames (see [`PackWriter::frames`]).
    ///
    /// # Errors
    /// I/O errors writing the frame.
    pub fn seal(&mut self) -> io::Result<(u64, u64)> {
        self.close_frame()?;
        self.drain_encoding(0)?;
        Ok((self.written, self.records.len() as u64))
    }

    /// The closed frames, by sequence number.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Whether no block was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.frame_blocks.is_empty() && self.encoding.is_empty()
    }

    /// Appends a block; returns where it will be.
    ///
    /// # Errors
    /// I/O errors writing a completed frame.
    pub fn add(&mut self, id: BlockId, data: &[u8]) -> io::Result<Pending> {
        if !self.frame.is_empty() && self.frame.len() + data.len() > FRAME_TARGET {
            self.close_frame()?;
        }
        let at = Pending {
            seq: (self.frames.len() + self.encoding.len()) as u32,
            offset: self.frame.len() as u32,
        };
        self.frame_blocks.push((id, at.offset, data.len() as u32));
        self.frame.extend_from_slice(data);
        if self.frame.len() >= FRAME_TARGET {
            self.close_frame()?;
        }
        Ok(at)
    }

    /// Hands the frame being filled to the host's compressor (or, for a
    /// writer that stores only, places it at once), keeping at most
    /// [`ENCODING_AHEAD`] frames in the compressor.
    fn close_frame(&mut self) -> io::Result<()> {
        if self.frame_blocks.is_empty() {
            return Ok(());
        }
        let blocks = std::mem::take(&mut self.frame_blocks);
        let len = self.frame.len() as u32;
        if self.compress {
            let encoder = self
                .encoder
                .get_or_insert_with(|| frames::Encoder::new(BROTLI_QUALITY, BROTLI_WINDOW));
            encoder.push(&self.frame).map_err(encode_error)?;
            self.encoding.push_back((blocks, len));
            self.frame.clear();
            return self.drain_encoding(ENCODING_AHEAD);
        }
        // Frames stay in order: those being compressed go first.
        self.drain_encoding(0)?;
        let plain = std::mem::take(&mut self.frame);
        self.place(blocks, len, Codec::Stored, &plain)?;
        self.frame = plain;
        self.frame.clear();
        Ok(())
    }

    /// Places compressed frames in the pack, oldest first, until at most
    /// `keep` are left with the compressor.
    fn drain_encoding(&mut self, keep: usize) -> io::Result<()> {
        while self.encoding.len() > keep {
            let (blocks, len) = self.encoding.pop_front().expect("more than keep");
            let encoder = self.encoder.as_ref().expect("frames were pushed");
            let encoded = encoder.next().map_err(encode_error)?;
            let codec = match encoded.codec {
                frames::Codec::Brotli => Codec::Brotli,
                frames::Codec::Stored if encoded.bytes.len() == len as usize => Codec::Stored,
                other => {
                    return Err(io::Error::other(format!(
                        "the host compressed a frame of {len} bytes to {} {other:?} bytes",
                        encoded.bytes.len()
                    )))
                }
            };
            self.place(blocks, len, codec, &encoded.bytes)?;
        }
        Ok(())
    }

    /// Writes one frame's stored bytes at the end of the pack and records
    /// where its blocks are.
    fn place(
        &mut self,
        blocks: FrameBlocks,
        len: u32,
        codec: Codec,
        bytes: &[u8],
    ) -> io::Result<()> {
        let frame = Frame {
            pack: self.id,
            offset: self.written,
            stored_len: bytes.len() as u32,
            len,
            codec,
        };
        match &mut self.out {
            Out::File { out, .. } => out.write_all(bytes)?,
            Out::Memory(out) => out.extend_from_slice(bytes),
        }
        self.written += bytes.len() as u64;
        for (id, offset, len) in blocks {
            self.records.push((id, Located { frame, offset, len }));
        }
        self.frames.push(frame);
        Ok(())
    }

    /// Closes the last frame, makes the pack durable under its final name,
    /// and indexes its blocks. Returns the frames by sequence number.
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed when the pack never got
    /// its final name.
    ///
    /// # Panics
    /// On a writer of a [`PackBatch`] (the batch finishes the pack).
    pub fn finish(mut self, packs: &mut Packs) -> io::Result<Vec<Frame>> {
        let result = self.close_frame().and_then(|()| self.drain_encoding(0));
        let Out::File { tmp, mut out } = self.out else {
            panic!("a batch's writer is finished by its batch");
        };
        let result = result.and_then(|()| {
            out.flush()?;
            out.get_ref().sync_all()?;
            fs::rename(&tmp, packs.pack_path(self.id))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        packs.index(&self.records)?;
        Ok(self.frames)
    }

    /// Drops the pack (a conversion that failed).
    pub fn abandon(self) {
        if let Out::File { tmp, out } = self.out {
            drop(out);
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// One pack shared by several small blobs converted together, so that a
/// registry of many small blobs (configs, tiny layers) does not keep a
/// pack file per blob.
///
/// Each blob's conversion writes through [`PackBatch::writer`], a writer
/// whose frames are kept in memory at their final place in the batch's
/// pack; a conversion that succeeds hands them over with
/// [`PackBatch::absorb`], a refused one drops them. Blocks absorbed are
/// found by [`PackBatch::lookup`], so blobs of one batch share blocks
/// with each other. [`PackBatch::finish`] writes the pack (temporary,
/// fsync, rename) and indexes it; only then may the blobs' recipes be
/// committed, exactly as for a pack of one blob.
pub struct PackBatch {
    id: u64,
    bytes: Vec<u8>,
    records: Vec<(BlockId, Located)>,
    placed: HashMap<BlockId, Located>,
}

impl Default for PackBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBatch {
    /// An empty batch with a random pack id.
    pub fn new() -> Self {
        Self {
            id: u64::from_le_bytes(
                crate::sys::random_bytes(8)
                    .try_into()
                    .expect("8 random bytes"),
            ),
            bytes: Vec::new(),
            records: Vec::new(),
            placed: HashMap::new(),
        }
    }

    /// Bytes of frames absorbed so far.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether nothing was absorbed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A writer whose frames follow those absorbed so far.
    pub fn writer(&self) -> PackWriter {
        PackWriter::new(self.id, Out::Memory(Vec::new()), self.len())
    }

    /// Where an absorbed block is.
    pub fn lookup(&self, id: &BlockId) -> Option<Located> {
        self.placed.get(id).copied()
    }

    /// Takes a writer's frames and blocks into the pack. The writer must
    /// have been made by [`PackBatch::writer`] after the last `absorb`, and
    /// sealed ([`PackWriter::seal`]).
    ///
    /// # Panics
    /// On a writer of its own pack, or one made before the last `absorb`.
    pub fn absorb(&mut self, w: PackWriter) {
        let Out::Memory(bytes) = w.out else {
            panic!("only a batch's writer can be absorbed");
        };
        assert!(
            w.id == self.id && w.written == self.len() + bytes.len() as u64,
            "a writer absorbed out of turn"
        );
        assert!(
            w.frame_blocks.is_empty() && w.encoding.is_empty(),
            "absorbed before it was sealed"
        );
        self.bytes.extend_from_slice(&bytes);
        for (id, at) in &w.records {
            self.placed.entry(*id).or_insert(*at);
        }
        self.records.extend(w.records);
    }

    /// Makes the pack durable under its final name and indexes its blocks
    /// (nothing when no block was absorbed).
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed when the pack never got
    /// its final name.
    pub fn finish(self, packs: &mut Packs) -> io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(packs.packs_dir())?;
        let tmp = packs.layout.pack_temporary(self.id);
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, packs.pack_path(self.id))
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        packs.index(&self.records)
    }
}

/// Reads blocks out of packs, keeping the last few decompressed frames.
///
/// The host reads and decodes the frames (`wit/frames.wit`): told the
/// frames a rebuild will ask for ([`FrameReader::plan`]), it decodes the
/// next ones on other cores while the guest works on the current one.
pub struct FrameReader {
    layout: Layout,
    /// The host's view of the store's keys (the store's folder under its
    /// preopen).
    objects: Option<HostObjects>,
    /// The host's reader, made at the plan or at the first read.
    host: Option<frames::Reader>,
    recent: Vec<(Frame, Rc<Vec<u8>>)>,
    /// The frames planned for the host, and those asked of it (tests).
    #[cfg(test)]
    pub(crate) log: (Vec<Frame>, Vec<Frame>),
}

const RECENT_FRAMES: usize = 8;

fn host_codec(codec: Codec) -> frames::Codec {
    match codec {
        Codec::Stored => frames::Codec::Stored,
        Codec::Deflate => frames::Codec::Deflate,
        Codec::Brotli => frames::Codec::Brotli,
    }
}

fn from_host(e: frames::Error) -> io::Error {
    match e {
        frames::Error::Invalid(m) | frames::Error::Damaged(m) => {
            io::Error::new(ErrorKind::InvalidData, m)
        }
        frames::Error::Missing(m) => io::Error::new(ErrorKind::NotFound, m),
        frames::Error::Unavailable(m) | frames::Error::Other(m) => io::Error::other(m),
    }
}

impl FrameReader {
    pub fn new(layout: &Layout) -> Self {
        Self {
            layout: layout.clone(),
            objects: HostObjects::for_root(layout.root()).ok(),
            host: None,
            recent: Vec::new(),
            #[cfg(test)]
            log: (Vec::new(), Vec::new()),
        }
    }

    /// The host's record of `frame`.
    fn host_frame(&self, frame: &Frame) -> io::Result<frames::Frame> {
        let Some(objects) = &self.objects else {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "store root {} is not below a preopen",
                    self.layout.root().display()
                ),
            ));
        };
        Ok(frames::Frame {
            key: objects.full(&self.layout.pack_key(frame.pack)),
            offset: frame.offset,
            stored_len: frame.stored_len,
            len: frame.len,
            codec: host_codec(frame.codec),
        })
    }

    /// Tells the host which frames this reader will be asked for, in
    /// order (repeats included): those [`FrameReader::frame`] will not find
    /// among its recent ones are decoded ahead. Once per reader, before the
    /// first read; a later call changes nothing.
    pub fn plan(&mut self, frames: impl IntoIterator<Item = Frame>) {
        if self.host.is_some() {
            return;
        }
        // The frames that will miss `recent`, found by playing its policy.
        let mut recent: Vec<Frame> = self.recent.iter().map(|(f, _)| *f).collect();
        let mut misses = Vec::new();
        for f in frames {
            if let Some(i) = recent.iter().position(|r| *r == f) {
                let hit = recent.remove(i);
                recent.push(hit);
                continue;
            }
            if recent.len() >= RECENT_FRAMES {
                recent.remove(0);
            }
            recent.push(f);
            #[cfg(test)]
            self.log.0.push(f);
            match self.host_frame(&f) {
                Ok(h) => misses.push(h),
                Err(_) => break,
            }
        }
        self.host = Some(frames::Reader::new(&misses));
    }

    /// The decompressed bytes of a frame.
    ///
    /// # Errors
    /// I/O errors, a pack shorter than the frame, or a frame that does not
    /// decompress to its recorded length (store damage).
    pub fn frame(&mut self, frame: &Frame) -> io::Result<Rc<Vec<u8>>> {
        if let Some(i) = self.recent.iter().position(|(f, _)| f == frame) {
            let hit = self.recent.remove(i);
            let bytes = Rc::clone(&hit.1);
            self.recent.push(hit);
            return Ok(bytes);
        }
        // Lengths come from recipes and index records on disk: a damaged
        // one must be an error, not an allocation of whatever it says.
        if frame.stored_len as usize > MAX_FRAME_BYTES || frame.len as usize > MAX_FRAME_BYTES {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "frame at {} of pack {} claims {} stored / {} bytes, over the {MAX_FRAME_BYTES} limit",
                    frame.offset,
                    pack_name(frame.pack),
                    frame.stored_len,
                    frame.len
                ),
            ));
        }
        let wanted = self.host_frame(frame)?;
        #[cfg(test)]
        self.log.1.push(*frame);
        let host = self.host.get_or_insert_with(|| frames::Reader::new(&[]));
        let bytes = host.read(&wanted).map_err(from_host)?;
        if bytes.len() != frame.len as usize {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "frame at {} of pack {} has {} bytes, expected {}",
                    frame.offset,
                    pack_name(frame.pack),
                    bytes.len(),
                    frame.len
                ),
            ));
        }
        let bytes = Rc::new(bytes);
        if self.recent.len() >= RECENT_FRAMES {
            self.recent.remove(0);
        }
        self.recent.push((*frame, Rc::clone(&bytes)));
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{scratch_store, seeded_bytes};

    #[test]
    fn blocks_written_to_a_pack_are_found_and_read_back() {
        let store = scratch_store("packs-roundtrip");
        let mut packs = Packs::new(store.layout());
        let mut w = PackWriter::create(&packs).unwrap();
        let blocks: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let mut b = seeded_bytes(i + 1, 2000);
                b.extend(std::iter::repeat_n(b'x', 2096));
                b
            })
            .collect();
        let mut pending = Vec::new();
        for b in &blocks {
            let id = BlockId::compute(b).unwrap();
            pending.push((id, w.add(id, b).unwrap()));
        }
        let frames = w.finish(&mut packs).unwrap();
        assert_eq!(frames.len(), 2, "300 × 4 KiB span two 1 MiB frames");
        assert!(frames.iter().all(|f| f.codec == Codec::Brotli));
        let mut reader = FrameReader::new(store.layout());
        for ((id, p), b) in pending.iter().zip(&blocks) {
            let at = packs.lookup(id).unwrap().expect("indexed");
            assert_eq!(at.frame, frames[p.seq as usize]);
            assert_eq!(at.offset, p.offset);
            let frame = reader.frame(&at.frame).unwrap();
            assert_eq!(
                &frame[at.offset as usize..(at.offset + at.len) as usize],
                b.as_slice()
            );
        }
        assert!(packs
            .lookup(&BlockId::compute(b"absent").unwrap())
            .unwrap()
            .is_none());
        let t = packs.totals().unwrap();
        assert_eq!(t.blocks, 300);
        assert_eq!(t.bytes, 300 * 4096);
        assert_eq!(packs.pack_totals().unwrap().0, 1);
    }

    #[test]
    fn incompressible_frames_are_stored_as_they_are() {
        let store = scratch_store("packs-stored");
        let mut packs = Packs::new(store.layout());
        let mut w = PackWriter::create(&packs).unwrap();
        let b = seeded_bytes(9, 4096);
        w.add(BlockId::compute(&b).unwrap(), &b).unwrap();
        let frames = w.finish(&mut packs).unwrap();
        assert_eq!(frames[0].codec, Codec::Stored);
        let mut reader = FrameReader::new(store.layout());
        assert_eq!(*reader.frame(&frames[0]).unwrap(), b);
    }

    #[test]
    fn index_merges_keep_shards_sorted_and_unique() {
        let store = scratch_store("packs-merge");
        let mut packs = Packs::new(store.layout());
        for round in 0..3u64 {
            let mut w = PackWriter::create(&packs).unwrap();
            for i in 0..300u64 {
                // Rounds overlap by half: the second copy must not be indexed twice.
                let b = seeded_bytes(1000 + round * 150 + i, 64);
                w.add(BlockId::compute(&b).unwrap(), &b).unwrap();
            }
            w.finish(&mut packs).unwrap();
        }
        assert_eq!(packs.totals().unwrap().blocks, 600);
    }

    #[test]
    fn abandoned_and_interrupted_packs_leave_no_file() {
        let store = scratch_store("packs-abandon");
        let packs = Packs::new(store.layout());
        let mut w = PackWriter::create(&packs).unwrap();
        w.add(BlockId::compute(b"abc").unwrap(), b"abc").unwrap();
        w.abandon();
        let w2 = PackWriter::create(&packs).unwrap();
        drop(w2); // as if the process died: a temporary stays behind
        packs.remove_temporaries().unwrap();
        let left: Vec<_> = fs::read_dir(store.layout().packs()).unwrap().collect();
        assert!(left.is_empty());
        assert_eq!(packs.pack_totals().unwrap(), (0, 0));
    }
}
