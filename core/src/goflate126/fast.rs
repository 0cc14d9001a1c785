//! Level 1 (BestSpeed) of Go 1.21–1.26's `compress/flate`
//! (`deflatefast.go`): a Snappy-style single-probe matcher over each
//! 65535-byte window, with matches reaching into the previous window.

use super::huffman::{match_token, Token, MAX_STORE_BLOCK_SIZE};

const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const TABLE_MASK: u32 = (TABLE_SIZE - 1) as u32;
const TABLE_SHIFT: u32 = 32 - TABLE_BITS;
const MAX_MATCH_OFFSET: i32 = 1 << 15;
const MAX_MATCH_LENGTH: i32 = 258;
const BASE_MATCH_LENGTH: i32 = 3;
const BASE_MATCH_OFFSET: i32 = 1;
/// Offsets are rebased when `cur` reaches this.
const BUFFER_RESET: i32 = i32::MAX - MAX_STORE_BLOCK_SIZE as i32 * 2;
const INPUT_MARGIN: i32 = 16 - 1;
const MIN_NON_LITERAL_BLOCK_SIZE: usize = 1 + 1 + INPUT_MARGIN as usize;

#[inline(always)]
fn load32(b: &[u8], i: i32) -> u32 {
    u32::from_le_bytes(b[i as usize..i as usize + 4].try_into().unwrap())
}

#[inline(always)]
fn load64(b: &[u8], i: i32) -> u64 {
    u64::from_le_bytes(b[i as usize..i as usize + 8].try_into().unwrap())
}

#[inline(always)]
fn hash(u: u32) -> u32 {
    u.wrapping_mul(0x1e35a7bd) >> TABLE_SHIFT
}

/// Number of equal leading bytes of `a` and `b` (up to the shorter).
#[inline]
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap())
            ^ u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[derive(Clone, Copy, Default)]
struct TableEntry {
    val: u32,
    offset: i32,
}

/// Go's `deflateFast`: match table and the previous window.
pub(super) struct DeflateFast {
    table: Vec<TableEntry>,
    prev: Vec<u8>,
    cur: i32,
}

impl DeflateFast {
    pub fn new() -> Self {
        DeflateFast {
            table: vec![TableEntry::default(); TABLE_SIZE],
            prev: Vec::with_capacity(MAX_STORE_BLOCK_SIZE),
            cur: MAX_STORE_BLOCK_SIZE as i32,
        }
    }

    /// Go's `encode`: appends the tokens of `src` to `dst`.
    pub fn encode(&mut self, dst: &mut Vec<Token>, src: &[u8]) {
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
        if src.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            self.cur += MAX_STORE_BLOCK_SIZE as i32;
            self.prev.clear();
            dst.extend(src.iter().map(|&b| b as Token));
            return;
        }
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut next_emit = 0i32;
        let mut s = 0i32;
        let mut cv = load32(src, s);
        let mut next_hash = hash(cv);

        'outer: loop {
            // Heuristic match skipping (see Snappy).
            let mut skip = 32i32;
            let mut next_s = s;
            let mut candidate;
            loop {
                s = next_s;
                let step = skip >> 5;
                next_s = s + step;
                skip += step;
                if next_s > s_limit {
                    break 'outer;
                }
                let slot = (next_hash & TABLE_MASK) as usize;
                candidate = self.table[slot];
                let now = load32(src, next_s);
                self.table[slot] = TableEntry {
                    offset: s + self.cur,
                    val: cv,
                };
                next_hash = hash(now);
                let offset = s - (candidate.offset - self.cur);
                if offset > MAX_MATCH_OFFSET || cv != candidate.val {
                    cv = now;
                    continue;
                }
                break;
            }
            // A 4-byte match at s: emit the literals before it.
            dst.extend(
                src[next_emit as usize..s as usize]
                    .iter()
                    .map(|&b| b as Token),
            );
            loop {
                s += 4;
                let t = candidate.offset - self.cur + 4;
                let l = self.match_len(s, t, src);
                dst.push(match_token(
                    (l + 4 - BASE_MATCH_LENGTH) as u32,
                    (s - t - BASE_MATCH_OFFSET) as u32,
                ));
                s += l;
                next_emit = s;
                if s >= s_limit {
                    break 'outer;
                }
                let mut x = load64(src, s - 1);
                let prev_hash = hash(x as u32);
                self.table[(prev_hash & TABLE_MASK) as usize] = TableEntry {
                    offset: self.cur + s - 1,
                    val: x as u32,
                };
                x >>= 8;
                let curr_hash = hash(x as u32);
                let slot = (curr_hash & TABLE_MASK) as usize;
                candidate = self.table[slot];
                self.table[slot] = TableEntry {
                    offset: self.cur + s,
                    val: x as u32,
                };
                let offset = s - (candidate.offset - self.cur);
                if offset > MAX_MATCH_OFFSET || x as u32 != candidate.val {
                    cv = (x >> 8) as u32;
                    next_hash = hash(cv);
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() {
            dst.extend(src[next_emit as usize..].iter().map(|&b| b as Token));
        }
        self.cur += src.len() as i32;
        self.prev.clear();
        self.prev.extend_from_slice(src);
    }

    /// Go's `matchLen`: match length between `src[s..]` and `src[t..]`,
    /// where a negative `t` starts in the previous window.
    fn match_len(&self, s: i32, t: i32, src: &[u8]) -> i32 {
        let s1 = (s as usize + MAX_MATCH_LENGTH as usize - 4).min(src.len());
        let a = &src[s as usize..s1];
        if t >= 0 {
            return common_prefix(a, &src[t as usize..]) as i32;
        }
        let tp = self.prev.len() as i32 + t;
        if tp < 0 {
            return 0;
        }
        let b = &self.prev[tp as usize..];
        let b = &b[..b.len().min(a.len())];
        let n = common_prefix(&a[..b.len()], b);
        if n < b.len() {
            return n as i32;
        }
        if s as usize + n == s1 {
            return n as i32;
        }
        // Continue into the current window.
        let a = &src[s as usize + n..s1];
        (n + common_prefix(a, &src[..a.len()])) as i32
    }

    /// Go's `reset`: forget the history.
    pub fn reset(&mut self) {
        self.prev.clear();
        self.cur += MAX_MATCH_OFFSET;
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
    }

    /// Go's `shiftOffsets`, against `int32` overflow.
    fn shift_offsets(&mut self) {
        if self.prev.is_empty() {
            self.table.fill(TableEntry::default());
            self.cur = MAX_MATCH_OFFSET + 1;
            return;
        }
        for e in self.table.iter_mut() {
            let v = e.offset - self.cur + MAX_MATCH_OFFSET + 1;
            e.offset = v.max(0);
        }
        self.cur = MAX_MATCH_OFFSET + 1;
    }
}
