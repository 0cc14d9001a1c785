//! Tokens, Huffman code construction and the block writer of Go 1.27's
//! `compress/flate` (`token.go`, `huffman_code.go`, `huffman_bit_writer.go`).
//!
//! Everything here decides *which* block type is written and *which* code
//! lengths are used, so every comparison, rounding and tie-break follows the
//! Go algorithm exactly (including its `float32` size estimate).

/// Bits 0-15: offset-1, 16-21: offset code, 22-29: length-3, bit 30: match.
pub(super) const MATCH_TYPE: u32 = 1 << 30;
const LENGTH_SHIFT: u32 = 22;
const OFFSET_MASK: u32 = (1 << LENGTH_SHIFT) - 1;
const MATCH_OFFSET_ONLY_MASK: u32 = 0xffff;

use crate::rfc1951::{
    run_length_code, BAD_CODE, CODEGEN_CODE_COUNT, CODEGEN_ORDER, END_BLOCK_MARKER, LENGTH_BASE,
    LENGTH_CODES_START, LITERAL_COUNT, OFFSET_BASE, OFFSET_CODES, OFFSET_CODE_COUNT,
};
pub(super) use crate::rfc1951::{LENGTH_CODES, LENGTH_EXTRA_BITS, OFFSET_EXTRA_BITS};
/// Blocks with fewer tokens are also priced with the fixed code.
const MAX_PREDEFINED_TOKENS: usize = 250;
pub(super) const MAX_STORE_BLOCK_SIZE: usize = 65535;

/// Offset code of `off = offset - 1` (Go's `offsetCode`, including its
/// 8-bit truncation for values of 32768 and above).
#[inline]
pub(super) fn offset_code(off: u32) -> u32 {
    if off < 256 {
        OFFSET_CODES[off as usize] as u32
    } else {
        OFFSET_CODES[((off >> 7) & 0xff) as usize] as u32 + 14
    }
}

/// The tokens of one block plus their histograms.
pub(super) struct Tokens {
    pub extra_hist: [u16; 32],
    pub off_hist: [u16; 32],
    pub lit_hist: [u16; 256],
    pub n: usize,
    pub tokens: Vec<u32>,
}

impl Tokens {
    pub fn new() -> Self {
        Tokens {
            extra_hist: [0; 32],
            off_hist: [0; 32],
            lit_hist: [0; 256],
            n: 0,
            tokens: vec![0; 65536 + 1],
        }
    }

    pub fn reset(&mut self) {
        if self.n == 0 {
            return;
        }
        self.n = 0;
        self.lit_hist = [0; 256];
        self.extra_hist = [0; 32];
        self.off_hist = [0; 32];
    }

    #[inline]
    pub fn add_literal(&mut self, lit: u8) {
        self.tokens[self.n] = lit as u32;
        self.lit_hist[lit as usize] = self.lit_hist[lit as usize].wrapping_add(1);
        self.n += 1;
    }

    #[inline]
    pub fn emit_literals(&mut self, lits: &[u8]) {
        for &v in lits {
            self.add_literal(v);
        }
    }

    /// `xlength` = length - 3, `xoffset` = offset - 1.
    #[inline]
    pub fn add_match(&mut self, xlength: u32, xoffset: u32) {
        let oc = offset_code(xoffset);
        let xoffset = xoffset | oc << 16;
        let lc = LENGTH_CODES[(xlength & 0xff) as usize] as usize + 1;
        self.extra_hist[lc] = self.extra_hist[lc].wrapping_add(1);
        self.off_hist[(oc & 31) as usize] = self.off_hist[(oc & 31) as usize].wrapping_add(1);
        self.tokens[self.n] = MATCH_TYPE | xlength << LENGTH_SHIFT | xoffset;
        self.n += 1;
    }

    /// A match that may be longer than 258; `xlength` is the full length.
    #[inline]
    pub fn add_match_long(&mut self, mut xlength: i32, xoffset: u32) {
        let oc = offset_code(xoffset);
        let xoffset = xoffset | oc << 16;
        while xlength > 0 {
            let mut xl = xlength;
            if xl > 258 {
                xl = if xl > 258 + 3 { 258 } else { 258 - 3 };
            }
            xlength -= xl;
            xl -= 3;
            let lc = LENGTH_CODES[(xl as u32 & 0xff) as usize] as usize + 1;
            self.extra_hist[lc] = self.extra_hist[lc].wrapping_add(1);
            self.off_hist[(oc & 31) as usize] = self.off_hist[(oc & 31) as usize].wrapping_add(1);
            self.tokens[self.n] = MATCH_TYPE | (xl as u32) << LENGTH_SHIFT | xoffset;
            self.n += 1;
        }
    }

    pub fn add_eob(&mut self) {
        self.tokens[self.n] = END_BLOCK_MARKER as u32;
        self.extra_hist[0] = self.extra_hist[0].wrapping_add(1);
        self.n += 1;
    }

    fn slice(&self) -> &[u32] {
        &self.tokens[..self.n]
    }

    /// Go's `EstimatedBits`: a `float32` Shannon estimate, evaluated in the
    /// same order so it rounds identically.
    fn estimated_bits(&self) -> isize {
        let mut shannon = 0f32;
        let mut bits: isize = 0;
        let mut n_matches: isize = 0;
        let total = self.n;
        if total > 0 {
            let inv_total = 1.0f32 / total as f32;
            for &v in &self.lit_hist {
                if v > 0 {
                    let n = v as f32;
                    shannon += (-m_fast_log2(n * inv_total)).clamp(1.0, 15.0) * n;
                }
            }
            shannon += 15.0;
            for (i, &v) in self.extra_hist[1..LITERAL_COUNT - 256].iter().enumerate() {
                if v > 0 {
                    let n = v as f32;
                    shannon += (-m_fast_log2(n * inv_total)).clamp(1.0, 15.0) * n;
                    bits += LENGTH_EXTRA_BITS[i & 31] as isize * v as isize;
                    n_matches += v as isize;
                }
            }
        }
        if n_matches > 0 {
            let inv_total = 1.0f32 / n_matches as f32;
            for (i, &v) in self.off_hist[..OFFSET_CODE_COUNT].iter().enumerate() {
                if v > 0 {
                    let n = v as f32;
                    shannon += (-m_fast_log2(n * inv_total)).clamp(1.0, 15.0) * n;
                    bits += OFFSET_EXTRA_BITS[i & 31] as isize * v as isize;
                }
            }
        }
        shannon as isize + bits
    }
}

/// Fast approximation of log2 (bit-identical to Go's `mFastLog2`).
#[allow(clippy::excessive_precision)]
fn m_fast_log2(val: f32) -> f32 {
    let mut ux = val.to_bits() as i32;
    let mut log2 = (((ux >> 23) & 255) - 128) as f32;
    ux &= -0x7f80_0001;
    ux = ux.wrapping_add(127 << 23);
    let uval = f32::from_bits(ux as u32);
    log2 += ((-0.34484843f32) * uval + 2.02466578f32) * uval - 0.67487759f32;
    log2
}

/// A Huffman code: `code << 8 | length`.
type HCode = u32;

#[inline]
fn hlen(c: HCode) -> u32 {
    c & 0xff
}

#[inline]
fn new_hcode(code: u16, len: u8) -> HCode {
    len as u32 | (code as u32) << 8
}

#[inline]
fn reverse_bits(x: u16, b: u8) -> u16 {
    (x << ((16 - b as u32) & 15)).reverse_bits()
}

#[derive(Clone, Copy, Default)]
struct LiteralNode {
    literal: u16,
    freq: u16,
}

const MAX_NODE: LiteralNode = LiteralNode {
    literal: u16::MAX,
    freq: u16::MAX,
};

#[derive(Clone, Copy, Default)]
struct LevelInfo {
    last_freq: i32,
    next_char_freq: i32,
    next_pair_freq: i32,
    needed: i32,
}

/// Length-limited Huffman code builder (`huffmanEncoder`).
#[derive(Clone)]
pub(super) struct HuffmanEncoder {
    pub codes: Vec<HCode>,
    bit_count: [i32; 17],
    freqcache: Vec<LiteralNode>,
}

impl HuffmanEncoder {
    pub fn new(size: usize) -> Self {
        HuffmanEncoder {
            codes: vec![0; size],
            bit_count: [0; 17],
            freqcache: vec![LiteralNode::default(); LITERAL_COUNT + 1],
        }
    }

    fn fixed_literal() -> Self {
        let mut h = Self::new(LITERAL_COUNT);
        for ch in 0..LITERAL_COUNT as u16 {
            let (bits, size) = match ch {
                0..=143 => (ch + 48, 8),
                144..=255 => (ch + 400 - 144, 9),
                256..=279 => (ch - 256, 7),
                _ => (ch + 192 - 280, 8),
            };
            h.codes[ch as usize] = new_hcode(reverse_bits(bits, size), size);
        }
        h
    }

    fn fixed_offset() -> Self {
        let mut h = Self::new(OFFSET_CODE_COUNT);
        for ch in 0..OFFSET_CODE_COUNT {
            h.codes[ch] = new_hcode(reverse_bits(ch as u16, 5), 5);
        }
        h
    }

    fn bit_length(&self, freq: &[u16]) -> isize {
        let mut total = 0isize;
        for (i, &f) in freq.iter().enumerate() {
            if f != 0 {
                total += f as isize * hlen(self.codes[i]) as isize;
            }
        }
        total
    }

    /// Bits to encode `b` as literals; unset codes count 1 bit.
    pub fn bit_length_raw(&self, b: &[u8]) -> i32 {
        b.iter()
            .map(|&f| (hlen(self.codes[f as usize]) as i32).max(1))
            .sum()
    }

    /// Bits to encode `freq`, or `i32::MAX` if some symbol has no code.
    fn can_encode_len(&self, freq: &[u16]) -> isize {
        let mut total = 0isize;
        for (i, &f) in freq.iter().enumerate() {
            if f != 0 {
                let code = self.codes[i];
                if code == 0 {
                    return i32::MAX as isize;
                }
                total += f as isize * hlen(code) as isize;
            }
        }
        total
    }

    /// Rebuilds the code for `freq` with at most `max_bits` bits per code.
    pub fn generate(&mut self, freq: &[u16], max_bits: i32) {
        let mut count = 0usize;
        for (i, &f) in freq.iter().enumerate() {
            if f != 0 {
                self.freqcache[count] = LiteralNode {
                    literal: i as u16,
                    freq: f,
                };
                count += 1;
            } else {
                self.codes[i] = 0;
            }
        }
        if count <= 2 {
            for i in 0..count {
                let lit = self.freqcache[i].literal as usize;
                self.codes[lit] = new_hcode(i as u16, 1);
            }
            return;
        }
        self.freqcache[..count]
            .sort_unstable_by_key(|a| ((a.freq as u32) << 10) + a.literal as u32);
        let max_bits = self.bit_counts(count, max_bits);
        self.assign_encoding_and_size(max_bits, count);
    }

    /// Package-merge style bit counting (Go's `bitCounts`); returns the
    /// effective maximum number of bits. `freqcache[..n]` is sorted.
    fn bit_counts(&mut self, n: usize, max_bits: i32) -> usize {
        let list = &mut self.freqcache;
        list[n] = MAX_NODE;
        let max_bits = max_bits.min(n as i32 - 1) as usize;
        let mut levels = [LevelInfo::default(); 17];
        let mut leaf_counts = [[0i32; 16]; 16];
        for level in 1..=max_bits {
            levels[level] = LevelInfo {
                last_freq: list[1].freq as i32,
                next_char_freq: list[2].freq as i32,
                next_pair_freq: list[0].freq as i32 + list[1].freq as i32,
                needed: 0,
            };
            leaf_counts[level][level] = 2;
            if level == 1 {
                levels[level].next_pair_freq = i32::MAX;
            }
        }
        levels[max_bits].needed = 2 * n as i32 - 4;

        let mut level = max_bits;
        while level < 16 {
            if levels[level].next_pair_freq == i32::MAX && levels[level].next_char_freq == i32::MAX
            {
                levels[level].needed = 0;
                levels[level + 1].next_pair_freq = i32::MAX;
                level += 1;
                continue;
            }
            let prev_freq = levels[level].last_freq;
            if levels[level].next_char_freq < levels[level].next_pair_freq {
                let nn = leaf_counts[level][level] + 1;
                levels[level].last_freq = levels[level].next_char_freq;
                leaf_counts[level][level] = nn;
                let e = list[nn as usize];
                levels[level].next_char_freq = if e.literal < u16::MAX {
                    e.freq as i32
                } else {
                    i32::MAX
                };
            } else {
                levels[level].last_freq = levels[level].next_pair_freq;
                let save = leaf_counts[level][level];
                leaf_counts[level] = leaf_counts[level - 1];
                leaf_counts[level][level] = save;
                levels[level - 1].needed = 2;
            }
            levels[level].needed -= 1;
            if levels[level].needed == 0 {
                if level == max_bits {
                    break;
                }
                levels[level + 1].next_pair_freq = prev_freq + levels[level].last_freq;
                level += 1;
            } else {
                while levels[level - 1].needed > 0 {
                    level -= 1;
                }
            }
        }
        assert_eq!(
            leaf_counts[max_bits][max_bits], n as i32,
            "goflate: inconsistent Huffman leaf count"
        );
        for (bits, level) in (1..).zip((1..=max_bits).rev()) {
            self.bit_count[bits] = leaf_counts[max_bits][level] - leaf_counts[max_bits][level - 1];
        }
        max_bits
    }

    fn assign_encoding_and_size(&mut self, max_bits: usize, count: usize) {
        let mut code: u16 = 0;
        let mut len = count;
        for n in 0..=max_bits {
            let bits = self.bit_count[n];
            code <<= 1;
            if n == 0 || bits == 0 {
                continue;
            }
            let bits = bits as usize;
            let chunk = &mut self.freqcache[len - bits..len];
            chunk.sort_unstable_by_key(|a| a.literal);
            for node in chunk.iter() {
                self.codes[node.literal as usize] = new_hcode(reverse_bits(code, n as u8), n as u8);
                code = code.wrapping_add(1);
            }
            len -= bits;
        }
    }
}

/// Little-endian bit accumulator; bytes go straight to `out`.
pub(super) struct Bits {
    bits: u64,
    nbits: u32,
    pub out: Vec<u8>,
}

impl Bits {
    #[inline]
    fn put(&mut self, value: u64, nb: u32) {
        self.bits |= value << (self.nbits & 63);
        self.nbits += nb;
        if self.nbits >= 48 {
            self.out.extend_from_slice(&self.bits.to_le_bytes()[..6]);
            self.bits >>= 48;
            self.nbits -= 48;
        }
    }

    #[inline]
    fn code(&mut self, c: HCode) {
        self.put((c >> 8) as u64, hlen(c));
    }

    /// Pads to a byte boundary and emits everything pending.
    fn align(&mut self) {
        while self.nbits != 0 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
        self.bits = 0;
    }
}

/// Go's `huffmanBitWriter`: chooses stored / fixed / dynamic blocks and may
/// keep a dynamic table open across several `write_block_*` calls.
pub(super) struct BitWriter {
    pub bw: Bits,
    wrote_huffman: bool,
    literal_encoding: HuffmanEncoder,
    tmp_lit_encoding: HuffmanEncoder,
    offset_encoding: HuffmanEncoder,
    codegen_encoding: HuffmanEncoder,
    fixed_lit: HuffmanEncoder,
    fixed_off: HuffmanEncoder,
    huff_offset: HuffmanEncoder,
    /// Non-zero: a dynamic table is open (an EOB is owed); its header size.
    prev_header: isize,
    pub log_new_table_penalty: u32,
    /// klauspost/compress's block writer up to 1.18.0 (Go 1.27 took it
    /// over with two changes): a block that is not the last before a flush
    /// leaves the end-of-block symbol out of its histogram and writes all
    /// 286 + 30 code lengths in its header.
    pub filled_headers: bool,
    literal_freq: [u16; LENGTH_CODES_START + 32],
    offset_freq: [u16; 32],
    codegen_freq: [u16; CODEGEN_CODE_COUNT],
    codegen: [u8; LITERAL_COUNT + OFFSET_CODE_COUNT + 1],
}

fn stored_size(input: Option<&[u8]>) -> (isize, bool) {
    match input {
        Some(b) if b.len() <= MAX_STORE_BLOCK_SIZE => ((b.len() as isize + 5) * 8, true),
        _ => (0, false),
    }
}

impl BitWriter {
    pub fn new() -> Self {
        let mut huff_offset = HuffmanEncoder::new(OFFSET_CODE_COUNT);
        let mut f = [0u16; OFFSET_CODE_COUNT];
        f[0] = 1;
        huff_offset.generate(&f, 15);
        BitWriter {
            bw: Bits {
                bits: 0,
                nbits: 0,
                out: Vec::new(),
            },
            wrote_huffman: false,
            literal_encoding: HuffmanEncoder::new(LITERAL_COUNT),
            tmp_lit_encoding: HuffmanEncoder::new(LITERAL_COUNT),
            offset_encoding: HuffmanEncoder::new(OFFSET_CODE_COUNT),
            codegen_encoding: HuffmanEncoder::new(CODEGEN_CODE_COUNT),
            fixed_lit: HuffmanEncoder::fixed_literal(),
            fixed_off: HuffmanEncoder::fixed_offset(),
            huff_offset,
            prev_header: 0,
            log_new_table_penalty: 0,
            filled_headers: false,
            literal_freq: [0; LENGTH_CODES_START + 32],
            offset_freq: [0; 32],
            codegen_freq: [0; CODEGEN_CODE_COUNT],
            codegen: [0; LITERAL_COUNT + OFFSET_CODE_COUNT + 1],
        }
    }

    fn write_eob(&mut self) {
        self.bw.code(self.literal_encoding.codes[END_BLOCK_MARKER]);
    }

    /// Closes an open block and pads the output to a byte boundary.
    /// Go's `huffmanBitWriter.reset`: a new stream (the last one was
    /// flushed, so no bits are pending); tables are rebuilt before use.
    pub fn reset(&mut self) {
        debug_assert_eq!(self.bw.nbits, 0, "reset of an unflushed stream");
        self.bw.bits = 0;
        self.bw.nbits = 0;
        self.prev_header = 0;
        self.wrote_huffman = false;
    }

    pub fn flush(&mut self) {
        if self.prev_header > 0 {
            self.write_eob();
            self.prev_header = 0;
        }
        self.bw.align();
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.bw.nbits & 7, 0);
        self.bw.align();
        self.bw.out.extend_from_slice(bytes);
    }

    fn can_reuse(&self, t: &Tokens) -> bool {
        let off = &self.offset_encoding.codes;
        for (i, &v) in t.off_hist[..OFFSET_CODE_COUNT].iter().enumerate() {
            if v != 0 && off[i] == 0 {
                return false;
            }
        }
        let lit = &self.literal_encoding.codes;
        for (i, &v) in t.extra_hist[..LITERAL_COUNT - 256].iter().enumerate() {
            if v != 0 && lit[256 + i] == 0 {
                return false;
            }
        }
        for (i, &v) in t.lit_hist.iter().enumerate() {
            if v != 0 && lit[i] == 0 {
                return false;
            }
        }
        true
    }

    fn header_size(&self) -> (isize, usize) {
        let num_codegens = self.codegens();
        (
            3 + 5
                + 5
                + 4
                + 3 * num_codegens as isize
                + self.codegen_encoding.bit_length(&self.codegen_freq)
                + self.codegen_freq[16] as isize * 2
                + self.codegen_freq[17] as isize * 3
                + self.codegen_freq[18] as isize * 7,
            num_codegens,
        )
    }

    fn codegens(&self) -> usize {
        let mut n = CODEGEN_CODE_COUNT;
        while n > 4 && self.codegen_freq[CODEGEN_ORDER[n - 1]] == 0 {
            n -= 1;
        }
        n
    }

    fn dynamic_size(&self, extra_bits: isize) -> (isize, usize) {
        let (header, num_codegens) = self.header_size();
        (
            header
                + self.literal_encoding.bit_length(&self.literal_freq)
                + self.offset_encoding.bit_length(&self.offset_freq)
                + extra_bits,
            num_codegens,
        )
    }

    fn extra_bit_size(&self) -> isize {
        let mut total = 0isize;
        for (i, &n) in self.literal_freq[257..LITERAL_COUNT].iter().enumerate() {
            total += n as isize * LENGTH_EXTRA_BITS[i & 31] as isize;
        }
        for (i, &n) in self.offset_freq[..OFFSET_CODE_COUNT].iter().enumerate() {
            total += n as isize * OFFSET_EXTRA_BITS[i & 31] as isize;
        }
        total
    }

    fn fixed_size(&self, extra_bits: isize) -> isize {
        3 + self.fixed_lit.bit_length(&self.literal_freq)
            + self.fixed_off.bit_length(&self.offset_freq)
            + extra_bits
    }

    /// RFC 1951 3.2.7 run-length coding of the code lengths into
    /// `self.codegen` (terminated by `BAD_CODE`), counting `codegen_freq`.
    fn generate_codegen(&mut self, num_literals: usize, num_offsets: usize, huff_offset: bool) {
        self.codegen_freq = [0; CODEGEN_CODE_COUNT];
        let lit = &self.literal_encoding.codes;
        let off = if huff_offset {
            &self.huff_offset.codes
        } else {
            &self.offset_encoding.codes
        };
        let codegen = &mut self.codegen;
        let freq = &mut self.codegen_freq;
        for i in 0..num_literals {
            codegen[i] = hlen(lit[i]) as u8;
        }
        for i in 0..num_offsets {
            codegen[num_literals + i] = hlen(off[i]) as u8;
        }
        codegen[num_literals + num_offsets] = BAD_CODE;

        run_length_code(codegen, |sym| freq[sym] += 1);
    }

    fn write_dynamic_header(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        num_codegens: usize,
        is_eof: bool,
    ) {
        let first_bits = if is_eof { 5 } else { 4 };
        self.bw.put(first_bits, 3);
        self.bw.put((num_literals - 257) as u64, 5);
        self.bw.put((num_offsets - 1) as u64, 5);
        self.bw.put((num_codegens - 4) as u64, 4);
        for &sym in &CODEGEN_ORDER[..num_codegens] {
            self.bw
                .put(hlen(self.codegen_encoding.codes[sym]) as u64, 3);
        }
        let mut i = 0;
        loop {
            let code_word = self.codegen[i] as usize;
            i += 1;
            if code_word == BAD_CODE as usize {
                break;
            }
            self.bw.code(self.codegen_encoding.codes[code_word]);
            let extra = match code_word {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => 0,
            };
            if extra != 0 {
                self.bw.put(self.codegen[i] as u64, extra);
                i += 1;
            }
        }
    }

    /// A stored block header; an empty final stored block is replaced by an
    /// empty fixed block (10 bits instead of 5 bytes).
    pub fn write_stored_header(&mut self, length: usize, is_eof: bool) {
        if self.prev_header > 0 {
            self.write_eob();
            self.prev_header = 0;
        }
        if length == 0 && is_eof {
            self.write_fixed_header(is_eof);
            self.bw.put(0, 7);
            self.flush();
            return;
        }
        self.bw.put(is_eof as u64, 3);
        self.flush();
        self.bw.put(length as u64, 16);
        self.bw.put((!(length as u16)) as u64, 16);
    }

    fn write_fixed_header(&mut self, is_eof: bool) {
        if self.prev_header > 0 {
            self.write_eob();
            self.prev_header = 0;
        }
        self.bw.put(if is_eof { 3 } else { 2 }, 3);
    }

    pub fn write_stored_block(&mut self, buf: &[u8]) {
        self.write_stored_header(buf.len(), false);
        self.write_bytes(buf);
    }

    /// Copies the block's histograms; the number of literal/length and
    /// offset codes its header needs (all of them when `filled`).
    fn index_tokens(&mut self, t: &Tokens, filled: bool) -> (usize, usize) {
        self.literal_freq[..256].copy_from_slice(&t.lit_hist);
        self.literal_freq[256..288].copy_from_slice(&t.extra_hist);
        self.offset_freq = t.off_hist;
        if t.n == 0 {
            return (0, 0);
        }
        if filled {
            return (LITERAL_COUNT, OFFSET_CODE_COUNT);
        }
        let mut num_literals = self.literal_freq.len();
        while self.literal_freq[num_literals - 1] == 0 {
            num_literals -= 1;
        }
        let mut num_offsets = self.offset_freq.len();
        while num_offsets > 0 && self.offset_freq[num_offsets - 1] == 0 {
            num_offsets -= 1;
        }
        if num_offsets == 0 {
            self.offset_freq[0] = 1;
            num_offsets = 1;
        }
        (num_literals, num_offsets)
    }

    fn generate(&mut self) {
        self.literal_encoding
            .generate(&self.literal_freq[..LITERAL_COUNT], 15);
        self.offset_encoding
            .generate(&self.offset_freq[..OFFSET_CODE_COUNT], 15);
    }

    fn write_stored(&mut self, input: &[u8], eof: bool) {
        self.write_stored_header(input.len(), eof);
        self.write_bytes(input);
    }

    fn write_fixed_block(&mut self, tokens: &mut Tokens, eof: bool, sync: bool) {
        self.write_fixed_header(eof);
        if !sync {
            tokens.add_eob();
        }
        write_tokens(
            &mut self.bw,
            tokens.slice(),
            &self.fixed_lit.codes,
            &self.fixed_off.codes,
        );
    }

    /// Go's `writeBlockDynamic`: a block of tokens, reusing the open table
    /// when that is estimated to be cheaper, else fixed/stored/new dynamic.
    pub fn write_block_dynamic(
        &mut self,
        tokens: &mut Tokens,
        eof: bool,
        input: Option<&[u8]>,
        sync: bool,
    ) {
        let sync = sync || eof;
        if sync {
            tokens.add_eob();
        } else if !self.filled_headers {
            tokens.extra_hist[0] = 1;
        }
        if (self.wrote_huffman || eof) && self.prev_header > 0 {
            self.write_eob();
            self.prev_header = 0;
            self.wrote_huffman = false;
        }
        if self.prev_header > 0 && !self.can_reuse(tokens) {
            self.write_eob();
            self.prev_header = 0;
        }
        let (num_literals, num_offsets) = self.index_tokens(tokens, self.filled_headers && !sync);
        let mut extra_bits = 0;
        let (ssize, storable) = stored_size(input);
        if storable || self.prev_header > 0 {
            extra_bits = self.extra_bit_size();
        }
        let mut size: isize;

        if self.prev_header > 0 {
            let mut new_size = self.prev_header + tokens.estimated_bits();
            new_size += hlen(self.literal_encoding.codes[END_BLOCK_MARKER]) as isize
                + (new_size >> self.log_new_table_penalty);
            let reuse_size = self.literal_encoding.bit_length(&self.literal_freq)
                + self.offset_encoding.bit_length(&self.offset_freq)
                + extra_bits;
            if new_size < reuse_size {
                self.write_eob();
                size = new_size;
                self.prev_header = 0;
            } else {
                size = reuse_size;
            }
            if tokens.n < MAX_PREDEFINED_TOKENS {
                let pre_size = self.fixed_size(extra_bits) + 7;
                if pre_size < size {
                    if storable && ssize <= size {
                        self.write_stored(input.unwrap_or_default(), eof);
                        return;
                    }
                    self.write_fixed_block(tokens, eof, sync);
                    return;
                }
            }
            if storable && ssize <= size {
                self.write_stored(input.unwrap_or_default(), eof);
                return;
            }
        }

        if self.prev_header == 0 {
            self.literal_freq[END_BLOCK_MARKER] = 1;
            self.generate();
            self.generate_codegen(num_literals, num_offsets, false);
            self.codegen_encoding.generate(&self.codegen_freq, 7);
            let num_codegens;
            (size, num_codegens) = self.dynamic_size(extra_bits);
            if tokens.n < MAX_PREDEFINED_TOKENS {
                let pre_size = self.fixed_size(extra_bits);
                if pre_size <= size {
                    if storable && ssize <= pre_size {
                        self.write_stored(input.unwrap_or_default(), eof);
                        return;
                    }
                    self.write_fixed_block(tokens, eof, sync);
                    return;
                }
            }
            if storable && ssize <= size {
                self.write_stored(input.unwrap_or_default(), eof);
                return;
            }
            self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
            if !sync {
                self.prev_header = self.header_size().0;
            }
            self.wrote_huffman = false;
        }
        if sync {
            self.prev_header = 0;
        }
        write_tokens(
            &mut self.bw,
            tokens.slice(),
            &self.literal_encoding.codes,
            &self.offset_encoding.codes,
        );
    }

    /// Go's `writeBlockHuff`: literals only, or stored when that is not
    /// worth it.
    pub fn write_block_huff(&mut self, eof: bool, input: &[u8], sync: bool) {
        self.literal_freq = [0; LENGTH_CODES_START + 32];
        if !self.wrote_huffman {
            self.offset_freq = [0; 32];
        }
        const NUM_LITERALS: usize = END_BLOCK_MARKER + 1;
        const GUESS_HEADER_SIZE_BITS: isize = 70 * 8;
        for &b in input {
            self.literal_freq[b as usize] = self.literal_freq[b as usize].wrapping_add(1);
        }
        let (ssize, storable) = stored_size(Some(input));
        if storable && input.len() > 1024 {
            // Quick check for incompressible (near-uniform) content.
            let mut abs = 0f64;
            let avg = input.len() as f64 / 256.0;
            let max = (input.len() * 2) as f64;
            for &v in &self.literal_freq[..256] {
                let diff = v as f64 - avg;
                abs += diff * diff;
                if abs >= max {
                    break;
                }
            }
            if abs < max {
                self.write_stored(input, eof);
                return;
            }
        }
        self.literal_freq[END_BLOCK_MARKER] = 1;
        self.tmp_lit_encoding
            .generate(&self.literal_freq[..NUM_LITERALS], 15);
        let mut est_bits = self
            .tmp_lit_encoding
            .can_encode_len(&self.literal_freq[..NUM_LITERALS]);
        if est_bits < i32::MAX as isize {
            est_bits += self.prev_header;
            if self.prev_header == 0 {
                est_bits += GUESS_HEADER_SIZE_BITS;
            }
            est_bits += est_bits >> self.log_new_table_penalty;
        }
        if storable && ssize <= est_bits {
            self.write_stored(input, eof);
            return;
        }
        if self.prev_header > 0 {
            let reuse_size = self
                .literal_encoding
                .can_encode_len(&self.literal_freq[..256]);
            if est_bits < reuse_size {
                self.write_eob();
                self.prev_header = 0;
            }
        }
        if self.prev_header == 0 {
            std::mem::swap(&mut self.literal_encoding, &mut self.tmp_lit_encoding);
            self.generate_codegen(NUM_LITERALS, 1, true);
            self.codegen_encoding.generate(&self.codegen_freq, 7);
            let num_codegens = self.codegens();
            self.write_dynamic_header(NUM_LITERALS, 1, num_codegens, eof);
            self.wrote_huffman = true;
            self.prev_header = self.header_size().0;
        }
        let enc = &self.literal_encoding.codes;
        for &b in input {
            self.bw.code(enc[b as usize]);
        }
        if eof || sync {
            self.write_eob();
            self.prev_header = 0;
            self.wrote_huffman = false;
        }
    }
}

/// Writes tokens with the given literal/length and offset codes; a trailing
/// end-of-block token is written last.
fn write_tokens(bw: &mut Bits, tokens: &[u32], lit: &[HCode], off: &[HCode]) {
    for &t in tokens {
        if t < 256 {
            bw.code(lit[t as usize]);
            continue;
        }
        if t == END_BLOCK_MARKER as u32 {
            bw.code(lit[END_BLOCK_MARKER]);
            continue;
        }
        let length = (t >> LENGTH_SHIFT) & 0xff;
        let len_code = LENGTH_CODES[length as usize] as usize & 31;
        bw.code(lit[LENGTH_CODES_START + len_code]);
        if len_code >= 8 {
            bw.put(
                (length - LENGTH_BASE[len_code] as u32) as u64,
                LENGTH_EXTRA_BITS[len_code] as u32,
            );
        }
        let offset = t & OFFSET_MASK;
        let off_code = ((offset >> 16) & 31) as usize;
        bw.code(off[off_code]);
        if off_code >= 4 {
            bw.put(
                ((offset.wrapping_sub(OFFSET_BASE[off_code])) & MATCH_OFFSET_ONLY_MASK) as u64,
                OFFSET_EXTRA_BITS[off_code] as u32,
            );
        }
    }
}
