//! AVX-512 versions of the fused symmetric fake-quants (Q4_0, Q5_0, Q8_0): one 32-value block
//! is two zmm registers. The per-block scale is computed exactly as the reference (first
//! largest-magnitude value, f32 division, 1/d in f32, hardware fp16 round trip — IEEE
//! round-to-nearest-even like ggml's software conversion), then codes and outputs in SIMD.
//! Selected at run time, so a portable build uses it on CPUs that have it.

use crate::fused::Symmetric;
#[cfg(target_arch = "x86_64")]
use crate::fused::SymmetricGrid;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether these kernels run here (`isa`'s probe; `QAT_DISTILL_ISA` below `avx512` turns them
/// off).
pub fn available() -> bool {
    qd_kernels::Isa::avx512_fake_quant()
}

/// Runs `kind`'s round trip over whole 32-value blocks.
#[cfg(target_arch = "x86_64")]
pub fn run(kind: Symmetric, x: &[f32], y: &mut [f32]) {
    assert!(available() && x.len() == y.len() && x.len().is_multiple_of(32));
    // SAFETY: `run_impl` needs AVX-512F/DQ and F16C, detected just above; it touches memory
    // only through bounds-checked slices.
    unsafe { run_impl(kind, x, y) }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn run(_: Symmetric, _: &[f32], _: &mut [f32]) {
    unreachable!("avx512::available() is false here")
}

/// Sixteen lanes from `x[at..at + 16]` (bounds-checked).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn load(x: &[f32], at: usize) -> __m512 {
    let s = &x[at..at + 16];
    // SAFETY: `s` holds 16 readable f32s; an unaligned load has no alignment requirement.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Stores sixteen lanes into `y[at..at + 16]` (bounds-checked).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn store(y: &mut [f32], at: usize, v: __m512) {
    let s = &mut y[at..at + 16];
    // SAFETY: `s` holds 16 writable f32s; an unaligned store has no alignment requirement.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
}

/// The sign-extended low byte of each lane: C's `(int8_t)` of `cvttss2si`'s result (whose
/// out-of-range value 0x80000000 thus becomes 0).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn low_byte(v: __m512i) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v))
}

/// Blocks whose scales are computed together, so the two divisions and the fp16 round trip
/// run 16 lanes wide instead of serially per block.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,f16c")]
fn run_impl(kind: Symmetric, x: &[f32], y: &mut [f32]) {
    let sign = _mm512_set1_ps(-0.0);
    let SymmetricGrid {
        div,
        bias,
        qmax,
        off,
    } = kind.grid();
    let q8 = kind == Symmetric::Q8_0;
    let mut extreme = [0f32; GROUP];
    let mut ids = [0f32; GROUP];
    let mut d16s = [0f32; GROUP];
    for (xg, yg) in x.chunks(32 * GROUP).zip(y.chunks_mut(32 * GROUP)) {
        let nb = xg.len() / 32;
        // 1. The block extremes: amax for Q8_0, the first largest-magnitude value otherwise.
        for (b, xb) in xg.chunks_exact(32).enumerate() {
            let a = load(xb, 0);
            let c = load(xb, 16);
            let aa = _mm512_andnot_ps(sign, a);
            let ac = _mm512_andnot_ps(sign, c);
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ac));
            extreme[b] = if q8 || amax == 0.0 {
                if q8 {
                    amax
                } else {
                    0.0
                }
            } else {
                let av = _mm512_set1_ps(amax);
                let m = (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(aa, av) as u32)
                    | ((_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(ac, av) as u32) << 16);
                xb[m.trailing_zeros() as usize]
            };
        }
        // 2. d = extreme / div, id = 1/d (0 when d is 0), d rounded through fp16: 16 at once.
        let e = load(&extreme, 0);
        let d = _mm512_div_ps(e, _mm512_set1_ps(div));
        let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d, _mm512_setzero_ps());
        let id = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0), d);
        let d16 = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d));
        store(&mut ids, 0, id);
        store(&mut d16s, 0, d16);
        // 3. Codes and outputs.
        for b in 0..nb {
            let idv = _mm512_set1_ps(ids[b]);
            let dv = _mm512_set1_ps(d16s[b]);
            for h in 0..2 {
                let at = 32 * b + 16 * h;
                let v = load(xg, at);
                let r = if q8 {
                    // roundf (half away from zero) = trunc, then ±1 where |fraction| ≥ 0.5;
                    // through int8 as the reference: −0 → +0, ±inf/NaN → 0.
                    let s = _mm512_mul_ps(v, idv);
                    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
                    let frac = _mm512_andnot_ps(sign, _mm512_sub_ps(s, t));
                    let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
                    let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(s, sign));
                    let r = _mm512_mask_add_ps(t, m, t, one);
                    _mm512_cvtepi32_ps(low_byte(_mm512_cvttps_epi32(r)))
                } else {
                    let s = _mm512_add_ps(_mm512_mul_ps(v, idv), _mm512_set1_ps(bias));
                    let q =
                        _mm512_min_epi32(low_byte(_mm512_cvttps_epi32(s)), _mm512_set1_epi32(qmax));
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(q, _mm512_set1_epi32(off)))
                };
                store(yg, at, _mm512_mul_ps(r, dv));
            }
        }
    }
}
