//! AVX-512 versions of the fused symmetric fake-quants (Q4_0, Q5_0, Q8_0): one 32-value block
//! is two zmm registers. The per-block scale is computed exactly as the reference (first
//! largest-magnitude value, f32 division, 1/d in f32, hardware fp16 round trip — IEEE
//! round-to-nearest-even like ggml's software conversion), then codes and outputs in SIMD.
//! Selected at run time, so a portable build uses it on CPUs that have it.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn available() -> bool {
    false
}

/// Runs `kind` (0: Q4_0, 1: Q5_0, 2: Q8_0) over whole 32-value blocks.
#[cfg(target_arch = "x86_64")]
pub fn run(kind: u8, x: &[f32], y: &mut [f32]) {
    assert!(available() && x.len() == y.len() && x.len().is_multiple_of(32));
    // SAFETY: the features were detected just above; slices are whole blocks.
    unsafe { run_impl(kind, x, y) }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn run(_: u8, _: &[f32], _: &mut [f32]) {
    unreachable!("avx512::available() is false here")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn fp16_round(d: f32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
        _mm_set_ss(d),
    )))
}

/// The sign-extended low byte of each lane: C's `(int8_t)` of `cvttss2si`'s result (whose
/// out-of-range value 0x80000000 thus becomes 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn low_byte(v: __m512i) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn run_impl(kind: u8, x: &[f32], y: &mut [f32]) {
    let sign = _mm512_set1_ps(-0.0);
    for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(32)) {
        let a = _mm512_loadu_ps(xb.as_ptr());
        let b = _mm512_loadu_ps(xb.as_ptr().add(16));
        let aa = _mm512_andnot_ps(sign, a);
        let ab = _mm512_andnot_ps(sign, b);
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
        let (d, id, lo, hi);
        if kind == 2 {
            d = amax / 127.0;
            id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = _mm512_set1_ps(fp16_round(d));
            let idv = _mm512_set1_ps(id);
            for (v, out) in [(a, yb.as_mut_ptr()), (b, yb.as_mut_ptr().add(16))] {
                // roundf: half away from zero = trunc, then ±1 where the fraction is ≥ 0.5.
                let s = _mm512_mul_ps(v, idv);
                let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
                let frac = _mm512_andnot_ps(sign, _mm512_sub_ps(s, t));
                let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
                let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(s, sign));
                // + 0.0 turns −0 into +0, as the reference's int8 code does.
                let r = _mm512_mask_add_ps(t, m, t, one);
                // Through int8 as the reference: −0 becomes +0, ±inf/NaN become 0.
                let r = _mm512_cvtepi32_ps(low_byte(_mm512_cvttps_epi32(r)));
                _mm512_storeu_ps(out, _mm512_mul_ps(r, d16));
            }
            continue;
        }
        let (div, bias, qmax, off) = if kind == 0 {
            (-8.0, 8.5, 15, 8)
        } else {
            (-16.0, 16.5, 31, 16)
        };
        // First index whose magnitude is the maximum (the reference's strict `<` scan).
        let max = if amax == 0.0 {
            0.0
        } else {
            let av = _mm512_set1_ps(amax);
            let m = (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(aa, av) as u32)
                | ((_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(ab, av) as u32) << 16);
            xb[m.trailing_zeros() as usize]
        };
        d = max / div;
        id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = _mm512_set1_ps(fp16_round(d));
        let idv = _mm512_set1_ps(id);
        lo = _mm512_set1_ps(bias);
        hi = _mm512_set1_epi32(qmax);
        let offv = _mm512_set1_epi32(off);
        for (v, out) in [(a, yb.as_mut_ptr()), (b, yb.as_mut_ptr().add(16))] {
            let s = _mm512_add_ps(_mm512_mul_ps(v, idv), lo);
            let q = _mm512_min_epi32(low_byte(_mm512_cvttps_epi32(s)), hi);
            let r = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, offv));
            _mm512_storeu_ps(out, _mm512_mul_ps(r, d16));
        }
    }
}
