//! The level 1-6 matchers of Go 1.27's `compress/flate` (`deflatefast.go`,
//! `level1.go` … `level6.go`, themselves derived from klauspost/compress).
//!
//! Each `encode` call receives one window of up to 65535 bytes, appends it to
//! a history buffer (so matches may reach back into earlier windows) and
//! emits tokens for it. Positions are `i32` as in Go; table entries store
//! `position + cur` so the history buffer can be slid down without touching
//! the tables.

use super::huffman::Tokens;

const TABLE_BITS: u32 = 15;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const L2_TABLE_BITS: u32 = 17;
const L3_TABLE_BITS: u32 = 16;
const HASH_LONG_BYTES: u32 = 7;
pub(super) const MAX_MATCH_OFFSET: i32 = 1 << 15;
const MAX_MATCH_LENGTH: i32 = 258;
const MAX_STORE_BLOCK_SIZE: i32 = 65535;
const ALLOC_HISTORY: usize = MAX_STORE_BLOCK_SIZE as usize * 5;
const BUFFER_RESET: i32 = i32::MAX - ALLOC_HISTORY as i32 - MAX_STORE_BLOCK_SIZE - 1;
const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK_SIZE: usize = 1 + 1 + INPUT_MARGIN as usize;

const PRIME4: u32 = 2_654_435_761;
const PRIME5: u64 = 889_523_592_379;
const PRIME7: u64 = 58_295_818_150_454_627;

/// Hash of the low `n` (4, 5 or 7) bytes of `u` into `b` bits.
#[inline(always)]
fn hash_len(u: u64, b: u32, n: u32) -> usize {
    (match n {
        5 => ((u << (64 - 40)).wrapping_mul(PRIME5) >> (64 - b)) as u32,
        7 => ((u << (64 - 56)).wrapping_mul(PRIME7) >> (64 - b)) as u32,
        _ => (u as u32).wrapping_mul(PRIME4) >> (32 - b),
    }) as usize
}

#[inline(always)]
fn at(i: i32) -> usize {
    i as usize
}

#[inline(always)]
pub(super) fn load32(b: &[u8], i: i32) -> u32 {
    u32::from_le_bytes(b[at(i)..at(i) + 4].try_into().unwrap())
}

#[inline(always)]
pub(super) fn load64(b: &[u8], i: i32) -> u64 {
    u64::from_le_bytes(b[at(i)..at(i) + 8].try_into().unwrap())
}

/// Length of the common prefix of `a` and `b`; `a` must be the shorter.
#[inline]
pub(super) fn match_len(a: &[u8], b: &[u8]) -> usize {
    let mut n = 0;
    let b = &b[..a.len()];
    let mut ac = a.chunks_exact(8);
    let mut bc = b.chunks_exact(8);
    for (x, y) in (&mut ac).zip(&mut bc) {
        let diff =
            u64::from_le_bytes(x.try_into().unwrap()) ^ u64::from_le_bytes(y.try_into().unwrap());
        if diff != 0 {
            return n + (diff.trailing_zeros() >> 3) as usize;
        }
        n += 8;
    }
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        if x != y {
            break;
        }
        n += 1;
    }
    n
}

/// History shared by all fast levels (Go's `fastGen`).
struct FastGen {
    hist: Vec<u8>,
    /// Go's `cap(hist)`: 0 until first use, then `ALLOC_HISTORY`.
    cap: usize,
    cur: i32,
}

impl FastGen {
    fn new() -> Self {
        FastGen {
            hist: Vec::new(),
            cap: 0,
            cur: MAX_STORE_BLOCK_SIZE,
        }
    }

    fn add_block(&mut self, src: &[u8]) -> i32 {
        if self.hist.len() + src.len() > self.cap {
            if self.cap == 0 {
                self.hist = Vec::with_capacity(ALLOC_HISTORY);
                self.cap = ALLOC_HISTORY;
            } else {
                let offset = self.hist.len() - MAX_MATCH_OFFSET as usize;
                self.hist
                    .copy_within(offset..offset + MAX_MATCH_OFFSET as usize, 0);
                self.cur += offset as i32;
                self.hist.truncate(MAX_MATCH_OFFSET as usize);
            }
        }
        let s = self.hist.len() as i32;
        self.hist.extend_from_slice(src);
        s
    }

    fn reset(&mut self) {
        if self.cap < ALLOC_HISTORY {
            self.hist = Vec::with_capacity(ALLOC_HISTORY);
            self.cap = ALLOC_HISTORY;
        }
        if self.cur <= BUFFER_RESET {
            self.cur += MAX_MATCH_OFFSET + self.hist.len() as i32;
        }
        self.hist.clear();
    }

    /// Minimum table value that is still in reach when rebasing `cur`.
    fn min_off(&self) -> i32 {
        self.cur + self.hist.len() as i32 - MAX_MATCH_OFFSET
    }
}

#[inline]
fn rebase(v: i32, min_off: i32, cur: i32) -> i32 {
    if v <= min_off {
        0
    } else {
        v - cur + MAX_MATCH_OFFSET
    }
}

#[inline(always)]
fn match_len_long(src: &[u8], s: i32, t: i32) -> i32 {
    match_len(&src[at(s)..], &src[at(t)..]) as i32
}

#[inline(always)]
fn match_len_limited(src: &[u8], s: i32, t: i32) -> i32 {
    let end = (at(s) + MAX_MATCH_LENGTH as usize - 4).min(src.len());
    match_len(&src[at(s)..end], &src[at(t)..]) as i32
}

#[derive(Clone, Copy, Default)]
struct Prev {
    cur: i32,
    prev: i32,
}

impl Prev {
    #[inline(always)]
    fn push(&mut self, v: i32) {
        self.prev = self.cur;
        self.cur = v;
    }
}

/// One of the six fast encoders.
pub(super) enum FastEnc {
    L1(Box<L1>),
    L2(Box<L2>),
    L3(Box<L3>),
    L4(Box<L4>),
    L5(Box<L5>),
    L6(Box<L6>),
}

impl FastEnc {
    /// Level 4 of klauspost/compress before 1.18 compares the next long
    /// candidate at its position (the only difference from Go 1.27's
    /// matchers).
    pub fn l4_at_position(&mut self) {
        if let FastEnc::L4(l4) = self {
            l4.at_position = true;
        }
    }

    pub fn new(level: i32) -> Self {
        match level {
            1 => FastEnc::L1(Box::new(L1 {
                g: FastGen::new(),
                table: vec![0; TABLE_SIZE],
            })),
            2 => FastEnc::L2(Box::new(L2 {
                g: FastGen::new(),
                table: vec![0; 1 << L2_TABLE_BITS],
            })),
            3 => FastEnc::L3(Box::new(L3 {
                g: FastGen::new(),
                table: vec![Prev::default(); 1 << L3_TABLE_BITS],
            })),
            4 => FastEnc::L4(Box::new(L4 {
                g: FastGen::new(),
                table: vec![0; TABLE_SIZE],
                b_table: vec![0; TABLE_SIZE],
                at_position: false,
            })),
            5 => FastEnc::L5(Box::new(L5 {
                g: FastGen::new(),
                table: vec![0; TABLE_SIZE],
                b_table: vec![Prev::default(); TABLE_SIZE],
            })),
            6 => FastEnc::L6(Box::new(L6 {
                g: FastGen::new(),
                table: vec![0; TABLE_SIZE],
                b_table: vec![Prev::default(); TABLE_SIZE],
            })),
            _ => unreachable!("fast levels are 1..=6"),
        }
    }

    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        match self {
            FastEnc::L1(e) => e.encode(dst, src),
            FastEnc::L2(e) => e.encode(dst, src),
            FastEnc::L3(e) => e.encode(dst, src),
            FastEnc::L4(e) => e.encode(dst, src),
            FastEnc::L5(e) => e.encode(dst, src),
            FastEnc::L6(e) => e.encode(dst, src),
        }
    }

    pub fn reset(&mut self) {
        match self {
            FastEnc::L1(e) => e.g.reset(),
            FastEnc::L2(e) => e.g.reset(),
            FastEnc::L3(e) => e.g.reset(),
            FastEnc::L4(e) => e.g.reset(),
            FastEnc::L5(e) => e.g.reset(),
            FastEnc::L6(e) => e.g.reset(),
        }
    }
}

/// Emits `src[next_emit..]` as literals unless the block has no tokens yet
/// (then the caller stores the block).
fn emit_remainder(dst: &mut Tokens, src: &[u8], next_emit: i32) {
    if at(next_emit) < src.len() {
        if dst.n == 0 {
            return;
        }
        dst.emit_literals(&src[at(next_emit)..]);
    }
}

/// Level 1: one 32K-entry table of 5-byte hashes, sparse indexing.
pub(super) struct L1 {
    g: FastGen,
    table: Vec<i32>,
}

impl L1 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HB: u32 = 5;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut() {
                *v = rebase(*v, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        'outer: loop {
            let mut next_s;
            let mut t;
            loop {
                let mut next_hash = hash_len(cv, TABLE_BITS, HB);
                let candidate = table[next_hash];
                next_s = s + 2 + ((s - next_emit) >> 5);
                if next_s > s_limit {
                    break 'outer;
                }
                let mut now = load64(src, next_s);
                table[next_hash] = s + cur;
                next_hash = hash_len(now, TABLE_BITS, HB);
                t = candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    table[next_hash] = next_s + cur;
                    break;
                }
                // Do one right away...
                cv = now;
                s = next_s;
                next_s += 1;
                let candidate = table[next_hash];
                now >>= 8;
                table[next_hash] = s + cur;
                t = candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
            }
            loop {
                let mut l = match_len_long(src, s + 4, t + 4) + 4;
                while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    dst.emit_literals(&src[at(next_emit)..at(s)]);
                }
                dst.add_match_long(l, (s - t - 1) as u32);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    if ((s + l + 8) as usize) < src.len() {
                        let cv = load64(src, s);
                        table[hash_len(cv, TABLE_BITS, HB)] = s + cur;
                    }
                    break 'outer;
                }
                let mut x = load64(src, s - 2);
                let o = cur + s - 2;
                table[hash_len(x, TABLE_BITS, HB)] = o;
                x >>= 16;
                let curr_hash = hash_len(x, TABLE_BITS, HB);
                let candidate = table[curr_hash];
                table[curr_hash] = o + 2;
                t = candidate - cur;
                if s - t > MAX_MATCH_OFFSET || x as u32 != load32(src, t) {
                    cv = x >> 8;
                    s += 1;
                    break;
                }
            }
        }
        emit_remainder(dst, src, next_emit);
    }
}

/// Level 2: like level 1 with a 128K-entry table and denser indexing.
pub(super) struct L2 {
    g: FastGen,
    table: Vec<i32>,
}

impl L2 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HB: u32 = 5;
        const TB: u32 = L2_TABLE_BITS;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut() {
                *v = rebase(*v, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        'outer: loop {
            let mut next_s = s;
            let mut candidate;
            loop {
                let mut next_hash = hash_len(cv, TB, HB);
                s = next_s;
                next_s = s + 2 + ((s - next_emit) >> 5);
                if next_s > s_limit {
                    break 'outer;
                }
                candidate = table[next_hash];
                let mut now = load64(src, next_s);
                table[next_hash] = s + cur;
                next_hash = hash_len(now, TB, HB);
                let offset = s - (candidate - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load32(src, candidate - cur) {
                    table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
                next_s += 1;
                candidate = table[next_hash];
                now >>= 8;
                table[next_hash] = s + cur;
                let offset = s - (candidate - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load32(src, candidate - cur) {
                    break;
                }
                cv = now;
            }
            loop {
                let mut t = candidate - cur;
                let mut l = match_len_long(src, s + 4, t + 4) + 4;
                while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    dst.emit_literals(&src[at(next_emit)..at(s)]);
                }
                dst.add_match_long(l, (s - t - 1) as u32);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    if ((s + l + 8) as usize) < src.len() {
                        let cv = load64(src, s);
                        table[hash_len(cv, TB, HB)] = s + cur;
                    }
                    break 'outer;
                }
                let mut i = s - l + 2;
                while i < s - 5 {
                    let mut x = load64(src, i);
                    table[hash_len(x, TB, HB)] = cur + i;
                    x >>= 16;
                    table[hash_len(x, TB, HB)] = cur + i + 2;
                    x >>= 16;
                    table[hash_len(x, TB, HB)] = cur + i + 4;
                    i += 7;
                }
                let x = load64(src, s - 2);
                let o = cur + s - 2;
                let prev_hash = hash_len(x, TB, HB);
                let prev_hash2 = hash_len(x >> 8, TB, HB);
                table[prev_hash] = o;
                table[prev_hash2] = o + 1;
                let curr_hash = hash_len(x >> 16, TB, HB);
                candidate = table[curr_hash];
                table[curr_hash] = o + 2;
                let offset = s - (candidate - cur);
                if offset > MAX_MATCH_OFFSET || (x >> 16) as u32 != load32(src, candidate - cur) {
                    cv = x >> 24;
                    s += 1;
                    break;
                }
            }
        }
        emit_remainder(dst, src, next_emit);
    }
}

/// Level 3: 64K-entry table with two candidates per entry.
pub(super) struct L3 {
    g: FastGen,
    table: Vec<Prev>,
}

impl L3 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HB: u32 = 5;
        const TB: u32 = L3_TABLE_BITS;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(Prev::default());
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut() {
                v.cur = rebase(v.cur, min_off, cur);
                v.prev = rebase(v.prev, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        'outer: loop {
            let mut next_s = s;
            let mut candidate;
            loop {
                let next_hash = hash_len(cv, TB, HB);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 7);
                if next_s > s_limit {
                    break 'outer;
                }
                let candidates = table[next_hash];
                let now = load64(src, next_s);
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);
                table[next_hash] = Prev {
                    prev: candidates.cur,
                    cur: s + cur,
                };
                candidate = candidates.cur;
                if candidate < min_offset {
                    cv = now;
                    continue;
                }
                if cv as u32 == load32(src, candidate - cur) {
                    if candidates.prev < min_offset
                        || cv as u32 != load32(src, candidates.prev - cur)
                    {
                        break;
                    }
                    let offset = s - (candidate - cur);
                    let o2 = s - (candidates.prev - cur);
                    let l1 = match_len(&src[at(s + 4)..], &src[at(s - offset + 4)..]);
                    let l2 = match_len(&src[at(s + 4)..], &src[at(s - o2 + 4)..]);
                    if l2 > l1 {
                        candidate = candidates.prev;
                    }
                    break;
                } else {
                    candidate = candidates.prev;
                    if candidate > min_offset && cv as u32 == load32(src, candidate - cur) {
                        break;
                    }
                }
                cv = now;
            }
            loop {
                let mut t = candidate - cur;
                let mut l = match_len_long(src, s + 4, t + 4) + 4;
                while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    dst.emit_literals(&src[at(next_emit)..at(s)]);
                }
                dst.add_match_long(l, (s - t - 1) as u32);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    t += l;
                    if ((t + 8) as usize) < src.len() && t > 0 {
                        cv = load64(src, t);
                        let h = hash_len(cv, TB, HB);
                        table[h].push(cur + t);
                    }
                    break 'outer;
                }
                let mut i = s - l + 2;
                while i < s - 5 {
                    let h = hash_len(load64(src, i), TB, HB);
                    table[h].push(cur + i);
                    i += 6;
                }
                let mut x = load64(src, s - 2);
                table[hash_len(x, TB, HB)].push(cur + s - 2);
                x >>= 8;
                table[hash_len(x, TB, HB)].push(cur + s - 1);
                x >>= 8;
                let curr_hash = hash_len(x, TB, HB);
                let candidates = table[curr_hash];
                cv = x;
                table[curr_hash] = Prev {
                    prev: candidates.cur,
                    cur: s + cur,
                };
                candidate = candidates.cur;
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);
                if candidate > min_offset {
                    if cv as u32 == load32(src, candidate - cur) {
                        continue;
                    }
                    candidate = candidates.prev;
                    if candidate > min_offset && cv as u32 == load32(src, candidate - cur) {
                        continue;
                    }
                }
                cv = x >> 8;
                s += 1;
                break;
            }
        }
        emit_remainder(dst, src, next_emit);
    }
}

/// Level 4: a 4-byte and a 7-byte hash table, one candidate each.
pub(super) struct L4 {
    g: FastGen,
    table: Vec<i32>,
    b_table: Vec<i32>,
    /// klauspost/compress before 1.18 compares the next long candidate at
    /// its position; Go 1.27 at its distance (below).
    at_position: bool,
}

impl L4 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HS: u32 = 4;
        const HL: u32 = HASH_LONG_BYTES;
        const TB: u32 = TABLE_BITS;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.b_table.fill(0);
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut().chain(self.b_table.iter_mut()) {
                *v = rebase(*v, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let b_table = &mut self.b_table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        'outer: loop {
            let mut next_s = s;
            let mut t;
            loop {
                let next_hash_s = hash_len(cv, TB, HS);
                let next_hash_l = hash_len(cv, TB, HL);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 6);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_candidate = table[next_hash_s];
                let l_candidate = b_table[next_hash_l];
                let next = load64(src, next_s);
                table[next_hash_s] = s + cur;
                b_table[next_hash_l] = s + cur;

                t = l_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    break;
                }
                t = s_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    let l_candidate = b_table[hash_len(next, TB, HL)];
                    let l_off = l_candidate - cur;
                    if next_s - l_off < MAX_MATCH_OFFSET && load32(src, l_off) == next as u32 {
                        // Go 1.27 compares against src[nextS-lOff+4:] here
                        // (a distance used as a position); kept as is.
                        let l1 = match_len(&src[at(s + 4)..], &src[at(t + 4)..]);
                        let other = if self.at_position {
                            l_off
                        } else {
                            next_s - l_off
                        };
                        let l2 = match_len(&src[at(next_s + 4)..], &src[at(other + 4)..]);
                        if l2 > l1 {
                            s = next_s;
                            t = l_candidate - cur;
                        }
                    }
                    break;
                }
                cv = next;
            }
            let mut l = match_len_long(src, s + 4, t + 4) + 4;
            while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            if next_emit < s {
                dst.emit_literals(&src[at(next_emit)..at(s)]);
            }
            dst.add_match_long(l, (s - t - 1) as u32);
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                if ((s + 8) as usize) < src.len() {
                    let cv = load64(src, s);
                    table[hash_len(cv, TB, HS)] = s + cur;
                    b_table[hash_len(cv, TB, HL)] = s + cur;
                }
                break 'outer;
            }
            let mut i = next_s;
            if i < s - 1 {
                let cv = load64(src, i);
                b_table[hash_len(cv, TB, HL)] = i + cur;
                b_table[hash_len(cv >> 8, TB, HL)] = i + cur + 1;
                table[hash_len(cv >> 8, TB, HS)] = i + cur + 1;
                i += 3;
                while i < s - 1 {
                    let cv = load64(src, i);
                    b_table[hash_len(cv, TB, HL)] = i + cur;
                    b_table[hash_len(cv >> 8, TB, HL)] = i + cur + 1;
                    table[hash_len(cv >> 8, TB, HS)] = i + cur + 1;
                    i += 3;
                }
            }
            let x = load64(src, s - 1);
            let o = cur + s - 1;
            table[hash_len(x, TB, HS)] = o;
            b_table[hash_len(x, TB, HL)] = o;
            cv = x >> 8;
        }
        emit_remainder(dst, src, next_emit);
    }
}

/// Level 5: like level 4 with two candidates per long-table entry and an
/// end-of-match probe for a longer match.
pub(super) struct L5 {
    g: FastGen,
    table: Vec<i32>,
    b_table: Vec<Prev>,
}

fn rebase_prev_pair(v: &mut Prev, min_off: i32, cur: i32) {
    if v.cur <= min_off {
        v.cur = 0;
        v.prev = 0;
    } else {
        v.cur = v.cur - cur + MAX_MATCH_OFFSET;
        v.prev = rebase(v.prev, min_off, cur);
    }
}

impl L5 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HS: u32 = 4;
        const HL: u32 = HASH_LONG_BYTES;
        const TB: u32 = TABLE_BITS;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.b_table.fill(Prev::default());
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut() {
                *v = rebase(*v, min_off, cur);
            }
            for v in self.b_table.iter_mut() {
                rebase_prev_pair(v, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let b_table = &mut self.b_table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        'outer: loop {
            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t;
            loop {
                let mut next_hash_s = hash_len(cv, TB, HS);
                let mut next_hash_l = hash_len(cv, TB, HL);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 6);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_candidate = table[next_hash_s];
                let mut l_candidate = b_table[next_hash_l];
                let next = load64(src, next_s);
                table[next_hash_s] = s + cur;
                b_table[next_hash_l].push(s + cur);

                next_hash_s = hash_len(next, TB, HS);
                next_hash_l = hash_len(next, TB, HL);

                t = l_candidate.cur - cur;
                if s - t < MAX_MATCH_OFFSET {
                    if cv as u32 == load32(src, t) {
                        table[next_hash_s] = next_s + cur;
                        b_table[next_hash_l].push(next_s + cur);
                        let t2 = l_candidate.prev - cur;
                        if s - t2 < MAX_MATCH_OFFSET && cv as u32 == load32(src, t2) {
                            l = match_len_limited(src, s + 4, t + 4) + 4;
                            let ml1 = match_len_limited(src, s + 4, t2 + 4) + 4;
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                                break;
                            }
                        }
                        break;
                    }
                    t = l_candidate.prev - cur;
                    if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                        table[next_hash_s] = next_s + cur;
                        b_table[next_hash_l].push(next_s + cur);
                        break;
                    }
                }

                t = s_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    l = match_len_limited(src, s + 4, t + 4) + 4;
                    l_candidate = b_table[next_hash_l];
                    table[next_hash_s] = next_s + cur;
                    b_table[next_hash_l].push(next_s + cur);

                    let t2 = l_candidate.cur - cur;
                    if next_s - t2 < MAX_MATCH_OFFSET {
                        if load32(src, t2) == next as u32 {
                            let ml = match_len_limited(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                        let t2 = l_candidate.prev - cur;
                        if next_s - t2 < MAX_MATCH_OFFSET && load32(src, t2) == next as u32 {
                            let ml = match_len_limited(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            if l == 0 {
                l = match_len_long(src, s + 4, t + 4) + 4;
            } else if l == MAX_MATCH_LENGTH {
                l += match_len_long(src, s + l, t + l);
            }

            let s_at = s + l;
            if l < 30 && s_at < s_limit {
                const SKIP_BEGINNING: i32 = 2;
                let e_long = b_table[hash_len(load64(src, s_at), TB, HL)].cur;
                let t2 = e_long - cur - l + SKIP_BEGINNING;
                let s2 = s + SKIP_BEGINNING;
                let off = s2 - t2;
                if t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0 {
                    let l2 = match_len_long(src, s2, t2);
                    if l2 > l {
                        t = t2;
                        l = l2;
                        s = s2;
                    }
                }
            }

            while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            if next_emit < s {
                dst.emit_literals(&src[at(next_emit)..at(s)]);
            }
            dst.add_match_long(l, (s - t - 1) as u32);
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                break 'outer;
            }

            const HASH_EVERY: i32 = 3;
            let mut i = s - l + 1;
            if i < s - 1 {
                let mut cv = load64(src, i);
                let mut te = i + cur;
                table[hash_len(cv, TB, HS)] = te;
                b_table[hash_len(cv, TB, HL)].push(te);
                cv >>= 8;
                te += 1;
                b_table[hash_len(cv, TB, HL)].push(te);
                cv >>= 8;
                te += 1;
                table[hash_len(cv, TB, HS)] = te;
                i += 4;
                while i < s - 1 {
                    let cv = load64(src, i);
                    let te = i + cur;
                    b_table[hash_len(cv, TB, HL)].push(te);
                    table[hash_len(cv >> 8, TB, HS)] = te + 1;
                    i += HASH_EVERY;
                }
            }
            let x = load64(src, s - 1);
            let o = cur + s - 1;
            table[hash_len(x, TB, HS)] = o;
            b_table[hash_len(x, TB, HL)].push(o);
            cv = x >> 8;
        }
        emit_remainder(dst, src, next_emit);
    }
}

/// Level 6: level 5 plus a repeat-offset check and full indexing.
pub(super) struct L6 {
    g: FastGen,
    table: Vec<i32>,
    b_table: Vec<Prev>,
}

impl L6 {
    fn encode(&mut self, dst: &mut Tokens, src_in: &[u8]) {
        const HS: u32 = 4;
        const HL: u32 = HASH_LONG_BYTES;
        const TB: u32 = TABLE_BITS;
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.b_table.fill(Prev::default());
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            let (min_off, cur) = (self.g.min_off(), self.g.cur);
            for v in self.table.iter_mut() {
                *v = rebase(*v, min_off, cur);
            }
            for v in self.b_table.iter_mut() {
                rebase_prev_pair(v, min_off, cur);
            }
            self.g.cur = MAX_MATCH_OFFSET;
        }
        let mut s = self.g.add_block(src_in);
        if src_in.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            dst.n = src_in.len();
            return;
        }
        let src = &self.g.hist[..];
        let cur = self.g.cur;
        let table = &mut self.table[..];
        let b_table = &mut self.b_table[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s);
        // Repeat MUST be > 1 and within range.
        let mut repeat: i32 = 1;
        'outer: loop {
            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t;
            loop {
                let mut next_hash_s = hash_len(cv, TB, HS);
                let mut next_hash_l = hash_len(cv, TB, HL);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 7);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_candidate = table[next_hash_s];
                let mut l_candidate = b_table[next_hash_l];
                let next = load64(src, next_s);
                table[next_hash_s] = s + cur;
                b_table[next_hash_l].push(s + cur);

                next_hash_s = hash_len(next, TB, HS);
                next_hash_l = hash_len(next, TB, HL);

                t = l_candidate.cur - cur;
                if s - t < MAX_MATCH_OFFSET {
                    if cv as u32 == load32(src, t) {
                        table[next_hash_s] = next_s + cur;
                        b_table[next_hash_l].push(next_s + cur);
                        let t2 = l_candidate.prev - cur;
                        if s - t2 < MAX_MATCH_OFFSET && cv as u32 == load32(src, t2) {
                            l = match_len_limited(src, s + 4, t + 4) + 4;
                            let ml1 = match_len_limited(src, s + 4, t2 + 4) + 4;
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                                break;
                            }
                        }
                        break;
                    }
                    t = l_candidate.prev - cur;
                    if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                        table[next_hash_s] = next_s + cur;
                        b_table[next_hash_l].push(next_s + cur);
                        break;
                    }
                }

                t = s_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(src, t) {
                    l = match_len_limited(src, s + 4, t + 4) + 4;
                    l_candidate = b_table[next_hash_l];
                    table[next_hash_s] = next_s + cur;
                    b_table[next_hash_l].push(next_s + cur);

                    // Check repeat at s + 1.
                    const REP_OFF: i32 = 1;
                    let t2 = s - repeat + REP_OFF;
                    if load32(src, t2) == (cv >> (8 * REP_OFF)) as u32 {
                        let ml = match_len_limited(src, s + 4 + REP_OFF, t2 + 4) + 4;
                        if ml > l {
                            t = t2;
                            l = ml;
                            s += REP_OFF;
                            break;
                        }
                    }

                    let t2 = l_candidate.cur - cur;
                    if next_s - t2 < MAX_MATCH_OFFSET {
                        if load32(src, t2) == next as u32 {
                            let ml = match_len_limited(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                            }
                        }
                        let t2 = l_candidate.prev - cur;
                        if next_s - t2 < MAX_MATCH_OFFSET && load32(src, t2) == next as u32 {
                            let ml = match_len_limited(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            if l == 0 {
                l = match_len_long(src, s + 4, t + 4) + 4;
            } else if l == MAX_MATCH_LENGTH {
                l += match_len_long(src, s + l, t + l);
            }

            let s_at = s + l;
            if s_at < s_limit {
                const SKIP_BEGINNING: i32 = 2;
                let e_long = b_table[hash_len(load64(src, s_at), TB, HL)];
                let t2 = e_long.cur - cur - l + SKIP_BEGINNING;
                let s2 = s + SKIP_BEGINNING;
                let off = s2 - t2;
                if off < MAX_MATCH_OFFSET {
                    if off > 0 && t2 >= 0 {
                        let l2 = match_len_long(src, s2, t2);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                    let t2 = e_long.prev - cur - l + SKIP_BEGINNING;
                    let off = s2 - t2;
                    if off > 0 && off < MAX_MATCH_OFFSET && t2 >= 0 {
                        let l2 = match_len_long(src, s2, t2);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                }
            }

            while t > 0 && s > next_emit && src[at(t - 1)] == src[at(s - 1)] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            if next_emit < s {
                dst.emit_literals(&src[at(next_emit)..at(s)]);
            }
            dst.add_match_long(l, (s - t - 1) as u32);
            repeat = s - t;
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }

            if s >= s_limit {
                // Index after match end.
                let mut i = next_s + 1;
                while i < src.len() as i32 - 8 {
                    let cv = load64(src, i);
                    table[hash_len(cv, TB, HS)] = i + cur;
                    b_table[hash_len(cv, TB, HL)].push(i + cur);
                    i += 2;
                }
                break 'outer;
            }

            // Store every long hash in-between and every second short.
            let mut i = next_s + 1;
            while i < s - 1 {
                let cv = load64(src, i);
                let te = i + cur;
                let h_long = hash_len(cv, TB, HL);
                let h_long2 = hash_len(cv >> 8, TB, HL);
                table[hash_len(cv, TB, HS)] = te;
                b_table[h_long].push(te);
                b_table[h_long2].push(te + 1);
                i += 2;
            }
            cv = load64(src, s);
        }
        emit_remainder(dst, src, next_emit);
    }
}
