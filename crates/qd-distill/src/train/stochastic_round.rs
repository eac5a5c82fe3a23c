//! bf16 master weights (`master_weights = "bf16"`): the optimizer's f32 result rounded to bf16
//! stochastically — up with probability equal to the fraction of a bf16 step it lies above the
//! value below — so that updates far smaller than one bf16 step (an AdamW step of 1e-4 on a
//! weight of 0.02 is about one step) still move the weight by the right amount on average,
//! where round-to-nearest would drop every one of them. Two bytes per trained weight instead
//! of four.
//!
//! The random bits are a hash of (optimizer step, parameter name, element), not a generator's state:
//! a resumed run rounds exactly as the uninterrupted one, and the result does not depend on how
//! the update is split across threads.

use half::bf16;

/// One step's key for one parameter: its name hashed (FNV-1a) with the step.
pub fn key(step: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(h ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// SplitMix64's finaliser: a well-mixed 64-bit value of `x`.
#[inline]
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `x` rounded to bf16 stochastically with the bits of (`key`, `index`). The 16 bits bf16
/// drops are compared with 16 random bits: adding them to `x`'s bits carries into the kept
/// half with exactly the dropped fraction's probability (of the magnitude, so the rounding is
/// unbiased for either sign). Non-finite values round to nearest.
#[inline]
pub fn round(x: f32, key: u64, index: usize) -> bf16 {
    if !x.is_finite() {
        return bf16::from_f32(x);
    }
    let r = (splitmix(key ^ index as u64) & 0xffff) as u32;
    let bits = x.to_bits().wrapping_add(r) & 0xffff_0000;
    let y = f32::from_bits(bits);
    if y.is_finite() {
        bf16::from_bits((bits >> 16) as u16)
    } else {
        // A carry out of the largest finite bf16: stay at it.
        bf16::from_bits((x.to_bits() >> 16) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_stay_and_the_mean_is_the_value() {
        for v in [0.0f32, -0.0, 1.0, -2.5, 0.015625, 3.0e-3] {
            let b = bf16::from_f32(v);
            if b.to_f32() == v {
                assert!((0..1000).all(|i| round(v, 7, i) == b), "{v}");
            }
        }
        // A value a quarter of a step above a bf16 number: up one time in four, on average.
        let lo = bf16::from_f32(0.02);
        let step = bf16::from_bits(lo.to_bits() + 1).to_f32() - lo.to_f32();
        for (frac, sign) in [(0.25f32, 1.0f32), (0.7, -1.0)] {
            let x = sign * (lo.to_f32() + frac * step);
            let n = 200_000;
            let mean: f64 = (0..n)
                .map(|i| round(x, key(3, "blk.0.ffn_up.weight"), i).to_f32() as f64)
                .sum::<f64>()
                / n as f64;
            // The standard error of the mean is below step·0.5/√n ≈ 1.1e-3 steps.
            assert!(
                ((mean - x as f64) / step as f64).abs() < 6e-3,
                "{x}: mean {mean}"
            );
            let below = sign * lo.to_f32();
            let above = sign * (lo.to_f32() + step);
            assert!((0..1000).all(|i| {
                let r = round(x, 1, i).to_f32();
                r == below || r == above
            }));
        }
    }

    #[test]
    fn keys_differ_by_step_and_name_and_non_finite_rounds_to_nearest() {
        assert_ne!(key(1, "a"), key(2, "a"));
        assert_ne!(key(1, "a"), key(1, "b"));
        assert!(round(f32::NAN, 1, 0).is_nan());
        assert_eq!(round(f32::INFINITY, 1, 0), bf16::INFINITY);
        assert_eq!(
            round(f32::MAX, 1, 0),
            bf16::from_bits((f32::MAX.to_bits() >> 16) as u16)
        );
    }
}
