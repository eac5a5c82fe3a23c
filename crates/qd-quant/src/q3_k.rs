//! Q3_K: 256 weights in 16 groups of 16; signed 3-bit codes, 6-bit group scales, fp16 d.
//! Layout: hmask[32], qs[64], scales[12], d (f16).

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{make_q3_quants, nearest_int};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut l[16 * j..16 * j + 16]);
        let s = scales[j].abs();
        if s > amax {
            amax = s;
            max_scale = scales[j];
        }
    }
    out.iter_mut().for_each(|b| *b = 0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut codes = [0i32; 16];
        for (c, s) in codes.iter_mut().zip(&scales) {
            *c = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as i32;
        }
        pack_scale_codes(&codes, &mut out[96..108]);
        write_f16(out, 108, 1.0 / iscale);
    } else {
        write_f16(out, 108, 0.0);
    }
    codes_and_pack(x, &mut l, out);
}

/// ORs the sixteen 6-bit group scale codes (0..=63) into a zeroed `scales[12]`: low nibbles
/// in bytes 0–7, the high two bits in 8–11.
pub(crate) fn pack_scale_codes(codes: &[i32; 16], sc: &mut [u8]) {
    for (j, &code) in codes.iter().enumerate() {
        let mut v = code;
        if j < 8 {
            sc[j] = (v & 0xF) as u8;
        } else {
            sc[j - 8] |= ((v & 0xF) << 4) as u8;
        }
        v >>= 4;
        sc[j % 4 + 8] |= (v << (2 * (j / 4))) as u8;
    }
}

/// With `scales[12]` and `d` written and `hmask` zero: the codes against that grid (the fits'
/// codes `l` kept where a group's scale is 0), packed into `hmask[32]` and `qs[64]`.
pub(crate) fn codes_and_pack(x: &[f32], l: &mut [i8; 256], out: &mut [u8]) {
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dbytes) = rest.split_at_mut(12);
    let d_all = read_f16(dbytes, 0);
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 } as i8;
        let s = (low | ((((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8)) - 32;
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    let (mut m, mut hm) = (0usize, 1u8);
    for v in l.iter_mut() {
        if *v > 3 {
            hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == 32 {
            m = 0;
            hm <<= 1;
        }
    }
    for j in (0..256).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                (l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6))
                    as u8;
        }
    }
}

/// The sixteen signed 6-bit group scales.
fn unpack_scales(sc: &[u8]) -> [i8; 16] {
    let mut aux = [
        u32::from_le_bytes([sc[0], sc[1], sc[2], sc[3]]),
        u32::from_le_bytes([sc[4], sc[5], sc[6], sc[7]]),
        u32::from_le_bytes([sc[8], sc[9], sc[10], sc[11]]),
        0,
    ];
    let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | ((tmp & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    let mut s = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().iter().enumerate() {
            s[4 * i + k] = *byte as i8;
        }
    }
    s
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let d_all = read_f16(b, 108);
    let hm = &b[0..32];
    let scales = unpack_scales(&b[96..108]);
    let mut m = 1u8;
    let mut is = 0;
    let mut out = 0;
    for n in (0..256).step_by(128) {
        let q = &b[32 + n / 4..32 + n / 4 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for k in 0..16 {
                    let idx = 16 * half + k;
                    let v = ((q[idx] >> shift) & 3) as i8 - if hm[idx] & m != 0 { 0 } else { 4 };
                    y[out] = dl * v as f32;
                    out += 1;
                }
            }
            shift += 2;
            m <<= 1;
        }
    }
}
