//! The symmetric 32-value fake-quants (ggml's Q4_0, Q5_0, Q8_0 shapes): `dequantize(quantize(x))` as ggml's
//! `quantize_row_*_ref` and `dequantize_row_*` compute it, without the byte packing. The scalar
//! form is the oracle (and the portable level); the SIMD body runs it sixteen lanes wide at
//! every level, with the per-block scales of sixteen blocks computed together, so that the two
//! divisions and the fp16 round trip run across blocks instead of serially.

use super::vector::F32x16;
use crate::fp16::{fp16_to_fp32, fp32_to_fp16};
use crate::rounding::c_f32_to_i8;

/// A symmetric 32-value format's round trip as ggml's `quantize_row_*_ref` writes it (one fp16
/// scale per block, codes centred on zero); the format's own crate supplies the numbers
/// (qd-quant's `q4_0.rs`, `q5_0.rs`, `q8_0.rs`), the kernels only the arithmetic.
///
/// `d = extreme / div`. With `amax` (Q8_0) the extreme is the largest magnitude and a code is
/// `roundf(x/d)` (half away from zero; `bias` and `off` unused); otherwise (Q4_0, Q5_0) it is the
/// first value of largest magnitude, sign kept, divided by a negative `div`, and a code is
/// `min((int8)(x/d + bias), qmax) − off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SymmetricGrid {
    pub amax: bool,
    pub div: f32,
    pub bias: f32,
    pub qmax: i32,
    pub off: i32,
}

#[inline(always)]
fn abs_max(x: &[f32; 32]) -> f32 {
    let mut m = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (a, v) in m.iter_mut().zip(c) {
            *a = a.max(v.abs());
        }
    }
    m.iter().fold(0f32, |a, &b| a.max(b))
}

/// The value of largest magnitude, first occurrence on ties, +0 when all are zero: what the
/// reference's `if (amax < fabsf(v))` scan keeps.
#[inline(always)]
fn signed_max(x: &[f32; 32]) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        return 0.0;
    }
    *x.iter()
        .find(|v| v.abs() == amax)
        .expect("amax comes from x")
}

/// One block, the scalar oracle: plain f32 in the reference's order, written branch-free so
/// that the compiler vectorises it within the block.
#[inline(always)]
pub(crate) fn block(g: SymmetricGrid, x: &[f32; 32], y: &mut [f32; 32]) {
    let d = if g.amax { abs_max(x) } else { signed_max(x) } / g.div;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = fp16_to_fp32(fp32_to_fp16(d));
    if g.amax {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = c_f32_to_i8((v * id).round()) as f32 * d16;
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            let q = (c_f32_to_i8(v * id + g.bias) as i32).min(g.qmax);
            *o = (q - g.off) as f32 * d16;
        }
    }
}

/// Whole blocks at the scalar level.
pub(crate) fn scalar(g: SymmetricGrid, x: &[f32], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(32)) {
        block(
            g,
            xb.try_into().expect("32 values"),
            yb.try_into().expect("32 values"),
        );
    }
}

/// Blocks whose scales are computed together, one per lane.
const GROUP: usize = 16;

/// Whole blocks (`x.len() == y.len()`, a multiple of 32) sixteen lanes wide.
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
pub(crate) unsafe fn simd<V: F32x16>(g: SymmetricGrid, x: &[f32], y: &mut [f32]) {
    // SAFETY: the caller's contract; memory is touched only through bounds-checked slices.
    unsafe {
        let SymmetricGrid {
            amax: q8,
            div,
            bias,
            qmax,
            off,
        } = g;
        let mut extreme = [0f32; GROUP];
        let mut ids = [0f32; GROUP];
        let mut d16s = [0f32; GROUP];
        for (xg, yg) in x.chunks(32 * GROUP).zip(y.chunks_mut(32 * GROUP)) {
            // 1. The block extremes: amax for Q8_0, the first largest-magnitude value otherwise.
            for (e, xb) in extreme.iter_mut().zip(xg.chunks_exact(32)) {
                let (a, c) = (V::load(xb).abs(), V::load(&xb[16..]).abs());
                let amax = a.max(c).reduce_max();
                *e = if q8 {
                    amax
                } else if amax == 0.0 {
                    0.0
                } else {
                    let av = V::splat(amax);
                    let m = V::m_bits(a.eq(av)) | (V::m_bits(c.eq(av)) << 16);
                    xb[m.trailing_zeros() as usize]
                };
            }
            // 2. d = extreme / div, id = 1/d (0 when d is 0), d through fp16: 16 at once.
            let d = V::load(&extreme).div(V::splat(div));
            let id = V::select(d.ne(V::zero()), V::splat(1.0).div(d), V::zero());
            id.store(&mut ids);
            d.f16_round().store(&mut d16s);
            // 3. Codes and outputs.
            let nb = xg.len() / 32;
            for b in 0..nb {
                let (idv, dv) = (V::splat(ids[b]), V::splat(d16s[b]));
                for at in [32 * b, 32 * b + 16] {
                    let v = V::load(&xg[at..]);
                    let r = if q8 {
                        q8_codes(v.mul(idv))
                    } else {
                        let s = v.mul(idv).add(V::splat(bias));
                        let q = V::min_i(V::low_byte(s.to_i32_trunc()), V::splat_i(qmax));
                        V::from_i32(V::sub_i(q, V::splat_i(off)))
                    };
                    r.mul(dv).store(&mut yg[at..]);
                }
            }
        }
    }
}

/// `(int8_t)roundf(s)`: half away from zero as trunc, then ±1 where |fraction| ≥ 0.5; through
/// int8 as the reference (−0 → +0, ±inf/NaN → 0).
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
unsafe fn q8_codes<V: F32x16>(s: V) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        let t = s.trunc();
        let m = s.sub(t).abs().ge(V::splat(0.5));
        let one = V::splat(1.0).or(s.and(V::splat(-0.0)));
        let r = V::select(m, t.add(one), t);
        V::from_i32(V::low_byte(r.to_i32_trunc()))
    }
}
