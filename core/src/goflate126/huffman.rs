//! Tokens, Huffman code construction and the block writer of Go 1.21–1.26's
//! `compress/flate` (`token.go`, `huffman_code.go`, `huffman_bit_writer.go`).
//!
//! These decide *which* block type is written and *which* code lengths are
//! used, so every size estimate, comparison and tie-break follows the Go
//! source exactly. Frequencies are `i32` as in Go (a block may hold up to
//! 65535 tokens).

/// A token: a literal byte (`< MATCH_TYPE`) or
/// `MATCH_TYPE | (length - 3) << 22 | (offset - 1)`.
pub(super) type Token = u32;

pub(super) const MATCH_TYPE: u32 = 1 << 30;
const LENGTH_SHIFT: u32 = 22;
const OFFSET_MASK: u32 = (1 << LENGTH_SHIFT) - 1;

pub(super) const MAX_STORE_BLOCK_SIZE: usize = 65535;
use crate::rfc1951::{
    run_length_code, BAD_CODE, CODEGEN_CODE_COUNT, CODEGEN_ORDER, END_BLOCK_MARKER, LENGTH_BASE,
    LENGTH_CODES, LENGTH_CODES_START, LENGTH_EXTRA_BITS, LITERAL_COUNT as MAX_NUM_LIT, OFFSET_BASE,
    OFFSET_CODES, OFFSET_CODE_COUNT, OFFSET_EXTRA_BITS,
};

/// `match_token(length - 3, offset - 1)`.
#[inline(always)]
pub(super) fn match_token(xlength: u32, xoffset: u32) -> Token {
    MATCH_TYPE + (xlength << LENGTH_SHIFT) + xoffset
}

/// Go's `offsetCode(off)` for `off = offset - 1 < 32768`.
#[inline(always)]
fn offset_code(off: u32) -> usize {
    if off < 256 {
        OFFSET_CODES[off as usize] as usize
    } else {
        OFFSET_CODES[(off >> 7) as usize] as usize + 14
    }
}

/// A Huffman code: bit-reversed `code` and its length.
#[derive(Clone, Copy, Default)]
struct HCode {
    code: u16,
    len: u16,
}

#[inline]
fn reverse_bits(x: u16, len: u16) -> u16 {
    (x << (16 - len)).reverse_bits()
}

#[derive(Clone, Copy, Default)]
struct LiteralNode {
    literal: u16,
    freq: i32,
}

const MAX_NODE: LiteralNode = LiteralNode {
    literal: u16::MAX,
    freq: i32::MAX,
};

#[derive(Clone, Copy, Default)]
struct LevelInfo {
    last_freq: i32,
    next_char_freq: i32,
    next_pair_freq: i32,
    needed: i32,
}

/// Length-limited Huffman code builder (`huffmanEncoder`).
struct HuffmanEncoder {
    codes: Vec<HCode>,
    bit_count: [i32; 17],
    freqcache: Vec<LiteralNode>,
}

impl HuffmanEncoder {
    fn new(size: usize) -> Self {
        HuffmanEncoder {
            codes: vec![HCode::default(); size],
            bit_count: [0; 17],
            freqcache: vec![LiteralNode::default(); MAX_NUM_LIT + 1],
        }
    }

    /// `generateFixedLiteralEncoding`.
    fn fixed_literal() -> Self {
        let mut h = Self::new(MAX_NUM_LIT);
        for ch in 0..MAX_NUM_LIT as u16 {
            let (bits, size) = match ch {
                0..=143 => (ch + 48, 8),
                144..=255 => (ch + 400 - 144, 9),
                256..=279 => (ch - 256, 7),
                _ => (ch + 192 - 280, 8),
            };
            h.codes[ch as usize] = HCode {
                code: reverse_bits(bits, size),
                len: size,
            };
        }
        h
    }

    /// `generateFixedOffsetEncoding`.
    fn fixed_offset() -> Self {
        let mut h = Self::new(OFFSET_CODE_COUNT);
        for (ch, c) in h.codes.iter_mut().enumerate() {
            *c = HCode {
                code: reverse_bits(ch as u16, 5),
                len: 5,
            };
        }
        h
    }

    fn bit_length(&self, freq: &[i32]) -> isize {
        freq.iter()
            .zip(&self.codes)
            .filter(|(&f, _)| f != 0)
            .map(|(&f, c)| f as isize * c.len as isize)
            .sum()
    }

    /// Go's `generate`: the minimum code for `freq` with at most `max_bits`
    /// bits per symbol.
    fn generate(&mut self, freq: &[i32], max_bits: usize) {
        let mut count = 0usize;
        for (i, &f) in freq.iter().enumerate() {
            if f != 0 {
                self.freqcache[count] = LiteralNode {
                    literal: i as u16,
                    freq: f,
                };
                count += 1;
            } else {
                self.codes[i].len = 0;
            }
        }
        if count <= 2 {
            // With two or fewer literals, everything has bit length 1.
            for i in 0..count {
                let lit = self.freqcache[i].literal as usize;
                self.codes[lit] = HCode {
                    code: i as u16,
                    len: 1,
                };
            }
            return;
        }
        // byFreq: frequency, then literal (a total order, so any sort
        // gives Go's result).
        self.freqcache[..count]
            .sort_unstable_by_key(|a| ((a.freq as u64) << 16) | a.literal as u64);
        let max_bits = self.bit_counts(count, max_bits);
        self.assign_encoding_and_size(max_bits, count);
    }

    /// Go's `bitCounts` over `freqcache[..n]` (sorted, `n >= 3`); fills
    /// `bit_count[1..=max]` and returns the effective maximum.
    fn bit_counts(&mut self, n: usize, max_bits: usize) -> usize {
        let list = &mut self.freqcache;
        list[n] = MAX_NODE;
        let max_bits = max_bits.min(n - 1);
        let mut levels = [LevelInfo::default(); 17];
        let mut leaf_counts = [[0i32; 16]; 16];
        for level in 1..=max_bits {
            levels[level] = LevelInfo {
                last_freq: list[1].freq,
                next_char_freq: list[2].freq,
                next_pair_freq: list[0].freq + list[1].freq,
                needed: 0,
            };
            leaf_counts[level][level] = 2;
            if level == 1 {
                levels[level].next_pair_freq = i32::MAX;
            }
        }
        levels[max_bits].needed = 2 * n as i32 - 4;

        let mut level = max_bits;
        loop {
            let l = levels[level];
            if l.next_pair_freq == i32::MAX && l.next_char_freq == i32::MAX {
                // Out of both leaves and pairs: finish this level.
                levels[level].needed = 0;
                levels[level + 1].next_pair_freq = i32::MAX;
                level += 1;
                continue;
            }
            let prev_freq = l.last_freq;
            if l.next_char_freq < l.next_pair_freq {
                // The next item on this row is a leaf.
                let nn = leaf_counts[level][level] + 1;
                levels[level].last_freq = l.next_char_freq;
                leaf_counts[level][level] = nn;
                levels[level].next_char_freq = list[nn as usize].freq;
            } else {
                // A pair from the previous row.
                levels[level].last_freq = l.next_pair_freq;
                let (lo, hi) = leaf_counts.split_at_mut(level);
                hi[0][..level].copy_from_slice(&lo[level - 1][..level]);
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
            "goflate126: leafCounts[maxBits][maxBits] != n"
        );
        let counts = &leaf_counts[max_bits];
        for (bits, level) in (1..).zip((1..=max_bits).rev()) {
            self.bit_count[bits] = counts[level] - counts[level - 1];
        }
        max_bits
    }

    /// Go's `assignEncodingAndSize` (RFC 1951 3.2.2).
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
                self.codes[node.literal as usize] = HCode {
                    code: reverse_bits(code, n as u16),
                    len: n as u16,
                };
                code = code.wrapping_add(1);
            }
            len -= bits;
        }
    }
}

/// Little-endian bit accumulator writing straight into `out`.
pub(super) struct Bits {
    bits: u64,
    nbits: u32,
    pub out: Vec<u8>,
}

impl Bits {
    #[inline(always)]
    fn put(&mut self, value: u32, nb: u32) {
        self.bits |= (value as u64) << self.nbits;
        self.nbits += nb;
        if self.nbits >= 48 {
            self.out.extend_from_slice(&self.bits.to_le_bytes()[..6]);
            self.bits >>= 48;
            self.nbits -= 48;
        }
    }

    #[inline(always)]
    fn code(&mut self, c: HCode) {
        self.put(c.code as u32, c.len as u32);
    }

    /// The bits not yet written out, and how many.
    pub fn pending(&self) -> (u64, u32) {
        (self.bits, self.nbits)
    }

    /// Continues a stream whose pending bits were `bits` (`nbits` < 48).
    pub fn resume(&mut self, bits: u64, nbits: u32) {
        self.bits = bits;
        self.nbits = nbits;
    }

    /// Go's `flush`: pads to a byte boundary.
    fn align(&mut self) {
        while self.nbits != 0 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
        self.bits = 0;
    }
}

/// Go's `huffmanBitWriter`.
pub(super) struct BitWriter {
    pub bw: Bits,
    literal_freq: Vec<i32>,
    offset_freq: Vec<i32>,
    codegen_freq: [i32; CODEGEN_CODE_COUNT],
    codegen: Vec<u8>,
    literal_encoding: HuffmanEncoder,
    offset_encoding: HuffmanEncoder,
    codegen_encoding: HuffmanEncoder,
    fixed_literal: HuffmanEncoder,
    fixed_offset: HuffmanEncoder,
    huff_offset: HuffmanEncoder,
}

/// Which literal/offset codes a block is written with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Codes {
    Fixed,
    Dynamic,
}

fn stored_size(input: Option<&[u8]>) -> Option<isize> {
    match input {
        Some(b) if b.len() <= MAX_STORE_BLOCK_SIZE => Some((b.len() as isize + 5) * 8),
        _ => None,
    }
}

impl BitWriter {
    pub fn new() -> Self {
        let mut huff_offset = HuffmanEncoder::new(OFFSET_CODE_COUNT);
        let mut f = [0i32; OFFSET_CODE_COUNT];
        f[0] = 1;
        huff_offset.generate(&f, 15);
        BitWriter {
            bw: Bits {
                bits: 0,
                nbits: 0,
                out: Vec::new(),
            },
            literal_freq: vec![0; MAX_NUM_LIT],
            offset_freq: vec![0; OFFSET_CODE_COUNT],
            codegen_freq: [0; CODEGEN_CODE_COUNT],
            codegen: vec![0; MAX_NUM_LIT + OFFSET_CODE_COUNT + 1],
            literal_encoding: HuffmanEncoder::new(MAX_NUM_LIT),
            offset_encoding: HuffmanEncoder::new(OFFSET_CODE_COUNT),
            codegen_encoding: HuffmanEncoder::new(CODEGEN_CODE_COUNT),
            fixed_literal: HuffmanEncoder::fixed_literal(),
            fixed_offset: HuffmanEncoder::fixed_offset(),
            huff_offset,
        }
    }

    /// Pads the output to a byte boundary (Go's `flush`).
    pub fn flush(&mut self) {
        self.bw.align();
    }

    pub fn write_stored_header(&mut self, length: usize, is_eof: bool) {
        self.bw.put(is_eof as u32, 3);
        self.bw.align();
        self.bw.put(length as u32, 16);
        self.bw.put(!(length as u16) as u32, 16);
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.bw.nbits & 7, 0);
        self.bw.align();
        self.bw.out.extend_from_slice(bytes);
    }

    /// A non-final stored block (`compressor.writeStoredBlock`).
    pub fn write_stored_block(&mut self, buf: &[u8]) {
        self.write_stored_header(buf.len(), false);
        self.write_bytes(buf);
    }

    /// Go's `generateCodegen`: run-length codes of the concatenated code
    /// lengths, and their frequencies.
    fn generate_codegen(&mut self, num_literals: usize, num_offsets: usize, huff_offset: bool) {
        self.codegen_freq = [0; CODEGEN_CODE_COUNT];
        let off_enc = if huff_offset {
            &self.huff_offset
        } else {
            &self.offset_encoding
        };
        let codegen = &mut self.codegen;
        for (c, h) in codegen[..num_literals]
            .iter_mut()
            .zip(&self.literal_encoding.codes)
        {
            *c = h.len as u8;
        }
        for (c, h) in codegen[num_literals..num_literals + num_offsets]
            .iter_mut()
            .zip(&off_enc.codes)
        {
            *c = h.len as u8;
        }
        codegen[num_literals + num_offsets] = BAD_CODE;

        let freq = &mut self.codegen_freq;
        run_length_code(codegen, |sym| freq[sym] += 1);
    }

    /// Go's `dynamicSize`: bits of a dynamic block, and the number of
    /// code-length codes sent.
    fn dynamic_size(&self, huff_offset: bool, extra_bits: isize) -> (isize, usize) {
        let mut num_codegens = CODEGEN_CODE_COUNT;
        while num_codegens > 4 && self.codegen_freq[CODEGEN_ORDER[num_codegens - 1]] == 0 {
            num_codegens -= 1;
        }
        let header = 3
            + 5
            + 5
            + 4
            + 3 * num_codegens as isize
            + self.codegen_encoding.bit_length(&self.codegen_freq)
            + self.codegen_freq[16] as isize * 2
            + self.codegen_freq[17] as isize * 3
            + self.codegen_freq[18] as isize * 7;
        let off_enc = if huff_offset {
            &self.huff_offset
        } else {
            &self.offset_encoding
        };
        let size = header
            + self.literal_encoding.bit_length(&self.literal_freq)
            + off_enc.bit_length(&self.offset_freq)
            + extra_bits;
        (size, num_codegens)
    }

    fn fixed_size(&self, extra_bits: isize) -> isize {
        3 + self.fixed_literal.bit_length(&self.literal_freq)
            + self.fixed_offset.bit_length(&self.offset_freq)
            + extra_bits
    }

    fn write_dynamic_header(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        num_codegens: usize,
        is_eof: bool,
    ) {
        let bw = &mut self.bw;
        bw.put(if is_eof { 5 } else { 4 }, 3);
        bw.put((num_literals - 257) as u32, 5);
        bw.put((num_offsets - 1) as u32, 5);
        bw.put((num_codegens - 4) as u32, 4);
        for &o in &CODEGEN_ORDER[..num_codegens] {
            bw.put(self.codegen_encoding.codes[o].len as u32, 3);
        }
        let mut i = 0;
        loop {
            let code_word = self.codegen[i];
            i += 1;
            if code_word == BAD_CODE {
                break;
            }
            bw.code(self.codegen_encoding.codes[code_word as usize]);
            let extra = match code_word {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => continue,
            };
            bw.put(self.codegen[i] as u32, extra);
            i += 1;
        }
    }

    fn write_fixed_header(&mut self, is_eof: bool) {
        self.bw.put(if is_eof { 3 } else { 2 }, 3);
    }

    /// Go's `indexTokens` (over `tokens` plus the end-of-block marker):
    /// histograms and both dynamic codes; returns the symbol counts.
    fn index_tokens(&mut self, tokens: &[Token]) -> (usize, usize) {
        self.literal_freq.fill(0);
        self.offset_freq.fill(0);
        for &t in tokens {
            if t < MATCH_TYPE {
                self.literal_freq[t as usize] += 1;
            } else {
                let length = (t - MATCH_TYPE) >> LENGTH_SHIFT;
                let offset = t & OFFSET_MASK;
                self.literal_freq[LENGTH_CODES_START + LENGTH_CODES[length as usize] as usize] += 1;
                self.offset_freq[offset_code(offset)] += 1;
            }
        }
        self.literal_freq[END_BLOCK_MARKER] += 1;
        let mut num_literals = MAX_NUM_LIT;
        while self.literal_freq[num_literals - 1] == 0 {
            num_literals -= 1;
        }
        let mut num_offsets = OFFSET_CODE_COUNT;
        while num_offsets > 0 && self.offset_freq[num_offsets - 1] == 0 {
            num_offsets -= 1;
        }
        if num_offsets == 0 {
            // At least one offset code so the tree can be encoded.
            self.offset_freq[0] = 1;
            num_offsets = 1;
        }
        self.literal_encoding.generate(&self.literal_freq, 15);
        self.offset_encoding.generate(&self.offset_freq, 15);
        (num_literals, num_offsets)
    }

    /// Go's `writeBlock`: the smallest of fixed, dynamic and (if `input`
    /// is given and fits) stored.
    pub fn write_block(&mut self, tokens: &[Token], eof: bool, input: Option<&[u8]>) {
        let (num_literals, num_offsets) = self.index_tokens(tokens);
        let stored = stored_size(input);
        let mut extra_bits = 0isize;
        if stored.is_some() {
            for code in LENGTH_CODES_START + 8..num_literals {
                extra_bits += self.literal_freq[code] as isize
                    * LENGTH_EXTRA_BITS[code - LENGTH_CODES_START] as isize;
            }
            // The first four offset codes have no extra bits.
            for (&f, &eb) in self
                .offset_freq
                .iter()
                .zip(&OFFSET_EXTRA_BITS)
                .take(num_offsets)
                .skip(4)
            {
                extra_bits += f as isize * eb as isize;
            }
        }
        let mut codes = Codes::Fixed;
        let mut size = self.fixed_size(extra_bits);

        self.generate_codegen(num_literals, num_offsets, false);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (dynamic_size, num_codegens) = self.dynamic_size(false, extra_bits);
        if dynamic_size < size {
            size = dynamic_size;
            codes = Codes::Dynamic;
        }
        if let (Some(ssize), Some(input)) = (stored, input) {
            if ssize < size {
                self.write_stored_header(input.len(), eof);
                self.write_bytes(input);
                return;
            }
        }
        if codes == Codes::Fixed {
            self.write_fixed_header(eof);
        } else {
            self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
        }
        self.write_tokens(tokens, codes);
    }

    /// Go's `writeBlockDynamic`: a dynamic block, or stored if that saves
    /// less than 1/16th.
    pub fn write_block_dynamic(&mut self, tokens: &[Token], eof: bool, input: Option<&[u8]>) {
        let (num_literals, num_offsets) = self.index_tokens(tokens);
        self.generate_codegen(num_literals, num_offsets, false);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (size, num_codegens) = self.dynamic_size(false, 0);
        if let (Some(ssize), Some(input)) = (stored_size(input), input) {
            if ssize < size + (size >> 4) {
                self.write_stored_header(input.len(), eof);
                self.write_bytes(input);
                return;
            }
        }
        self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
        self.write_tokens(tokens, Codes::Dynamic);
    }

    /// Go's `writeTokens` (plus the end-of-block marker).
    fn write_tokens(&mut self, tokens: &[Token], codes: Codes) {
        let (le, oe) = match codes {
            Codes::Fixed => (&self.fixed_literal.codes, &self.fixed_offset.codes),
            Codes::Dynamic => (&self.literal_encoding.codes, &self.offset_encoding.codes),
        };
        let bw = &mut self.bw;
        for &t in tokens {
            if t < MATCH_TYPE {
                bw.code(le[t as usize]);
                continue;
            }
            let length = (t - MATCH_TYPE) >> LENGTH_SHIFT;
            let lc = LENGTH_CODES[length as usize] as usize;
            bw.code(le[lc + LENGTH_CODES_START]);
            let eb = LENGTH_EXTRA_BITS[lc] as u32;
            if eb > 0 {
                bw.put(length - u32::from(LENGTH_BASE[lc]), eb);
            }
            let offset = t & OFFSET_MASK;
            let oc = offset_code(offset);
            bw.code(oe[oc]);
            let eb = OFFSET_EXTRA_BITS[oc] as u32;
            if eb > 0 {
                bw.put(offset - OFFSET_BASE[oc], eb);
            }
        }
        bw.code(le[END_BLOCK_MARKER]);
    }

    /// Go's `writeBlockHuff`: literals only with a dynamic code, or stored
    /// if that saves less than 1/16th.
    pub fn write_block_huff(&mut self, eof: bool, input: &[u8]) {
        self.literal_freq.fill(0);
        for &b in input {
            self.literal_freq[b as usize] += 1;
        }
        self.literal_freq[END_BLOCK_MARKER] = 1;
        const NUM_LITERALS: usize = END_BLOCK_MARKER + 1;
        // Go sets offsetFreq[0] without clearing the rest; the other
        // entries have no code in huffOffset, so they cost nothing.
        self.offset_freq[0] = 1;
        const NUM_OFFSETS: usize = 1;
        self.literal_encoding.generate(&self.literal_freq, 15);
        self.generate_codegen(NUM_LITERALS, NUM_OFFSETS, true);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (size, num_codegens) = self.dynamic_size(true, 0);
        if let Some(ssize) = stored_size(Some(input)) {
            if ssize < size + (size >> 4) {
                self.write_stored_header(input.len(), eof);
                self.write_bytes(input);
                return;
            }
        }
        self.write_dynamic_header(NUM_LITERALS, NUM_OFFSETS, num_codegens, eof);
        let enc = &self.literal_encoding.codes;
        let bw = &mut self.bw;
        for &b in input {
            bw.code(enc[b as usize]);
        }
        bw.code(enc[END_BLOCK_MARKER]);
    }
}
