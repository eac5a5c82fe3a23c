//! Q6_K: 256 weights in 16 groups of 16; signed 6-bit codes, int8 group scales, fp16 d.
//! Layout: ql[128], qh[64], scales[16] (i8), d (f16).

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{make_qx_quants, nearest_int, GROUP_MAX_EPS};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    quantize_block_weighted(x, None, out)
}

/// `quantize_row_q6_K_impl` for one super-block: the group searches weighted by the importance
/// matrix's `qw` as they are (Q6_K alone does not mix in `sigma2`), or by `x²` without one.
pub fn quantize_block_weighted(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let qw = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let s = make_qx_quants(
            &x[16 * ib..16 * ib + 16],
            32,
            &mut l[16 * ib..16 * ib + 16],
            qw,
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    out.iter_mut().for_each(|b| *b = 0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    write_f16(out, 208, 1.0 / iscale);
    let d_all = read_f16(out, 208);
    for ib in 0..16 {
        out[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * (out[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (c, j) in (0..256).step_by(128).enumerate() {
        for k in 0..32 {
            let q1 = l[j + k] as u8 & 0xF;
            let q2 = l[j + k + 32] as u8 & 0xF;
            let q3 = l[j + k + 64] as u8 & 0xF;
            let q4 = l[j + k + 96] as u8 & 0xF;
            out[64 * c + k] = q1 | (q3 << 4);
            out[64 * c + k + 32] = q2 | (q4 << 4);
            out[128 + 32 * c + k] = (l[j + k] as u8 >> 4)
                | ((l[j + k + 32] as u8 >> 4) << 2)
                | ((l[j + k + 64] as u8 >> 4) << 4)
                | ((l[j + k + 96] as u8 >> 4) << 6);
        }
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 208);
    for c in 0..2 {
        let ql = &b[64 * c..64 * c + 64];
        let qh = &b[128 + 32 * c..128 + 32 * c + 32];
        let sc = &b[192 + 8 * c..192 + 8 * c + 8];
        let y = &mut y[128 * c..128 * c + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
