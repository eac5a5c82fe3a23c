//! The sixteen-lane f32 vector the fake-quant bodies are written against, once for every SIMD
//! level: one `zmm` register on AVX-512, two `ymm` on AVX2, four `q` registers on NEON. Each
//! operation is the IEEE operation the scalar oracle performs (no fused multiply-add, no
//! approximate reciprocal), and where x86 and Arm differ (min/max with NaN, out-of-range
//! float→int) every level reproduces the x86 result the scalar oracle ports, so one body gives
//! the oracle's bits at every level.
//!
//! Every function is `unsafe`: it runs only where the CPU has the level's features. The bodies
//! that use them are `#[inline(always)]` and are instantiated inside the level's
//! `#[target_feature]` entry points (see `fake_level!`).

/// Sixteen f32 lanes at one SIMD level.
///
/// # Safety (every method)
/// This CPU runs the implementing level.
#[allow(clippy::missing_safety_doc)]
pub(crate) trait F32x16: Copy {
    /// Sixteen i32 lanes.
    type I: Copy;
    /// A mask of sixteen lanes, from comparisons.
    type M: Copy;

    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// `x[..16]` (bounds-checked).
    unsafe fn load(x: &[f32]) -> Self;
    /// Into `y[..16]` (bounds-checked).
    unsafe fn store(self, y: &mut [f32]);

    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// `self < b ? self : b` per lane (x86's `minps`: `b` where either is NaN).
    unsafe fn min(self, b: Self) -> Self;
    /// `self > b ? self : b` per lane (x86's `maxps`).
    unsafe fn max(self, b: Self) -> Self;
    /// The sign bit cleared.
    unsafe fn abs(self) -> Self;
    /// The sign bit flipped (`-x`, and −0 for 0).
    unsafe fn neg(self) -> Self;
    /// Bitwise and / or of the lanes' bits.
    unsafe fn and(self, b: Self) -> Self;
    unsafe fn or(self, b: Self) -> Self;
    /// The largest lane (finite lanes; which NaN wins is unspecified).
    unsafe fn reduce_max(self) -> f32;
    /// Round half to even.
    unsafe fn round_even(self) -> Self;
    /// Round toward zero.
    unsafe fn trunc(self) -> Self;
    /// Through IEEE fp16 (round to nearest even) and back.
    unsafe fn f16_round(self) -> Self;

    unsafe fn lt(self, b: Self) -> Self::M;
    unsafe fn gt(self, b: Self) -> Self::M;
    unsafe fn ge(self, b: Self) -> Self::M;
    unsafe fn eq(self, b: Self) -> Self::M;
    /// `self != b`, true where either is NaN (C's `!=`).
    unsafe fn ne(self, b: Self) -> Self::M;
    /// `m ? a : b` per lane.
    unsafe fn select(m: Self::M, a: Self, b: Self) -> Self;
    unsafe fn m_and(a: Self::M, b: Self::M) -> Self::M;
    unsafe fn m_or(a: Self::M, b: Self::M) -> Self::M;
    unsafe fn m_not(a: Self::M) -> Self::M;
    unsafe fn m_any(a: Self::M) -> bool;
    /// Lane `k`'s mask as bit `k`.
    unsafe fn m_bits(a: Self::M) -> u32;

    /// x86's `cvttps2dq`: truncation, and i32::MIN where out of range or NaN.
    unsafe fn to_i32_trunc(self) -> Self::I;
    /// The lanes' bits.
    unsafe fn bits(self) -> Self::I;
    /// i32 → f32, rounding to nearest even.
    unsafe fn from_i32(i: Self::I) -> Self;
    unsafe fn splat_i(v: i32) -> Self::I;
    unsafe fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn and_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn min_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn max_i(a: Self::I, b: Self::I) -> Self::I;
    /// The sign-extended low byte of each lane (C's `(int8_t)` of an int).
    unsafe fn low_byte(a: Self::I) -> Self::I;

    /// Transposes 16 vectors as a 16×16 matrix (lane `k` of row `j` ↔ lane `j` of row `k`).
    /// Through memory by default; a level may shuffle in registers instead.
    #[inline(always)]
    unsafe fn transpose16(r: &mut [Self; 16]) {
        let mut m = [[0f32; 16]; 16];
        for (row, v) in m.iter_mut().zip(r.iter()) {
            // SAFETY: the caller's contract.
            unsafe { v.store(row) };
        }
        for (k, v) in r.iter_mut().enumerate() {
            let col: [f32; 16] = std::array::from_fn(|j| m[j][k]);
            // SAFETY: the caller's contract.
            *v = unsafe { Self::load(&col) };
        }
    }
}

/// `nearest_int(v).clamp(0, nmax) as f32` exactly as ggml's magic-number rounding computes it,
/// for any `v` (infinities and NaN included).
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
pub(crate) unsafe fn code_exact<V: F32x16>(v: V, nmax: V::I) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        let t = v.add(V::splat(12_582_912.0));
        let i = V::sub_i(
            V::and_i(t.bits(), V::splat_i(0x007f_ffff)),
            V::splat_i(0x0040_0000),
        );
        V::from_i32(V::min_i(V::max_i(i, V::splat_i(0)), nmax))
    }
}
