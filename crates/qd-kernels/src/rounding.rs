//! ggml's two scalar roundings that its quantizers and fake-quants depend on bit for bit; the
//! SIMD fake-quant levels reproduce exactly these.

/// Round to nearest via the 1.5·2^23 trick (ties to even), as ggml's `nearest_int`. Outside
/// |v| < 2^22 (and for infinities and NaN) the result is the trick's, not true rounding.
#[inline]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// C's `(int8_t)(float)` as x86-64 GCC compiles it: `cvttss2si` to 32 bits, then the low byte.
/// Out-of-range, infinite and NaN inputs give the "integer indefinite" 0x80000000, whose low
/// byte is 0 — not Rust's saturating `as i8`. This matters when `1/d` overflows to infinity
/// for blocks of subnormal values.
#[inline(always)]
pub fn c_f32_to_i8(x: f32) -> i8 {
    if x > -2_147_483_648.0 && x < 2_147_483_648.0 {
        (x as i32) as i8
    } else {
        0
    }
}
