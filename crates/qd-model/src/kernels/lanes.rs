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
pub(crate) const SPAN: usize = 8;

/// `Σ_g u[g][j]·x[4g + j % 4]` per lane `j`, then each row's four lanes added: row `r`'s sum
/// over the `4·u.len()` values of this (sub-)block. Codes are `i16` and each product a 16-bit
/// multiply (`pmullw`, 32 lanes a register), widened before the sum: 1.3–1.5× the teacher's
/// tokens/s of 32-bit multiplies (`pmulld`, which bound this loop). Adding adjacent products in
/// 32 bits, `pmaddwd`'s shape, was slower: the compiler did not find `pmaddwd`.
#[inline]
pub(crate) fn row_sums(u: &[[i16; LANES]], xq: &[i8]) -> [i32; ROWS] {
    let mut acc = [0i32; LANES];
    for (ug, x) in u.iter().zip(xq.chunks_exact(4)) {
        let x4 = [x[0] as i16, x[1] as i16, x[2] as i16, x[3] as i16];
        let xp = [x4; ROWS];
        for ((a, &w), &x) in acc.iter_mut().zip(ug).zip(xp.as_flattened()) {
            // Exact in 16 bits (|255 · 128| < 2¹⁵): a 16-bit multiply, then widened.
            *a += w.wrapping_mul(x) as i32;
        }
    }
    std::array::from_fn(|r| acc[4 * r] + acc[4 * r + 1] + acc[4 * r + 2] + acc[4 * r + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sums_are_each_rows_dot_product() {
        let mut u = [[0i16; LANES]; 8];
        for (g, ug) in u.iter_mut().enumerate() {
            for (j, w) in ug.iter_mut().enumerate() {
                *w = ((g * 31 + j * 7) % 256) as i16;
            }
        }
        // The extremes too: 255 × −128 and 255 × 127.
        u[0][0] = 255;
        u[1][0] = 255;
        let mut xq: Vec<i8> = (0..32).map(|i| (i * 37 % 255) as i8).collect();
        (xq[0], xq[4]) = (-128, 127);
        let got = row_sums(&u, &xq);
        for (r, &s) in got.iter().enumerate() {
            let want: i32 = (0..32)
                .map(|v| u[v / 4][4 * r + v % 4] as i32 * xq[v] as i32)
                .sum();
            assert_eq!(s, want, "row {r}");
        }
    }
}
