//! Levels 2–9 of Go 1.21–1.26's `compress/flate` (`deflate.go`:
//! `fillDeflate`, `findMatch`, `writeBlock`, `deflate`): hash chains over a
//! 64 KiB sliding window, driven by Go's `levels` table — greedy matching
//! with partial hash insertion for levels 2–3, lazy matching for 4–9.

use super::fast::common_prefix;
use super::huffman::{match_token, BitWriter, Token};
use super::{Checkpoint, InvalidCheckpoint};

const WINDOW_SIZE: usize = 1 << 15;
const WINDOW_MASK: usize = WINDOW_SIZE - 1;
const BASE_MATCH_LENGTH: i32 = 3;
const MIN_MATCH_LENGTH: i32 = 4;
const MAX_MATCH_LENGTH: i32 = 258;
const BASE_MATCH_OFFSET: i32 = 1;
const MAX_FLATE_BLOCK_TOKENS: usize = 1 << 14;
const HASH_BITS: u32 = 17;
const HASH_SIZE: usize = 1 << HASH_BITS;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
const MAX_HASH_OFFSET: i64 = 1 << 24;
const SKIP_NEVER: i32 = i32::MAX;
/// Go's `blockStart = math.MaxInt32`: the block began before the window.
const BLOCK_START_LOST: usize = i32::MAX as usize;

/// Go's `hash4` (big-endian load, multiplicative hash).
#[inline(always)]
fn hash4(b: &[u8]) -> usize {
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    ((v.wrapping_mul(0x1e35a7bd) >> (32 - HASH_BITS)) & HASH_MASK) as usize
}

/// A row of Go's `levels` table.
struct Params {
    good: i32,
    lazy: i32,
    nice: i32,
    chain: i32,
    fast_skip_hashing: i32,
}

fn params(level: i32) -> Params {
    let (good, lazy, nice, chain, fast_skip_hashing) = match level {
        2 => (4, 0, 16, 8, 5),
        3 => (4, 0, 32, 32, 6),
        4 => (4, 4, 16, 16, SKIP_NEVER),
        5 => (8, 16, 32, 32, SKIP_NEVER),
        6 => (8, 16, 128, 128, SKIP_NEVER),
        7 => (8, 32, 128, 256, SKIP_NEVER),
        8 => (32, 128, 258, 1024, SKIP_NEVER),
        9 => (32, 258, 258, 4096, SKIP_NEVER),
        _ => unreachable!("goflate126: level {level} has no hash-chain parameters"),
    };
    Params {
        good,
        lazy,
        nice,
        chain,
        fast_skip_hashing,
    }
}

/// Window, hash chains and matcher state of Go's `compressor` for
/// levels 2–9.
pub(super) struct Lazy {
    p: Params,
    /// Unprocessed input is `window[index..window_end]`.
    window: Vec<u8>,
    index: usize,
    window_end: usize,
    /// Window index where the current block's tokens start.
    block_start: usize,
    /// Lazy matching: `window[index - 1]` still needs a token.
    byte_available: bool,
    tokens: Vec<Token>,
    length: i32,
    offset: i32,
    max_insert_index: usize,
    chain_head: i64,
    hash_head: Vec<u32>,
    hash_prev: Vec<u32>,
    hash_offset: i64,
    /// Stream offset of `window[0]` (plain bytes slid out so far).
    base: u64,
}

/// Where checkpoints are taken and kept ([`super::Encoder::checkpoint_every`]).
pub(super) struct Checkpoints {
    /// Output and input bytes between two checkpoints, at least (the first
    /// reached).
    pub every_out: u64,
    pub every_plain: u64,
    /// Output bytes emitted before the current `write`, and the length of
    /// the bit writer's buffer when it began.
    pub emitted: u64,
    pub start: usize,
    pub list: Vec<Checkpoint>,
}

impl Checkpoints {
    fn last(&self) -> (u64, u64) {
        self.list.last().map_or((0, 0), |c| (c.out, c.plain))
    }
}

impl Lazy {
    pub fn new(level: i32) -> Self {
        Lazy {
            p: params(level),
            window: vec![0; 2 * WINDOW_SIZE],
            index: 0,
            window_end: 0,
            block_start: 0,
            byte_available: false,
            tokens: Vec::with_capacity(MAX_FLATE_BLOCK_TOKENS + 1),
            length: MIN_MATCH_LENGTH - 1,
            offset: 0,
            max_insert_index: 0,
            chain_head: -1,
            hash_head: vec![0; HASH_SIZE],
            hash_prev: vec![0; WINDOW_SIZE],
            hash_offset: 1,
            base: 0,
        }
    }

    /// The state `cp` recorded, its window holding `window` (the
    /// `cp.window_end` plain bytes before `cp.plain`); the hash chains are
    /// re-derived from the window's last 32 KiB, which is all a match may
    /// reach from here on (entries older than that end every chain walk,
    /// in Go's and here).
    pub fn resume(level: i32, cp: &Checkpoint, window: &[u8]) -> Result<Self, InvalidCheckpoint> {
        let bad = |what: &str| Err(InvalidCheckpoint(what.to_string()));
        if !(4..=9).contains(&level) {
            return bad("checkpoints exist only for the lazy levels 4-9");
        }
        let (index, window_end) = (cp.index as usize, cp.window_end as usize);
        if window.len() != window_end || window_end > 2 * WINDOW_SIZE {
            return bad("window length");
        }
        // Every position before `index` was hashed, 4 bytes each.
        if index + (MIN_MATCH_LENGTH - 1) as usize > window_end
            || (cp.block_start as usize) > index
            || (cp.byte_available && index == 0)
        {
            return bad("window positions");
        }
        if !(MIN_MATCH_LENGTH - 1..=MAX_MATCH_LENGTH).contains(&cp.length)
            || !(0..=WINDOW_SIZE as i32).contains(&cp.offset)
            || (cp.length >= MIN_MATCH_LENGTH && cp.offset < BASE_MATCH_OFFSET)
            || (cp.length >= MIN_MATCH_LENGTH && !cp.byte_available)
        {
            return bad("pending match");
        }
        if !(1..=MAX_HASH_OFFSET + WINDOW_SIZE as i64).contains(&cp.hash_offset)
            || cp.plain < window_end as u64
        {
            return bad("offsets");
        }
        let mut l = Lazy::new(level);
        l.window[..window_end].copy_from_slice(window);
        l.window_end = window_end;
        l.index = index;
        l.block_start = cp.block_start as usize;
        l.byte_available = cp.byte_available;
        l.length = cp.length;
        l.offset = cp.offset;
        l.hash_offset = cp.hash_offset;
        l.base = cp.plain - window_end as u64;
        for i in index.saturating_sub(WINDOW_SIZE)..index {
            l.insert(i);
        }
        Ok(l)
    }

    /// Records the state at the top of `deflate`'s loop, right after a
    /// block was written, if the last checkpoint is far enough behind.
    fn checkpoint(&self, w: &BitWriter, c: &mut Checkpoints) {
        let out = c.emitted + (w.bw.out.len() - c.start) as u64;
        let plain = self.base + self.window_end as u64;
        let (last_out, last_plain) = c.last();
        if out - last_out < c.every_out && plain - last_plain < c.every_plain {
            return;
        }
        let (bits, nbits) = w.bw.pending();
        c.list.push(Checkpoint {
            plain,
            out,
            window_end: self.window_end as u32,
            index: self.index as u32,
            block_start: self.block_start as u32,
            byte_available: self.byte_available,
            length: self.length,
            offset: self.offset,
            hash_offset: self.hash_offset,
            bits,
            nbits,
        });
    }

    /// Go's `fillDeflate`: slides the window by 32 KiB once the matcher is
    /// near its end, then appends as much of `b` as fits.
    pub fn fill(&mut self, b: &[u8]) -> usize {
        if self.index >= 2 * WINDOW_SIZE - (MIN_MATCH_LENGTH + MAX_MATCH_LENGTH) as usize {
            self.window.copy_within(WINDOW_SIZE..2 * WINDOW_SIZE, 0);
            self.base += WINDOW_SIZE as u64;
            self.index -= WINDOW_SIZE;
            self.window_end -= WINDOW_SIZE;
            if self.block_start >= WINDOW_SIZE {
                self.block_start -= WINDOW_SIZE;
            } else {
                self.block_start = BLOCK_START_LOST;
            }
            self.hash_offset += WINDOW_SIZE as i64;
            if self.hash_offset > MAX_HASH_OFFSET {
                let delta = self.hash_offset - 1;
                self.hash_offset -= delta;
                self.chain_head -= delta;
                for v in self.hash_prev.iter_mut().chain(self.hash_head.iter_mut()) {
                    *v = if *v as i64 > delta {
                        (*v as i64 - delta) as u32
                    } else {
                        0
                    };
                }
            }
        }
        let n = b.len().min(self.window.len() - self.window_end);
        self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    /// Go's `compressor.writeBlock`: the block's input is offered for a
    /// stored block only if it is still in the window.
    fn write_block(&mut self, w: &mut BitWriter, index: usize) {
        if index > 0 {
            let window = (self.block_start <= index).then(|| &self.window[self.block_start..index]);
            self.block_start = index;
            w.write_block(&self.tokens, false, window);
        }
        self.tokens.clear();
    }

    /// Inserts position `index` into the hash chains.
    #[inline(always)]
    fn insert(&mut self, index: usize) {
        let hash = hash4(&self.window[index..index + 4]);
        self.hash_prev[index & WINDOW_MASK] = self.hash_head[hash];
        self.hash_head[hash] = (index as i64 + self.hash_offset) as u32;
    }

    /// Go's `findMatch`: the longest match at `pos` longer than 3 along the
    /// chain from `prev_head`, within `chain` tries.
    fn find_match(&self, pos: usize, prev_head: i64, lookahead: usize) -> Option<(i32, i32)> {
        let min_match_look = lookahead.min(MAX_MATCH_LENGTH as usize);
        let win = &self.window[..pos + min_match_look];
        let nice = (self.p.nice as usize).min(win.len() - pos);
        let mut length = (MIN_MATCH_LENGTH - 1) as usize;
        let mut tries = self.p.chain;
        if length as i32 >= self.p.good {
            tries >>= 2;
        }
        let mut w_end = win[pos + length];
        let w_pos = &win[pos..];
        let min_index = pos as i64 - WINDOW_SIZE as i64;
        let mut found = None;
        let mut i = prev_head;
        while tries > 0 {
            let iu = i as usize;
            if w_end == win[iu + length] {
                let n = common_prefix(&win[iu..iu + min_match_look], w_pos);
                if n > length && (n > MIN_MATCH_LENGTH as usize || pos - iu <= 4096) {
                    length = n;
                    found = Some((n as i32, (pos - iu) as i32));
                    if n >= nice {
                        break;
                    }
                    w_end = win[pos + n];
                }
            }
            if i == min_index {
                // hashPrev[i & windowMask] has been overwritten.
                break;
            }
            i = self.hash_prev[iu & WINDOW_MASK] as i64 - self.hash_offset;
            if i < min_index || i < 0 {
                break;
            }
            tries -= 1;
        }
        found
    }

    /// Go's `deflate` step: tokenizes the window as far as the lookahead
    /// allows (everything when `sync`), writing full blocks to `w`.
    /// `checkpoints`, when given, records the state after some of the
    /// blocks written (lazy levels only).
    pub fn deflate(
        &mut self,
        w: &mut BitWriter,
        sync: bool,
        mut checkpoints: Option<&mut Checkpoints>,
    ) {
        const LOOKAHEAD_MIN: usize = (MIN_MATCH_LENGTH + MAX_MATCH_LENGTH) as usize;
        if self.window_end - self.index < LOOKAHEAD_MIN && !sync {
            return;
        }
        self.max_insert_index = self
            .window_end
            .saturating_sub((MIN_MATCH_LENGTH - 1) as usize);
        let fast_skip = self.p.fast_skip_hashing;
        let lazy_mode = fast_skip == SKIP_NEVER;
        if !lazy_mode || sync {
            checkpoints = None;
        }
        loop {
            assert!(self.index <= self.window_end, "index > windowEnd");
            let lookahead = self.window_end - self.index;
            if lookahead < LOOKAHEAD_MIN {
                if !sync {
                    break;
                }
                if lookahead == 0 {
                    // Flush the pending literal and the current block.
                    if self.byte_available {
                        self.tokens.push(self.window[self.index - 1] as Token);
                        self.byte_available = false;
                    }
                    if !self.tokens.is_empty() {
                        self.write_block(w, self.index);
                    }
                    break;
                }
            }
            if self.index < self.max_insert_index {
                let hash = hash4(&self.window[self.index..self.index + 4]);
                self.chain_head = self.hash_head[hash] as i64;
                self.hash_prev[self.index & WINDOW_MASK] = self.chain_head as u32;
                self.hash_head[hash] = (self.index as i64 + self.hash_offset) as u32;
            }
            let prev_length = self.length;
            let prev_offset = self.offset;
            self.length = MIN_MATCH_LENGTH - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW_SIZE) as i64;

            if self.chain_head - self.hash_offset >= min_index
                && (!lazy_mode && lookahead > (MIN_MATCH_LENGTH - 1) as usize
                    || lazy_mode
                        && lookahead as i64 > prev_length as i64
                        && prev_length < self.p.lazy)
            {
                if let Some((l, o)) =
                    self.find_match(self.index, self.chain_head - self.hash_offset, lookahead)
                {
                    self.length = l;
                    self.offset = o;
                }
            }
            if !lazy_mode && self.length >= MIN_MATCH_LENGTH
                || lazy_mode && prev_length >= MIN_MATCH_LENGTH && self.length <= prev_length
            {
                // Output the previous match (lazy) or this one (greedy).
                let (l, o) = if lazy_mode {
                    (prev_length, prev_offset)
                } else {
                    (self.length, self.offset)
                };
                self.tokens.push(match_token(
                    (l - BASE_MATCH_LENGTH) as u32,
                    (o - BASE_MATCH_OFFSET) as u32,
                ));
                if self.length <= fast_skip {
                    // Insert every string up to the end of the match.
                    let new_index = if lazy_mode {
                        self.index + prev_length as usize - 1
                    } else {
                        self.index + self.length as usize
                    };
                    let mut index = self.index + 1;
                    while index < new_index {
                        if index < self.max_insert_index {
                            self.insert(index);
                        }
                        index += 1;
                    }
                    self.index = index;
                    if lazy_mode {
                        self.byte_available = false;
                        self.length = MIN_MATCH_LENGTH - 1;
                    }
                } else {
                    // Long matches are not inserted position by position.
                    self.index += self.length as usize;
                }
                if self.tokens.len() == MAX_FLATE_BLOCK_TOKENS {
                    self.write_block(w, self.index);
                    if let Some(c) = checkpoints.as_deref_mut() {
                        self.checkpoint(w, c);
                    }
                }
            } else {
                if !lazy_mode || self.byte_available {
                    let i = if lazy_mode {
                        self.index - 1
                    } else {
                        self.index
                    };
                    self.tokens.push(self.window[i] as Token);
                    if self.tokens.len() == MAX_FLATE_BLOCK_TOKENS {
                        self.write_block(w, i + 1);
                        if let Some(c) = checkpoints.as_deref_mut() {
                            // The state of the next iteration.
                            self.index += 1;
                            self.byte_available = true;
                            self.checkpoint(w, c);
                            continue;
                        }
                    }
                }
                self.index += 1;
                if lazy_mode {
                    self.byte_available = true;
                }
            }
        }
    }
}
