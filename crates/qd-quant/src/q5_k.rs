//! Q5_K: as Q4_K with a fifth bit per weight in `qh`.
//! Layout: d (f16), dmin (f16), scales[12], qh[32], qs[128].

use crate::kscales::{quantize_affine, sub_scales, Q5_K_SEARCH};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    quantize_affine(x, &mut out[..16], &mut l, Q5_K_SEARCH);
    pack_codes(&l, out);
}

/// Writes the 5-bit codes `l` into a block's `qh[32]` and `qs[128]` (after its 16-byte head).
pub(crate) fn pack_codes(l: &[u8; 256], out: &mut [u8]) {
    let (qh, ql) = out[16..176].split_at_mut(32);
    qh.iter_mut().for_each(|b| *b = 0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (c, n) in (0..256).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * c + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let s = sub_scales(b);
    let qh = &b[16..48];
    let (mut u1, mut u2) = (1u8, 2u8);
    for c in 0..4 {
        let ql = &b[48 + 32 * c..48 + 32 * c + 32];
        let (d1, m1) = s[2 * c];
        let (d2, m2) = s[2 * c + 1];
        for k in 0..32 {
            let h1 = if qh[k] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[k] & u2 != 0 { 16 } else { 0 };
            y[64 * c + k] = d1 * ((ql[k] & 0xF) + h1) as f32 - m1;
            y[64 * c + 32 + k] = d2 * ((ql[k] >> 4) + h2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}
