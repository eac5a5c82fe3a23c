//! Q8_0: 32 weights, fp16 scale `d = amax/127`, int8 codes.

use crate::fp16::{read_f16, write_f16};
use crate::helpers::c_f32_to_i8;

/// This quantizer's numbers for the kernels' fused fake-quant.
pub(crate) const FAKE: qd_kernels::fake::SymmetricGrid = qd_kernels::fake::SymmetricGrid {
    amax: true,
    div: 127.0,
    bias: 0.0,
    qmax: 127,
    off: 0,
};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(out, 0, d);
    for j in 0..32 {
        // roundf: half away from zero, as f32::round.
        out[2 + j] = c_f32_to_i8((x[j] * id).round()) as u8;
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}
