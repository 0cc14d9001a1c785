//! DEFLATE's fixed tables (RFC 1951 3.2.5–3.2.7) and the run-length coding
//! of code lengths, shared by the Go encoder replicas ([`crate::goflate126`],
//! [`crate::goflate`]): facts of the format, the same in every Go version.

/// The end-of-block symbol.
pub(crate) const END_BLOCK_MARKER: usize = 256;
/// The first length symbol.
pub(crate) const LENGTH_CODES_START: usize = 257;
/// Number of valid literal/length symbols.
pub(crate) const LITERAL_COUNT: usize = 286;
/// Number of valid offset symbols.
pub(crate) const OFFSET_CODE_COUNT: usize = 30;
/// Number of code-length symbols.
pub(crate) const CODEGEN_CODE_COUNT: usize = 19;

/// Extra bits per length code (index = code - 257).
pub(crate) const LENGTH_EXTRA_BITS: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0, 0, 0, 0,
];
/// Smallest `length - 3` per length code.
pub(crate) const LENGTH_BASE: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 255, 0, 0, 0,
];
/// Extra bits per offset code.
pub(crate) const OFFSET_EXTRA_BITS: [u8; 32] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13, 14, 14,
];
/// Smallest `offset - 1` per offset code.
pub(crate) const OFFSET_BASE: [u32; 32] = [
    0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0006, 0x0008, 0x000c, 0x0010, 0x0018, 0x0020, 0x0030,
    0x0040, 0x0060, 0x0080, 0x00c0, 0x0100, 0x0180, 0x0200, 0x0300, 0x0400, 0x0600, 0x0800, 0x0c00,
    0x1000, 0x1800, 0x2000, 0x3000, 0x4000, 0x6000, 0x8000, 0xc000,
];
/// Order in which code-length code lengths are sent (RFC 1951 3.2.7).
pub(crate) const CODEGEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// `LENGTH_CODES[length - 3]` is the length code minus 257.
pub(crate) const LENGTH_CODES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let mut c = 0;
        while c + 1 < 29 && LENGTH_BASE[c + 1] as usize <= x {
            c += 1;
        }
        t[x] = c as u8;
        x += 1;
    }
    t
};

/// Offset code of `offset - 1` for values below 256.
pub(crate) const OFFSET_CODES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut x = 0u32;
    while x < 256 {
        t[x as usize] = if x < 4 {
            x as u8
        } else {
            let b = 31 - x.leading_zeros();
            (2 * b + ((x >> (b - 1)) & 1)) as u8
        };
        x += 1;
    }
    t
};

/// Ends the code lengths [`run_length_code`] reads.
pub(crate) const BAD_CODE: u8 = 255;

/// RFC 1951 3.2.7 run-length coding of the code lengths in `codegen` (ended
/// by [`BAD_CODE`]), in place and ended the same way, exactly as Go's
/// `generateCodegen` writes it (every version): runs of a length use code
/// 16 (3–6 repeats), runs of zeros codes 17 (3–10) and 18 (11–138).
/// `count` is called with each code-length symbol written.
pub(crate) fn run_length_code(codegen: &mut [u8], mut count: impl FnMut(usize)) {
    let mut out = 0usize;
    // Writes one code-length symbol and its extra value, if any.
    let mut put = |codegen: &mut [u8], symbol: u8, extra: Option<i32>| {
        codegen[out] = symbol;
        out += 1;
        if let Some(e) = extra {
            codegen[out] = e as u8;
            out += 1;
        }
        count(symbol as usize);
    };
    let mut size = codegen[0];
    let mut run: i32 = 1;
    let mut in_index = 1usize;
    while size != BAD_CODE {
        let next_size = codegen[in_index];
        in_index += 1;
        if next_size == size {
            run += 1;
            continue;
        }
        if size != 0 {
            put(codegen, size, None);
            run -= 1;
            while run >= 3 {
                let n = run.min(6);
                put(codegen, 16, Some(n - 3));
                run -= n;
            }
        } else {
            while run >= 11 {
                let n = run.min(138);
                put(codegen, 18, Some(n - 11));
                run -= n;
            }
            if run >= 3 {
                put(codegen, 17, Some(run - 3));
                run = 0;
            }
        }
        while run > 0 {
            put(codegen, size, None);
            run -= 1;
        }
        size = next_size;
        run = 1;
    }
    codegen[out] = BAD_CODE;
}
