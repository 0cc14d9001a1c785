//! DEFLATE streams whose encoder a replica reproduces bit for bit (Go's
//! `compress/flate`: [`crate::goflate126`] of Go 1.21–1.26, what docker,
//! containerd, BuildKit and crane wrote until now; [`crate::goflate`] of Go
//! 1.27 on; klauspost's pgzip, [`crate::pgzip`], what podman, buildah and
//! skopeo write), found by trial and proven byte for byte while they are
//! decoded.
//!
//! Such a stream needs no correction data: its content and the encoder's
//! name and level recreate it ([`ReplicaRecreator`]), at the encoder's own
//! speed, instead of preflate's prediction (10–25 MB/s) plus corrections
//! (about 1 % of the layer for Go ≤ 1.26, 4.5–10 % for Go 1.27, which
//! preflate cannot model).
//!
//! How a stream is judged ([`Probe`]): every candidate level the gzip
//! header allows (Go and pgzip write XFL 4 for level 1, 2 for level 9, 0
//! otherwise, and OS 255; pgzip's MTIME is always [`pgzip::MTIME`], Go's
//! never) compresses the stream's first decoded bytes; a candidate
//! whose output leaves the stream's bytes is dropped. A stream no candidate
//! survives goes to preflate untouched (nothing of it was handed out). The
//! survivor then has to match every byte to the end ([`ReplicaMatch`]); a
//! later divergence is [`Mismatch`], and the caller analyses the stream
//! again without replicas.
//!
//! Pure code; memory is bounded by the probe's plain bytes
//! ([`PROBE_PLAIN`]) and the encoders' own state (≈1.6 MiB each).

use flate2::{Decompress, FlushDecompress, Status};

use crate::goflate::Klauspost;
pub use crate::goflate126::{Checkpoint, InvalidCheckpoint};
use crate::gozip::Deflate;
use crate::{goflate, goflate126, pgzip};

/// An encoder a replica reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replica {
    /// Go 1.21–1.26's `compress/flate` at this level (`-2..=9`).
    GoFlate126(i8),
    /// Go 1.27's `compress/flate` at this level (`-2..=9`, `-1` is 6).
    GoFlate127(i8),
    /// klauspost/pgzip 1.2 over klauspost/compress's `flate` of this
    /// version, at this level (`-2..=6`, `-1` is 5).
    Pgzip(Klauspost, i8),
}

impl Replica {
    /// The name recipes use.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::GoFlate126(_) => "go1.26-flate",
            Self::GoFlate127(_) => "go1.27-flate",
            Self::Pgzip(Klauspost::V1_15, _) => "pgzip1.2-klauspost1.15",
            Self::Pgzip(Klauspost::V1_18_0, _) => "pgzip1.2-klauspost1.18.0",
            Self::Pgzip(Klauspost::V1_18_2, _) => "pgzip1.2-klauspost1.18.2",
        }
    }

    #[must_use]
    pub fn level(self) -> i32 {
        match self {
            Self::GoFlate126(l) | Self::GoFlate127(l) | Self::Pgzip(_, l) => i32::from(l),
        }
    }

    /// The replica a recipe names, if this code has it.
    #[must_use]
    pub fn parse(name: &str, level: i32) -> Option<Self> {
        if !(-2..=9).contains(&level) {
            return None;
        }
        let level = i8::try_from(level).ok()?;
        match name {
            "go1.26-flate" => Some(Self::GoFlate126(level)),
            "go1.27-flate" => Some(Self::GoFlate127(level)),
            "pgzip1.2-klauspost1.15" if level <= 6 => Some(Self::Pgzip(Klauspost::V1_15, level)),
            "pgzip1.2-klauspost1.18.0" if level <= 6 => {
                Some(Self::Pgzip(Klauspost::V1_18_0, level))
            }
            "pgzip1.2-klauspost1.18.2" if level <= 6 => {
                Some(Self::Pgzip(Klauspost::V1_18_2, level))
            }
            _ => None,
        }
    }

    /// Its encoder. A proof's (`proof`) takes the writes it is given,
    /// as they come out of the inflater (waiting for aligned ones would
    /// keep a probe from rejecting a candidate early), and records
    /// [`Checkpoint`]s where the replica has them (Go ≤ 1.26's lazy
    /// levels); a recreation's cuts [`GO_WRITE`]-aligned writes.
    fn encoder(self, proof: bool) -> Encoder {
        const CHECKED: &str = "levels are checked on construction";
        match self {
            Self::GoFlate126(l) => {
                let mut e = goflate126::Encoder::new(i32::from(l)).expect(CHECKED);
                if proof {
                    e.checkpoint_every(CHECKPOINT_OUT, CHECKPOINT_PLAIN);
                }
                Encoder::Go126(Box::new(Aligned::new(e, 0, !proof)))
            }
            Self::GoFlate127(l) => Encoder::Go127(Box::new(Aligned::new(
                goflate::Encoder::new(i32::from(l)).expect(CHECKED),
                0,
                !proof,
            ))),
            Self::Pgzip(v, l) => Encoder::Pgzip(Box::new(
                pgzip::Encoder::new(v, i32::from(l)).expect(CHECKED),
            )),
        }
    }
}

/// The encoder of one replica.
enum Encoder {
    Go126(Box<Aligned<goflate126::Encoder>>),
    Go127(Box<Aligned<goflate::Encoder>>),
    Pgzip(Box<pgzip::Encoder>),
    /// A proof's encoder run elsewhere ([`RemoteEncoder`]).
    Remote(Box<dyn RemoteEncoder + Send>),
}

impl Encoder {
    fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Go126(e) => e.write(plain, out),
            Self::Go127(e) => e.write(plain, out),
            Self::Pgzip(e) => e.write(plain, out),
            Self::Remote(e) => return e.write(plain, out),
        }
        Ok(())
    }

    /// Ends the stream; returns the checkpoints it recorded.
    fn finish(self, out: &mut Vec<u8>) -> Result<Vec<Checkpoint>, String> {
        Ok(match self {
            Self::Go126(e) => {
                let checkpoints = e.inner.checkpoints().to_vec();
                (*e).finish(out);
                checkpoints
            }
            Self::Go127(e) => {
                (*e).finish(out);
                Vec::new()
            }
            Self::Pgzip(e) => {
                (*e).finish(out);
                Vec::new()
            }
            Self::Remote(e) => e.finish(out)?,
        })
    }
}

/// A proof's encoder that runs elsewhere — the host's, natively and on
/// another core than the analysis (`wit/replicas.wit`) — given the pieces
/// in order; its output comes back in order, possibly later. It records
/// checkpoints as the replica here would.
pub trait RemoteEncoder {
    /// Compresses the next piece, as one write of the encoder, appending
    /// to `out` whatever output is ready (possibly of earlier pieces).
    ///
    /// # Errors
    /// The remote encoder failed (the analysis then treats the replica as
    /// not proven).
    fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String>;

    /// Ends the stream, appending the rest of the output; returns the
    /// checkpoints recorded.
    ///
    /// # Errors
    /// As [`RemoteEncoder::write`].
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<Vec<Checkpoint>, String>;
}

/// Opens a [`RemoteEncoder`] of a replica for a proof, or none (the proof
/// then runs the replica here).
pub type RemoteOpener = fn(Replica) -> Option<Box<dyn RemoteEncoder + Send>>;

/// Plain bytes per `Write` call of Go's replicas in a recreation, at
/// stream offsets that are multiples of it. How Go's writes are cut can
/// matter in a corner case (`goflate126`'s module documentation): a
/// recreation and a stretch resumed from a checkpoint both cut them here,
/// whatever pieces they are given, so they write the same bytes (and the
/// rebuild that proves a recipe is a recreation).
pub const GO_WRITE: u64 = 256 << 10;

/// A Go replica given its plain in [`GO_WRITE`]-aligned writes (or, not
/// `aligned`, in the writes it gets).
struct Aligned<E> {
    inner: E,
    aligned: bool,
    /// Plain bytes of the current write, not yet given to `inner`.
    held: Vec<u8>,
    /// Stream offset of `held[0]`.
    pos: u64,
}

impl<E: Deflate> Aligned<E> {
    fn new(inner: E, pos: u64, aligned: bool) -> Self {
        Self {
            inner,
            aligned,
            held: Vec::new(),
            pos,
        }
    }

    fn write(&mut self, mut plain: &[u8], out: &mut Vec<u8>) {
        if !self.aligned {
            self.inner.write(plain, out);
            return;
        }
        while !plain.is_empty() {
            let write = ((self.pos / GO_WRITE + 1) * GO_WRITE - self.pos) as usize;
            let need = write - self.held.len();
            if self.held.is_empty() && plain.len() >= need {
                self.inner.write(&plain[..need], out);
                self.pos += need as u64;
                plain = &plain[need..];
                continue;
            }
            let take = need.min(plain.len());
            self.held.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
            if self.held.len() == write {
                self.flush(out);
            }
        }
    }

    /// Gives `inner` the bytes held back, as a shorter write.
    fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.held.is_empty() {
            self.inner.write(&self.held, out);
            self.pos += self.held.len() as u64;
            self.held.clear();
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.flush(out);
        self.inner.finish(out);
    }
}

/// Most decoded bytes the probe looks at before it picks a candidate.
pub const PROBE_PLAIN: usize = 4 << 20;
/// Most decoded bytes inflated per step (the size of a `Plain` piece).
const STEP_PLAIN: usize = 256 << 10;
/// Most bytes an encoder's output may run behind or ahead of the stream.
const MAX_LAG: usize = 16 << 20;
/// A proof records a [`Checkpoint`] after the first block once this much
/// output, or input, passed since the last one: a recreation compresses
/// the stretches between them at once. ~1 MiB of output is a few MiB of
/// plain bytes per stretch (the input bound keeps a stretch of zeros
/// small), and a few dozen bytes of recipe per stretch.
pub const CHECKPOINT_OUT: u64 = 1 << 20;
pub const CHECKPOINT_PLAIN: u64 = 4 << 20;

/// The candidate replicas for a gzip member header: Go and pgzip write OS
/// 255 and an XFL of 4 for level 1, 2 for level 9 and 0 for every other
/// level; pgzip's MTIME is always [`pgzip::MTIME`] (the zero `time.Time`),
/// which Go never writes. Other headers (GNU gzip, zlib, pigz write OS 3)
/// get none. Go ≤ 1.26 first (most layers pushed today), level 6
/// (`gzip.DefaultCompression`) first; pgzip's default, 5, first, over
/// each klauspost/compress whose encoder differs (1.18.0 only at level 4).
#[must_use]
pub fn candidates(header: &[u8]) -> Vec<Replica> {
    let (Some(&xfl), Some(&os)) = (header.get(8), header.get(9)) else {
        return Vec::new();
    };
    if os != 255 {
        return Vec::new();
    }
    if header[4..8] == pgzip::MTIME {
        let (levels, newer): (&[i8], &[i8]) = match xfl {
            4 => (&[1], &[1]),
            // Stored and HuffmanOnly blocks are the same in every version.
            0 => (&[5, 6, 4, 3, 2, -2, 0], &[5, 6, 4, 3, 2]),
            _ => (&[], &[]),
        };
        let version = |v| move |&l: &i8| Replica::Pgzip(v, l);
        return levels
            .iter()
            .map(version(Klauspost::V1_15))
            .chain(newer.iter().map(version(Klauspost::V1_18_2)))
            .chain(
                newer
                    .iter()
                    .filter(|&&l| l == 4)
                    .map(version(Klauspost::V1_18_0)),
            )
            .collect();
    }
    let levels: &[i8] = match xfl {
        4 => &[1],
        2 => &[9],
        0 => &[6, 5, 4, 3, 2, 7, 8, -2, 0],
        _ => &[],
    };
    let older = levels.iter().map(|&l| Replica::GoFlate126(l));
    older
        .chain(levels.iter().map(|&l| Replica::GoFlate127(l)))
        .collect()
}

/// A replica's output left the stream's bytes.
#[derive(Debug, thiserror::Error)]
#[error("{replica} level {level} diverges from the stream at byte {at}", replica = .replica.name(), level = .replica.level())]
pub struct Mismatch {
    pub replica: Replica,
    /// Offset in the DEFLATE stream of the first differing byte.
    pub at: u64,
}

/// Why decoding failed (the stream is corrupt or truncated).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

/// One encoder checked against the stream.
struct Runner {
    replica: Replica,
    encoder: Encoder,
    /// Output not yet compared.
    out: Vec<u8>,
    /// Stream bytes already matched.
    matched: usize,
    /// The encoder's checkpoints, once it finished.
    checkpoints: Vec<Checkpoint>,
    /// Output bytes still to drop: a remote encoder taking over from the
    /// probe's writes them again.
    skip: usize,
}

impl Runner {
    fn new(replica: Replica) -> Self {
        Self {
            replica,
            encoder: replica.encoder(true),
            out: Vec::new(),
            matched: 0,
            checkpoints: Vec::new(),
            skip: 0,
        }
    }

    /// Compresses the next plain bytes.
    fn write(&mut self, plain: &[u8]) -> Result<(), String> {
        self.encoder.write(plain, &mut self.out)?;
        self.drop_skipped();
        Ok(())
    }

    /// Ends the stream (the encoder is spent afterwards).
    fn finish(&mut self) -> Result<(), String> {
        let enc = std::mem::replace(&mut self.encoder, self.replica.encoder(false));
        self.checkpoints = enc.finish(&mut self.out)?;
        self.drop_skipped();
        Ok(())
    }

    fn drop_skipped(&mut self) {
        let n = self.skip.min(self.out.len());
        self.out.drain(..n);
        self.skip -= n;
    }

    /// Hands the stream over to `remote`, which compresses `plain` (all
    /// the plain bytes so far) again: the output this encoder gave and
    /// the stream matched is dropped from the remote's. Nothing changes
    /// when the remote fails: this encoder goes on.
    fn go_remote(
        &mut self,
        mut remote: Box<dyn RemoteEncoder + Send>,
        plain: &[u8],
    ) -> Result<(), String> {
        let mut out = Vec::new();
        for piece in plain.chunks(STEP_PLAIN) {
            remote.write(piece, &mut out)?;
        }
        self.out = out;
        self.skip = self.matched;
        self.encoder = Encoder::Remote(remote);
        self.drop_skipped();
        Ok(())
    }

    /// Compares the output so far with `stream` (which starts at byte 0 of
    /// the DEFLATE stream and holds at least `consumed` bytes): true while
    /// they agree.
    fn agrees(&mut self, stream: &[u8]) -> bool {
        let avail = stream.len().saturating_sub(self.matched);
        let n = self.out.len().min(avail);
        if self.out[..n] != stream[self.matched..self.matched + n] {
            return false;
        }
        self.out.drain(..n);
        self.matched += n;
        self.out.len() <= MAX_LAG
    }
}

/// Inflates raw DEFLATE input into plain bytes, counting what it consumed.
struct Inflater {
    inner: Decompress,
    ended: bool,
}

impl Inflater {
    fn new() -> Self {
        Self {
            inner: Decompress::new(false),
            ended: false,
        }
    }

    /// Inflates from `input` up to about `max` plain bytes; returns (input
    /// bytes consumed, plain bytes).
    fn step(&mut self, input: &[u8], max: usize) -> Result<(usize, Vec<u8>), Corrupt> {
        let mut plain = Vec::with_capacity(max.clamp(1, STEP_PLAIN));
        let start = self.inner.total_in();
        while !self.ended && plain.len() < max {
            if plain.len() == plain.capacity() {
                plain.reserve((max - plain.len()).min(STEP_PLAIN));
            }
            let pos = usize::try_from(self.inner.total_in() - start).expect("bounded by input");
            let (in_before, out_before) = (self.inner.total_in(), plain.len());
            let status = self
                .inner
                .decompress_vec(&input[pos..], &mut plain, FlushDecompress::None)
                .map_err(|e| Corrupt(e.to_string()))?;
            if status == Status::StreamEnd {
                self.ended = true;
            } else if self.inner.total_in() == in_before && plain.len() == out_before {
                break; // it needs more input
            }
        }
        let consumed = usize::try_from(self.inner.total_in() - start).expect("bounded by input");
        Ok((consumed, plain))
    }
}

/// What a probe step found.
pub enum Verdict {
    /// More input is needed to decide.
    Undecided,
    /// No candidate reproduces the stream: analyse it another way, from
    /// its start (nothing was consumed).
    NoReplica,
    /// `replica` reproduces the stream so far: the decoded bytes probed are
    /// handed out in the state that continues the stream.
    Replica(Box<ReplicaMatch>, Vec<u8>),
}

/// The first decoded bytes of a stream, compressed by every candidate.
pub struct Probe {
    /// Where the proof goes on once a candidate is picked.
    remote: Option<RemoteOpener>,
    inflater: Inflater,
    runners: Vec<Runner>,
    plain: Vec<u8>,
    /// Stream bytes the inflater consumed.
    consumed: usize,
}

impl Probe {
    /// A probe of the candidates; none means [`Verdict::NoReplica`] at once.
    /// The picked replica's proof goes on with `remote`'s encoder when it
    /// opens one.
    #[must_use]
    pub fn new(candidates: &[Replica], remote: Option<RemoteOpener>) -> Self {
        Self {
            remote,
            inflater: Inflater::new(),
            runners: candidates.iter().copied().map(Runner::new).collect(),
            plain: Vec::new(),
            consumed: 0,
        }
    }

    /// Advances over `stream` (the DEFLATE stream's bytes from its start,
    /// all that arrived so far; `finishing` when no more will come).
    ///
    /// # Errors
    /// [`Corrupt`] for invalid DEFLATE data.
    pub fn step(&mut self, stream: &[u8], finishing: bool) -> Result<Verdict, Corrupt> {
        if self.runners.is_empty() {
            return Ok(Verdict::NoReplica);
        }
        loop {
            let room = PROBE_PLAIN.saturating_sub(self.plain.len());
            let (used, plain) = self.inflater.step(&stream[self.consumed..], room)?;
            self.consumed += used;
            // The probe's encoders run here: they never fail.
            let ended = self.inflater.ended;
            self.runners
                .retain_mut(|r| r.write(&plain).is_ok() && (!ended || r.finish().is_ok()));
            self.plain.extend_from_slice(&plain);
            let consumed = &stream[..self.consumed];
            self.runners.retain_mut(|r| r.agrees(consumed));
            if self.runners.is_empty() {
                return Ok(Verdict::NoReplica);
            }
            if self.inflater.ended {
                // Proven whole: the first candidate that ends exactly.
                let Some(i) = self
                    .runners
                    .iter()
                    .position(|r| r.out.is_empty() && r.matched == self.consumed)
                else {
                    return Ok(Verdict::NoReplica);
                };
                return Ok(self.decide(i, true));
            }
            if self.plain.len() >= PROBE_PLAIN {
                // The first candidate (the likeliest) that has matched
                // something; the rest of the stream proves it or not.
                return Ok(match self.runners.iter().position(|r| r.matched > 0) {
                    Some(i) => self.decide(i, false),
                    None => Verdict::NoReplica,
                });
            }
            if used == 0 && plain.is_empty() {
                if finishing {
                    return Err(Corrupt("truncated DEFLATE stream".into()));
                }
                return Ok(Verdict::Undecided);
            }
        }
    }

    fn decide(&mut self, i: usize, ended: bool) -> Verdict {
        let mut runner = self.runners.swap_remove(i);
        if !ended {
            // The rest of the proof runs remotely when it can: it is most
            // of a conversion's work.
            if let Some(remote) = self.remote.and_then(|open| open(runner.replica)) {
                // A remote that fails at once leaves the proof here.
                let _ = runner.go_remote(remote, &self.plain);
            }
        }
        let m = ReplicaMatch {
            inflater: std::mem::replace(&mut self.inflater, Inflater::new()),
            ended,
            consumed: self.consumed,
            runner,
        };
        Verdict::Replica(Box::new(m), std::mem::take(&mut self.plain))
    }
}

/// A stream being decoded while its replica's output is checked against it.
pub struct ReplicaMatch {
    inflater: Inflater,
    runner: Runner,
    /// Whether the DEFLATE stream's end was read (and the encoder finished).
    ended: bool,
    /// Stream bytes consumed, counted from the stream's start.
    consumed: usize,
}

impl ReplicaMatch {
    #[must_use]
    pub fn replica(&self) -> Replica {
        self.runner.replica
    }

    /// Stream bytes consumed from the stream's start.
    #[must_use]
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Whether the stream ended (its last byte was consumed and matched).
    #[must_use]
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The checkpoints the replica recorded on the way, once the stream
    /// ended (stretches a recreation may compress at once).
    #[must_use]
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.runner.checkpoints
    }

    /// Decodes from `input` (the stream's bytes following those consumed),
    /// checking the replica's output; returns (bytes of `input` consumed,
    /// plain bytes). `tail` holds the stream's bytes consumed but not yet
    /// matched by the output (at most the encoder's lag): the caller keeps
    /// it between steps, starting from [`ReplicaMatch::unmatched`].
    ///
    /// # Errors
    /// [`ReplicaError`] when the data is corrupt or the replica diverges.
    pub fn step(
        &mut self,
        input: &[u8],
        tail: &mut Vec<u8>,
    ) -> Result<(usize, Vec<u8>), ReplicaError> {
        let (used, plain) = self
            .inflater
            .step(input, STEP_PLAIN)
            .map_err(ReplicaError::Corrupt)?;
        self.consumed += used;
        tail.extend_from_slice(&input[..used]);
        let name = self.runner.replica.name();
        let remote_failed = |why| ReplicaError::Remote(format!("{name}: {why}"));
        self.runner.write(&plain).map_err(remote_failed)?;
        if self.inflater.ended && !self.ended {
            self.ended = true;
            self.runner.finish().map_err(remote_failed)?;
        }
        // Compare the output with the tail of stream bytes not yet matched.
        let n = self.runner.out.len().min(tail.len());
        if let Some(d) = (0..n).find(|&i| self.runner.out[i] != tail[i]) {
            return Err(ReplicaError::Mismatch(Mismatch {
                replica: self.runner.replica,
                at: (self.runner.matched + d) as u64,
            }));
        }
        self.runner.out.drain(..n);
        tail.drain(..n);
        self.runner.matched += n;
        if self.ended && !(self.runner.out.is_empty() && tail.is_empty()) {
            return Err(ReplicaError::Mismatch(Mismatch {
                replica: self.runner.replica,
                at: self.runner.matched as u64,
            }));
        }
        if self.runner.out.len() > MAX_LAG || tail.len() > MAX_LAG {
            return Err(ReplicaError::Mismatch(Mismatch {
                replica: self.runner.replica,
                at: self.runner.matched as u64,
            }));
        }
        Ok((used, plain))
    }

    /// Bytes of the stream consumed but not yet matched by the replica's
    /// output, given the stream bytes `stream` from the start (used when
    /// the probe hands over).
    #[must_use]
    pub fn unmatched<'a>(&self, stream: &'a [u8]) -> &'a [u8] {
        &stream[self.runner.matched..self.consumed]
    }
}

/// Why a replica stream could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("corrupt deflate stream: {0}")]
    Corrupt(Corrupt),
    #[error(transparent)]
    Mismatch(Mismatch),
    /// The remote encoder failed: the replica is not proven.
    #[error("the remote replica failed: {0}")]
    Remote(String),
}

/// Checks a replica stream's checkpoints against its plain length: a
/// replica that records them, offsets increasing, all inside the stream.
///
/// # Errors
/// [`InvalidCheckpoint`] naming what is wrong.
pub fn check_checkpoints(
    replica: Replica,
    checkpoints: &[Checkpoint],
    plain: u64,
) -> Result<(), InvalidCheckpoint> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    if !matches!(replica, Replica::GoFlate126(4..=9 | -1)) {
        return Err(InvalidCheckpoint(format!(
            "{} level {} has no checkpoints",
            replica.name(),
            replica.level()
        )));
    }
    let (mut last_plain, mut last_out) = (0, 0);
    for cp in checkpoints {
        if cp.plain <= last_plain || cp.out <= last_out || cp.plain > plain {
            return Err(InvalidCheckpoint(format!(
                "checkpoint at plain {} out {} out of order",
                cp.plain, cp.out
            )));
        }
        (last_plain, last_out) = (cp.plain, cp.out);
    }
    Ok(())
}

/// Recreates a DEFLATE stream with its replica: content in, the exact
/// compressed bytes out.
pub struct ReplicaRecreator {
    encoder: Option<Encoder>,
    checkpoints: Vec<Checkpoint>,
}

impl ReplicaRecreator {
    #[must_use]
    pub fn new(replica: Replica) -> Self {
        Self {
            encoder: Some(replica.encoder(false)),
            checkpoints: Vec::new(),
        }
    }

    /// A proof's encoder: takes its writes as they come (not aligned) and
    /// records checkpoints ([`Self::checkpoints`] once finished), as the
    /// proof here does, for a [`RemoteEncoder`] elsewhere.
    #[must_use]
    pub fn proof(replica: Replica) -> Self {
        Self {
            encoder: Some(replica.encoder(true)),
            checkpoints: Vec::new(),
        }
    }

    /// The stream of `replica` from checkpoint `cp` on (`window`: the
    /// `cp.window_end` plain bytes before `cp.plain`): appends to `out` the
    /// stream's bytes from `cp.out` that need no more input; [`Self::feed`]
    /// then takes the plain bytes from `cp.plain` on.
    ///
    /// # Errors
    /// [`InvalidCheckpoint`] for a replica without checkpoints or a
    /// checkpoint none records (a damaged recipe).
    pub fn resume(
        replica: Replica,
        cp: &Checkpoint,
        window: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Self, InvalidCheckpoint> {
        let Replica::GoFlate126(level) = replica else {
            return Err(InvalidCheckpoint(format!(
                "{} has no checkpoints",
                replica.name()
            )));
        };
        let e = goflate126::Encoder::resume(i32::from(level), cp, window, out)?;
        Ok(Self {
            encoder: Some(Encoder::Go126(Box::new(Aligned::new(e, cp.plain, true)))),
            checkpoints: Vec::new(),
        })
    }

    /// Ends a stretch fed up to checkpoint `to`'s `plain`: compresses what
    /// is held back and the window as far as the encoder had when it
    /// recorded `to`, and cuts `out` (this stretch's bytes, from
    /// `from_out` on) where `to`'s stream bytes begin.
    ///
    /// # Errors
    /// [`InvalidCheckpoint`] when the output falls short of `to` (the
    /// checkpoints do not belong to this content).
    pub fn reach(
        mut self,
        to: &Checkpoint,
        from_out: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), InvalidCheckpoint> {
        if let Some(Encoder::Go126(e)) = &mut self.encoder {
            e.flush(out);
            e.inner.step_window(out);
        }
        let len = to
            .out
            .checked_sub(from_out)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= out.len())
            .ok_or_else(|| InvalidCheckpoint("the stretch does not reach its end".into()))?;
        out.truncate(len);
        Ok(())
    }

    /// Compresses the next content bytes; the output may lag behind.
    pub fn feed(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if let Some(e) = &mut self.encoder {
            e.write(plain, out).expect("a recreator's encoder is local");
        }
    }

    /// Ends the stream: the rest of the output.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(e) = self.encoder.take() {
            self.checkpoints = e.finish(out).expect("a recreator's encoder is local");
        }
    }

    /// The checkpoints it recorded, once finished (a proof's recorder).
    #[must_use]
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }
}

/// The stream of `replica` recreated stretch by stretch from its
/// checkpoints, each stretch on its own (what a host does on every core).
#[cfg(test)]
pub(crate) fn recreate_by_stretches(
    replica: Replica,
    checkpoints: &[Checkpoint],
    plain: &[u8],
) -> Result<Vec<u8>, InvalidCheckpoint> {
    check_checkpoints(replica, checkpoints, plain.len() as u64)?;
    let mut stream = Vec::new();
    for k in 0..=checkpoints.len() {
        let from = k.checked_sub(1).map(|i| &checkpoints[i]);
        let mut out = Vec::new();
        let (mut r, start, from_out) = match from {
            None => (ReplicaRecreator::new(replica), 0, 0),
            Some(cp) => {
                let start = cp.plain as usize;
                let window = &plain[start - cp.window_end as usize..start];
                let r = ReplicaRecreator::resume(replica, cp, window, &mut out)?;
                (r, start, cp.out)
            }
        };
        match checkpoints.get(k) {
            Some(to) => {
                r.feed(&plain[start..to.plain as usize], &mut out);
                r.reach(to, from_out, &mut out)?;
            }
            None => {
                r.feed(&plain[start..], &mut out);
                r.finish(&mut out);
            }
        }
        stream.extend(out);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::tests::{recreate, run, Owned};
    use crate::deflate::{AnalyzeConfig, AnalyzeError, GzipAnalyzer};
    use crate::test_support::{gzip, seeded_bytes, texty_bytes};

    /// Text, binary noise and a repeat: work for every level.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut data = texty_bytes(seed, len / 2);
        data.extend(seeded_bytes(seed + 1, len / 4));
        data.extend_from_within(..len / 4);
        data
    }

    fn replicas_used(events: &[Owned]) -> Vec<Replica> {
        events
            .iter()
            .filter_map(|e| match e {
                Owned::Replica(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn go_streams_of_both_encoders_and_every_level_are_recreated_by_their_replica() {
        // Small (decided at the stream's end) and past the probe's 4 MiB.
        for (len, levels) in [
            (200_000, &[-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]),
            (6 << 20, &[1, 6, 9][..]),
        ] {
            let data = mixed(len, 7);
            for (&level, go) in levels.iter().flat_map(|l| [(l, 126), (l, 127)]) {
                let blob = if go == 126 {
                    goflate126::gzip_member(level, &data)
                } else {
                    goflate::gzip_member(level, &data)
                };
                let what = format!("go {go} level {level}, {len} bytes");
                let (events, summary) =
                    run(GzipAnalyzer::new(AnalyzeConfig::default()), &blob, 100_000)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(replicas_used(&events).len(), 1, "{what}");
                assert_eq!(summary.correction_bytes, 0, "{what}");
                assert_eq!(summary.replica_members, 1, "{what}");
                // Go <= 1.26's lazy levels record checkpoints every ~1 MiB
                // of output (`recreate` checks every stretch from them).
                let checkpoints = events
                    .iter()
                    .any(|e| matches!(e, Owned::Checkpoints(c) if !c.is_empty()));
                let lazy = go == 126 && level >= 4 && blob.len() > 2 * CHECKPOINT_OUT as usize;
                assert_eq!(checkpoints, lazy, "{what}: checkpoints");
                let (back, plains) = recreate(&events);
                assert!(back == blob, "{what}: not recreated exactly");
                assert_eq!(plains, std::slice::from_ref(&data));
            }
        }
    }

    /// A remote encoder in this process whose output comes back three
    /// pieces late, as the host's does; `fail_after` pieces make it fail.
    struct Lagging {
        inner: ReplicaRecreator,
        late: std::collections::VecDeque<Vec<u8>>,
        fail_after: Option<usize>,
    }

    impl RemoteEncoder for Lagging {
        fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
            if self.fail_after == Some(0) {
                return Err("the host went away".into());
            }
            self.fail_after = self.fail_after.map(|n| n - 1);
            let mut bytes = Vec::new();
            self.inner.feed(plain, &mut bytes);
            self.late.push_back(bytes);
            if self.late.len() > 3 {
                out.extend(self.late.pop_front().unwrap());
            }
            Ok(())
        }

        fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<Vec<Checkpoint>, String> {
            for bytes in self.late.drain(..) {
                out.extend(bytes);
            }
            self.inner.finish(out);
            Ok(self.inner.checkpoints().to_vec())
        }
    }

    fn lagging(replica: Replica) -> Option<Box<dyn RemoteEncoder + Send>> {
        Some(Box::new(Lagging {
            inner: ReplicaRecreator::proof(replica),
            late: Default::default(),
            fail_after: None,
        }))
    }

    fn failing_at_once(replica: Replica) -> Option<Box<dyn RemoteEncoder + Send>> {
        Some(Box::new(Lagging {
            inner: ReplicaRecreator::proof(replica),
            late: Default::default(),
            fail_after: Some(0),
        }))
    }

    fn failing(replica: Replica) -> Option<Box<dyn RemoteEncoder + Send>> {
        Some(Box::new(Lagging {
            inner: ReplicaRecreator::proof(replica),
            late: Default::default(),
            fail_after: Some(30),
        }))
    }

    #[test]
    fn a_proof_that_goes_on_remotely_gives_the_same_events_and_checkpoints() {
        let data = mixed(9 << 20, 17);
        for blob in [
            goflate126::gzip_member(6, &data),
            goflate::gzip_member(6, &data),
            pgzip::gzip_member(Klauspost::V1_18_2, 5, &data),
        ] {
            let here = run(GzipAnalyzer::new(AnalyzeConfig::default()), &blob, 1 << 20).unwrap();
            let cfg = AnalyzeConfig {
                remote: Some(lagging),
                ..AnalyzeConfig::default()
            };
            let remote = run(GzipAnalyzer::new(cfg), &blob, 1 << 20).unwrap();
            let sig = |events: &[Owned]| -> Vec<String> {
                events
                    .iter()
                    .map(|e| match e {
                        Owned::Plain(p) => format!("plain {}", p.len()),
                        e => format!("{e:?}"),
                    })
                    .collect()
            };
            assert_eq!(sig(&remote.0), sig(&here.0));
            assert_eq!(remote.1, here.1);
            assert!(recreate(&remote.0).0 == blob);
        }
        // A remote that fails while taking over: the proof goes on here.
        let cfg = AnalyzeConfig {
            remote: Some(failing_at_once),
            ..AnalyzeConfig::default()
        };
        let blob = goflate126::gzip_member(6, &data);
        let (events, summary) = run(GzipAnalyzer::new(cfg), &blob, 1 << 20).unwrap();
        assert_eq!(summary.replica_members, 1);
        assert!(recreate(&events).0 == blob);
        // A remote encoder that fails later: the replica is not proven.
        let blob = goflate126::gzip_member(6, &data);
        let cfg = AnalyzeConfig {
            remote: Some(failing),
            ..AnalyzeConfig::default()
        };
        let err = run(GzipAnalyzer::new(cfg), &blob, 1 << 20).err();
        assert!(
            matches!(err, Some(AnalyzeError::ReplicaRemote(_))),
            "{err:?}"
        );
    }

    #[test]
    fn pgzip_streams_of_every_version_and_level_are_recreated_by_its_replica() {
        use Klauspost::*;
        // Versions whose output is the same bytes are found as the first.
        let expected = |v, l| match (v, l) {
            (_, -2 | 0) | (V1_18_0, 1..=3 | 5 | 6) => V1_15,
            (v, _) => v,
        };
        // Small (one block, decided at the end), several 1 MiB blocks, and
        // past the probe's 4 MiB.
        for (len, levels, versions) in [
            (
                200_000,
                &[-2, 0, 1, 2, 3, 4, 5, 6][..],
                &[V1_15, V1_18_0, V1_18_2][..],
            ),
            (2_500_000, &[5, 4, 1][..], &[V1_15, V1_18_0, V1_18_2][..]),
            (6 << 20, &[5][..], &[V1_15, V1_18_2][..]),
        ] {
            let data = mixed(len, 8);
            for (&level, &version) in levels
                .iter()
                .flat_map(|l| versions.iter().map(move |v| (l, v)))
            {
                let blob = pgzip::gzip_member(version, level, &data);
                let what = format!("pgzip over {version:?} level {level}, {len} bytes");
                let (events, summary) =
                    run(GzipAnalyzer::new(AnalyzeConfig::default()), &blob, 100_000)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    replicas_used(&events),
                    [Replica::Pgzip(expected(version, level), level as i8)],
                    "{what}"
                );
                assert_eq!(summary.correction_bytes, 0, "{what}");
                let (back, plains) = recreate(&events);
                assert!(back == blob, "{what}: not recreated exactly");
                assert_eq!(plains, std::slice::from_ref(&data));
            }
        }
    }

    #[test]
    fn pgzip_mtime_selects_pgzip_candidates_only() {
        let header = pgzip::gzip_member(Klauspost::V1_18_2, -1, b"x");
        let c = candidates(&header);
        assert_eq!(
            c[0],
            Replica::Pgzip(Klauspost::V1_15, 5),
            "pgzip's default first"
        );
        assert_eq!(c.len(), 13);
        assert!(c.iter().all(|r| matches!(r, Replica::Pgzip(..))));
        assert_eq!(
            candidates(&pgzip::gzip_member(Klauspost::V1_15, 1, b"x")),
            [
                Replica::Pgzip(Klauspost::V1_15, 1),
                Replica::Pgzip(Klauspost::V1_18_2, 1)
            ]
        );
        // Level 9 (XFL 2) is not reproduced: no candidate, preflate's.
        let mut best = header.clone();
        best[8] = 2;
        assert!(candidates(&best).is_empty());
        // Go's header for the same stream: Go's candidates.
        let mut go = header;
        go[4..8].fill(0);
        assert!(candidates(&go)
            .iter()
            .all(|r| !matches!(r, Replica::Pgzip(..))));
    }

    #[test]
    fn the_header_names_the_candidates_and_other_compressors_get_none() {
        let go = |level| goflate::gzip_member(level, b"x");
        assert_eq!(
            candidates(&go(1)),
            [Replica::GoFlate126(1), Replica::GoFlate127(1)]
        );
        assert_eq!(
            candidates(&go(9)),
            [Replica::GoFlate126(9), Replica::GoFlate127(9)]
        );
        assert_eq!(candidates(&go(6)).len(), 18);
        assert_eq!(
            candidates(&go(6))[0],
            Replica::GoFlate126(6),
            "docker's first"
        );
        // GNU gzip and zlib write OS 3.
        let mut gnu = go(6);
        gnu[9] = 3;
        assert!(candidates(&gnu).is_empty());
        assert!(candidates(&gnu[..5]).is_empty());
    }

    #[test]
    fn a_zlib_stream_with_a_go_like_header_is_probed_then_left_to_preflate() {
        // flate2 writes OS 255 as Go does: the probe runs and rejects it.
        let data = mixed(300_000, 3);
        let blob = gzip(&data, 6);
        assert!(!candidates(&blob).is_empty());
        let (events, summary) =
            run(GzipAnalyzer::new(AnalyzeConfig::default()), &blob, 65_536).unwrap();
        assert!(replicas_used(&events).is_empty());
        assert_eq!(summary.replica_members, 0);
        assert_eq!(recreate(&events).0, blob);
    }

    #[test]
    fn a_stream_that_leaves_its_replica_later_is_a_mismatch_and_preflate_takes_it_then() {
        // Past the probe's reach the stream is Go 1.27 level 5's, before it
        // other replicas write the same stored blocks of noise: one tried
        // before it passes the probe, then diverges.
        let mut data = seeded_bytes(11, PROBE_PLAIN + (1 << 20));
        data.extend(texty_bytes(12, 2 << 20));
        let blob = goflate::gzip_member(5, &data);
        let err = run(GzipAnalyzer::new(AnalyzeConfig::default()), &blob, 1 << 20).err();
        let Some(AnalyzeError::ReplicaMismatch(m)) = err else {
            panic!("expected a mismatch, got {err:?}");
        };
        // Another replica that stores noise alike passed the probe.
        assert_ne!(m.replica, Replica::GoFlate127(5));
        assert!(m.at > PROBE_PLAIN as u64 / 2, "diverged at {}", m.at);
        let cfg = AnalyzeConfig {
            replicas: false,
            ..AnalyzeConfig::default()
        };
        let (events, _) = run(GzipAnalyzer::new(cfg), &blob, 1 << 20).unwrap();
        assert!(replicas_used(&events).is_empty());
        assert_eq!(recreate(&events).0, blob);
    }

    #[test]
    fn truncated_and_damaged_go_streams_are_errors_never_panics() {
        let data = mixed(500_000, 5);
        let blob = goflate::gzip_member(6, &data);
        for cut in [11, 100, blob.len() / 2, blob.len() - 9, blob.len() - 1] {
            let r = run(
                GzipAnalyzer::new(AnalyzeConfig::default()),
                &blob[..cut],
                4096,
            );
            assert!(r.is_err(), "cut at {cut} accepted");
        }
        for at in [20, 5_000, blob.len() / 2, blob.len() - 12] {
            let mut bad = blob.clone();
            bad[at] ^= 0x10;
            // Either refused, or (a flip the DEFLATE stream absorbs) the
            // bytes given back are the damaged ones, exactly.
            if let Ok((events, _)) = run(GzipAnalyzer::new(AnalyzeConfig::default()), &bad, 65_536)
            {
                assert_eq!(recreate(&events).0, bad, "flip at {at}");
            }
        }
    }

    #[test]
    fn recipes_name_replicas_they_know_and_refuse_others() {
        assert_eq!(
            Replica::parse("go1.27-flate", 6),
            Some(Replica::GoFlate127(6))
        );
        assert_eq!(
            Replica::parse("go1.26-flate", 1),
            Some(Replica::GoFlate126(1))
        );
        assert_eq!(Replica::parse("go1.27-flate", 10), None);
        assert_eq!(Replica::parse("go1.28-flate", 6), None);
        for v in [Klauspost::V1_15, Klauspost::V1_18_0, Klauspost::V1_18_2] {
            let r = Replica::Pgzip(v, 5);
            assert_eq!(Replica::parse(r.name(), 5), Some(r));
            assert_eq!(Replica::parse(r.name(), 9), None);
        }
        let r = Replica::GoFlate127(-2);
        assert_eq!(Replica::parse(r.name(), r.level()), Some(r));
    }
}
