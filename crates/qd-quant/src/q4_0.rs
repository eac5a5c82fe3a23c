//! Q4_0: 32 weights, one fp16 scale `d = max/−8` (signed max), 4-bit codes `q − 8`.

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{c_f32_to_i8, signed_abs_max};

/// This quantizer's numbers for the kernels' fused fake-quant.
pub(crate) const FAKE: qd_kernels::fake::SymmetricGrid = qd_kernels::fake::SymmetricGrid {
    amax: false,
    div: -8.0,
    bias: 8.5,
    qmax: 15,
    off: 8,
};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let (_, max) = signed_abs_max(x);
    let d = max / -8.0;
    // The inverse is taken of the f32 scale, not of its fp16 rounding.
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(out, 0, d);
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let xi0 = c_f32_to_i8(x0 + 8.5).min(15) as u8;
        let xi1 = c_f32_to_i8(x1 + 8.5).min(15) as u8;
        out[2 + j] = xi0 | (xi1 << 4);
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}
