//! A chunker for uncompressed tar streams (image layers). Each member's data
//! is cut from its own first byte, so an unchanged file gives the same blocks
//! wherever it sits in a layer; everything between two members' data (padding,
//! headers with their mtimes, PAX and GNU extension records, old GNU sparse
//! maps) goes into separate "gap" blocks.
//!
//! The parse follows Go's `archive/tar` reader, which wrote most layers:
//! `size` bytes of data follow every header except the header-only types
//! `1`–`6` (and a v7 regular entry whose name ends in `/`), a PAX `x` record
//! `size=` overrides the next entry's size, and an old GNU sparse header (`S`)
//! is followed by its extension blocks before the stored data. Extension
//! record data (`x`, `g`, `L`, `K`) counts as gap, not as member data.
//! Beyond Go: if a header-only entry has a nonzero size and the next block is
//! not a header, the entry's data is taken to follow (GNU tar and libarchive
//! do this for some types), instead of failing.
//!
//! Anything that does not parse switches the rest of the stream to fixed-size
//! blocks: the output is always exactly the input, only dedup suffers. The
//! same happens after the end-of-archive marker (two zero blocks).

use fastcdc::v2020;

use crate::chunker::{Chunker, DEFAULT_BLOCK_SIZE};

/// Tar's unit: headers, extension blocks and padding come in 512 bytes.
const BLOCK: usize = 512;
const NAME: std::ops::Range<usize> = 0..100;
const SIZE: std::ops::Range<usize> = 124..136;
const CHKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
/// Old GNU sparse: "more sparse map blocks follow", in the header …
const GNU_ISEXTENDED: usize = 482;
/// … and in each extension block.
const EXT_ISEXTENDED: usize = 504;

/// What the parse found so far, so the tests can tell whether the tar parsed.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Entries seen (files, directories, links, …), not counting PAX and GNU
    /// long-name records.
    pub members: u64,
    /// A header did not parse; the rest was cut into fixed-size blocks.
    pub fallback: bool,
    /// The end-of-archive marker (two zero blocks) was seen.
    pub end_of_archive: bool,
}

/// How member data is cut.
#[derive(Clone, Copy, Debug)]
enum DataCut {
    Fixed(usize),
    Cdc {
        min: usize,
        avg: usize,
        max: usize,
        mask_s: u64,
        mask_l: u64,
    },
}

/// What the next 512-byte block should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Header,
    /// The previous block was all zeros: a second one ends the archive.
    SecondZero,
    /// An old GNU sparse extension block; `size` stored bytes follow the last.
    SparseExt {
        size: u64,
    },
    /// After a header-only entry whose size field is nonzero: a header means
    /// the entry had no data (Go); anything else starts its `size` bytes.
    AfterHeaderOnly {
        size: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a 512-byte block in `hdr`.
    Block(Expect),
    /// Member data, then `pad` bytes of gap.
    Data { left: u64, pad: u64 },
    /// Gap bytes of known length; the first `pax_left` are a PAX record.
    Skip { left: u64, pax_left: u64 },
    /// After the archive or a parse failure: fixed-size blocks to the end.
    Raw,
}

/// A [`Chunker`] for uncompressed tar streams; see the module doc.
///
/// Memory: one header block, one gap block and one member-data window
/// (`block_size`, or `max` for the CDC variant), whatever the input.
pub struct TarChunker {
    cut: DataCut,
    /// Gap (and fallback) pieces are cut every `gap_size` bytes.
    gap_size: usize,
    state: State,
    hdr: [u8; BLOCK],
    hdr_len: usize,
    gap: Vec<u8>,
    data: Vec<u8>,
    size_override: Option<u64>,
    pax: PaxScan,
    #[cfg(test)]
    stats: TarStats,
}

impl TarChunker {
    /// Member data cut every `block_size` bytes from its start.
    ///
    /// # Panics
    /// If `block_size` is zero.
    pub fn fixed(block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self::with(DataCut::Fixed(block_size), block_size)
    }

    /// Member data cut by FastCDC (v2020, normalization level 1), restarted at
    /// each member's data; gap pieces are cut every `avg` bytes.
    ///
    /// # Panics
    /// Unless the sizes are even, `min <= avg <= max`, and each lies within
    /// the ranges `fastcdc::v2020` allows.
    pub fn cdc(min: usize, avg: usize, max: usize) -> Self {
        assert!(
            (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
                && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
                && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max),
            "FastCDC sizes out of range"
        );
        assert!(min <= avg && avg <= max, "FastCDC needs min <= avg <= max");
        assert!(
            [min, avg, max].iter().all(|n| n.is_multiple_of(2)),
            "FastCDC sizes must be even"
        );
        let (mask_s, mask_l) = v2020::select_masks(avg, v2020::Normalization::Level1);
        let cut = DataCut::Cdc {
            min,
            avg,
            max,
            mask_s,
            mask_l,
        };
        Self::with(cut, avg)
    }

    /// [`TarChunker::cdc`] with 2 KiB / 4 KiB / 16 KiB.
    pub fn fastcdc_default() -> Self {
        Self::cdc(2048, 4096, 16384)
    }

    fn with(cut: DataCut, gap_size: usize) -> Self {
        Self {
            cut,
            gap_size,
            state: State::Block(Expect::Header),
            hdr: [0; BLOCK],
            hdr_len: 0,
            gap: Vec::new(),
            data: Vec::new(),
            size_override: None,
            pax: PaxScan::default(),
            #[cfg(test)]
            stats: TarStats::default(),
        }
    }

    /// What the parse found so far (kept across [`Chunker::finish`]).
    #[cfg(test)]
    pub fn stats(&self) -> TarStats {
        self.stats
    }

    /// The most member data held back before a cut is decided.
    fn window(&self) -> usize {
        match self.cut {
            DataCut::Fixed(size) => size,
            DataCut::Cdc { max, .. } => max,
        }
    }

    /// Length of the next piece of member data; `data` is either at least a
    /// window long or the rest of the member, so the answer is final.
    fn cut_len(&self, data: &[u8]) -> usize {
        let n = match self.cut {
            DataCut::Fixed(size) => size.min(data.len()),
            DataCut::Cdc {
                min,
                avg,
                max,
                mask_s,
                mask_l,
            } => {
                v2020::cut(
                    data,
                    min,
                    avg,
                    max,
                    mask_s,
                    mask_l,
                    mask_s << 1,
                    mask_l << 1,
                )
                .1
            }
        };
        if n == 0 {
            data.len().min(self.window())
        } else {
            n
        }
    }

    fn run<E>(
        &mut self,
        mut input: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !input.is_empty() {
            match self.state {
                State::Raw => {
                    self.gap_bytes(input, emit)?;
                    input = &[];
                }
                State::Skip { left, pax_left } => {
                    let n = take(left, input.len());
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    let scanned = take(pax_left, n);
                    self.pax.push(&now[..scanned]);
                    self.gap_bytes(now, emit)?;
                    let pax_left = pax_left - scanned as u64;
                    self.state = skip_state(left - n as u64, pax_left);
                    if scanned > 0 && pax_left == 0 {
                        if self.pax.complete() {
                            self.size_override = self.pax.size;
                        } else {
                            self.fall_back();
                        }
                    }
                }
                State::Data { left, pad } => {
                    let n = take(left, input.len());
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    let left = left - n as u64;
                    self.data_bytes(now, left == 0, emit)?;
                    self.state = if left > 0 {
                        State::Data { left, pad }
                    } else {
                        skip_state(pad, 0)
                    };
                }
                State::Block(expect) => {
                    let n = (BLOCK - self.hdr_len).min(input.len());
                    self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&input[..n]);
                    self.hdr_len += n;
                    input = &input[n..];
                    if self.hdr_len == BLOCK {
                        self.hdr_len = 0;
                        let block = self.hdr;
                        self.on_block(expect, &block, emit)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_block<E>(
        &mut self,
        expect: Expect,
        block: &[u8; BLOCK],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match expect {
            Expect::SparseExt { size } => {
                self.gap_bytes(block, emit)?;
                if block[EXT_ISEXTENDED] == 0 {
                    self.start_data(size, emit)?;
                }
            }
            Expect::SecondZero => {
                self.gap_bytes(block, emit)?;
                if is_zero(block) {
                    self.gap_flush(emit)?;
                    #[cfg(test)]
                    {
                        self.stats.end_of_archive = true;
                    }
                    self.state = State::Raw;
                } else {
                    self.fall_back();
                }
            }
            Expect::Header | Expect::AfterHeaderOnly { .. } => {
                if is_zero(block) {
                    self.gap_bytes(block, emit)?;
                    self.state = State::Block(Expect::SecondZero);
                    return Ok(());
                }
                match (parse_header(block), expect) {
                    (Some(header), _) => {
                        self.gap_bytes(block, emit)?;
                        self.on_header(&header, emit)?;
                    }
                    (None, Expect::AfterHeaderOnly { size }) => {
                        // The entry's data after all: replay this block as data.
                        // It holds at most data plus padding, so this recursion
                        // never reaches another block.
                        self.start_data(size, emit)?;
                        self.run(block, emit)?;
                    }
                    (None, _) => {
                        self.gap_bytes(block, emit)?;
                        self.fall_back();
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header<E>(
        &mut self,
        header: &Header,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let padded = header.size + padding(header.size);
        match header.typeflag {
            b'x' => {
                // Like Go, a new local PAX header replaces the previous one.
                self.pax = PaxScan::default();
                self.size_override = None;
                self.state = skip_state(padded, header.size);
            }
            b'g' | b'L' | b'K' => self.state = skip_state(padded, 0),
            flag => {
                #[cfg(test)]
                {
                    self.stats.members += 1;
                }
                let size = self.size_override.take().unwrap_or(header.size);
                if matches!(flag, b'1'..=b'6') || (flag == 0 && header.dir_by_name) {
                    self.state = State::Block(if size > 0 {
                        Expect::AfterHeaderOnly { size }
                    } else {
                        Expect::Header
                    });
                } else if flag == b'S' && header.extended {
                    self.state = State::Block(Expect::SparseExt { size });
                } else {
                    self.start_data(size, emit)?;
                }
            }
        }
        Ok(())
    }

    /// Member data begins: the gap so far becomes a piece of its own.
    fn start_data<E>(
        &mut self,
        size: u64,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if size == 0 {
            self.state = State::Block(Expect::Header);
            return Ok(());
        }
        self.gap_flush(emit)?;
        self.state = State::Data {
            left: size,
            pad: padding(size),
        };
        Ok(())
    }

    fn fall_back(&mut self) {
        #[cfg(test)]
        {
            self.stats.fallback = true;
        }
        self.state = State::Raw;
    }

    /// Member data; `ends` says these are its last bytes.
    fn data_bytes<E>(
        &mut self,
        mut data: &[u8],
        ends: bool,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let window = self.window();
        loop {
            if self.data.is_empty() {
                // Cut straight from the input while a cut is decidable.
                while data.len() >= window || (ends && !data.is_empty()) {
                    let n = self.cut_len(data);
                    emit(&data[..n])?;
                    data = &data[n..];
                }
                self.data.extend_from_slice(data);
                return Ok(());
            }
            let n = (window - self.data.len()).min(data.len());
            self.data.extend_from_slice(&data[..n]);
            data = &data[n..];
            if ends && data.is_empty() {
                while !self.data.is_empty() {
                    let n = self.cut_len(&self.data);
                    emit(&self.data[..n])?;
                    self.data.drain(..n);
                }
                return Ok(());
            }
            if self.data.len() < window {
                return Ok(());
            }
            let n = self.cut_len(&self.data);
            emit(&self.data[..n])?;
            self.data.drain(..n);
        }
    }

    /// Gap (or fallback) bytes, cut every `gap_size` bytes.
    fn gap_bytes<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            if self.gap.is_empty() && data.len() >= self.gap_size {
                emit(&data[..self.gap_size])?;
                data = &data[self.gap_size..];
                continue;
            }
            let n = (self.gap_size - self.gap.len()).min(data.len());
            self.gap.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.gap.len() == self.gap_size {
                emit(&self.gap)?;
                self.gap.clear();
            }
        }
        Ok(())
    }

    fn gap_flush<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.gap.is_empty() {
            emit(&self.gap)?;
            self.gap.clear();
        }
        Ok(())
    }
}

impl Default for TarChunker {
    /// [`TarChunker::fixed`] with the default block size (4 KiB).
    fn default() -> Self {
        Self::fixed(DEFAULT_BLOCK_SIZE)
    }
}

impl Chunker for TarChunker {
    fn name(&self) -> String {
        match self.cut {
            DataCut::Fixed(size) => format!("tar-{size}"),
            DataCut::Cdc { min, avg, max, .. } => format!("tar-fastcdc-{min}-{avg}-{max}"),
        }
    }

    fn feed<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run(data, emit)
    }

    fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        // A truncated stream: whatever is held back goes out in order. Only
        // one of the data window and gap + partial block is ever non-empty.
        self.data_bytes(&[], true, emit)?;
        let block = self.hdr;
        let held = std::mem::take(&mut self.hdr_len);
        self.gap_bytes(&block[..held], emit)?;
        self.gap_flush(emit)?;
        self.state = State::Block(Expect::Header);
        self.size_override = None;
        self.pax = PaxScan::default();
        Ok(())
    }
}

/// `min(left, avail)` without overflowing a 32-bit `usize`.
fn take(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |left| left.min(avail))
}

fn skip_state(left: u64, pax_left: u64) -> State {
    if left == 0 {
        State::Block(Expect::Header)
    } else {
        State::Skip { left, pax_left }
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn is_zero(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// The fields of a header block the cutting needs.
#[derive(Debug)]
struct Header {
    typeflag: u8,
    size: u64,
    /// Old GNU sparse: extension blocks follow.
    extended: bool,
    /// A v7 regular entry naming a directory (Go reads it as one).
    dir_by_name: bool,
}

/// A header block, if its checksum (unsigned or signed sum) matches and its
/// size parses; ustar, GNU and v7 all share these fields.
fn parse_header(block: &[u8; BLOCK]) -> Option<Header> {
    let stored = i64::try_from(parse_octal(&block[CHKSUM])?).ok()?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(i8::from_ne_bytes([b]));
    }
    if stored != unsigned && stored != signed {
        return None;
    }
    let name = &block[NAME];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Some(Header {
        typeflag: block[TYPEFLAG],
        size: parse_numeric(&block[SIZE])?,
        extended: block[GNU_ISEXTENDED] != 0,
        dir_by_name: name.ends_with(b"/"),
    })
}

/// An octal field padded with spaces or NULs (as Go reads it); at most
/// `i64::MAX`.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
    let end = field.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
    let digits = &field[start..end];
    let digits = &digits[..digits.iter().position(|&b| b == 0).unwrap_or(digits.len())];
    let mut value: u64 = 0;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    (value <= i64::MAX as u64).then_some(value)
}

/// A numeric field: octal, or GNU base-256 when the first byte's high bit
/// is set (negative values are rejected).
fn parse_numeric(field: &[u8]) -> Option<u64> {
    let first = *field.first()?;
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    if first & 0x40 != 0 {
        return None;
    }
    let mut value: u64 = 0;
    for (i, &b) in field.iter().enumerate() {
        let b = if i == 0 { b & 0x7f } else { b };
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(b);
    }
    (value >> 63 == 0).then_some(value)
}

/// A streaming scan of PAX records (`"<len> <key>=<value>\n"`) that keeps
/// only `size`, so a record of any length costs a few bytes of state.
#[derive(Debug, Default)]
struct PaxScan {
    phase: PaxPhase,
    /// Declared length of the current record, and bytes of it seen.
    len: u64,
    used: u64,
    digits: u32,
    key: [u8; 4],
    key_len: usize,
    value: Option<u64>,
    /// The last complete `size` record (`None` if absent or empty).
    size: Option<u64>,
    bad: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PaxPhase {
    #[default]
    Len,
    Key,
    Value,
}

impl PaxScan {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.bad {
                return;
            }
            self.used += 1;
            match self.phase {
                PaxPhase::Len => match b {
                    b'0'..=b'9' if self.digits < 19 => {
                        self.len = self.len * 10 + u64::from(b - b'0');
                        self.digits += 1;
                    }
                    // At least "k=\n" must remain after the space.
                    b' ' if self.digits > 0 && self.len >= 5 && self.len >= self.used + 3 => {
                        self.phase = PaxPhase::Key;
                    }
                    _ => self.bad = true,
                },
                PaxPhase::Key => {
                    if self.used == self.len || (b == b'=' && self.key_len == 0) {
                        self.bad = true;
                    } else if b == b'=' {
                        self.phase = PaxPhase::Value;
                    } else {
                        if let Some(slot) = self.key.get_mut(self.key_len) {
                            *slot = b;
                        }
                        self.key_len = self.key_len.saturating_add(1);
                    }
                }
                PaxPhase::Value => {
                    let is_size = self.key_len == 4 && &self.key == b"size";
                    if self.used == self.len {
                        if b != b'\n' {
                            self.bad = true;
                        } else {
                            if is_size {
                                self.size = self.value;
                            }
                            *self = Self {
                                size: self.size,
                                ..Self::default()
                            };
                        }
                    } else if is_size {
                        let next = b
                            .checked_sub(b'0')
                            .filter(|&d| d < 10)
                            .and_then(|d| {
                                self.value
                                    .unwrap_or(0)
                                    .checked_mul(10)?
                                    .checked_add(u64::from(d))
                            })
                            .filter(|&v| v <= i64::MAX as u64);
                        match next {
                            Some(v) => self.value = Some(v),
                            None => self.bad = true,
                        }
                    }
                }
            }
        }
    }

    /// The records ended cleanly at the end of the data.
    fn complete(&self) -> bool {
        !self.bad && self.phase == PaxPhase::Len && self.used == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::seeded_bytes;
    use std::convert::Infallible;

    // ---- building archives by hand ----

    /// Recomputes the checksum field (unsigned sum, as tar writes it).
    fn seal(h: &mut [u8; BLOCK]) {
        h[CHKSUM].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn put(h: &mut [u8; BLOCK], at: usize, bytes: &[u8]) {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[derive(Clone, Copy)]
    enum Magic {
        Ustar,
        Gnu,
        V7,
    }

    fn header_with(name: &str, flag: u8, size: u64, mtime: u64, magic: Magic) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        put(&mut h, 0, name.as_bytes());
        put(&mut h, 100, b"0000644\0");
        put(&mut h, 108, b"0001750\0");
        put(&mut h, 116, b"0001750\0");
        if size < 8u64.pow(11) {
            put(&mut h, 124, format!("{size:011o}\0").as_bytes());
        } else {
            h[124] = 0x80;
            put(&mut h, 128, &size.to_be_bytes());
        }
        put(&mut h, 136, format!("{mtime:011o}\0").as_bytes());
        h[TYPEFLAG] = flag;
        match magic {
            Magic::Ustar => put(&mut h, 257, b"ustar\x0000"),
            Magic::Gnu => put(&mut h, 257, b"ustar  \0"),
            Magic::V7 => {}
        }
        seal(&mut h);
        h
    }

    fn header(name: &str, flag: u8, size: u64, mtime: u64) -> [u8; BLOCK] {
        header_with(name, flag, size, mtime, Magic::Ustar)
    }

    /// An archive under construction.
    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        fn block(mut self, h: &[u8; BLOCK]) -> Self {
            self.0.extend_from_slice(h);
            self
        }
        /// Data plus padding to 512.
        fn body(mut self, data: &[u8]) -> Self {
            self.0.extend_from_slice(data);
            self.0.resize(self.0.len().next_multiple_of(BLOCK), 0);
            self
        }
        fn file(self, name: &str, data: &[u8], mtime: u64) -> Self {
            self.block(&header(name, b'0', data.len() as u64, mtime))
                .body(data)
        }
        fn pax(self, records: &[(&str, &str)]) -> Self {
            let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            self.block(&header("PaxHeaders/x", b'x', body.len() as u64, 0))
                .body(&body)
        }
        fn gnu_long_name(self, name: &str) -> Self {
            let mut body = name.as_bytes().to_vec();
            body.push(0);
            let h = header_with("././@LongLink", b'L', body.len() as u64, 0, Magic::Gnu);
            self.block(&h).body(&body)
        }
        fn end(mut self) -> Vec<u8> {
            self.0.resize(self.0.len() + 2 * BLOCK, 0);
            self.0
        }
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let base = key.len() + value.len() + 3;
        let mut len = base + 1;
        while len != base + len.to_string().len() {
            len = base + len.to_string().len();
        }
        format!("{len} {key}={value}\n").into_bytes()
    }

    /// A tiny xorshift for split sizes.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    // ---- running the chunker ----

    /// Feeds `input` in pieces of the given sizes (cycled) and checks that the
    /// emitted pieces are non-empty and concatenate back to the input.
    fn pieces_split(
        c: &mut TarChunker,
        input: &[u8],
        mut split: impl FnMut() -> usize,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| -> Result<(), Infallible> {
            assert!(!b.is_empty(), "empty piece");
            out.push(b.to_vec());
            Ok(())
        };
        let mut rest = input;
        while !rest.is_empty() {
            let n = split().clamp(1, rest.len());
            c.feed(&rest[..n], &mut emit).unwrap();
            rest = &rest[n..];
        }
        c.finish(&mut emit).unwrap();
        assert_eq!(out.concat(), input, "pieces must concatenate to the input");
        out
    }

    fn pieces(c: &mut TarChunker, input: &[u8]) -> Vec<Vec<u8>> {
        pieces_split(c, input, || usize::MAX)
    }

    fn sizes(p: &[Vec<u8>]) -> Vec<usize> {
        p.iter().map(Vec::len).collect()
    }

    /// Every 4096-byte slice of `data` (and its tail) is one of the pieces.
    fn has_fixed_blocks_of(p: &[Vec<u8>], data: &[u8]) -> bool {
        data.chunks(4096).all(|b| p.iter().any(|x| x == b))
    }

    /// A small archive with one of everything, for split tests.
    fn everything() -> Vec<u8> {
        let mut sparse = header_with("sparse", b'S', 3000, 7, Magic::Gnu);
        sparse[GNU_ISEXTENDED] = 1;
        seal(&mut sparse);
        let mut ext1 = [0u8; BLOCK];
        ext1[EXT_ISEXTENDED] = 1;
        let ext2 = [0u8; BLOCK];
        Tar::default()
            .block(&header("dir/", b'5', 0, 1))
            .file("dir/a", &seeded_bytes(1, 5000), 2)
            .pax(&[("path", &"p".repeat(300)), ("mtime", "1.5")])
            .file("ignored", &seeded_bytes(2, 4097), 3)
            .gnu_long_name(&"g".repeat(200))
            .file("ignored2", &seeded_bytes(3, 100), 4)
            .block(&header("dir/link", b'1', 0, 5))
            .block(&header("dir/sym", b'2', 0, 6))
            .file("empty", b"", 7)
            .block(&sparse)
            .block(&ext1)
            .block(&ext2)
            .body(&seeded_bytes(4, 3000))
            .file("dir/b", &seeded_bytes(5, 4096), 8)
            .end()
    }

    // ---- rules ----

    #[test]
    fn file_of_4097_bytes_is_cut_at_data_start_every_4096_and_at_data_end() {
        let data = seeded_bytes(11, 4097);
        let tar = Tar::default().file("f", &data, 1).end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [512, 4096, 1, 511 + 1024]);
        assert_eq!(p[1], data[..4096]);
        assert_eq!(p[2], data[4096..]);
        let s = c.stats();
        assert_eq!((s.members, s.fallback, s.end_of_archive), (1, false, true));
    }

    #[test]
    fn file_of_exactly_4096_bytes_is_one_block_between_gaps() {
        let data = seeded_bytes(12, 4096);
        let tar = Tar::default().file("f", &data, 1).end();
        let p = pieces(&mut TarChunker::default(), &tar);
        assert_eq!(sizes(&p), [512, 4096, 1024]);
        assert_eq!(p[1], data);
    }

    #[test]
    fn unchanged_file_gives_identical_data_blocks_wherever_it_sits() {
        let f = seeded_bytes(42, 10_000);
        let a = Tar::default()
            .file("a", b"hello", 1)
            .file("usr/lib/f", &f, 100)
            .end();
        let b = Tar::default()
            .file("x", &seeded_bytes(5, 777), 9)
            .file("y", &seeded_bytes(6, 12_345), 9)
            .block(&header("d/", b'5', 0, 9))
            .file("z", &seeded_bytes(7, 1), 9)
            .file("usr/lib/f", &f, 999_999)
            .end();
        let pa = pieces(&mut TarChunker::default(), &a);
        let pb = pieces(&mut TarChunker::default(), &b);
        assert!(has_fixed_blocks_of(&pa, &f) && has_fixed_blocks_of(&pb, &f));
        // No piece mixes header bytes into the file's data: the file's blocks
        // are exactly the pieces both archives share.
        let shared = pa.iter().filter(|x| pb.contains(x) && !is_zero(x));
        assert_eq!(shared.count(), 3);
    }

    #[test]
    fn cdc_data_blocks_are_deterministic_and_independent_of_position() {
        let f = seeded_bytes(43, 100_000);
        let a = Tar::default().file("f", &f, 1).end();
        let b = Tar::default()
            .file("other", &seeded_bytes(8, 30_001), 2)
            .pax(&[("path", "long/name")])
            .file("f", &f, 3)
            .end();
        let cut = |tar: &[u8]| pieces(&mut TarChunker::fastcdc_default(), tar);
        let pa = cut(&a);
        let pb = cut(&b);
        assert_eq!(pa, cut(&a), "same input, same pieces");
        // Data pieces of `f` in `a`: everything but the first and last piece.
        let data = &pa[1..pa.len() - 1];
        assert_eq!(data.concat(), f);
        assert!(data.len() > 3, "FastCDC must cut inside the file");
        for (i, d) in data.iter().enumerate() {
            assert!(d.len() <= 16384);
            assert!(d.len() >= 2048 || i == data.len() - 1);
            assert!(pb.contains(d), "piece {i} of f is not reused");
        }
        let mut c = TarChunker::fastcdc_default();
        let mut rng = Rng(99);
        assert_eq!(
            pieces_split(&mut c, &b, || rng.below(20_000) as usize + 1),
            pb
        );
        assert_eq!(c.stats().members, 2);
    }

    #[test]
    fn pax_long_name_is_gap_and_the_file_data_is_unchanged() {
        let f = seeded_bytes(13, 6000);
        let name = "a/".repeat(200);
        let tar = Tar::default()
            .pax(&[("path", &name), ("mtime", "123.456")])
            .file("short", &f, 1)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        let pax_len = 512
            + (pax_record("path", &name).len() + pax_record("mtime", "123.456").len())
                .next_multiple_of(512);
        assert_eq!(sizes(&p), [pax_len + 512, 4096, 6000 - 4096, 144 + 1024]);
        assert_eq!((c.stats().members, c.stats().fallback), (1, false));
    }

    #[test]
    fn pax_size_record_overrides_the_next_header_size() {
        let f = seeded_bytes(14, 5000);
        let tar = Tar::default()
            .pax(&[("size", "5000")])
            .block(&header("big", b'0', 0, 1))
            .body(&f)
            .file("after", b"x", 2)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert!(has_fixed_blocks_of(&p, &f));
        assert!(p.iter().any(|x| x == b"x"));
        assert_eq!((c.stats().members, c.stats().fallback), (2, false));
    }

    #[test]
    fn huge_pax_record_goes_through_as_cut_gap_pieces_in_bounded_memory() {
        let f = seeded_bytes(15, 9000);
        let tar = Tar::default()
            .pax(&[("comment", &"c".repeat(100_000)), ("size", "9000")])
            .block(&header("f", b'0', 0, 1))
            .body(&f)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert!(p.iter().all(|x| x.len() <= 4096));
        assert!(has_fixed_blocks_of(&p, &f));
        assert!(!c.stats().fallback);
        assert!(c.gap.capacity() <= 2 * 4096 && c.data.capacity() <= 2 * 4096);
    }

    #[test]
    fn malformed_pax_record_falls_back() {
        let mut body = b"9 size=1\n".to_vec(); // declares 9, is 9: fine
        body.extend_from_slice(b"99 k=v\n"); // declares 99, is 7
        let tar = Tar::default()
            .block(&header("x", b'x', body.len() as u64, 0))
            .body(&body)
            .file("f", b"data", 1)
            .end();
        let mut c = TarChunker::default();
        pieces(&mut c, &tar);
        assert!(c.stats().fallback);
    }

    #[test]
    fn gnu_long_name_is_gap_and_the_file_data_is_unchanged() {
        let f = seeded_bytes(16, 4500);
        let tar = Tar::default()
            .gnu_long_name(&"n".repeat(300))
            .block(&header_with("nnn", b'0', 4500, 1, Magic::Gnu))
            .body(&f)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [512 + 512 + 512, 4096, 404, 108 + 1024]);
        assert_eq!((c.stats().members, c.stats().fallback), (1, false));
    }

    #[test]
    fn old_gnu_sparse_extension_blocks_belong_to_the_gap() {
        let stored = seeded_bytes(17, 3000);
        let mut h = header_with("sparse", b'S', 3000, 1, Magic::Gnu);
        h[GNU_ISEXTENDED] = 1;
        seal(&mut h);
        let mut ext = [0u8; BLOCK];
        ext[EXT_ISEXTENDED] = 1;
        let tar = Tar::default()
            .block(&h)
            .block(&ext)
            .block(&[0u8; BLOCK]) // last extension: isextended = 0
            .body(&stored)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [1536, 3000, 72 + 1024]);
        assert_eq!(p[1], stored);
        assert_eq!((c.stats().members, c.stats().fallback), (1, false));
    }

    #[test]
    fn links_directories_and_empty_files_have_no_data_and_join_the_gap() {
        let f = seeded_bytes(18, 100);
        let tar = Tar::default()
            .block(&header("d/", b'5', 0, 1))
            .block(&header("d/hard", b'1', 0, 1))
            .block(&header("d/sym", b'2', 0, 1))
            .block(&header("d/fifo", b'6', 0, 1))
            .file("d/empty", b"", 1)
            .file("d/f", &f, 1)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [6 * 512, 100, 412 + 1024]);
        assert_eq!((c.stats().members, c.stats().fallback), (6, false));
    }

    #[test]
    fn header_only_entry_with_nonzero_size_has_no_data_when_a_header_follows() {
        // Some writers record the target's size on a hard link; Go reads no data.
        let f = seeded_bytes(19, 5000);
        let tar = Tar::default()
            .block(&header("hard", b'1', 5000, 1))
            .file("f", &f, 1)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [1024, 4096, 904, 120 + 1024]);
        assert_eq!((c.stats().members, c.stats().fallback), (2, false));
    }

    #[test]
    fn directory_with_nonzero_size_and_data_following_is_read_as_data() {
        let dir_data = seeded_bytes(20, 600);
        let f = seeded_bytes(21, 100);
        let tar = Tar::default()
            .block(&header("d/", b'5', 600, 1))
            .body(&dir_data)
            .file("f", &f, 1)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [512, 600, 424 + 512, 100, 412 + 1024]);
        assert_eq!(p[1], dir_data);
        assert_eq!((c.stats().members, c.stats().fallback), (2, false));
    }

    #[test]
    fn v7_and_gnu_headers_and_signed_checksums_parse() {
        let f = seeded_bytes(22, 700);
        let mut signed = header("caf\u{e9}", b'0', 700, 1);
        // Signed sum: bytes >= 0x80 count negative (old Sun tar).
        signed[CHKSUM].fill(b' ');
        let sum: i64 = signed.iter().map(|&b| i64::from(b as i8)).sum();
        signed[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let tar = Tar::default()
            .block(&header_with("v7", b'0', 700, 1, Magic::V7))
            .body(&f)
            .block(&header_with("v7dir/", 0, 0, 1, Magic::V7))
            .block(&header_with("gnu", b'0', 700, 1, Magic::Gnu))
            .body(&f)
            .block(&signed)
            .body(&f)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(p.iter().filter(|x| **x == f).count(), 3);
        assert_eq!((c.stats().members, c.stats().fallback), (4, false));
    }

    #[test]
    fn base_256_size_of_9_gib_streams_in_bounded_pieces() {
        const HUGE: u64 = 9 << 30;
        let h = header("huge", b'0', HUGE, 1);
        assert_eq!(h[124], 0x80, "the helper must write base-256");
        assert_eq!(parse_header(&h).unwrap().size, HUGE);
        let zeros = vec![0u8; 1 << 20];
        let mut c = TarChunker::default();
        let (mut count, mut bytes, mut largest) = (0u64, 0u64, 0usize);
        let mut emit = |b: &[u8]| -> Result<(), Infallible> {
            count += 1;
            bytes += b.len() as u64;
            largest = largest.max(b.len());
            Ok(())
        };
        c.feed(&h, &mut emit).unwrap();
        for _ in 0..HUGE / zeros.len() as u64 {
            c.feed(&zeros, &mut emit).unwrap();
        }
        c.feed(&[0u8; 2 * BLOCK], &mut emit).unwrap();
        c.finish(&mut emit).unwrap();
        assert_eq!(bytes, 512 + HUGE + 1024);
        assert_eq!(count, 1 + HUGE / 4096 + 1);
        assert_eq!(largest, 4096);
        let s = c.stats();
        assert_eq!((s.members, s.fallback, s.end_of_archive), (1, false, true));
    }

    #[test]
    fn trailing_garbage_after_end_of_archive_is_cut_in_fixed_blocks() {
        let mut tar = Tar::default().file("f", b"abc", 1).end();
        let garbage = seeded_bytes(23, 10_000);
        tar.extend_from_slice(&garbage);
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        assert_eq!(sizes(&p), [512, 3, 509 + 1024, 4096, 4096, 1808]);
        assert!(c.stats().end_of_archive && !c.stats().fallback);
    }

    #[test]
    fn corrupt_checksum_mid_archive_falls_back_to_fixed_blocks_exactly() {
        let mut bad = header("b", b'0', 5000, 1);
        bad[140] ^= 1; // an mtime digit, checksum left stale
        let tar = Tar::default()
            .file("a", &seeded_bytes(24, 100), 1)
            .block(&bad)
            .body(&seeded_bytes(25, 5000))
            .file("c", &seeded_bytes(26, 9000), 1)
            .end();
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &tar);
        // Gap from the end of "a" on: padding, the bad header, then raw blocks.
        assert_eq!(sizes(&p)[..2], [512, 100]);
        assert!(p[2..p.len() - 1].iter().all(|x| x.len() == 4096));
        let s = c.stats();
        assert_eq!((s.members, s.fallback, s.end_of_archive), (1, true, false));
    }

    #[test]
    fn zero_block_followed_by_a_header_falls_back() {
        let tar = Tar::default()
            .block(&[0u8; BLOCK])
            .file("f", b"abc", 1)
            .end();
        let mut c = TarChunker::default();
        pieces(&mut c, &tar);
        assert!(c.stats().fallback);
    }

    #[test]
    fn every_feed_split_gives_the_same_pieces() {
        let tar = everything();
        for make in [TarChunker::default, TarChunker::fastcdc_default] {
            let mut c = make();
            let whole = pieces(&mut c, &tar);
            let s = c.stats();
            assert_eq!((s.members, s.fallback, s.end_of_archive), (9, false, true));
            assert_eq!(pieces_split(&mut make(), &tar, || 1), whole, "byte by byte");
            for seed in 1..=20 {
                let mut rng = Rng(seed);
                let bound = [7, 513, 5000][seed as usize % 3];
                let split = pieces_split(&mut make(), &tar, || rng.below(bound) as usize + 1);
                assert_eq!(split, whole, "seed {seed}");
            }
        }
    }

    #[test]
    fn truncated_and_non_tar_input_round_trips() {
        let tar = everything();
        for cut in [0, 1, 511, 512, 700, 5000, tar.len() - 1] {
            let mut c = TarChunker::fastcdc_default();
            pieces(&mut c, &tar[..cut]);
            let mut c = TarChunker::default();
            pieces(&mut c, &tar[..cut]);
        }
        let noise = seeded_bytes(27, 20_000);
        let mut c = TarChunker::default();
        let p = pieces(&mut c, &noise);
        assert!(c.stats().fallback && p.iter().all(|x| x.len() <= 4096));
    }

    #[test]
    fn chunker_is_reusable_after_finish() {
        let tar = everything();
        let mut c = TarChunker::default();
        let first = pieces(&mut c, &tar[..3000]);
        assert!(!first.is_empty());
        let again = pieces(&mut c, &tar);
        assert_eq!(again, pieces(&mut TarChunker::default(), &tar));
    }

    #[test]
    fn numeric_fields_parse_like_go() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  644 \0\0"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"12 34\0"), None);
        assert_eq!(parse_octal(b"0009\0"), None);
        let mut b256 = [0u8; 12];
        b256[0] = 0x80;
        b256[11] = 1;
        assert_eq!(parse_numeric(&b256), Some(1));
        b256[0] = 0xff; // negative
        assert_eq!(parse_numeric(&b256), None);
    }

    #[test]
    fn names_record_the_parameters() {
        assert_eq!(TarChunker::default().name(), "tar-4096");
        assert_eq!(TarChunker::fixed(512).name(), "tar-512");
        assert_eq!(
            TarChunker::fastcdc_default().name(),
            "tar-fastcdc-2048-4096-16384"
        );
    }
}
