//! The fake-quants' NEON level (every 64-bit Arm core): sixteen lanes are four `q` registers.
//! Where Arm's operations differ from the x86 ones the scalar oracle ports, they are built from
//! compares and selects: `fmin`/`fmax` return NaN where x86 returns the second operand, and
//! `fcvtzs` saturates where x86 returns i32::MIN. fp16 rounds in software (stable Rust has no
//! fp16 vector type), once per block scale.

use std::arch::aarch64::*;

use super::vector::F32x16;
use crate::fp16::{fp16_to_fp32, fp32_to_fp16};

/// Four `q` registers: lanes 0–3, 4–7, 8–11, 12–15.
#[derive(Clone, Copy)]
pub(super) struct Q4([float32x4_t; 4]);

super::fake_level!(Q4, "neon");

/// `$f` on each quarter of the arguments, collected into `$wrap`.
macro_rules! quarters {
    ($wrap:expr, $f:expr $(, $a:expr)*) => {
        $wrap([
            ($f)($($a[0]),*),
            ($f)($($a[1]),*),
            ($f)($($a[2]),*),
            ($f)($($a[3]),*),
        ])
    };
}

#[inline(always)]
fn id<T>(v: T) -> T {
    v
}

// Helpers are functions, not closures: a closure would not inherit the entry point's target
// features, so the intrinsics inside it would not inline.

/// x86's `minps`: `a < b ? a : b` (`b` where either is NaN; `fmin` would return NaN).
///
/// # Safety
/// This CPU has NEON.
#[inline(always)]
unsafe fn min_x86(a: float32x4_t, b: float32x4_t) -> float32x4_t {
    // SAFETY: the caller's contract.
    unsafe { vbslq_f32(vcltq_f32(a, b), a, b) }
}

/// x86's `maxps`: `a > b ? a : b`.
///
/// # Safety
/// This CPU has NEON.
#[inline(always)]
unsafe fn max_x86(a: float32x4_t, b: float32x4_t) -> float32x4_t {
    // SAFETY: the caller's contract.
    unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
}

/// x86's `cvttps2dq`: |v| < 2^31 truncates as `fcvtzs` does; elsewhere (and NaN) x86 gives
/// i32::MIN where `fcvtzs` saturates.
///
/// # Safety
/// This CPU has NEON.
#[inline(always)]
unsafe fn cvtt_x86(v: float32x4_t) -> int32x4_t {
    // SAFETY: the caller's contract.
    unsafe {
        vbslq_s32(
            vcaltq_f32(v, vdupq_n_f32(2_147_483_648.0)),
            vcvtq_s32_f32(v),
            vdupq_n_s32(i32::MIN),
        )
    }
}

impl F32x16 for Q4 {
    type I = [int32x4_t; 4];
    type M = [uint32x4_t; 4];

    ops! {
        fn zero() -> Self { Q4([vdupq_n_f32(0.0); 4]) }
        fn splat(v: f32) -> Self { Q4([vdupq_n_f32(v); 4]) }
        fn load(x: &[f32]) -> Self {
            let x = &x[..16];
            Q4([
                vld1q_f32(x.as_ptr()),
                vld1q_f32(x[4..].as_ptr()),
                vld1q_f32(x[8..].as_ptr()),
                vld1q_f32(x[12..].as_ptr()),
            ])
        }
        fn store(self: Self, y: &mut [f32]) {
            let y = &mut y[..16];
            for (q, v) in self.0.into_iter().enumerate() {
                vst1q_f32(y[4 * q..].as_mut_ptr(), v);
            }
        }
        fn add(self: Self, b: Self) -> Self { quarters!(Q4, vaddq_f32, self.0, b.0) }
        fn sub(self: Self, b: Self) -> Self { quarters!(Q4, vsubq_f32, self.0, b.0) }
        fn mul(self: Self, b: Self) -> Self { quarters!(Q4, vmulq_f32, self.0, b.0) }
        fn div(self: Self, b: Self) -> Self { quarters!(Q4, vdivq_f32, self.0, b.0) }
        fn sqrt(self: Self) -> Self { quarters!(Q4, vsqrtq_f32, self.0) }
        fn min(self: Self, b: Self) -> Self {
            quarters!(Q4, min_x86, self.0, b.0)
        }
        fn max(self: Self, b: Self) -> Self {
            quarters!(Q4, max_x86, self.0, b.0)
        }
        fn abs(self: Self) -> Self { quarters!(Q4, vabsq_f32, self.0) }
        fn neg(self: Self) -> Self { quarters!(Q4, vnegq_f32, self.0) }
        fn and(self: Self, b: Self) -> Self {
            let (a, b) = (quarters!(id, vreinterpretq_u32_f32, self.0), quarters!(id, vreinterpretq_u32_f32, b.0));
            let r = quarters!(id, vandq_u32, a, b);
            quarters!(Q4, vreinterpretq_f32_u32, r)
        }
        fn or(self: Self, b: Self) -> Self {
            let (a, b) = (quarters!(id, vreinterpretq_u32_f32, self.0), quarters!(id, vreinterpretq_u32_f32, b.0));
            let r = quarters!(id, vorrq_u32, a, b);
            quarters!(Q4, vreinterpretq_f32_u32, r)
        }
        fn reduce_max(self: Self) -> f32 {
            let v = self.0;
            vmaxvq_f32(vmaxq_f32(vmaxq_f32(v[0], v[1]), vmaxq_f32(v[2], v[3])))
        }
        fn round_even(self: Self) -> Self { quarters!(Q4, vrndnq_f32, self.0) }
        fn trunc(self: Self) -> Self { quarters!(Q4, vrndq_f32, self.0) }
        fn f16_round(self: Self) -> Self {
            let mut a = [0f32; 16];
            self.store(&mut a);
            for v in &mut a {
                *v = fp16_to_fp32(fp32_to_fp16(*v));
            }
            Self::load(&a)
        }
        fn lt(self: Self, b: Self) -> [uint32x4_t; 4] { quarters!(id, vcltq_f32, self.0, b.0) }
        fn gt(self: Self, b: Self) -> [uint32x4_t; 4] { quarters!(id, vcgtq_f32, self.0, b.0) }
        fn ge(self: Self, b: Self) -> [uint32x4_t; 4] { quarters!(id, vcgeq_f32, self.0, b.0) }
        fn eq(self: Self, b: Self) -> [uint32x4_t; 4] { quarters!(id, vceqq_f32, self.0, b.0) }
        fn ne(self: Self, b: Self) -> [uint32x4_t; 4] {
            let e = quarters!(id, vceqq_f32, self.0, b.0);
            quarters!(id, vmvnq_u32, e)
        }
        fn select(m: [uint32x4_t; 4], a: Self, b: Self) -> Self {
            quarters!(Q4, vbslq_f32, m, a.0, b.0)
        }
        fn m_and(a: [uint32x4_t; 4], b: [uint32x4_t; 4]) -> [uint32x4_t; 4] {
            quarters!(id, vandq_u32, a, b)
        }
        fn m_or(a: [uint32x4_t; 4], b: [uint32x4_t; 4]) -> [uint32x4_t; 4] {
            quarters!(id, vorrq_u32, a, b)
        }
        fn m_not(a: [uint32x4_t; 4]) -> [uint32x4_t; 4] { quarters!(id, vmvnq_u32, a) }
        fn m_any(a: [uint32x4_t; 4]) -> bool {
            vmaxvq_u32(vorrq_u32(vorrq_u32(a[0], a[1]), vorrq_u32(a[2], a[3]))) != 0
        }
        fn m_bits(a: [uint32x4_t; 4]) -> u32 {
            let bit: [u32; 4] = [1, 2, 4, 8];
            let bit = vld1q_u32(bit.as_ptr());
            let mut r = 0;
            for (q, m) in a.into_iter().enumerate() {
                r |= vaddvq_u32(vandq_u32(m, bit)) << (4 * q);
            }
            r
        }
        fn to_i32_trunc(self: Self) -> [int32x4_t; 4] {
            quarters!(id, cvtt_x86, self.0)
        }
        fn bits(self: Self) -> [int32x4_t; 4] { quarters!(id, vreinterpretq_s32_f32, self.0) }
        fn from_i32(i: [int32x4_t; 4]) -> Self { quarters!(Q4, vcvtq_f32_s32, i) }
        fn splat_i(v: i32) -> [int32x4_t; 4] { [vdupq_n_s32(v); 4] }
        fn sub_i(a: [int32x4_t; 4], b: [int32x4_t; 4]) -> [int32x4_t; 4] {
            quarters!(id, vsubq_s32, a, b)
        }
        fn and_i(a: [int32x4_t; 4], b: [int32x4_t; 4]) -> [int32x4_t; 4] {
            quarters!(id, vandq_s32, a, b)
        }
        fn min_i(a: [int32x4_t; 4], b: [int32x4_t; 4]) -> [int32x4_t; 4] {
            quarters!(id, vminq_s32, a, b)
        }
        fn max_i(a: [int32x4_t; 4], b: [int32x4_t; 4]) -> [int32x4_t; 4] {
            quarters!(id, vmaxq_s32, a, b)
        }
        fn low_byte(a: [int32x4_t; 4]) -> [int32x4_t; 4] {
            let up = quarters!(id, vshlq_n_s32::<24>, a);
            quarters!(id, vshrq_n_s32::<24>, up)
        }
    }
}
