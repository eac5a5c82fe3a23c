//! The fake-quants' AVX2 level (with F16C: Intel since Haswell, AMD since Zen 1; AVX-VNNI
//! CPUs run it too): sixteen lanes are two `ymm` registers, masks are all-ones lanes of two
//! more, fp16 rounds in hardware (`vcvtps2ph`, round to nearest even). `vminps`/`vmaxps`,
//! `vroundps` and `vcvttps2dq` are AVX-512's operations eight lanes wide, so the bodies give the
//! same bits.

use std::arch::x86_64::*;

use super::vector::F32x16;

/// Two `ymm` registers: lanes 0–7 and 8–15.
#[derive(Clone, Copy)]
pub(super) struct Ymm2([__m256; 2]);

super::fake_level!(Ymm2, "avx2,fma,f16c");

/// `$f` on each half of the arguments (`.0` of each), collected into `$wrap`.
macro_rules! halves {
    ($wrap:expr, $f:expr $(, $a:expr)*) => {
        $wrap([($f)($($a[0]),*), ($f)($($a[1]),*)])
    };
}

/// Lanes 0–7 and 8–15 of a 16-lane slice.
#[inline(always)]
unsafe fn load_halves(x: &[f32]) -> [__m256; 2] {
    let x = &x[..16];
    // SAFETY: `x` holds 16 readable f32 (bounds-checked above); unaligned loads need no
    // alignment; the caller's contract gives AVX.
    unsafe {
        [
            _mm256_loadu_ps(x.as_ptr()),
            _mm256_loadu_ps(x[8..].as_ptr()),
        ]
    }
}

#[inline(always)]
fn id<T>(v: T) -> T {
    v
}

impl F32x16 for Ymm2 {
    type I = [__m256i; 2];
    type M = [__m256; 2];

    ops! {
        fn zero() -> Self { Ymm2([_mm256_setzero_ps(); 2]) }
        fn splat(v: f32) -> Self { Ymm2([_mm256_set1_ps(v); 2]) }
        fn load(x: &[f32]) -> Self { Ymm2(load_halves(x)) }
        fn store(self: Self, y: &mut [f32]) {
            let y = &mut y[..16];
            _mm256_storeu_ps(y.as_mut_ptr(), self.0[0]);
            _mm256_storeu_ps(y[8..].as_mut_ptr(), self.0[1]);
        }
        fn add(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_add_ps, self.0, b.0) }
        fn sub(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_sub_ps, self.0, b.0) }
        fn mul(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_mul_ps, self.0, b.0) }
        fn div(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_div_ps, self.0, b.0) }
        fn sqrt(self: Self) -> Self { halves!(Ymm2, _mm256_sqrt_ps, self.0) }
        fn min(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_min_ps, self.0, b.0) }
        fn max(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_max_ps, self.0, b.0) }
        fn abs(self: Self) -> Self {
            let sign = [_mm256_set1_ps(-0.0); 2];
            halves!(Ymm2, _mm256_andnot_ps, sign, self.0)
        }
        fn neg(self: Self) -> Self {
            let sign = [_mm256_set1_ps(-0.0); 2];
            halves!(Ymm2, _mm256_xor_ps, sign, self.0)
        }
        fn and(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_and_ps, self.0, b.0) }
        fn or(self: Self, b: Self) -> Self { halves!(Ymm2, _mm256_or_ps, self.0, b.0) }
        fn reduce_max(self: Self) -> f32 {
            let m = _mm256_max_ps(self.0[0], self.0[1]);
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
        }
        fn round_even(self: Self) -> Self {
            halves!(Ymm2, _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>, self.0)
        }
        fn trunc(self: Self) -> Self {
            halves!(Ymm2, _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>, self.0)
        }
        fn f16_round(self: Self) -> Self {
            let h = halves!(id, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>, self.0);
            halves!(Ymm2, _mm256_cvtph_ps, h)
        }
        fn lt(self: Self, b: Self) -> [__m256; 2] {
            halves!(id, _mm256_cmp_ps::<_CMP_LT_OQ>, self.0, b.0)
        }
        fn gt(self: Self, b: Self) -> [__m256; 2] {
            halves!(id, _mm256_cmp_ps::<_CMP_GT_OQ>, self.0, b.0)
        }
        fn ge(self: Self, b: Self) -> [__m256; 2] {
            halves!(id, _mm256_cmp_ps::<_CMP_GE_OQ>, self.0, b.0)
        }
        fn eq(self: Self, b: Self) -> [__m256; 2] {
            halves!(id, _mm256_cmp_ps::<_CMP_EQ_OQ>, self.0, b.0)
        }
        fn ne(self: Self, b: Self) -> [__m256; 2] {
            halves!(id, _mm256_cmp_ps::<_CMP_NEQ_UQ>, self.0, b.0)
        }
        fn select(m: [__m256; 2], a: Self, b: Self) -> Self {
            halves!(Ymm2, _mm256_blendv_ps, b.0, a.0, m)
        }
        fn m_and(a: [__m256; 2], b: [__m256; 2]) -> [__m256; 2] { halves!(id, _mm256_and_ps, a, b) }
        fn m_or(a: [__m256; 2], b: [__m256; 2]) -> [__m256; 2] { halves!(id, _mm256_or_ps, a, b) }
        fn m_not(a: [__m256; 2]) -> [__m256; 2] {
            let ones = [_mm256_castsi256_ps(_mm256_set1_epi32(-1)); 2];
            halves!(id, _mm256_xor_ps, a, ones)
        }
        fn m_any(a: [__m256; 2]) -> bool { _mm256_movemask_ps(_mm256_or_ps(a[0], a[1])) != 0 }
        fn m_bits(a: [__m256; 2]) -> u32 {
            (_mm256_movemask_ps(a[0]) as u32) | ((_mm256_movemask_ps(a[1]) as u32) << 8)
        }
        fn to_i32_trunc(self: Self) -> [__m256i; 2] { halves!(id, _mm256_cvttps_epi32, self.0) }
        fn bits(self: Self) -> [__m256i; 2] { halves!(id, _mm256_castps_si256, self.0) }
        fn from_i32(i: [__m256i; 2]) -> Self { halves!(Ymm2, _mm256_cvtepi32_ps, i) }
        fn splat_i(v: i32) -> [__m256i; 2] { [_mm256_set1_epi32(v); 2] }
        fn sub_i(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
            halves!(id, _mm256_sub_epi32, a, b)
        }
        fn and_i(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
            halves!(id, _mm256_and_si256, a, b)
        }
        fn min_i(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
            halves!(id, _mm256_min_epi32, a, b)
        }
        fn max_i(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
            halves!(id, _mm256_max_epi32, a, b)
        }
        fn low_byte(a: [__m256i; 2]) -> [__m256i; 2] {
            let up = halves!(id, _mm256_slli_epi32::<24>, a);
            halves!(id, _mm256_srai_epi32::<24>, up)
        }
    }
}
