//! Q4_1: 32 weights, fp16 scale and min, 4-bit codes.

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{c_f32_to_i8, min_max};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(out, 0, d);
    write_f16(out, 2, min);
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let xi0 = c_f32_to_i8(x0 + 0.5).min(15) as u8;
        let xi1 = c_f32_to_i8(x1 + 0.5).min(15) as u8;
        out[4 + j] = xi0 | (xi1 << 4);
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let m = read_f16(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}
