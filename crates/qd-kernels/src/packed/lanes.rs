//! The scalar level's integer sums over a packed tile, in the tile's own lane order: a line of
//! 64 codes holds 4 consecutive values of each of 16 rows (`[row][4]`), so one group's sums are
//! 64 independent multiply-adds against the token's 4 codes repeated — what `vpdpbusd` does in
//! one instruction, written as plain loops the compiler vectorises for whatever the target has
//! (SSE2 in a portable build). The integer sums are exact, so they equal the SIMD kernels'.

use super::tasks::ROWS;

/// Values a line holds: 16 rows × 4.
pub(crate) const LANES: usize = 64;

/// Tokens the scalar level multiplies by one decoded (sub-)block before the next: decoding is
/// shared, and each token's sums still run over the blocks in order.
pub(crate) const SPAN: usize = 16;

/// The most a code may be for [`row_sums`] over a (sub-)block of `NG` groups, summed `W`
/// groups at a time in 16 bits, to stay exact with `|x| ≤ 128`: both formulations' 16-bit
/// sums must fit — the lanes' `NG` products, `NG·c·128 < 2¹⁵`, and the pairs' `2·W` products,
/// `2·W·c·128 < 2¹⁵`.
pub(crate) const fn max_code(ng: usize, w: usize) -> i32 {
    let lanes = (i16::MAX as i32) / (128 * ng as i32);
    let pairs = (i16::MAX as i32) / (256 * w as i32);
    if lanes < pairs {
        lanes
    } else {
        pairs
    }
}

/// Row `r`'s sum `Σ_v u·x` over the `4·NG` values of a (sub-)block: codes `u` in the tile's
/// lane order, the token's codes `xq` (and `xw`, the same widened to 16 bits, [`widen`]).
/// Exact while every code is at most [`max_code`]`(NG, W)`: Q4_K (15; 8 groups, W = 8),
/// Q6_K (63; 4 groups, W = 2), 4- and 5-bit Q8_0 tiles (31; 8 groups, W = 4). 8-bit tiles
/// have their own, [`row_sums_8bit`].
///
/// Two formulations of the same sums, chosen by what the build's target has, as the compiler
/// vectorises each well only there: with SSSE3 (every x86-64 built for a CPU of the last 15
/// years), [`pair_sums`], which the compiler turns into `pmaddubsw`; else [`lane_sums`].
#[inline(always)]
pub(crate) fn row_sums<const NG: usize, const W: usize>(
    u: &[[u8; LANES]; NG],
    xq: &[i8],
    xw: &[i16],
) -> [i32; ROWS] {
    debug_assert!(u.iter().flatten().all(|&c| c as i32 <= max_code(NG, W)));
    if cfg!(all(target_arch = "x86_64", target_feature = "ssse3")) {
        pair_sums::<NG, W>(u, xq)
    } else {
        lane_sums::<NG>(u, xw)
    }
}

/// [`row_sums`] as `pmaddubsw` forms them: adjacent lanes' products (a row's values 4g, 4g + 1
/// and 4g + 2, 4g + 3) added in 32 bits and saturated to 16 — written out, the clamp is what
/// lets the compiler emit the instruction, and it never acts under the bound — then `W` groups
/// added in 16 bits, widened, and each row's two lanes added. 2.5–3.7× [`lane_sums`] where the
/// instruction exists; without SSSE3 (a portable x86-64 build) the same code is 8× slower.
#[inline(never)]
pub(crate) fn pair_sums<const NG: usize, const W: usize>(
    u: &[[u8; LANES]; NG],
    xq: &[i8],
) -> [i32; ROWS] {
    let (x4s, _) = xq[..4 * NG].as_chunks::<4>();
    let mut wide = [0i32; LANES / 2];
    for (uw, xw) in u.chunks_exact(W).zip(x4s.chunks_exact(W)) {
        let mut acc = [0i16; LANES / 2];
        for (ug, x4) in uw.iter().zip(xw) {
            let xp = [*x4; ROWS];
            let xp = xp.as_flattened();
            let mut pair = [0i16; LANES / 2];
            for (i, p) in pair.iter_mut().enumerate() {
                let s = i32::from(ug[2 * i]) * i32::from(xp[2 * i])
                    + i32::from(ug[2 * i + 1]) * i32::from(xp[2 * i + 1]);
                *p = s.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
            }
            for (a, p) in acc.iter_mut().zip(pair) {
                // Exact: the bound keeps `W` groups' pair sums within 16 bits.
                *a = a.wrapping_add(p);
            }
        }
        for (w, a) in wide.iter_mut().zip(acc) {
            *w += i32::from(a);
        }
    }
    let mut sums = [0i32; ROWS];
    for (s, w) in sums.iter_mut().zip(wide.as_chunks::<2>().0) {
        *s = w[0] + w[1];
    }
    sums
}

/// [`row_sums`] lane by lane: `Σ_g u[g][j]·x[4g + j % 4]` per lane `j` in 16 bits (`pmullw`,
/// `paddw`), widened once, then each row's four lanes added.
///
/// Widening every product to 32 bits, as before, bound this loop at half the speed; adding
/// adjacent products in 32 bits without the clamp ([`pair_sums`]' shape but `pmaddwd`'s) was
/// slower still. A function of its own: inlined into the tile walks, the compiler kept the
/// 16-bit sums on the stack and read them back wider than it wrote them, a stall every
/// (sub-)block (Q6_K tiles 1.5–2× slower).
#[inline(never)]
pub(crate) fn lane_sums<const NG: usize>(u: &[[u8; LANES]; NG], xw: &[i16]) -> [i32; ROWS] {
    // A whole number of groups, so the compiler unrolls them; the token's codes already
    // 16-bit, so each group's four are one broadcast load (widening them here took a dozen
    // scalar instructions a group: 1.75× slower).
    let (x4s, _) = xw[..4 * NG].as_chunks::<4>();
    let mut acc = [0i16; LANES];
    for (ug, x4) in u.iter().zip(x4s) {
        let xp = [*x4; ROWS];
        for ((a, &w), &x) in acc.iter_mut().zip(ug).zip(xp.as_flattened()) {
            // Exact: the bound keeps every partial sum within 16 bits.
            *a = a.wrapping_add(i16::from(w).wrapping_mul(x));
        }
    }
    let mut sums = [0i32; ROWS];
    for (s, a) in sums.iter_mut().zip(acc.as_chunks::<4>().0) {
        *s = i32::from(a[0]) + i32::from(a[1]) + i32::from(a[2]) + i32::from(a[3]);
    }
    sums
}

/// Row sums of an 8-bit block straight from its lines, less the stored offset: the signed
/// codes `q = u − 128` against the token's, `Σ q·x`. Q8_0 activations are at most 127 in
/// magnitude (ggml's rule rounds `x·127/amax`), so two products fit in 16 bits: groups are
/// summed in pairs in 16 bits, then widened — a third fewer instructions than two nibble
/// halves, and the block is never written out decoded.
#[inline(never)]
pub(crate) fn row_sums_8bit(lines: [&[u8; LANES]; 8], xw: &[i16]) -> [i32; ROWS] {
    debug_assert!(xw[..32].iter().all(|x| x.abs() <= 127));
    let (x4s, _) = xw[..32].as_chunks::<4>();
    let mut wide = [0i32; LANES];
    for (pair, x8) in lines.chunks_exact(2).zip(x4s.chunks_exact(2)) {
        let mut acc = [0i16; LANES];
        for (line, x4) in pair.iter().zip(x8) {
            let xp = [*x4; ROWS];
            for ((a, &u), &x) in acc.iter_mut().zip(line.iter()).zip(xp.as_flattened()) {
                // Exact: |q·x| ≤ 128·127, and two such sums fit in 16 bits.
                *a = a.wrapping_add(i16::from((u ^ 0x80) as i8).wrapping_mul(x));
            }
        }
        for (w, &a) in wide.iter_mut().zip(&acc) {
            *w += i32::from(a);
        }
    }
    let mut sums = [0i32; ROWS];
    for (s, w) in sums.iter_mut().zip(wide.as_chunks::<4>().0) {
        *s = w[0] + w[1] + w[2] + w[3];
    }
    sums
}

/// A token's activation codes as [`row_sums`] reads them, 16-bit: kept beside the 8-bit ones
/// at the scalar level only (`wide` in each format's activations), refilled in place.
pub(crate) fn widen(q: &[i8], wide: &mut Vec<i16>) {
    wide.clear();
    wide.extend(q.iter().map(|&x| i16::from(x)));
}

/// A line of two nibbles a byte as two lines of codes (`lo`, `hi`): the two groups a 4- or
/// 5-bit Q8_0 tile or a Q4_K tile keeps in one line. Written as whole-array maps: the same
/// loop over zipped lanes was left scalar by the compiler (3× slower Q6_K and Q4_K tiles).
#[inline(always)]
pub(crate) fn split_nibbles(line: &[u8; LANES], lo: &mut [u8; LANES], hi: &mut [u8; LANES]) {
    *lo = line.map(|u| u & 15);
    *hi = line.map(|u| u >> 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row's dot product, exactly, from both formulations (whichever the build picks),
    /// at the extremes of the bound: all codes at the largest allowed and every activation
    /// −128 (and 127), for each (groups, groups summed in 16 bits) the kernels use.
    #[test]
    fn row_sums_are_each_rows_dot_product() {
        fn both<const NG: usize, const W: usize>(u: &[[u8; LANES]], xq: &[i8]) -> [[i32; ROWS]; 2] {
            let mut xw = Vec::new();
            widen(xq, &mut xw);
            let u: &[[u8; LANES]; NG] = u.try_into().unwrap();
            [pair_sums::<NG, W>(u, xq), lane_sums::<NG>(u, &xw)]
        }
        type Both = fn(&[[u8; LANES]], &[i8]) -> [[i32; ROWS]; 2];
        let shapes: [(usize, usize, Both); 3] = [
            (8, 8, both::<8, 8>),
            (8, 4, both::<8, 4>),
            (4, 2, both::<4, 2>),
        ];
        for (groups, w, sums) in shapes {
            let top = max_code(groups, w) as u8;
            let patterns: [fn(usize, usize, u8) -> u8; 2] = [
                |g, j, top| ((g * 31 + j * 7) % (top as usize + 1)) as u8,
                |_, _, top| top,
            ];
            for pattern in patterns {
                let mut u = vec![[0u8; LANES]; groups];
                for (g, ug) in u.iter_mut().enumerate() {
                    for (j, w) in ug.iter_mut().enumerate() {
                        *w = pattern(g, j, top);
                    }
                }
                let ramp: Vec<i8> = (0..4 * groups).map(|i| (i * 37 % 255) as i8).collect();
                for xq in [ramp, vec![-128i8; 4 * groups], vec![127i8; 4 * groups]] {
                    for (f, got) in sums(&u, &xq).iter().enumerate() {
                        for (r, &s) in got.iter().enumerate() {
                            let want: i32 = (0..4 * groups)
                                .map(|v| u[v / 4][4 * r + v % 4] as i32 * xq[v] as i32)
                                .sum();
                            assert_eq!(s, want, "formulation {f}, groups {groups}/{w}, row {r}");
                        }
                    }
                }
            }
        }
    }

    /// The 8-bit sums against the signed codes' dot product, at the extremes: codes −128 and
    /// 127 (stored 0 and 255) against activations ±127.
    #[test]
    fn eight_bit_sums_are_the_signed_dot_product() {
        for (lo, hi) in [(0u8, 255u8), (255, 0), (0, 0), (255, 255)] {
            let lines: [[u8; LANES]; 8] = std::array::from_fn(|g| {
                std::array::from_fn(|j| if (g + j) % 3 == 0 { lo } else { hi })
            });
            for xq in [
                vec![127i8; 32],
                vec![-127i8; 32],
                (0..32).map(|i| (i * 37 % 255) as i8 / 2).collect(),
            ] {
                let mut xw = Vec::new();
                widen(&xq, &mut xw);
                let got = row_sums_8bit(std::array::from_fn(|g| &lines[g]), &xw);
                for (r, &s) in got.iter().enumerate() {
                    let want: i32 = (0..32)
                        .map(|v| (lines[v / 4][4 * r + v % 4] as i32 - 128) * xq[v] as i32)
                        .sum();
                    assert_eq!(s, want, "row {r}");
                }
            }
        }
    }

    #[test]
    fn nibbles_rebuild_the_byte() {
        let line: [u8; LANES] = std::array::from_fn(|j| (j * 53 % 256) as u8);
        let (mut lo, mut hi) = ([0u8; LANES], [0u8; LANES]);
        split_nibbles(&line, &mut lo, &mut hi);
        for j in 0..LANES {
            assert_eq!(16 * hi[j] + lo[j], line[j]);
        }
    }
}
