//! Q4_K: 256 weights in 8 groups of 32; affine 4-bit codes with 6-bit scales and mins.
//! Layout: d (f16), dmin (f16), scales[12], qs[128].

use crate::kscales::{quantize_affine, sub_scales, Q4_K_SEARCH};

pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    quantize_affine(x, &mut out[..16], &mut l, Q4_K_SEARCH);
    pack_codes(&l, out);
}

/// Writes the 4-bit codes `l` into a block's `qs[128]` (after its 16-byte head).
pub(crate) fn pack_codes(l: &[u8; 256], out: &mut [u8]) {
    let qs = &mut out[16..144];
    for (c, j) in (0..256).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * c + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

pub fn dequantize_block(b: &[u8], y: &mut [f32]) {
    let s = sub_scales(b);
    for c in 0..4 {
        let q = &b[16 + 32 * c..16 + 32 * c + 32];
        let (d1, m1) = s[2 * c];
        let (d2, m2) = s[2 * c + 1];
        for k in 0..32 {
            y[64 * c + k] = d1 * (q[k] & 0xF) as f32 - m1;
            y[64 * c + 32 + k] = d2 * (q[k] >> 4) as f32 - m2;
        }
    }
}
