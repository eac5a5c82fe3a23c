//! The fake-quants' AVX-512 level: sixteen lanes are one `zmm` register, masks are `k`
//! registers, fp16 rounds in hardware (`vcvtps2ph`, round to nearest even as ggml's software
//! conversion), and the 16×16 transpose runs in registers.

use std::arch::x86_64::*;

use super::vector::F32x16;

/// One `zmm` register of sixteen f32.
#[derive(Clone, Copy)]
pub(super) struct Zmm(__m512);

super::fake_level!(Zmm, "avx512f,avx512dq,avx512bw,f16c");

impl F32x16 for Zmm {
    type I = __m512i;
    type M = __mmask16;

    ops! {
        fn zero() -> Self { Zmm(_mm512_setzero_ps()) }
        fn splat(v: f32) -> Self { Zmm(_mm512_set1_ps(v)) }
        fn load(x: &[f32]) -> Self { Zmm(_mm512_loadu_ps(x[..16].as_ptr())) }
        fn store(self: Self, y: &mut [f32]) { _mm512_storeu_ps(y[..16].as_mut_ptr(), self.0) }
        fn add(self: Self, b: Self) -> Self { Zmm(_mm512_add_ps(self.0, b.0)) }
        fn sub(self: Self, b: Self) -> Self { Zmm(_mm512_sub_ps(self.0, b.0)) }
        fn mul(self: Self, b: Self) -> Self { Zmm(_mm512_mul_ps(self.0, b.0)) }
        fn div(self: Self, b: Self) -> Self { Zmm(_mm512_div_ps(self.0, b.0)) }
        fn sqrt(self: Self) -> Self { Zmm(_mm512_sqrt_ps(self.0)) }
        fn min(self: Self, b: Self) -> Self { Zmm(_mm512_min_ps(self.0, b.0)) }
        fn max(self: Self, b: Self) -> Self { Zmm(_mm512_max_ps(self.0, b.0)) }
        fn abs(self: Self) -> Self { Zmm(_mm512_andnot_ps(_mm512_set1_ps(-0.0), self.0)) }
        fn neg(self: Self) -> Self { Zmm(_mm512_xor_ps(_mm512_set1_ps(-0.0), self.0)) }
        fn and(self: Self, b: Self) -> Self { Zmm(_mm512_and_ps(self.0, b.0)) }
        fn or(self: Self, b: Self) -> Self { Zmm(_mm512_or_ps(self.0, b.0)) }
        fn reduce_max(self: Self) -> f32 { _mm512_reduce_max_ps(self.0) }
        fn round_even(self: Self) -> Self {
            Zmm(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
        }
        fn trunc(self: Self) -> Self {
            Zmm(_mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(self.0))
        }
        fn f16_round(self: Self) -> Self {
            Zmm(_mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0)))
        }
        fn lt(self: Self, b: Self) -> __mmask16 { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, b.0) }
        fn gt(self: Self, b: Self) -> __mmask16 { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, b.0) }
        fn ge(self: Self, b: Self) -> __mmask16 { _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, b.0) }
        fn eq(self: Self, b: Self) -> __mmask16 { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, b.0) }
        fn ne(self: Self, b: Self) -> __mmask16 { _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(self.0, b.0) }
        fn select(m: __mmask16, a: Self, b: Self) -> Self { Zmm(_mm512_mask_mov_ps(b.0, m, a.0)) }
        fn to_i32_trunc(self: Self) -> __m512i { _mm512_cvttps_epi32(self.0) }
        fn bits(self: Self) -> __m512i { _mm512_castps_si512(self.0) }
        fn from_i32(i: __m512i) -> Self { Zmm(_mm512_cvtepi32_ps(i)) }
        fn splat_i(v: i32) -> __m512i { _mm512_set1_epi32(v) }
        fn sub_i(a: __m512i, b: __m512i) -> __m512i { _mm512_sub_epi32(a, b) }
        fn and_i(a: __m512i, b: __m512i) -> __m512i { _mm512_and_si512(a, b) }
        fn min_i(a: __m512i, b: __m512i) -> __m512i { _mm512_min_epi32(a, b) }
        fn max_i(a: __m512i, b: __m512i) -> __m512i { _mm512_max_epi32(a, b) }
        fn low_byte(a: __m512i) -> __m512i { _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(a)) }
    }

    // Masks are `k` registers: plain integer operations.
    #[inline(always)]
    unsafe fn m_and(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    unsafe fn m_or(a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }
    #[inline(always)]
    unsafe fn m_not(a: __mmask16) -> __mmask16 {
        !a
    }
    #[inline(always)]
    unsafe fn m_any(a: __mmask16) -> bool {
        a != 0
    }
    #[inline(always)]
    unsafe fn m_bits(a: __mmask16) -> u32 {
        a as u32
    }

    /// In four rounds of in-lane and cross-lane shuffles (64 shuffles instead of 16 gathers or
    /// scatters of 16).
    #[inline(always)]
    unsafe fn transpose16(r: &mut [Self; 16]) {
        // SAFETY: the trait's contract: this CPU runs AVX-512F.
        unsafe {
            let mut t = [_mm512_setzero_ps(); 16];
            for j in 0..8 {
                t[2 * j] = _mm512_unpacklo_ps(r[2 * j].0, r[2 * j + 1].0);
                t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j].0, r[2 * j + 1].0);
            }
            use {_mm512_castpd_ps as ps, _mm512_castps_pd as pd};
            let mut u = [_mm512_setzero_ps(); 16];
            for j in 0..4 {
                let (a, b, c, d) = (t[4 * j], t[4 * j + 1], t[4 * j + 2], t[4 * j + 3]);
                u[4 * j] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
                u[4 * j + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
                u[4 * j + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
                u[4 * j + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
            }
            // Now 128-bit lane L of u[4j + e] holds rows 4j..4j+3 of column 4L + e.
            for e in 0..4 {
                let lo01 = _mm512_shuffle_f32x4::<0x88>(u[e], u[4 + e]);
                let hi01 = _mm512_shuffle_f32x4::<0xDD>(u[e], u[4 + e]);
                let lo23 = _mm512_shuffle_f32x4::<0x88>(u[8 + e], u[12 + e]);
                let hi23 = _mm512_shuffle_f32x4::<0xDD>(u[8 + e], u[12 + e]);
                r[e] = Zmm(_mm512_shuffle_f32x4::<0x88>(lo01, lo23));
                r[8 + e] = Zmm(_mm512_shuffle_f32x4::<0xDD>(lo01, lo23));
                r[4 + e] = Zmm(_mm512_shuffle_f32x4::<0x88>(hi01, hi23));
                r[12 + e] = Zmm(_mm512_shuffle_f32x4::<0xDD>(hi01, hi23));
            }
        }
    }
}
