//! Q5_0: 32 weights, fp16 scale `d = max/−16`, 5-bit codes `q − 16` (high bits in `qh`).

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{c_f32_to_i8, signed_abs_max};

/// This quantizer's numbers for the kernels' fused fake-quant.
pub(crate) const FAKE: qd_kernels::fake::SymmetricGrid = qd_kernels::fake::SymmetricGrid {
    amax: false,
    div: -16.0,
    bias: 16.5,
    qmax: 31,
    off: 16,
};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let (_, max) = signed_abs_max(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(out, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let xi0 = c_f32_to_i8(x0 + 16.5).min(31) as u8;
        let xi1 = c_f32_to_i8(x1 + 16.5).min(31) as u8;
        out[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as i32;
        let xh1 = ((qh >> (j + 12)) & 0x10) as i32;
        let q = b[6 + j];
        y[j] = (((q & 0x0F) as i32 | xh0) - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as i32 | xh1) - 16) as f32 * d;
    }
}
