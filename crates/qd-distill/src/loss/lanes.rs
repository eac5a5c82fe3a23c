//! Row reductions and `exp` written over 16-lane arrays so the compiler vectorizes them without
//! fast-math: a softmax row of the 262 144-entry vocabulary is 1 MiB, and libm's scalar `exp`
//! (in f64 before) was the loss's main cost. Sums keep 16 f32 partial sums per block of 1024
//! entries and add the blocks in f64.

const W: usize = 16;
const BLOCK: usize = 1024;

/// `e^x` for f32 within 2 ulp of the correctly rounded value on [-86.6, 88]; smaller arguments
/// give `e^-86.6` ≈ 2.4e-38 (not zero: the scaling stays in normal numbers), larger ones `e^88`. Branch-free, so loops over it vectorize.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round-to-nearest by the 1.5·2²³ trick: no `roundps` needed on baseline x86-64.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-86.6, 88.0);
    let n = (x * LOG2E + SHIFTER) - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf).
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = (p * r) * r + r + 1.0;
    f32::from_bits(e.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

/// Largest entry (−∞ for an empty row; NaNs are skipped).
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for k in 0..W {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// `Σ f(x_j)` over a row, lane-wise in f32 within blocks, in f64 across blocks.
#[inline(always)]
pub fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0f32; W];
        let mut chunks = block.chunks_exact(W);
        for c in &mut chunks {
            for k in 0..W {
                acc[k] += f(c[k]);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// `Σ f(a_j, b_j)` over two rows of one length, as [`sum_map`].
#[inline(always)]
pub fn sum_map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut total = 0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0f32; W];
        let (mut ca, mut cb) = (ab.chunks_exact(W), bb.chunks_exact(W));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for k in 0..W {
                acc[k] += f(x[k], y[k]);
            }
        }
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(&x, &y)| f(x, y))
            .sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// `(Σ f(x_j).0, Σ f(x_j).1)` in one pass, as [`sum_map`].
#[inline(always)]
pub fn sum_map_pair(x: &[f32], f: impl Fn(f32) -> (f32, f32)) -> (f64, f64) {
    let (mut t0, mut t1) = (0f64, 0f64);
    for block in x.chunks(BLOCK) {
        let (mut a0, mut a1) = ([0f32; W], [0f32; W]);
        let mut chunks = block.chunks_exact(W);
        for c in &mut chunks {
            for k in 0..W {
                let (u, v) = f(c[k]);
                a0[k] += u;
                a1[k] += v;
            }
        }
        let (mut r0, mut r1) = (0f32, 0f32);
        for &v in chunks.remainder() {
            let (u, w) = f(v);
            r0 += u;
            r1 += w;
        }
        t0 += a0.iter().map(|&a| a as f64).sum::<f64>() + r0 as f64;
        t1 += a1.iter().map(|&a| a as f64).sum::<f64>() + r1 as f64;
    }
    (t0, t1)
}

/// Writes `out_j = f(a_j, b_j).0` and returns `Σ f(a_j, b_j).1`, summed as [`sum_map`].
#[inline(always)]
pub fn map_sum2_into(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> (f32, f32),
) -> f64 {
    let mut total = 0f64;
    let blocks = out
        .chunks_mut(BLOCK)
        .zip(a.chunks(BLOCK))
        .zip(b.chunks(BLOCK));
    for ((ob, ab), bb) in blocks {
        let mut acc = [0f32; W];
        let (mut co, mut ca, mut cb) = (
            ob.chunks_exact_mut(W),
            ab.chunks_exact(W),
            bb.chunks_exact(W),
        );
        for ((o, x), y) in (&mut co).zip(&mut ca).zip(&mut cb) {
            for k in 0..W {
                let (v, s) = f(x[k], y[k]);
                o[k] = v;
                acc[k] += s;
            }
        }
        let mut tail = 0f32;
        for ((o, &x), &y) in co
            .into_remainder()
            .iter_mut()
            .zip(ca.remainder())
            .zip(cb.remainder())
        {
            let (v, s) = f(x, y);
            *o = v;
            tail += s;
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_rounded_value() {
        let mut worst = 0;
        let mut x = -86.6f32;
        while x < 88.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_731;
        }
        for x in [
            0.0f32,
            -0.0,
            1e-30,
            -1e-30,
            1.0,
            -1.0,
            0.346_573_6,
            -0.346_573_6,
        ] {
            worst = worst.max(ulps(exp(x), (x as f64).exp() as f32));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_instead_of_wrapping() {
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(88.0).is_finite());
    }

    #[test]
    fn reductions_match_plain_loops() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
            .collect();
        let y: Vec<f32> = x.iter().map(|v| v * 0.5 + 1.0).collect();
        assert_eq!(max(&x), x.iter().copied().fold(f32::MIN, f32::max));
        assert_eq!(
            max(&x[..7]),
            x[..7].iter().copied().fold(f32::MIN, f32::max)
        );
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let want: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        let got = sum_map(&x, exp);
        assert!((got - want).abs() / want < 1e-6, "{got} vs {want}");
        let want2: f64 = x.iter().zip(&y).map(|(&a, &b)| (a * b) as f64).sum();
        let got2 = sum_map2(&x, &y, |a, b| a * b);
        assert!(
            (got2 - want2).abs() / want2.abs() < 1e-5,
            "{got2} vs {want2}"
        );
        let (p0, p1) = sum_map_pair(&x, |v| (exp(v), v));
        assert_eq!(p0, got);
        let want1: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((p1 - want1).abs() < 1e-3, "{p1} vs {want1}");
        let mut out = vec![0f32; x.len()];
        let got3 = map_sum2_into(&mut out, &x, &y, |a, b| (a - b, a * b));
        assert_eq!(got3, got2);
        assert!(out
            .iter()
            .zip(x.iter().zip(&y))
            .all(|(&o, (&a, &b))| o == a - b));
    }
}
