//! Q2_K: 256 weights in 16 groups of 16; 4-bit group scales and mins under fp16 super-scales.
//! Layout: scales[16], qs[64], d (f16), dmin (f16).

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{make_qkx2_quants, nearest_int};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let q4scale = 15f32;
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            3,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let (sc, rest) = out.split_at_mut(16);
    if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        write_f16(rest, 64, max_scale / q4scale);
    } else {
        sc.iter_mut().for_each(|s| *s = 0);
        write_f16(rest, 64, 0.0);
    }
    if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        write_f16(rest, 66, max_min / q4scale);
    } else {
        write_f16(rest, 66, 0.0);
    }
    codes_and_pack(x, &mut l, out);
}

/// With `scales[16]`, `d` and `dmin` written: the codes against that grid (the fits' codes
/// `l` kept where a group's scale is 0, as the reference does), packed into `qs[64]`.
pub(crate) fn codes_and_pack(x: &[f32], l: &mut [u8; 256], out: &mut [u8]) {
    let (sc, rest) = out.split_at_mut(16);
    let d_all = read_f16(rest, 64);
    let dmin = read_f16(rest, 66);
    for j in 0..16 {
        let d = d_all * (sc[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
            l[16 * j + ii] = q as u8;
        }
    }
    let qs = &mut rest[..64];
    for j in (0..256).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 80);
    let min = read_f16(b, 82);
    let scales = &b[0..16];
    let mut is = 0;
    let mut out = 0;
    for n in (0..256).step_by(128) {
        let q = &b[16 + n / 4..16 + n / 4 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for k in 0..16 {
                    y[out] = dl * ((q[16 * half + k] >> shift) & 3) as i8 as f32 - ml;
                    out += 1;
                }
            }
            shift += 2;
        }
    }
}
