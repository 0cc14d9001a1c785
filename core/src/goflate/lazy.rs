//! The level 7-9 lazy matcher of Go 1.27's `compress/flate` (`deflate.go`:
//! `fillDeflate`, `findMatch`, `deflateLazy`, `tryBetterMatchAtEnd`,
//! `skipLiterals`): hash chains over a 64 KiB sliding window, lazy
//! evaluation, and (level 9) a literal-cost estimate to accept matches.

use super::fast::{load32, match_len};
use super::huffman::{
    offset_code, BitWriter, HuffmanEncoder, Tokens, LENGTH_CODES, LENGTH_EXTRA_BITS,
    OFFSET_EXTRA_BITS,
};

const WINDOW_SIZE: i32 = 1 << 15;
const WINDOW_MASK: i32 = WINDOW_SIZE - 1;
const MIN_MATCH_LENGTH: i32 = 4;
const MAX_MATCH_LENGTH: i32 = 258;
const MAX_FLATE_BLOCK_TOKENS: usize = 1 << 15;
const HASH_BITS: u32 = 17;
const HASH_SIZE: usize = 1 << HASH_BITS;
const MAX_HASH_OFFSET: i32 = 1 << 28;
const PRIME4: u32 = 2_654_435_761;

#[inline(always)]
fn at(i: i32) -> usize {
    i as usize
}

#[inline(always)]
fn hash4u(u: u32) -> u32 {
    u.wrapping_mul(PRIME4) >> (32 - HASH_BITS)
}

#[inline(always)]
fn hash4(b: &[u8], i: i32) -> usize {
    hash4u(load32(b, i)) as usize
}

/// `dst[i] = hash4(b[i..i + 4])` for every `i <= b.len() - 4`.
fn bulk_hash4(b: &[u8], dst: &mut [u32]) {
    if b.len() < 4 {
        return;
    }
    let mut hb = load32(b, 0);
    dst[0] = hash4u(hb);
    for i in 1..b.len() - 3 {
        hb = (hb >> 8) | (b[i + 3] as u32) << 24;
        dst[i] = hash4u(hb);
    }
}

/// Window, hash chains and lazy-matching state for levels 7-9.
pub(super) struct Lazy {
    lazy: i32,
    nice: i32,
    chain: i32,
    pub window: Vec<u8>,
    pub window_end: i32,
    block_start: i32,
    byte_available: bool,
    h: Option<HuffmanEncoder>,

    length: i32,
    offset: i32,
    max_insert_index: i32,
    chain_head: i32,
    hash_offset: i32,
    literal_counter: u16,
    index: i32,
    hash_match: Vec<u32>,
    hash_head: Vec<i32>,
    hash_prev: Vec<i32>,
}

/// Where the lazy matcher writes: the block writer, the token buffer and
/// whether a flush/close is in progress.
pub(super) struct Sink<'a> {
    pub w: &'a mut BitWriter,
    pub tokens: &'a mut Tokens,
    pub sync: bool,
}

impl Lazy {
    pub fn new(level: i32) -> Self {
        // (good, lazy, nice, chain); "good" is unused by Go 1.27.
        let (lazy, nice, chain) = match level {
            7 => (12, 16, 24),
            8 => (30, 40, 64),
            _ => (258, 258, 1024),
        };
        Lazy {
            lazy,
            nice,
            chain,
            window: vec![0; 2 * WINDOW_SIZE as usize],
            window_end: 0,
            block_start: 0,
            byte_available: false,
            h: None,
            length: MIN_MATCH_LENGTH - 1,
            offset: 0,
            max_insert_index: 0,
            chain_head: -1,
            hash_offset: 1,
            literal_counter: 0,
            index: 0,
            hash_match: vec![0; (MAX_MATCH_LENGTH + MIN_MATCH_LENGTH) as usize],
            hash_head: vec![0; HASH_SIZE],
            hash_prev: vec![0; WINDOW_SIZE as usize],
        }
    }

    pub fn is_full(&self) -> bool {
        self.window_end as usize == self.window.len()
    }

    /// Go's `fillDeflate`: slides the window when the matcher is near its
    /// end, then appends as much of `b` as fits.
    pub fn fill(&mut self, b: &[u8]) -> usize {
        if self.index >= 2 * WINDOW_SIZE - (MIN_MATCH_LENGTH + MAX_MATCH_LENGTH) {
            self.window
                .copy_within(WINDOW_SIZE as usize..2 * WINDOW_SIZE as usize, 0);
            self.index -= WINDOW_SIZE;
            self.window_end -= WINDOW_SIZE;
            if self.block_start >= WINDOW_SIZE {
                self.block_start -= WINDOW_SIZE;
            } else {
                self.block_start = i32::MAX;
            }
            self.hash_offset += WINDOW_SIZE;
            if self.hash_offset > MAX_HASH_OFFSET {
                let delta = self.hash_offset - 1;
                self.hash_offset -= delta;
                self.chain_head -= delta;
                for v in self.hash_prev.iter_mut().chain(self.hash_head.iter_mut()) {
                    *v = (*v - delta).max(0);
                }
            }
        }
        let start = at(self.window_end);
        let n = b.len().min(self.window.len() - start);
        self.window[start..start + n].copy_from_slice(&b[..n]);
        self.window_end += n as i32;
        n
    }

    /// Go's `compressor.writeBlock`.
    fn write_block(&mut self, out: &mut Sink, index: i32) {
        if index > 0 {
            let window = if self.block_start <= index {
                Some(&self.window[at(self.block_start)..at(index)])
            } else {
                None
            };
            self.block_start = index;
            out.w
                .write_block_dynamic(out.tokens, false, window, out.sync);
        }
    }

    /// Writes the block if the token buffer is full.
    #[inline]
    fn check_full(&mut self, out: &mut Sink) {
        if out.tokens.n == MAX_FLATE_BLOCK_TOKENS {
            self.write_block(out, self.index);
            out.tokens.reset();
        }
    }

    #[inline]
    fn insert_at_index(&mut self) {
        if self.index < self.max_insert_index {
            let h = hash4(&self.window, self.index);
            let ch = self.hash_head[h];
            self.chain_head = ch;
            self.hash_prev[at(self.index & WINDOW_MASK)] = ch;
            self.hash_head[h] = self.index + self.hash_offset;
        }
    }

    fn find_match(&self, pos: i32, prev_head: i32, lookahead: i32) -> Option<(i32, i32)> {
        let min_match_look = lookahead.min(MAX_MATCH_LENGTH);
        let win = &self.window[..at(pos + min_match_look)];
        let nice = self.nice.min(win.len() as i32 - pos);
        let mut tries = self.chain;
        let mut length = MIN_MATCH_LENGTH - 1;
        let mut w_end = win[at(pos + length)];
        let w_pos = &win[at(pos)..];
        let min_index = (pos - WINDOW_SIZE).max(0);
        let mut found = None;
        let mut c_gain = 4;
        const BASE_COST: i32 = 3;

        let mut i = prev_head;
        while tries > 0 {
            if w_end == win[at(i + length)] {
                let n = match_len(&win[at(i)..at(i + min_match_look)], w_pos) as i32;
                if n > length {
                    let mut accept = true;
                    if self.chain >= 100 {
                        let h = self.h.as_ref().expect("literal coder for level 9");
                        let new_gain = h.bit_length_raw(&w_pos[..at(n)])
                            - OFFSET_EXTRA_BITS[offset_code((pos - i) as u32) as usize] as i32
                            - BASE_COST
                            - LENGTH_EXTRA_BITS[LENGTH_CODES[at((n - 3) & 255)] as usize] as i32;
                        if new_gain <= c_gain {
                            accept = false;
                        } else {
                            c_gain = new_gain;
                        }
                    }
                    if accept {
                        length = n;
                        found = Some((n, pos - i));
                        if n >= nice {
                            break;
                        }
                        w_end = win[at(pos + n)];
                    }
                }
            }
            if i <= min_index {
                break;
            }
            i = self.hash_prev[at(i & WINDOW_MASK)] - self.hash_offset;
            if i < min_index {
                break;
            }
            tries -= 1;
        }
        found
    }

    fn try_better_match_at_end(
        &mut self,
        out: &mut Sink,
        mut prev_length: i32,
        mut prev_offset: i32,
        lookahead: i32,
    ) -> (i32, i32) {
        const CHECK_OFF: i32 = 2;
        if prev_length >= MAX_MATCH_LENGTH - CHECK_OFF {
            return (prev_length, prev_offset);
        }
        let prev_index = self.index - 1;
        if prev_index + prev_length >= self.max_insert_index {
            return (prev_length, prev_offset);
        }
        let end = lookahead.min(MAX_MATCH_LENGTH + CHECK_OFF) + prev_index;
        let min_index = (self.index - WINDOW_SIZE).max(0);
        let h = hash4(&self.window, prev_index + prev_length);
        let ch2 = self.hash_head[h] - self.hash_offset - prev_length;
        if prev_index - ch2 == prev_offset || ch2 <= min_index + CHECK_OFF {
            return (prev_length, prev_offset);
        }
        let length = match_len(
            &self.window[at(prev_index + CHECK_OFF)..at(end)],
            &self.window[at(ch2 + CHECK_OFF)..],
        ) as i32;
        if length <= prev_length {
            return (prev_length, prev_offset);
        }
        prev_length = length;
        prev_offset = prev_index - ch2;
        for i in (0..CHECK_OFF).rev() {
            if prev_length >= MAX_MATCH_LENGTH
                || self.window[at(prev_index + i)] != self.window[at(ch2 + i)]
            {
                for j in 0..=i {
                    out.tokens.add_literal(self.window[at(prev_index + j)]);
                    self.check_full(out);
                    self.index += 1;
                    self.insert_at_index();
                }
                break;
            }
            prev_length += 1;
        }
        (prev_length, prev_offset)
    }

    fn skip_literals(&mut self, out: &mut Sink) {
        let n = self.literal_counter as i32 - self.chain;
        if n <= 0 {
            return;
        }
        let n = 1 + (n >> 6);
        for _ in 0..n {
            if self.index >= self.window_end - 1 {
                break;
            }
            out.tokens.add_literal(self.window[at(self.index - 1)]);
            self.check_full(out);
            self.insert_at_index();
            self.index += 1;
        }
        out.tokens.add_literal(self.window[at(self.index - 1)]);
        self.byte_available = false;
        self.check_full(out);
    }

    /// Go's `deflateLazy`: consumes the window up to the last 262 bytes
    /// (everything when `sync`).
    pub fn deflate(&mut self, out: &mut Sink) {
        if self.window_end - self.index < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH && !out.sync {
            return;
        }
        if self.window_end != self.index && self.chain > 100 {
            let h = self.h.get_or_insert_with(|| HuffmanEncoder::new(256));
            let mut tmp = [0u16; 256];
            let to_index = &self.window[at(self.index)..at(self.window_end)];
            for &v in &to_index[..to_index.len().min(MAX_FLATE_BLOCK_TOKENS)] {
                tmp[v as usize] += 1;
            }
            h.generate(&tmp, 15);
        }
        self.max_insert_index = self.window_end - (MIN_MATCH_LENGTH - 1);

        loop {
            let lookahead = self.window_end - self.index;
            if lookahead < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH {
                if !out.sync {
                    return;
                }
                if lookahead == 0 {
                    if self.byte_available {
                        out.tokens.add_literal(self.window[at(self.index - 1)]);
                        self.byte_available = false;
                    }
                    if out.tokens.n > 0 {
                        self.write_block(out, self.index);
                        out.tokens.reset();
                    }
                    return;
                }
            }
            self.insert_at_index();
            let mut prev_length = self.length;
            let mut prev_offset = self.offset;
            self.length = MIN_MATCH_LENGTH - 1;
            self.offset = 0;
            let min_index = (self.index - WINDOW_SIZE).max(0);

            if self.chain_head - self.hash_offset >= min_index
                && lookahead > prev_length
                && prev_length < self.lazy
            {
                if let Some((l, o)) =
                    self.find_match(self.index, self.chain_head - self.hash_offset, lookahead)
                {
                    self.length = l;
                    self.offset = o;
                }
            }

            if prev_length >= MIN_MATCH_LENGTH && self.length <= prev_length {
                (prev_length, prev_offset) =
                    self.try_better_match_at_end(out, prev_length, prev_offset, lookahead);
                out.tokens
                    .add_match((prev_length - 3) as u32, (prev_offset - 1) as u32);

                // Insert all strings up to the end of the match.
                let new_index = self.index + prev_length - 1;
                let end = new_index.min(self.max_insert_index) + MIN_MATCH_LENGTH - 1;
                let start = (self.index + 1).min(self.max_insert_index);
                let to_check = &self.window[at(start)..at(end)];
                let dst_size = to_check.len() as i32 - MIN_MATCH_LENGTH + 1;
                if dst_size > 0 {
                    let dst = &mut self.hash_match[..at(dst_size)];
                    bulk_hash4(to_check, dst);
                    for (i, &val) in dst.iter().enumerate() {
                        let di = i as i32 + start;
                        self.hash_prev[at(di & WINDOW_MASK)] = self.hash_head[val as usize];
                        self.hash_head[val as usize] = di + self.hash_offset;
                    }
                }
                self.index = new_index;
                self.byte_available = false;
                self.length = MIN_MATCH_LENGTH - 1;
                self.check_full(out);
                self.literal_counter = 0;
                continue;
            }
            if self.length >= MIN_MATCH_LENGTH {
                self.literal_counter = 0;
            }
            if self.byte_available {
                self.literal_counter = self.literal_counter.wrapping_add(1);
                out.tokens.add_literal(self.window[at(self.index - 1)]);
                self.check_full(out);
                self.index += 1;
                self.skip_literals(out);
            } else {
                self.index += 1;
                self.byte_available = true;
            }
        }
    }
}
