//! Background conversion: a pushed blob's original bytes become blocks in
//! packs plus a recipe, and the original is dropped — only once the recipe
//! has been proven to rebuild the exact bytes.
//!
//! Content-aware: a gzip blob (what `docker push` sends) is decoded and its
//! DEFLATE streams analysed with preflate-rs, so the recipe holds the tar
//! inside plus small corrections that recreate the compressed stream bit for
//! bit. A zstd blob is decoded the same way (`zstd.rs`): its corrections
//! are the stream's own headers, tables and sequences, its literals come
//! back from the content. The tar (or any other blob) is cut by the build's chunker: at tar
//! member boundaries, so an unchanged file gives the same blocks wherever it
//! sits. Anything that fails — not gzip, a corrupt stream, corrections above
//! the configured share, a recreation that does not match, a decoded size or
//! ratio above the configured limits (a decompression bomb), a converted
//! form that would cost clearly more than the blob itself
//! ([`cost_allowance`]) — is stored as raw blocks
//! of its own bytes instead: never refused, never lost.
//!
//! Bounded work: memory grows with the number of content blocks, which the
//! decoded-size limit caps; a blob larger than it, or a compressed blob whose
//! content-aware form was refused, is cut into opaque 1 MiB blocks
//! ([`OPAQUE_BLOCK`]), so its recipe and index cost about 0.01 % of it.
//!
//! Robustness ([`convert_next`]): each attempt is recorded in the store
//! before it starts, because an attempt that traps (a panic, running out of
//! memory, the host's timeout) cannot report anything. A blob with an
//! unfinished attempt waits [`retry_delay`] before the next one, and after
//! [`MAX_ATTEMPTS`] it is marked failed (served from its original for
//! good); other blobs convert meanwhile.
//!
//! Crash safety: the original stays until the recipe is committed, so a
//! conversion killed at any point is simply run again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read};

use thiserror::Error;

use crate::block::BlockId;
use crate::chunker::{Chunker, FixedChunker};
use crate::deflate::{self, AnalyzeConfig, Event, GzipAnalyzer};
use crate::oci::{Digest, Hasher};
use crate::packs::{Located, PackBatch, PackWriter, Packs, Pending, RECORD_LEN};
use crate::rebuild::Rebuild;
use crate::recipe::{BlockRef, Encoding, Frame, Location, Op, Recipe, Segment};
use crate::replica::{Checkpoint, Replica};
use crate::settings::Settings;
use crate::store::Store;
use crate::tarchunk::TarChunker;
use crate::zstd::{self, ZstdAnalyzer, ZstdConfig};

/// Segment sizes (compressed input per preflate call) and plain-text limits
/// tried in turn for a gzip blob. Recreating a segment holds its plain text
/// in memory, so the limits stay far below a request's memory limit.
const GZIP_ATTEMPTS: [(usize, usize); 3] = [
    (1 << 20, 8 << 20),
    (512 << 10, 8 << 20),
    (8 << 20, 64 << 20),
];

/// A zstd blob is stored decoded only if its corrections (everything but
/// its literals: headers, tables, the encoder's sequences) stay within this
/// share of it, plus [`ZSTD_CORRECTION_SLACK`] (headers dominate tiny
/// blobs). The first layer of a series then costs up to 1.65 times its
/// size, and each later near-identical one its corrections (less the
/// blocks that recur) instead of its whole size. Measured on the bench
/// corpus as skopeo writes it (`core/examples/gzip_analysis.rs`): Debian
/// and nginx layers 29-36 %, Python application layers 57 %; Node.js layers
/// (JavaScript sources) 87 %, which would cost more than they can share.
const ZSTD_MAX_CORRECTION_SHARE: f64 = 0.65;
const ZSTD_CORRECTION_SLACK: u64 = 4096;

/// Correction bytes are stored in blocks of at most this size.
const CORRECTION_BLOCK: usize = 64 * 1024;
/// Literal bytes (gzip headers, trailers, trailing data) kept in a recipe.
const MAX_LITERAL: usize = 256 * 1024;
/// Block size for content that is not cut by meaning: a compressed blob
/// stored as it is, or a blob above the decoded-size limit. One block per
/// pack frame; its index record and recipe entry cost ~0.01 % of it.
pub const OPAQUE_BLOCK: usize = 1 << 20;
/// Decoded bytes before the decoded/compressed ratio is checked, so that
/// small, very compressible layers (a config tarball, an empty file tree)
/// are not judged on their first bytes.
const RATIO_FLOOR: u64 = 64 << 20;
/// What a converted form may cost beyond the blob it replaces: recipe JSON
/// and index records of a small blob.
pub const COST_SLACK: u64 = 16 * 1024;

/// The most a converted form of a `size`-byte blob may add to the store
/// (a gzip blob's corrections allowed on top, see `convert_decoded`):
/// the blob's own size, plus [`COST_SLACK`], plus 4 % for the index
/// records, recipe and corrections of content that does not compress
/// (files already compressed inside a layer). Without the 4 % such a
/// layer's first push would always be stored opaque, and nothing pushed
/// after it could share its files; the blow-ups this guards against (a
/// recipe 9–12× its blob) are far above it.
pub fn cost_allowance(size: u64) -> u64 {
    size + COST_SLACK + size / 25
}
/// Unfinished attempts after which a blob is marked failed.
pub const MAX_ATTEMPTS: u32 = 3;
/// Blobs up to this size convert in batches that share one pack
/// ([`convert_next`]'s small queue), so that many small blobs (image
/// configs, small layers) do not each leave a pack file.
pub const SMALL_BLOB: u64 = 1 << 20;
/// A batch closes at this many blobs, or once its blobs add up to
/// [`BATCH_BYTES`]: the pack is held in memory until the batch ends.
pub const BATCH_BLOBS: usize = 64;
pub const BATCH_BYTES: u64 = 8 << 20;

/// Seconds to wait after `count` unfinished attempts: 30 s · 2^(count-1).
#[must_use]
pub fn retry_delay(count: u32) -> u64 {
    30u64 << count.saturating_sub(1).min(20)
}

/// The chunker this guest build cuts content with.
pub fn chunker() -> TarChunker {
    if cfg!(feature = "fastcdc") {
        TarChunker::fastcdc_default()
    } else {
        TarChunker::default()
    }
}

/// Why converting a blob failed. The blob keeps being served from its
/// original either way; what differs is whether trying again can help.
#[derive(Debug, Error)]
pub enum ConvertError {
    /// Reading or writing the store failed (a full disk, an I/O error):
    /// the attempt is retried after [`retry_delay`].
    #[error("{0}")]
    Store(io::Error),
    /// The blob's bytes or the store's data are damaged — an original that
    /// does not hash to its digest (set aside), a recipe of its own bytes
    /// that does not rebuild them, a block carrying a SHA-1 collision
    /// attack: retrying cannot help, the blob is marked failed.
    #[error("{0}")]
    Damaged(String),
}

impl ConvertError {
    /// Whether a later attempt may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// The store's error policy (store.rs) reports data that does not parse or
/// verify as `InvalidData`; this is the one place that turns it into a type.
impl From<io::Error> for ConvertError {
    fn from(e: io::Error) -> Self {
        if e.kind() == ErrorKind::InvalidData {
            Self::Damaged(e.to_string())
        } else {
            Self::Store(e)
        }
    }
}

/// Why the content-aware form of a gzip or zstd blob was not taken; the blob is
/// then stored as opaque blocks of its own bytes.
#[derive(Debug)]
enum Refusal {
    /// preflate could not model a segment, or the recipe did not rebuild
    /// the stream: both depend on where segments end, so the next of
    /// [`GZIP_ATTEMPTS`] may succeed.
    Unmodelled(String),
    /// Final: a limit (decoded size or ratio, bytes outside DEFLATE
    /// streams, the cost cap) or a stream that is not valid gzip.
    Final(String),
}

/// How one content-aware attempt at a gzip or zstd blob ended, when not
/// converted.
#[derive(Debug)]
enum DecodeError {
    Refused(Refusal),
    Failed(ConvertError),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(Refusal::Unmodelled(why) | Refusal::Final(why)) => f.write_str(why),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for DecodeError {
    fn from(e: io::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<ConvertError> for DecodeError {
    fn from(e: ConvertError) -> Self {
        Self::Failed(e)
    }
}

fn refused(why: String) -> DecodeError {
    DecodeError::Refused(Refusal::Final(why))
}

/// What converting one blob did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub digest: Digest,
    pub size: u64,
    /// How the blob is rebuilt from its blocks.
    pub encoding: Encoding,
    /// Decoded content bytes cut into blocks.
    pub content_bytes: u64,
    /// Blocks not stored before, and their (uncompressed) bytes.
    pub new_blocks: u64,
    pub new_bytes: u64,
    /// Why the content-aware path was not taken, if it was not.
    pub fallback: Option<String>,
}

/// A block placed during this conversion: in the pack being written, or
/// found in an existing one.
#[derive(Debug, Clone, Copy)]
enum Placed {
    New(Pending),
    Old(Located),
}

/// Where a conversion's new blocks go.
enum Sink<'b> {
    /// A new pack of the blob's own, committed before its recipe.
    OwnPack,
    /// The shared pack of a batch of small blobs: recipes wait until the
    /// batch's pack is durable.
    Batch(&'b mut PackBatch),
}

/// How far a conversion got: its recipe committed (own pack), or waiting
/// for its batch's pack.
enum Landed {
    Committed,
    Deferred(Recipe),
}

/// Collects blocks for one recipe: dedup against the index, the blocks of
/// its batch and the blocks of this conversion; new ones into one new pack
/// (or the batch's).
struct Builder<'a> {
    packs: &'a mut Packs,
    batch: Option<&'a PackBatch>,
    writer: PackWriter,
    seen: HashMap<BlockId, Placed>,
    new_blocks: u64,
    new_bytes: u64,
}

/// A block reference whose frame is not final yet.
#[derive(Debug, Clone, Copy)]
struct Draft {
    id: BlockId,
    len: u32,
    placed: Placed,
}

impl<'a> Builder<'a> {
    fn new(packs: &'a mut Packs, sink: &'a Sink) -> io::Result<Self> {
        let (writer, batch) = match sink {
            Sink::OwnPack => (PackWriter::create(packs)?, None),
            Sink::Batch(b) => (b.writer(), Some(&**b)),
        };
        Ok(Self {
            packs,
            batch,
            writer,
            seen: HashMap::new(),
            new_blocks: 0,
            new_bytes: 0,
        })
    }

    fn put(&mut self, data: &[u8]) -> io::Result<Draft> {
        let id = BlockId::compute(data)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
        let len = data.len() as u32;
        let placed = match self.seen.get(&id) {
            Some(p) => *p,
            None => {
                let known = match self.packs.lookup(&id)? {
                    None => self.batch.and_then(|b| b.lookup(&id)),
                    found => found,
                };
                let p = match known {
                    Some(at) if at.len == len => Placed::Old(at),
                    _ => {
                        self.new_blocks += 1;
                        self.new_bytes += u64::from(len);
                        Placed::New(self.writer.add(id, data)?)
                    }
                };
                self.seen.insert(id, p);
                p
            }
        };
        Ok(Draft { id, len, placed })
    }

    /// Closes the pack's last frame, so every draft has its final frame;
    /// returns what the new pack adds to the store (its bytes and its index
    /// records) and the frame table to build the recipe with. Nothing is
    /// durable yet: [`Sealed::commit`] or [`Sealed::abandon`] follows.
    fn seal(mut self) -> io::Result<Sealed> {
        let (pack_bytes, records) = self.writer.seal()?;
        let table = FrameTable {
            new_frames: self.writer.frames().to_vec(),
            frames: Vec::new(),
            index: HashMap::new(),
        };
        // A batch's writer counts the batch's earlier bytes too.
        let pack_bytes = match self.batch {
            Some(b) => pack_bytes - b.len(),
            None => pack_bytes,
        };
        Ok(Sealed {
            writer: self.writer,
            table,
            added_bytes: pack_bytes + records * RECORD_LEN as u64,
            new_blocks: self.new_blocks,
            new_bytes: self.new_bytes,
        })
    }
}

/// A conversion's new pack, complete but not yet durable.
struct Sealed {
    writer: PackWriter,
    table: FrameTable,
    /// Pack bytes plus index record bytes the pack would add.
    added_bytes: u64,
    new_blocks: u64,
    new_bytes: u64,
}

impl Sealed {
    /// Makes the blob's own pack durable and its recipe committed once
    /// proven; or hands the blocks to the batch, the recipe waiting for it.
    /// `Ok(Err(why))` when the recipe does not rebuild the blob.
    fn land(
        self,
        store: &Store,
        packs: &mut Packs,
        sink: &mut Sink,
        recipe: Recipe,
    ) -> io::Result<Result<Landed, String>> {
        match sink {
            Sink::OwnPack => {
                if self.writer.is_empty() {
                    self.writer.abandon();
                } else {
                    self.writer.finish(packs)?;
                }
                Ok(prove_and_commit(store, &recipe)?.map(|()| Landed::Committed))
            }
            Sink::Batch(batch) => {
                batch.absorb(self.writer);
                Ok(Ok(Landed::Deferred(recipe)))
            }
        }
    }

    fn abandon(self) {
        self.writer.abandon();
    }
}

/// Assigns recipe frame numbers to the frames blocks were placed in.
struct FrameTable {
    new_frames: Vec<Frame>,
    frames: Vec<Frame>,
    index: HashMap<Frame, u32>,
}

impl FrameTable {
    fn block(&mut self, d: &Draft) -> BlockRef {
        let (frame, offset) = match d.placed {
            Placed::New(p) => (self.new_frames[p.seq as usize], p.offset),
            Placed::Old(at) => (at.frame, at.offset),
        };
        let n = *self.index.entry(frame).or_insert_with(|| {
            self.frames.push(frame);
            (self.frames.len() - 1) as u32
        });
        BlockRef {
            id: d.id,
            len: d.len,
            at: Location::Framed { frame: n, offset },
        }
    }
}

/// A layout op whose block references are drafts.
enum DraftOp {
    Lit(Vec<u8>),
    Deflate(Vec<(u64, Vec<Draft>)>),
    Zstd(Vec<(u64, Vec<Draft>)>),
    /// A DEFLATE stream its encoder's replica recreates, its plain bytes
    /// so far, and the checkpoints its replica recorded.
    Replica(Replica, u64, Vec<Checkpoint>),
}

/// Which analysis reads a compressed blob.
#[derive(Clone, Copy)]
enum Codec {
    Gzip(AnalyzeConfig),
    Zstd(ZstdConfig),
}

impl Codec {
    fn encoding(self) -> Encoding {
        match self {
            Codec::Gzip(_) => Encoding::Gzip,
            Codec::Zstd(_) => Encoding::Zstd,
        }
    }
}

fn open_original(store: &Store, digest: &Digest) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(
        1024 * 1024,
        File::open(store.original_path(digest))?,
    ))
}

/// Seconds since the Unix epoch, by the wall clock (WASI's).
#[must_use]
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The two queues of pending blobs (see [`convert_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Small blobs ([`SMALL_BLOB`]) never tried before, converted in
    /// batches that share one pack.
    Small,
    /// Larger blobs, and blobs with an unfinished attempt: one at a time.
    Large,
}

/// Converts the next pending blobs that are not waiting out a retry delay,
/// from queue `first`, or the other when it has none: the oldest small
/// blobs together, up to [`BATCH_BLOBS`] or [`BATCH_BYTES`], into one
/// shared pack ([`convert_batch`]), or the oldest large blob alone.
/// Returns each blob's digest with its outcome; empty when nothing is
/// waiting. The host alternates the queues, so that slow blobs (bombs, big
/// layers, blobs that trapped) and quick ones each get every other turn.
///
/// Before converting, each attempt is recorded in the store (count and
/// time), so that a trap counts; success removes the record. A blob whose
/// last attempt did not finish waits [`retry_delay`] and is then converted
/// alone, so that a blob that traps cannot take a batch down twice; one
/// with [`MAX_ATTEMPTS`] unfinished attempts is marked failed (it keeps
/// being served from its original). A [`ConvertError::Damaged`] blob is
/// marked failed at once; a [`ConvertError::Store`] failure leaves the
/// record, so the blob is retried after the delay.
///
/// # Errors
/// I/O errors listing the store or writing the attempt records, or the
/// batch's pack failing to be written (its blobs are then retried).
pub fn convert_next(
    store: &Store,
    settings: &Settings,
    now: u64,
    first: Queue,
) -> io::Result<Vec<(Digest, Result<Converted, ConvertError>)>> {
    // A collection killed while it had a blob or manifest set aside leaves
    // it in `gc/trash/`, missing from the store, until something puts it
    // back. Conversion runs under the store's lock, shared (so no
    // collection is running), every few seconds: it puts such entries
    // back long before the next collection or restart would.
    crate::gc::recover_trash(store)?;
    let mut small: Vec<Digest> = Vec::new();
    let mut small_bytes = 0u64;
    let mut large: Option<Digest> = None;
    for (digest, size) in store.pending_blob_sizes()? {
        let attempts = store.conversion_attempts(&digest)?;
        if let Some(a) = &attempts {
            if a.count >= MAX_ATTEMPTS {
                store.mark_conversion_failed(
                    &digest,
                    &format!(
                        "{} conversion attempts did not finish (the guest trapped: a \
                         panic, running out of memory, or the host's timeout); kept as pushed",
                        a.count
                    ),
                )?;
                store.clear_conversion_attempts(&digest)?;
                continue;
            }
            if now < a.last.saturating_add(retry_delay(a.count)) {
                continue;
            }
        }
        let small_full = small.len() >= BATCH_BLOBS || small_bytes >= BATCH_BYTES;
        if attempts.is_none() && size <= SMALL_BLOB {
            if !small_full {
                small.push(digest);
                small_bytes += size;
            }
        } else if large.is_none() {
            large = Some(digest);
        }
        let done = match first {
            Queue::Small => small_full,
            Queue::Large => large.is_some(),
        };
        if done {
            break;
        }
    }
    let batch = match (first, large) {
        (Queue::Small, large) if small.is_empty() => large.into_iter().collect(),
        (Queue::Small, _) | (Queue::Large, None) => small,
        (Queue::Large, Some(large)) => vec![large],
    };
    for digest in &batch {
        store.begin_conversion_attempt(digest, now)?;
    }
    let outcomes = match batch.as_slice() {
        [] => return Ok(Vec::new()),
        [one] => vec![convert(store, settings, one)],
        several => convert_batch(store, settings, several, chunker)?,
    };
    for (digest, outcome) in batch.iter().zip(&outcomes) {
        match outcome {
            Ok(_) => store.clear_conversion_attempts(digest)?,
            Err(e) if !e.is_retryable() => {
                // Will not heal by retrying: the blob stays served from its
                // original.
                store.mark_conversion_failed(digest, &e.to_string())?;
                store.clear_conversion_attempts(digest)?;
            }
            Err(_) => {}
        }
    }
    Ok(batch.into_iter().zip(outcomes).collect())
}

/// Converts one pending blob, and removes its original once its recipe is
/// committed. A blob whose recipe already exists only loses its original.
///
/// # Errors
/// [`ConvertError`]; the original is then kept (unless damaged, when it
/// is set aside) and conversion can be retried.
pub fn convert(
    store: &Store,
    settings: &Settings,
    digest: &Digest,
) -> Result<Converted, ConvertError> {
    convert_with(store, settings, digest, chunker)
}

/// [`convert`] with the chunker `new_chunker` makes (tests use both builds'
/// chunkers side by side).
///
/// # Errors
/// As [`convert`].
pub fn convert_with(
    store: &Store,
    settings: &Settings,
    digest: &Digest,
    new_chunker: fn() -> TarChunker,
) -> Result<Converted, ConvertError> {
    let mut packs = Packs::new(store.layout());
    packs.remove_temporaries()?;
    stage(
        store,
        &mut packs,
        &mut Sink::OwnPack,
        settings,
        digest,
        new_chunker,
    )
    .map(|(c, _)| c)
}

/// Converts small blobs together: their new blocks go into one shared
/// pack, written once all of them are staged, and only then are their
/// recipes proven and committed. A gzip or zstd blob whose recipe does not
/// rebuild it there is converted again on its own (with every segment
/// size [`convert`] tries). Returns one outcome per digest, in order.
///
/// # Errors
/// Store errors of the batch as a whole (clearing temporaries, writing the
/// shared pack); no recipe was committed then.
pub fn convert_batch(
    store: &Store,
    settings: &Settings,
    digests: &[Digest],
    new_chunker: fn() -> TarChunker,
) -> io::Result<Vec<Result<Converted, ConvertError>>> {
    let mut packs = Packs::new(store.layout());
    packs.remove_temporaries()?;
    let mut batch = PackBatch::new();
    let staged: Vec<_> = digests
        .iter()
        .map(|d| {
            let mut sink = Sink::Batch(&mut batch);
            stage(store, &mut packs, &mut sink, settings, d, new_chunker)
        })
        .collect();
    batch.finish(&mut packs)?;
    let mut outcomes = Vec::with_capacity(staged.len());
    for (digest, staged) in digests.iter().zip(staged) {
        outcomes.push(match staged {
            Ok((c, Landed::Committed)) => Ok(c),
            Err(e) => Err(e),
            Ok((c, Landed::Deferred(recipe))) => match prove_and_commit(store, &recipe) {
                Ok(Ok(())) => Ok(c),
                Ok(Err(_)) if matches!(c.encoding, Encoding::Gzip | Encoding::Zstd) => {
                    convert_with(store, settings, digest, new_chunker)
                }
                Ok(Err(why)) => Err(ConvertError::Damaged(why)),
                Err(e) => Err(e.into()),
            },
        });
    }
    Ok(outcomes)
}

/// Converts one blob with its new blocks going to `sink`: content-aware
/// for gzip (each of [`GZIP_ATTEMPTS`] in turn), raw blocks otherwise or
/// when that was refused. A blob whose recipe already exists only loses
/// its original.
fn stage(
    store: &Store,
    packs: &mut Packs,
    sink: &mut Sink,
    settings: &Settings,
    digest: &Digest,
    new_chunker: fn() -> TarChunker,
) -> Result<(Converted, Landed), ConvertError> {
    if let Some(r) = store.recipe(digest)? {
        store.remove_original(digest)?;
        return Ok((
            Converted {
                digest: digest.clone(),
                size: r.size,
                content_bytes: r.content_len(),
                encoding: r.encoding,
                new_blocks: 0,
                new_bytes: 0,
                fallback: None,
            },
            Landed::Committed,
        ));
    }
    verify_original(store, digest)?;
    let mut head = [0u8; 4];
    let n = open_original(store, digest)?.read(&mut head)?;
    let gzip = deflate::is_gzip(&head[..n]);
    let zstd = zstd::is_zstd(&head[..n]);
    let mut fallback = None;
    if zstd {
        let codec = Codec::Zstd(ZstdConfig {
            // One segment per block: a block whose content, tables and
            // sequences recur in another layer gives identical correction
            // bytes, stored once.
            segment_plain: 1,
            ..ZstdConfig::default()
        });
        match convert_decoded(store, packs, sink, digest, new_chunker(), codec, settings) {
            Ok(done) => return Ok(done),
            Err(DecodeError::Refused(Refusal::Unmodelled(why) | Refusal::Final(why))) => {
                fallback = Some(why);
            }
            Err(DecodeError::Failed(e)) => return Err(e),
        }
    }
    if gzip {
        // preflate-rs 0.7's streaming sometimes loses a match at a segment
        // boundary ("PredictionFailure"), depending only on where segments
        // end: other segment sizes move the boundaries away from it.
        // The first attempt tries the encoder replicas too (a stream Go
        // 1.27 wrote needs no corrections then); one that matched a replica
        // at first and diverged later is analysed again without them.
        for (attempt, (segment_input, plain_text_limit)) in GZIP_ATTEMPTS.into_iter().enumerate() {
            let cfg = AnalyzeConfig {
                max_corrections_ratio: settings.max_correction_ratio,
                segment_input,
                plain_text_limit,
                max_pending: plain_text_limit.max(2 * segment_input),
                replicas: attempt == 0,
                // The picked replica's proof runs natively on the host.
                remote: Some(crate::replicas::HostProof::open),
                ..AnalyzeConfig::default()
            };
            let codec = Codec::Gzip(cfg);
            match convert_decoded(store, packs, sink, digest, new_chunker(), codec, settings) {
                Ok(done) => return Ok(done),
                Err(DecodeError::Refused(Refusal::Unmodelled(why))) => fallback = Some(why),
                Err(DecodeError::Refused(Refusal::Final(why))) => {
                    fallback = Some(why);
                    break;
                }
                Err(DecodeError::Failed(e)) => return Err(e),
            }
        }
    }
    let size = std::fs::metadata(store.original_path(digest))?.len();
    let compressed = gzip || zstd;
    let (mut done, landed) = if compressed || size > settings.max_decoded_bytes {
        // Compressed bytes do not dedup below the blob, nor shrink: big
        // stored blocks keep the recipe and index tiny. So does a blob too
        // large to cut by content within the memory bound.
        convert_raw(
            store,
            packs,
            sink,
            digest,
            FixedChunker::new(OPAQUE_BLOCK),
            !compressed,
        )?
    } else {
        convert_raw(store, packs, sink, digest, new_chunker(), true)?
    };
    done.fallback = fallback;
    Ok((done, landed))
}

/// Checks that a blob's original hashes to its digest before anything is
/// built from it. Damaged bytes are set aside (`Store::quarantine_original`:
/// the blob is then unknown and its next push repairs it), never converted.
///
/// # Errors
/// [`ConvertError::Damaged`] for a damaged original; store errors.
fn verify_original(store: &Store, digest: &Digest) -> Result<(), ConvertError> {
    let (actual, size) =
        Hasher::digest_reader(digest.algorithm(), &mut open_original(store, digest)?)?;
    if &actual == digest {
        return Ok(());
    }
    store.quarantine_original(digest, size)?;
    Err(ConvertError::Damaged(format!(
        "the original of {digest} hashes to {actual}: set aside as damaged"
    )))
}

/// Rebuilds the blob from `recipe` and checks size and digest; only then
/// commits the recipe and drops the original. `Ok(Err(why))` when the
/// recipe does not rebuild the blob (nothing was committed). A recipe whose
/// replica checkpoints do not rebuild it (the stretches between them are
/// recreated on their own) is proven and committed without them.
fn prove_and_commit(store: &Store, recipe: &Recipe) -> io::Result<Result<(), String>> {
    let proven = match prove(recipe, store) {
        Ok(Ok(())) => Ok(Ok(recipe.clone())),
        failed if has_checkpoints(recipe) => {
            let mut plain = recipe.clone();
            for op in &mut plain.layout {
                if let Op::Replica { checkpoints, .. } = op {
                    checkpoints.clear();
                }
            }
            let why = match failed {
                Ok(Err(why)) => why,
                Err(e) => e.to_string(),
                Ok(Ok(())) => unreachable!("matched above"),
            };
            eprintln!(
                "blockreg-guest: {}: replica checkpoints did not rebuild it ({why}); proving without them",
                recipe.digest
            );
            prove(&plain, store).map(|r| r.map(|()| plain))
        }
        failed => failed.map(|r| r.map(|()| recipe.clone())),
    };
    let recipe = match proven? {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    store.put_recipe(&recipe)?;
    store.remove_original(&recipe.digest)?;
    Ok(Ok(()))
}

fn has_checkpoints(recipe: &Recipe) -> bool {
    recipe
        .layout
        .iter()
        .any(|op| matches!(op, Op::Replica { checkpoints, .. } if !checkpoints.is_empty()))
}

/// Rebuilds the blob from `recipe`: `Ok(Err(why))` when size or digest
/// differ.
fn prove(recipe: &Recipe, store: &Store) -> io::Result<Result<(), String>> {
    // One byte past the size is enough to tell a recipe that rebuilds too much.
    let mut rebuild = Rebuild::new(store.layout(), recipe.clone(), 0).take(recipe.size + 1);
    let (actual, size) = Hasher::digest_reader(recipe.digest.algorithm(), &mut rebuild)?;
    if size != recipe.size || actual != recipe.digest {
        return Ok(Err(format!(
            "the {} recipe does not rebuild {} ({} bytes rebuilt)",
            recipe.encoding, recipe.digest, size
        )));
    }
    Ok(Ok(()))
}

fn convert_raw(
    store: &Store,
    packs: &mut Packs,
    sink: &mut Sink,
    digest: &Digest,
    mut chunker: impl Chunker,
    compress: bool,
) -> Result<(Converted, Landed), ConvertError> {
    let mut input = open_original(store, digest)?;
    let mut builder = Builder::new(packs, sink)?;
    if !compress {
        builder.writer.store_only();
    }
    let name = chunker.name();
    let mut drafts = Vec::new();
    let mut emit = |piece: &[u8]| -> io::Result<()> {
        drafts.push(builder.put(piece)?);
        Ok(())
    };
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        chunker.feed(&buf[..n], &mut emit)?;
    }
    chunker.finish(&mut emit)?;
    let mut sealed = builder.seal()?;
    let (new_blocks, new_bytes) = (sealed.new_blocks, sealed.new_bytes);
    let table = &mut sealed.table;
    let content: Vec<BlockRef> = drafts.iter().map(|d| table.block(d)).collect();
    drop(drafts);
    let frames = std::mem::take(&mut table.frames);
    let recipe = Recipe::raw(digest.clone(), name, frames, content);
    // A raw recipe that does not rebuild is store damage, not a format
    // this guest cannot handle.
    let landed = sealed
        .land(store, packs, sink, recipe)?
        .map_err(ConvertError::Damaged)?;
    let done = Converted {
        digest: digest.clone(),
        size,
        encoding: Encoding::Raw,
        content_bytes: size,
        new_blocks,
        new_bytes,
        fallback: None,
    };
    Ok((done, landed))
}

/// Fails once the decoded bytes exceed the configured size, or exceed the
/// configured ratio to the compressed bytes read so far.
fn check_decoded(decoded: u64, compressed: u64, settings: &Settings) -> Result<(), DecodeError> {
    if decoded > settings.max_decoded_bytes {
        return Err(refused(format!(
            "decodes to more than {} bytes (max_decoded_bytes)",
            settings.max_decoded_bytes
        )));
    }
    if decoded > RATIO_FLOOR && decoded as f64 > settings.max_decoded_ratio * compressed as f64 {
        return Err(refused(format!(
            "decodes to over {}× its compressed size ({decoded} bytes from {compressed}; \
             max_decoded_ratio)",
            settings.max_decoded_ratio
        )));
    }
    Ok(())
}

/// What the analysis of a gzip or zstd blob has drafted so far: content
/// blocks cut from its decoded bytes, and the layout that recreates the
/// stream from them (literal bytes, DEFLATE or zstd segments with their
/// corrections).
struct DecodedDraft<'s> {
    chunker: TarChunker,
    settings: &'s Settings,
    content: Vec<Draft>,
    layout: Vec<DraftOp>,
    /// Plain bytes of the segment in progress.
    seg_plain: u64,
    /// Bytes outside DEFLATE streams (headers, trailers, trailing data).
    literal: usize,
    /// Decoded bytes so far, for the size and ratio limits.
    decoded: u64,
}

impl<'s> DecodedDraft<'s> {
    fn new(chunker: TarChunker, settings: &'s Settings) -> Self {
        Self {
            chunker,
            settings,
            content: Vec::new(),
            layout: Vec::new(),
            seg_plain: 0,
            literal: 0,
            decoded: 0,
        }
    }

    /// Takes one analysis event; `read` is the compressed bytes read so far.
    fn take(&mut self, builder: &mut Builder, ev: Event<'_>, read: u64) -> Result<(), DecodeError> {
        match ev {
            Event::Literal(bytes) => {
                self.literal += bytes.len();
                if self.literal > MAX_LITERAL {
                    return Err(refused(format!(
                        "more than {MAX_LITERAL} bytes outside DEFLATE streams"
                    )));
                }
                match self.layout.last_mut() {
                    Some(DraftOp::Lit(l)) => l.extend_from_slice(bytes),
                    _ => self.layout.push(DraftOp::Lit(bytes.to_vec())),
                }
            }
            Event::DeflateStart => {
                self.layout.push(DraftOp::Deflate(Vec::new()));
                self.seg_plain = 0;
            }
            Event::ZstdStart => {
                self.layout.push(DraftOp::Zstd(Vec::new()));
                self.seg_plain = 0;
            }
            Event::ReplicaStart(replica) => {
                self.layout.push(DraftOp::Replica(replica, 0, Vec::new()));
            }
            Event::ReplicaCheckpoints(checkpoints) => match self.layout.last_mut() {
                Some(DraftOp::Replica(_, _, cps)) => *cps = checkpoints,
                _ => return Err(refused("checkpoints outside a replica stream".into())),
            },
            Event::Plain(bytes) => {
                match self.layout.last_mut() {
                    Some(DraftOp::Replica(_, plain, _)) => *plain += bytes.len() as u64,
                    _ => self.seg_plain += bytes.len() as u64,
                }
                self.decoded += bytes.len() as u64;
                check_decoded(self.decoded, read, self.settings)?;
                let content = &mut self.content;
                self.chunker
                    .feed(bytes, &mut |piece: &[u8]| -> io::Result<()> {
                        content.push(builder.put(piece)?);
                        Ok(())
                    })?;
            }
            Event::SegmentEnd { corrections } => {
                let mut refs = Vec::new();
                for part in corrections.chunks(CORRECTION_BLOCK) {
                    refs.push(builder.put(part)?);
                }
                match self.layout.last_mut() {
                    Some(DraftOp::Deflate(segs) | DraftOp::Zstd(segs)) => {
                        segs.push((self.seg_plain, refs));
                    }
                    _ => return Err(refused("segment outside a compressed stream".into())),
                }
                self.seg_plain = 0;
            }
            Event::StreamEnd => {
                if self.seg_plain != 0 {
                    return Err(refused("DEFLATE stream ended mid-segment".into()));
                }
            }
        }
        Ok(())
    }

    /// Cuts what the chunker still holds; the draft is then complete.
    fn finish(&mut self, builder: &mut Builder) -> io::Result<()> {
        let content = &mut self.content;
        self.chunker.finish(&mut |piece: &[u8]| -> io::Result<()> {
            content.push(builder.put(piece)?);
            Ok(())
        })
    }
}

/// Feeds a compressed blob through its codec's analyser into `draft`;
/// returns its size and the bytes of its corrections.
fn analyse_stream(
    input: &mut impl Read,
    builder: &mut Builder,
    draft: &mut DecodedDraft,
    codec: Codec,
) -> Result<(u64, u64), DecodeError> {
    let (size, corrections) = match codec {
        Codec::Gzip(cfg) => run_analyzer(GzipAnalyzer::new(cfg), input, builder, draft)?,
        Codec::Zstd(cfg) => {
            let (size, corrections) = run_analyzer(ZstdAnalyzer::new(cfg), input, builder, draft)?;
            let allowed = ZSTD_MAX_CORRECTION_SHARE * size as f64 + ZSTD_CORRECTION_SLACK as f64;
            if corrections as f64 > allowed {
                return Err(refused(format!(
                    "zstd corrections of {corrections} bytes are over \
                     {ZSTD_MAX_CORRECTION_SHARE} of the blob's {size} (its sequences \
                     dominate: little to share)"
                )));
            }
            (size, corrections)
        }
    };
    draft.finish(builder)?;
    Ok((size, corrections))
}

/// What the conversion needs of a compressed stream's analyser.
trait StreamAnalyzer {
    fn feed_events(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError>;
    /// Ends the input; the correction bytes in all.
    fn finish_events(
        self,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<u64, DecodeError>;
}

impl StreamAnalyzer for GzipAnalyzer {
    fn feed_events(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.feed(bytes, &mut |ev| out(ev)).map_err(analyze_error)
    }

    fn finish_events(
        self,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<u64, DecodeError> {
        Ok(self
            .finish(&mut |ev| out(ev))
            .map_err(analyze_error)?
            .correction_bytes)
    }
}

impl StreamAnalyzer for ZstdAnalyzer {
    fn feed_events(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.feed(bytes, out).map_err(zstd_error)
    }

    fn finish_events(
        self,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), DecodeError>,
    ) -> Result<u64, DecodeError> {
        Ok(self.finish(out).map_err(zstd_error)?.correction_bytes)
    }
}

/// Feeds the whole input through `analyzer` into `draft`; the input's size
/// and the correction bytes.
fn run_analyzer(
    mut analyzer: impl StreamAnalyzer,
    input: &mut impl Read,
    builder: &mut Builder,
    draft: &mut DecodedDraft,
) -> Result<(u64, u64), DecodeError> {
    let size = feed_all(input, |bytes, read| {
        analyzer.feed_events(bytes, &mut |ev| draft.take(builder, ev, read))
    })?;
    let corrections = analyzer.finish_events(&mut |ev| draft.take(builder, ev, size))?;
    Ok((size, corrections))
}

/// Reads `input` to its end in 1 MiB pieces, handing each to `feed` with
/// the bytes read so far; returns the total.
fn feed_all(
    input: &mut impl Read,
    mut feed: impl FnMut(&[u8], u64) -> Result<(), DecodeError>,
) -> Result<u64, DecodeError> {
    let mut buf = vec![0u8; 1024 * 1024];
    let mut read = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(read);
        }
        read += n as u64;
        feed(&buf[..n], read)?;
    }
}

/// The layout of a draft with every block reference resolved.
fn resolve_layout(layout: Vec<DraftOp>, table: &mut FrameTable) -> Vec<Op> {
    layout
        .into_iter()
        .map(|op| match op {
            DraftOp::Lit(b) => Op::Lit(b),
            DraftOp::Deflate(segs) => Op::Deflate(resolve_segments(segs, table)),
            DraftOp::Zstd(segs) => Op::Zstd(resolve_segments(segs, table)),
            DraftOp::Replica(replica, plain, checkpoints) => Op::Replica {
                replica,
                plain,
                checkpoints,
            },
        })
        .collect()
}

fn resolve_segments(segs: Vec<(u64, Vec<Draft>)>, table: &mut FrameTable) -> Vec<Segment> {
    segs.into_iter()
        .map(|(plain, refs)| Segment {
            plain,
            corrections: refs.iter().map(|d| table.block(d)).collect(),
        })
        .collect()
}

/// Converts a gzip or zstd blob to its decoded content's blocks plus the layout
/// that recreates the stream, if the result is exact and worth it.
fn convert_decoded(
    store: &Store,
    packs: &mut Packs,
    sink: &mut Sink,
    digest: &Digest,
    chunker: TarChunker,
    codec: Codec,
    settings: &Settings,
) -> Result<(Converted, Landed), DecodeError> {
    let mut input = open_original(store, digest)?;
    let mut builder = Builder::new(packs, sink)?;
    let name = chunker.name();
    let mut draft = DecodedDraft::new(chunker, settings);
    let (size, corrections) = match analyse_stream(&mut input, &mut builder, &mut draft, codec) {
        Ok(analysed) => analysed,
        Err(e) => {
            builder.writer.abandon();
            return Err(e);
        }
    };
    let mut sealed = builder.seal()?;
    let (new_blocks, new_bytes) = (sealed.new_blocks, sealed.new_bytes);
    let table = &mut sealed.table;
    let content: Vec<BlockRef> = draft.content.iter().map(|d| table.block(d)).collect();
    let layout = resolve_layout(std::mem::take(&mut draft.layout), table);
    let recipe = Recipe {
        digest: digest.clone(),
        size,
        chunker: name,
        encoding: codec.encoding(),
        frames: std::mem::take(&mut table.frames),
        content,
        layout,
    };
    drop(draft);
    // Worth it only if its content costs no more than the blob as it came;
    // its corrections (bounded by `max_correction_ratio`) are what lets
    // the next near-identical layer share that content, so they are
    // allowed on top: an encoder preflate predicts poorly (15 % of a
    // JavaScript-heavy Go 1.27 layer) would otherwise keep a whole series
    // of layers from sharing anything, the first one being stored raw.
    // A zstd layer's content may also cost a tenth more than the layer:
    // zstd's 8 MiB window beats the packs' Brotli in 1 MiB frames on text
    // (a Python layer: content 1.08x the layer).
    let codec_slack = match codec {
        Codec::Gzip(_) => 0,
        Codec::Zstd(_) => size / 10,
    };
    let cost = sealed.added_bytes + recipe.to_json().len() as u64;
    if cost > cost_allowance(size) + corrections + codec_slack {
        sealed.abandon();
        return Err(refused(format!(
            "its decoded form would add {cost} bytes, more than the blob's {size} plus its {corrections} correction bytes"
        )));
    }
    let content_bytes = recipe.content_len();
    let landed = sealed
        .land(store, packs, sink, recipe)?
        .map_err(|why| DecodeError::Refused(Refusal::Unmodelled(why)))?;
    let done = Converted {
        digest: digest.clone(),
        size,
        encoding: codec.encoding(),
        content_bytes,
        new_blocks,
        new_bytes,
        fallback: None,
    };
    Ok((done, landed))
}

/// Every zstd failure is final: there is no other attempt to make.
fn zstd_error(e: zstd::ZstdError<DecodeError>) -> DecodeError {
    match e {
        zstd::ZstdError::Callback(inner) => inner,
        other => refused(format!("zstd analysis: {other}")),
    }
}

/// Preflate's failures, and a block too large for this attempt's bounds,
/// may pass with other segment sizes; a stream that is not valid gzip, or
/// corrections above the limit, will not.
fn analyze_error(e: deflate::AnalyzeError<DecodeError>) -> DecodeError {
    use deflate::AnalyzeError as A;
    let why = format!("gzip analysis: {e}");
    match e {
        A::Callback(inner) => inner,
        A::Preflate(_) | A::NoProgress(_) | A::ReplicaMismatch(_) | A::ReplicaRemote(_) => {
            DecodeError::Refused(Refusal::Unmodelled(why))
        }
        A::NotGzip
        | A::BadHeader(_)
        | A::Corrupt(_)
        | A::Truncated
        | A::TooManyCorrections { .. } => refused(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        commit_blob, gzip, odd_gzip, scratch_store, seeded_bytes, settings, tar_of, texty_bytes,
        zstd_of,
    };

    fn rebuild_all(store: &Store, d: &Digest, start: u64) -> Vec<u8> {
        let r = store.recipe(d).unwrap().expect("converted");
        let mut out = Vec::new();
        Rebuild::new(store.layout(), r, start)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn files(mtime: u64, changed: bool) -> Vec<u8> {
        let big = texty_bytes(1, 300_000);
        let mut edited = texty_bytes(2, 50_000);
        if changed {
            edited[1000..1010].copy_from_slice(b"0123456789");
        }
        let bin = seeded_bytes(3, 40_000);
        let small = texty_bytes(4, 900);
        tar_of(&[
            ("usr/share/big.txt", &big, mtime),
            ("etc/app.conf", &edited, mtime),
            ("usr/lib/blob.bin", &bin, mtime + 1),
            ("etc/small", &small, mtime),
        ])
    }

    #[test]
    fn raw_blob_converts_and_rebuilds_exactly() {
        let store = scratch_store("convert-raw");
        let data = seeded_bytes(7, 100_000);
        let d = commit_blob(&store, &data);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Raw);
        assert!(!store.original_path(&d).exists(), "original dropped");
        assert!(store.pending_blobs().unwrap().is_empty());
        assert_eq!(rebuild_all(&store, &d, 0), data);
        assert_eq!(rebuild_all(&store, &d, 12_345), data[12_345..]);
    }

    /// What the host decodes ahead is what a rebuild then asks for, in
    /// the same order: content blocks from old and new frames,
    /// corrections between them, whole blobs and ranges.
    #[test]
    fn a_rebuild_asks_the_host_for_exactly_the_frames_it_planned() {
        let store = scratch_store("convert-frame-plan");
        let big = |mtime| {
            tar_of(&[
                ("a/big.txt", &texty_bytes(11, 2_500_000), mtime),
                ("a/bin", &seeded_bytes(12, 600_000), mtime),
                ("b/more.txt", &texty_bytes(13, 1_500_000), mtime),
            ])
        };
        let first = gzip(&big(1_700_000_000), 6);
        let d1 = commit_blob(&store, &first);
        convert(&store, &settings(), &d1).unwrap();
        // Same files, new mtimes, another compressor: old frames for the
        // content, new ones for the headers and corrections.
        let mut files = big(1_700_086_400);
        files.extend(texty_bytes(14, 900_000));
        let second = odd_gzip(&files, 3, false);
        let d2 = commit_blob(&store, &second);
        convert(&store, &settings(), &d2).unwrap();
        let raw = seeded_bytes(15, 3_000_000);
        let d3 = commit_blob(&store, &raw);
        convert(&store, &settings(), &d3).unwrap();
        for (d, start, want) in [
            (&d1, 0, &first[..]),
            (&d2, 0, &second[..]),
            (&d3, 0, &raw[..]),
            (&d3, 2_000_000, &raw[2_000_000..]),
        ] {
            let r = store.recipe(d).unwrap().expect("converted");
            let mut rebuild = Rebuild::new(store.layout(), r, start);
            let mut out = Vec::new();
            rebuild.read_to_end(&mut out).unwrap();
            assert!(out == want, "{d} from {start} rebuilt");
            let (planned, asked) = rebuild.frame_log();
            assert!(asked.len() > 1, "{d}: {} frames", asked.len());
            assert_eq!(planned, asked, "{d} from {start}");
        }
    }

    #[test]
    fn gzip_layer_is_stored_as_its_tar_and_recreated_bit_for_bit() {
        let store = scratch_store("convert-gzip");
        let layer = gzip(&files(1_700_000_000, false), 6);
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip, "{:?}", c.fallback);
        assert!(c.content_bytes > layer.len() as u64, "content is the tar");
        assert_eq!(rebuild_all(&store, &d, 0), layer);
        assert_eq!(rebuild_all(&store, &d, 5000), layer[5000..]);
    }

    #[test]
    fn rebuilt_layer_with_new_mtimes_stores_almost_nothing_new() {
        let store = scratch_store("convert-rebuilt");
        let first = gzip(&files(1_700_000_000, false), 6);
        let d1 = commit_blob(&store, &first);
        let c1 = convert(&store, &settings(), &d1).unwrap();
        // Same files, rebuilt a day later, one small edit: a different gzip stream.
        let second = gzip(&files(1_700_086_400, true), 6);
        let d2 = commit_blob(&store, &second);
        let c2 = convert(&store, &settings(), &d2).unwrap();
        assert_eq!(c2.encoding, Encoding::Gzip);
        assert!(
            c2.new_bytes * 10 < c1.new_bytes,
            "second layer added {} of {} bytes",
            c2.new_bytes,
            c1.new_bytes
        );
        assert_eq!(rebuild_all(&store, &d1, 0), first);
        assert_eq!(rebuild_all(&store, &d2, 0), second);
    }

    /// Issue 8: a layer whose compressor preflate does not model (Go 1.27,
    /// pgzip, ... here a test encoder no real one resembles) is still
    /// stored as its content plus corrections, so a rebuilt copy shares
    /// its blocks; before, such layers were stored raw, sharing nothing.
    #[test]
    fn a_layer_of_an_unmodelled_compressor_is_deduplicated_not_stored_raw() {
        let store = scratch_store("convert-unmodelled");
        let with_zeros = |mtime, changed| {
            // Zeros first, among the files, so that the first segment (on
            // which preflate estimates) already defeats every model.
            let mut tar = tar_of(&[("var/sparse", &[0u8; 80_000], mtime)]);
            tar.truncate(tar.len() - 1024);
            tar.extend(files(mtime, changed));
            tar
        };
        let first = odd_gzip(&with_zeros(1_700_000_000, false), 1, false);
        let d1 = commit_blob(&store, &first);
        let c1 = convert(&store, &settings(), &d1).unwrap();
        assert_eq!(c1.encoding, Encoding::Gzip, "{:?}", c1.fallback);
        let second = odd_gzip(&with_zeros(1_700_086_400, true), 2, false);
        let d2 = commit_blob(&store, &second);
        let c2 = convert(&store, &settings(), &d2).unwrap();
        assert_eq!(c2.encoding, Encoding::Gzip, "{:?}", c2.fallback);
        assert!(
            c2.new_bytes * 4 < second.len() as u64,
            "second layer added {} bytes for a {}-byte blob",
            c2.new_bytes,
            second.len()
        );
        assert_eq!(rebuild_all(&store, &d1, 0), first);
        assert_eq!(rebuild_all(&store, &d2, 0), second);
        assert_eq!(rebuild_all(&store, &d2, 777), second[777..]);
    }

    /// Issue 8: a zstd layer is stored as its content plus the stream's own
    /// structure, so a rebuilt copy, and the same tar pushed gzip-compressed,
    /// share its blocks; a zstd layer whose sequences would cost more than
    /// 65 % of it stays raw. Every form is rebuilt exactly.
    #[test]
    fn zstd_layers_are_stored_decoded_and_share_content_with_gzip_twins() {
        let store = scratch_store("convert-zstd");
        let tar = |mtime, changed| {
            let lib = seeded_bytes(11, 400_000);
            let mut t = tar_of(&[("usr/lib/a.so", &lib, mtime)]);
            t.truncate(t.len() - 1024);
            t.extend(files(mtime, changed));
            t
        };
        let first = zstd_of(&tar(1_700_000_000, false));
        let d1 = commit_blob(&store, &first);
        let c1 = convert(&store, &settings(), &d1).unwrap();
        assert_eq!(c1.encoding, Encoding::Zstd, "{:?}", c1.fallback);
        let second = zstd_of(&tar(1_700_086_400, true));
        let d2 = commit_blob(&store, &second);
        let c2 = convert(&store, &settings(), &d2).unwrap();
        assert_eq!(c2.encoding, Encoding::Zstd, "{:?}", c2.fallback);
        assert!(
            c2.new_bytes * 3 < second.len() as u64,
            "second zstd layer added {} bytes for a {}-byte blob",
            c2.new_bytes,
            second.len()
        );
        let twin = gzip(&tar(1_700_000_000, false), 6);
        let d3 = commit_blob(&store, &twin);
        let c3 = convert(&store, &settings(), &d3).unwrap();
        assert_eq!(c3.encoding, Encoding::Gzip, "{:?}", c3.fallback);
        assert!(
            c3.new_bytes * 20 < twin.len() as u64,
            "the gzip twin added {} bytes for a {}-byte blob",
            c3.new_bytes,
            twin.len()
        );
        let texty = zstd_of(&texty_bytes(5, 2_000_000));
        let d4 = commit_blob(&store, &texty);
        let c4 = convert(&store, &settings(), &d4).unwrap();
        assert_eq!(c4.encoding, Encoding::Raw);
        assert!(
            c4.fallback
                .as_deref()
                .is_some_and(|w| w.contains("zstd corrections")),
            "{:?}",
            c4.fallback
        );
        for (d, blob) in [(&d1, &first), (&d2, &second), (&d3, &twin), (&d4, &texty)] {
            assert!(
                rebuild_all(&store, d, 0) == *blob,
                "{d} rebuilt differently"
            );
        }
        assert_eq!(store.usage().unwrap().zstd_blobs, 2);
    }

    #[test]
    fn go_and_pgzip_layers_are_recreated_by_their_encoders_replica_and_need_no_corrections() {
        use crate::replica::Replica;
        let store = scratch_store("convert-replica");
        let tar = |mtime, changed| {
            let mut t = tar_of(&[("usr/lib/b.so", &seeded_bytes(21, 300_000), mtime)]);
            t.truncate(t.len() - 1024);
            t.extend(files(mtime, changed));
            t
        };
        let replicas = |d: &Digest| -> Vec<Replica> {
            let r = store.recipe(d).unwrap().unwrap();
            assert!(
                !r.layout.iter().any(|op| matches!(op, Op::Deflate(_))),
                "{d}: preflate used"
            );
            r.layout
                .iter()
                .filter_map(|op| match op {
                    Op::Replica { replica, .. } => Some(*replica),
                    _ => None,
                })
                .collect()
        };
        let first = blockreg_core::goflate::gzip_member(6, &tar(1_700_000_000, false));
        let d1 = commit_blob(&store, &first);
        let c1 = convert(&store, &settings(), &d1).unwrap();
        assert_eq!(c1.encoding, Encoding::Gzip, "{:?}", c1.fallback);
        assert_eq!(replicas(&d1), [Replica::GoFlate127(6)]);
        let second = blockreg_core::goflate::gzip_member(6, &tar(1_700_086_400, true));
        let d2 = commit_blob(&store, &second);
        let c2 = convert(&store, &settings(), &d2).unwrap();
        assert!(
            c2.new_bytes * 10 < second.len() as u64,
            "the second layer added {} bytes for a {}-byte blob",
            c2.new_bytes,
            second.len()
        );
        let fast = blockreg_core::goflate::gzip_member(1, &tar(1_700_000_000, false));
        let d3 = commit_blob(&store, &fast);
        convert(&store, &settings(), &d3).unwrap();
        assert_eq!(replicas(&d3), [Replica::GoFlate127(1)]);
        // As docker 20.10 (Go <= 1.26) compresses a layer.
        let docker = blockreg_core::goflate126::gzip_member(6, &tar(1_700_172_800, true));
        let d4 = commit_blob(&store, &docker);
        let c4 = convert(&store, &settings(), &d4).unwrap();
        assert_eq!(replicas(&d4), [Replica::GoFlate126(6)]);
        assert!(
            c4.new_bytes * 10 < docker.len() as u64,
            "docker's layer added {} bytes for a {}-byte blob",
            c4.new_bytes,
            docker.len()
        );
        // As podman, buildah and skopeo (klauspost's pgzip) compress it:
        // Debian 12's (klauspost/compress 1.15) and today's (1.18.2 on).
        use blockreg_core::goflate::Klauspost;
        let podman =
            blockreg_core::pgzip::gzip_member(Klauspost::V1_15, -1, &tar(1_700_259_200, true));
        let d5 = commit_blob(&store, &podman);
        let c5 = convert(&store, &settings(), &d5).unwrap();
        assert_eq!(replicas(&d5), [Replica::Pgzip(Klauspost::V1_15, 5)]);
        assert!(
            c5.new_bytes * 10 < podman.len() as u64,
            "pgzip's layer added {} bytes for a {}-byte blob",
            c5.new_bytes,
            podman.len()
        );
        let podman_today =
            blockreg_core::pgzip::gzip_member(Klauspost::V1_18_2, -1, &tar(1_700_345_600, true));
        let d6 = commit_blob(&store, &podman_today);
        convert(&store, &settings(), &d6).unwrap();
        assert_eq!(replicas(&d6), [Replica::Pgzip(Klauspost::V1_18_2, 5)]);
        for (d, blob) in [
            (&d1, &first),
            (&d2, &second),
            (&d3, &fast),
            (&d4, &docker),
            (&d5, &podman),
            (&d6, &podman_today),
        ] {
            assert!(
                rebuild_all(&store, d, 0) == *blob,
                "{d} rebuilt differently"
            );
            let mid = blob.len() as u64 / 2;
            assert!(
                rebuild_all(&store, d, mid) == blob[mid as usize..],
                "{d} rebuilt from its middle differently"
            );
        }
    }

    #[test]
    fn a_large_docker_layer_keeps_checkpoints_and_is_rebuilt_stretch_by_stretch() {
        let store = scratch_store("convert-checkpoints");
        // Repeats further apart than Go's window: blocks stored once.
        let base = texty_bytes(51, 1 << 20);
        let mut content = Vec::new();
        for _ in 0..7 {
            content.extend_from_slice(&base);
        }
        content.extend(seeded_bytes(52, 200_000));
        let tar = tar_of(&[
            ("usr/share/doc.txt", &content, 1_700_000_000),
            ("usr/lib/b.so", &seeded_bytes(53, 500_000), 1_700_000_000),
        ]);
        let docker = blockreg_core::goflate126::gzip_member(6, &tar);
        let d = commit_blob(&store, &docker);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip, "{:?}", c.fallback);
        let r = store.recipe(&d).unwrap().unwrap();
        let checkpoints = |r: &Recipe| -> usize {
            r.layout
                .iter()
                .map(|op| match op {
                    Op::Replica { checkpoints, .. } => checkpoints.len(),
                    _ => 0,
                })
                .sum()
        };
        let n = checkpoints(&r);
        assert!(n >= 2, "{n} checkpoints for a {}-byte stream", docker.len());
        assert!(rebuild_all(&store, &d, 0) == docker, "rebuilt differently");
        let mid = docker.len() as u64 / 3;
        assert!(rebuild_all(&store, &d, mid) == docker[mid as usize..]);
        // Checkpoints that do not rebuild the blob are dropped, and the
        // recipe is proven and committed without them.
        let mut damaged = r.clone();
        for op in &mut damaged.layout {
            if let Op::Replica { checkpoints, .. } = op {
                for c in checkpoints.iter_mut() {
                    c.out += 1;
                }
            }
        }
        assert!(
            !matches!(prove(&damaged, &store), Ok(Ok(()))),
            "damaged proven"
        );
        assert!(prove_and_commit(&store, &damaged).unwrap().is_ok());
        let committed = store.recipe(&d).unwrap().unwrap();
        assert_eq!(checkpoints(&committed), 0);
        assert!(rebuild_all(&store, &d, 0) == docker);
    }

    #[test]
    fn a_layer_that_leaves_its_replica_after_the_probe_is_analysed_again_by_preflate() {
        // Noise past the probe's reach (every level stores it alike), then
        // text only level 5 compresses this way: level 6 is tried first and
        // diverges there.
        let store = scratch_store("convert-replica-mismatch");
        let mut data = seeded_bytes(31, blockreg_core::replica::PROBE_PLAIN + (1 << 20));
        data.extend(texty_bytes(32, 1 << 20));
        let blob = blockreg_core::goflate::gzip_member(5, &data);
        let d = commit_blob(&store, &blob);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip, "{:?}", c.fallback);
        let r = store.recipe(&d).unwrap().unwrap();
        assert!(r.layout.iter().any(|op| matches!(op, Op::Deflate(_))));
        assert!(rebuild_all(&store, &d, 0) == blob);
    }

    #[test]
    fn a_file_moved_within_the_archive_gives_the_same_blocks() {
        let store = scratch_store("convert-moved");
        let body = texty_bytes(9, 64 * 1024);
        let a = tar_of(&[("a/one", b"short", 1), ("a/file", &body, 1)]);
        let b = tar_of(&[("b/other", &texty_bytes(10, 777), 2), ("b/file", &body, 2)]);
        let da = commit_blob(&store, &a);
        convert(&store, &settings(), &da).unwrap();
        let db = commit_blob(&store, &b);
        let cb = convert(&store, &settings(), &db).unwrap();
        assert!(
            cb.new_bytes < 8 * 1024,
            "only headers and the small file are new: {}",
            cb.new_bytes
        );
        assert_eq!(rebuild_all(&store, &db, 0), b);
    }

    #[test]
    fn corrupt_gzip_falls_back_to_raw_blocks_and_stays_pullable() {
        let store = scratch_store("convert-corrupt");
        let mut layer = gzip(&files(1, false), 6);
        let mid = layer.len() / 2;
        for b in &mut layer[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Raw);
        assert!(c.fallback.is_some());
        assert_eq!(rebuild_all(&store, &d, 0), layer);
    }

    #[test]
    fn a_damaged_original_is_set_aside_not_converted() {
        let store = scratch_store("convert-damaged");
        let layer = gzip(&files(2, false), 6);
        let d = commit_blob(&store, &layer);
        let mut damaged = layer.clone();
        damaged[10] ^= 1;
        std::fs::write(store.original_path(&d), &damaged).unwrap();
        let err = convert(&store, &settings(), &d).unwrap_err();
        assert!(matches!(err, ConvertError::Damaged(_)), "{err}");
        assert!(
            !store.has_blob(&d),
            "a damaged blob is unknown, so a push repairs it"
        );
        assert!(store.recipe(&d).unwrap().is_none());
        assert_eq!(commit_blob(&store, &layer), d);
        assert_eq!(
            convert(&store, &settings(), &d).unwrap().size,
            layer.len() as u64
        );
        assert_eq!(rebuild_all(&store, &d, 0), layer);
    }

    #[test]
    fn an_interrupted_conversion_is_simply_run_again() {
        let store = scratch_store("convert-resume");
        let layer = gzip(&files(5, false), 6);
        let d = commit_blob(&store, &layer);
        // A conversion killed mid-pack leaves a temporary pack behind.
        let packs = Packs::new(store.layout());
        let mut w = PackWriter::create(&packs).unwrap();
        w.add(BlockId::compute(b"partial").unwrap(), b"partial")
            .unwrap();
        std::mem::forget(w);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip);
        assert_eq!(rebuild_all(&store, &d, 0), layer);
        // Killed after the recipe was committed but before the original went.
        let other = seeded_bytes(11, 5000);
        let d2 = commit_blob(&store, &other);
        convert(&store, &settings(), &d2).unwrap();
        std::fs::write(store.original_path(&d2), &other).unwrap();
        assert_eq!(store.pending_blobs().unwrap(), vec![d2.clone()]);
        let again = convert(&store, &settings(), &d2).unwrap();
        assert_eq!(again.new_blocks, 0);
        assert!(store.pending_blobs().unwrap().is_empty());
    }

    #[test]
    fn either_chunker_reads_what_the_other_wrote() {
        let store = scratch_store("convert-both-chunkers");
        let a = gzip(&files(10, false), 6);
        let b = gzip(&files(20, true), 6);
        let da = commit_blob(&store, &a);
        let ca = convert_with(&store, &settings(), &da, TarChunker::default).unwrap();
        let db = commit_blob(&store, &b);
        let cb = convert_with(&store, &settings(), &db, TarChunker::fastcdc_default).unwrap();
        let ra = store.recipe(&da).unwrap().unwrap();
        let rb = store.recipe(&db).unwrap().unwrap();
        assert_eq!(ra.chunker, "tar-4096");
        assert!(rb.chunker.starts_with("tar-fastcdc"), "{}", rb.chunker);
        assert_eq!(
            (ca.encoding.as_str(), cb.encoding.as_str()),
            ("gzip", "gzip")
        );
        // One reader for both: the recipe, not the chunker, says how.
        assert_eq!(rebuild_all(&store, &da, 0), a);
        assert_eq!(rebuild_all(&store, &db, 0), b);
        // Same files cut differently share little, but the store stays exact.
        let c = gzip(&files(30, false), 6);
        let dc = commit_blob(&store, &c);
        let cc = convert_with(&store, &settings(), &dc, TarChunker::fastcdc_default).unwrap();
        assert!(
            cc.new_bytes * 10 < cb.new_bytes,
            "FastCDC dedups against FastCDC: {} vs {}",
            cc.new_bytes,
            cb.new_bytes
        );
        assert_eq!(rebuild_all(&store, &dc, 0), c);
    }

    #[test]
    fn multi_member_gzip_round_trips() {
        let store = scratch_store("convert-multi");
        let t = files(3, false);
        let (a, b) = t.split_at(t.len() / 3);
        let mut layer = gzip(a, 9);
        layer.extend(gzip(b, 1));
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &settings(), &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip, "{:?}", c.fallback);
        assert_eq!(rebuild_all(&store, &d, 0), layer);
    }

    /// Bytes the store holds for blob data: packs, index shards, recipes.
    fn stored_bytes(store: &Store) -> u64 {
        fn walk(dir: &std::path::Path, only: Option<&str>) -> u64 {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return 0;
            };
            rd.map(|e| e.unwrap())
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk(&e.path(), only)
                    } else if only.is_none_or(|n| e.file_name() == n) {
                        m.len()
                    } else {
                        0
                    }
                })
                .sum()
        }
        walk(&store.layout().blocks(), None) + walk(&store.layout().layers(), Some("recipe.json"))
    }

    /// Gzip (level 6) of `n` zero bytes, without holding them in memory.
    fn gzipped_zeros(n: u64) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..n / chunk.len() as u64 {
            e.write_all(&chunk).unwrap();
        }
        e.finish().unwrap()
    }

    fn memory_bytes() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            core::arch::wasm32::memory_size(0) as u64 * 65_536
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            0
        }
    }

    #[test]
    fn a_blob_whose_attempts_trap_waits_then_fails_while_later_blobs_convert() {
        let store = scratch_store("convert-poisoned");
        let poisoned = commit_blob(&store, &seeded_bytes(31, 10_000));
        let ordinary = commit_blob(&store, &seeded_bytes(32, 10_000));
        let t0 = 1_800_000_000;
        // The poisoned blob's first attempt killed its instance: only the
        // record written before it started remains.
        store.begin_conversion_attempt(&poisoned, t0).unwrap();
        let done = convert_next(&store, &settings(), t0 + 1, Queue::Small).unwrap();
        assert_eq!(done.len(), 1, "the blob in backoff is skipped");
        let (d, r) = &done[0];
        assert_eq!(d, &ordinary);
        assert!(r.is_ok());
        assert!(store.conversion_attempts(&ordinary).unwrap().is_none());
        assert!(
            convert_next(&store, &settings(), t0 + 2, Queue::Small)
                .unwrap()
                .is_empty(),
            "waits 30 s"
        );
        // Two more trapped attempts, each after its delay …
        assert_eq!(retry_delay(1), 30);
        assert_eq!(retry_delay(2), 60);
        store.begin_conversion_attempt(&poisoned, t0 + 31).unwrap();
        assert!(
            convert_next(&store, &settings(), t0 + 31 + 59, Queue::Small)
                .unwrap()
                .is_empty()
        );
        store.begin_conversion_attempt(&poisoned, t0 + 91).unwrap();
        // … and after the third it is failed for good, served as pushed.
        assert!(convert_next(&store, &settings(), t0 + 10_000, Queue::Small)
            .unwrap()
            .is_empty());
        assert!(store.original_path(&poisoned).exists());
        assert!(store.conversion_attempts(&poisoned).unwrap().is_none());
        let u = store.usage().unwrap();
        assert_eq!((u.pending, u.failed), (0, 1));
    }

    #[test]
    fn small_blobs_converted_together_share_one_pack_and_their_blocks() {
        let store = scratch_store("convert-batch");
        let mut blobs = Vec::new();
        for i in 0..12u64 {
            // Configs and tiny layers: every third one a gzip layer of the
            // same files with new mtimes, the rest small raw blobs.
            let bytes = if i % 3 == 0 {
                gzip(&files(1_700_000_000 + i, false), 6)
            } else {
                seeded_bytes(40 + i, 3000 + i as usize * 100)
            };
            blobs.push((commit_blob(&store, &bytes), bytes));
        }
        let done = convert_next(&store, &settings(), 1_000, Queue::Small).unwrap();
        assert_eq!(done.len(), blobs.len(), "one batch takes them all");
        assert_eq!(
            Packs::new(store.layout()).pack_totals().unwrap().0,
            1,
            "one pack for the whole batch"
        );
        let layers: Vec<_> = done
            .iter()
            .map(|(_, r)| r.as_ref().expect("converted"))
            .filter(|c| c.encoding == Encoding::Gzip)
            .collect();
        assert_eq!(layers.len(), 4);
        for later in &layers[1..] {
            assert!(
                later.new_bytes * 10 < layers[0].new_bytes,
                "a later layer of the batch shares the first one's files: {} of {}",
                later.new_bytes,
                layers[0].new_bytes
            );
        }
        assert!(store.pending_blobs().unwrap().is_empty());
        for (d, bytes) in &blobs {
            assert!(store.conversion_attempts(d).unwrap().is_none());
            assert_eq!(&rebuild_all(&store, d, 0), bytes);
        }
    }

    #[test]
    fn the_two_queues_each_take_the_oldest_of_their_kind() {
        let store = scratch_store("convert-queues");
        let small = commit_blob(&store, &seeded_bytes(60, 2000));
        let large = commit_blob(&store, &seeded_bytes(61, SMALL_BLOB as usize + 1));
        let later = commit_blob(&store, &seeded_bytes(62, 2000));
        let large2 = commit_blob(&store, &seeded_bytes(63, SMALL_BLOB as usize + 2));
        let taken = |q| -> Vec<Digest> {
            convert_next(&store, &settings(), 1, q)
                .unwrap()
                .into_iter()
                .map(|(d, r)| {
                    assert!(r.is_ok());
                    d
                })
                .collect()
        };
        // The small queue takes both small blobs, skipping the large one
        // pushed between them; the large queue takes one at a time, oldest
        // first; an empty queue yields to the other.
        assert_eq!(taken(Queue::Large), vec![large]);
        assert_eq!(taken(Queue::Small), vec![small, later]);
        assert_eq!(taken(Queue::Small), vec![large2]);
        assert!(taken(Queue::Large).is_empty());
        assert_eq!(
            Packs::new(store.layout()).pack_totals().unwrap().0,
            3,
            "one pack for the two small blobs"
        );
    }

    #[test]
    fn a_blob_that_trapped_in_a_batch_is_retried_alone() {
        let store = scratch_store("convert-batch-trap");
        let a = commit_blob(&store, &seeded_bytes(70, 2000));
        let b = commit_blob(&store, &seeded_bytes(71, 2000));
        // A batch of both trapped: both have an unfinished attempt.
        store.begin_conversion_attempt(&a, 10).unwrap();
        store.begin_conversion_attempt(&b, 10).unwrap();
        let first = convert_next(&store, &settings(), 10 + 30, Queue::Small).unwrap();
        assert_eq!(first.len(), 1, "after a trap, a blob converts on its own");
        let second = convert_next(&store, &settings(), 10 + 31, Queue::Small).unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].0, second[0].0);
        assert!(store.pending_blobs().unwrap().is_empty());
    }

    #[test]
    fn an_attempt_that_finishes_clears_its_record() {
        let store = scratch_store("convert-attempt-cleared");
        let d = commit_blob(&store, &seeded_bytes(33, 5000));
        store.begin_conversion_attempt(&d, 100).unwrap();
        assert!(convert_next(&store, &settings(), 129, Queue::Small)
            .unwrap()
            .is_empty());
        let mut done = convert_next(&store, &settings(), 130, Queue::Small).unwrap();
        let (got, r) = done.pop().unwrap();
        assert_eq!(got, d);
        assert_eq!(r.unwrap().encoding, Encoding::Raw);
        assert!(store.conversion_attempts(&d).unwrap().is_none());
        assert!(store.pending_blobs().unwrap().is_empty());
    }

    #[test]
    fn a_decompression_bomb_is_stored_raw_quickly_in_bounded_memory() {
        let store = scratch_store("convert-bomb");
        let bomb = gzipped_zeros(1 << 30);
        let d = commit_blob(&store, &bomb);
        let before = memory_bytes();
        let c = convert(&store, &settings(), &d).unwrap();
        let grown = memory_bytes() - before;
        assert_eq!(c.encoding, Encoding::Raw);
        let why = c.fallback.unwrap_or_default();
        assert!(why.contains("max_decoded_ratio"), "{why}");
        assert!(c.content_bytes <= bomb.len() as u64);
        assert!(grown < 24 << 20, "memory grew by {grown} bytes");
        assert!(stored_bytes(&store) <= cost_allowance(bomb.len() as u64));
        assert_eq!(rebuild_all(&store, &d, 0), bomb);
    }

    #[test]
    fn a_size_limit_stores_a_large_decoded_layer_as_opaque_blocks() {
        let store = scratch_store("convert-size-limit");
        let limited = Settings {
            max_decoded_bytes: 100_000,
            ..settings()
        };
        let layer = gzip(&files(7, false), 6);
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &limited, &d).unwrap();
        assert_eq!(c.encoding, Encoding::Raw);
        assert!(c.fallback.unwrap().contains("max_decoded_bytes"));
        assert_eq!(c.new_blocks, 1, "one opaque block");
        assert_eq!(rebuild_all(&store, &d, 100), layer[100..]);
    }

    #[test]
    fn compressible_unique_data_costs_no_more_than_the_blob_as_it_came() {
        let store = scratch_store("convert-cost-cap");
        // 16 MiB of distinct 4 KiB blocks that are almost all zeros.
        let mut body = vec![0u8; 16 << 20];
        for (i, block) in body.chunks_mut(4096).enumerate() {
            block[..8].copy_from_slice(&(i as u64 * 0x9e37_79b9).to_le_bytes());
        }
        let layer = gzip(&tar_of(&[("big.bin", &body, 1)]), 6);
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &settings(), &d).unwrap();
        let stored = stored_bytes(&store);
        assert!(
            stored <= cost_allowance(layer.len() as u64),
            "{stored} bytes stored for a {}-byte blob ({:?})",
            layer.len(),
            c.fallback
        );
        assert_eq!(c.encoding, Encoding::Raw);
        assert!(c.fallback.unwrap().contains("would add"));
        assert_eq!(rebuild_all(&store, &d, 0), layer);
    }

    #[test]
    fn zeros_convert_to_a_recipe_of_a_few_kilobytes() {
        let store = scratch_store("convert-zeros");
        let unlimited = Settings {
            max_decoded_ratio: 1e9,
            ..settings()
        };
        let layer = gzipped_zeros(64 << 20);
        let d = commit_blob(&store, &layer);
        let c = convert(&store, &unlimited, &d).unwrap();
        assert_eq!(c.encoding, Encoding::Gzip, "{:?}", c.fallback);
        let recipe = std::fs::metadata(store.layout().path(&store.layout().recipe_key(&d)))
            .unwrap()
            .len();
        assert!(recipe < 16 * 1024, "recipe of {recipe} bytes");
        assert!(stored_bytes(&store) <= cost_allowance(layer.len() as u64));
        assert_eq!(rebuild_all(&store, &d, 0), layer);
    }
}
