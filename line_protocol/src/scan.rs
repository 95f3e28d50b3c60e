//! Finds the bytes that end names and values (`,` `=` ` ` `\`) 16 at a time.
//!
//! A byte-at-a-time scan with a class table spent about a quarter of the parse time on TSBS
//! lines, whose ~40 tokens average 8 bytes. On x86_64 this uses SSE2, which every x86_64
//! CPU has (the crate's one `unsafe` block, to call it). Other targets use the same test on
//! 8-byte words (SWAR), which the tests check against SSE2 and a byte loop.

/// Bit `k` is set when `chunk[k]` is `,`, `=`, ` ` or `\`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(crate) fn structural_mask(chunk: &[u8; 16]) -> u32 {
    // SAFETY: the only requirement of calling a `#[target_feature]` function is that the
    // CPU has the feature, and this is compiled only where SSE2 is enabled for the whole
    // build (it is part of the x86_64 baseline).
    unsafe { structural_mask_sse2(chunk) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn structural_mask_sse2(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    };
    let (lo, hi) = words(chunk);
    // Compiles to one unaligned 16-byte load.
    let v = _mm_set_epi64x(hi as i64, lo as i64);
    let comma = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
    let equals = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'=' as i8));
    let space = _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8));
    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    let any = _mm_or_si128(_mm_or_si128(comma, equals), _mm_or_si128(space, backslash));
    _mm_movemask_epi8(any) as u32 & 0xFFFF
}

/// Bit `k` is set when `chunk[k]` is `,`, `=`, ` ` or `\`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
pub(crate) fn structural_mask(chunk: &[u8; 16]) -> u32 {
    structural_mask_swar(chunk)
}

/// The portable version of [`structural_mask`].
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(crate) fn structural_mask_swar(chunk: &[u8; 16]) -> u32 {
    let (lo, hi) = words(chunk);
    word_mask(lo) | word_mask(hi) << 8
}

fn words(chunk: &[u8; 16]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&chunk[..8]);
    hi.copy_from_slice(&chunk[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

/// Bit `k` is set when byte `k` (little-endian) of `word` is structural.
fn word_mask(word: u64) -> u32 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // High bit of each byte set exactly where that byte of `x` is zero (no false positives,
    // unlike the shorter `(x - ONES) & !x` form).
    let zero_bytes = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    let hits = zero_bytes(word ^ (ONES * u64::from(b',')))
        | zero_bytes(word ^ (ONES * u64::from(b'=')))
        | zero_bytes(word ^ (ONES * u64::from(b' ')))
        | zero_bytes(word ^ (ONES * u64::from(b'\\')));
    // Gather the eight high bits into the low byte.
    ((hits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// The first structural byte in `raw[from..end]`, or `end`. `end <= raw.len()`.
#[inline(always)]
pub(crate) fn next_structural(raw: &[u8], mut from: usize, end: usize) -> usize {
    while from < end {
        let mask = match raw.get(from..from + 16) {
            Some(chunk) => structural_mask(chunk.try_into().expect("the slice is 16 bytes")),
            None => {
                // Fewer than 16 bytes left in the body.
                let mut chunk = [0u8; 16];
                chunk[..raw.len() - from].copy_from_slice(&raw[from..]);
                structural_mask(&chunk)
            }
        };
        if mask != 0 {
            return (from + mask.trailing_zeros() as usize).min(end);
        }
        from += 16;
    }
    end
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reference(chunk: &[u8; 16]) -> u32 {
        chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b',' | b'=' | b' ' | b'\\'))
            .fold(0, |mask, (k, _)| mask | 1 << k)
    }

    #[test]
    fn masks_mark_exactly_the_structural_bytes() {
        let mut chunk = [b'a'; 16];
        chunk[0] = b',';
        chunk[5] = b'=';
        chunk[9] = b' ';
        chunk[15] = b'\\';
        let expected = 1 | 1 << 5 | 1 << 9 | 1 << 15;
        assert_eq!(structural_mask(&chunk), expected);
        assert_eq!(structural_mask_swar(&chunk), expected);
        // Bytes one off from a structural byte, and high bytes, are not structural.
        let near = [
            b'+', b'-', b'<', b'>', b'!', b'[', b']', 0xAC, 0xBD, 0xA0, 0xDC, 0, 0xFF, b'\t', b'"',
            b'#',
        ];
        assert_eq!(structural_mask(&near), 0);
        assert_eq!(structural_mask_swar(&near), 0);
    }

    #[test]
    fn next_structural_stops_at_end_and_reads_short_tails() {
        assert_eq!(next_structural(b"abc,def", 0, 7), 3);
        assert_eq!(next_structural(b"abc,def", 4, 7), 7);
        assert_eq!(next_structural(b"abc,def", 0, 2), 2);
        let long = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=b";
        assert_eq!(next_structural(long, 0, long.len()), 38);
        assert_eq!(next_structural(long, 30, 35), 35);
    }

    proptest! {
        #[test]
        fn both_masks_agree_with_a_byte_loop(chunk in any::<[u8; 16]>()) {
            prop_assert_eq!(structural_mask(&chunk), reference(&chunk));
            prop_assert_eq!(structural_mask_swar(&chunk), reference(&chunk));
        }

        #[test]
        fn structural_heavy_chunks_agree(
            chunk in prop::array::uniform16(prop::sample::select(b",= \\a\x2c\xac\x00".to_vec())),
        ) {
            prop_assert_eq!(structural_mask(&chunk), reference(&chunk));
            prop_assert_eq!(structural_mask_swar(&chunk), reference(&chunk));
        }
    }
}
