//! The shared front half of Q4_K and Q5_K: per-32 affine fits by `make_qkx2_quants`, packed as
//! 6-bit scales and mins under fp16 `d`/`dmin`, then codes recomputed against the stored grid.

use crate::fp16::{read_f16, write_f16};
use crate::helpers::{get_scale_min_k4, make_qkx2_quants, nearest_int};
pub use qd_kernels::fake::affine::sub_block_weights;

/// What a K-quant type fixes of `make_qkx2_quants`'s search (the kernels' type: the SIMD
/// fake-quant runs the same search).
pub use qd_kernels::fake::AffineSearch;

/// Q4_K's search: codes 0..=15, `make_qkx2_quants(32, 15, …, -1.f, 0.1f, 20, false)`.
pub const Q4_K_SEARCH: AffineSearch = AffineSearch {
    nmax: 15,
    rmin: -1.0,
    nstep: 20,
};

/// Q5_K's search: codes 0..=31, `make_qkx2_quants(32, 31, …, -0.5f, 0.1f, 15, false)`.
pub const Q5_K_SEARCH: AffineSearch = AffineSearch {
    nmax: 31,
    rmin: -0.5,
    nstep: 15,
};

/// Writes `d, dmin, scales[12]` into `head[0..16]` and the codes (0..=nmax) into `l`.
pub fn quantize_affine(x: &[f32], head: &mut [u8], l: &mut [u8; 256], search: AffineSearch) {
    let AffineSearch { nmax, rmin, nstep } = search;
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        sub_block_weights(xs, &mut weights);
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            nmax,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    pack_affine(x, &scales, &mins, head, l, nmax);
}

/// Packs the sub-block fits and recomputes the codes against the stored grid; `l` holds the
/// fits' codes on entry (kept where a stored scale is 0, as the reference does).
pub fn pack_affine(
    x: &[f32],
    scales: &[f32],
    mins: &[f32],
    head: &mut [u8],
    l: &mut [u8; 256],
    nmax: i32,
) {
    pack_head(scales, mins, head);
    codes_on_grid(x, head, l, nmax);
}

/// The codes of `x` against the grid a written `head` (`d, dmin, scales[12]`) stores; codes of
/// sub-blocks whose stored scale is 0 are left as they are.
pub fn codes_on_grid(x: &[f32], head: &[u8], l: &mut [u8; 256], nmax: i32) {
    let d_all = read_f16(head, 0);
    let dmin = read_f16(head, 2);
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, &head[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Packs the 8 sub-blocks' 6-bit scale codes `ls` and min codes `lm` into `scales[12]`.
pub fn pack_scale_codes(ls: &[u8; 8], lm: &[u8; 8], sc: &mut [u8]) {
    sc.iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
}

/// Writes `d, dmin, scales[12]` into `head[0..16]`: the 8 sub-block fits as 6-bit multiples
/// of two fp16 super-scales.
pub fn pack_head(scales: &[f32], mins: &[f32], head: &mut [u8]) {
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    pack_scale_codes(&ls, &lm, &mut head[4..16]);
    write_f16(head, 0, max_scale / 63.0);
    write_f16(head, 2, max_min / 63.0);
}

/// The grid Q4_K/Q5_K store for a super-block's 8 fits: what the kernels' fake-quant
/// ([`qd_kernels::fake::StoredGrid`]) recomputes codes against.
pub fn stored_grid(scales: &[f32], mins: &[f32]) -> [(f32, f32); 8] {
    let mut head = [0u8; 16];
    pack_head(scales, mins, &mut head);
    sub_scales(&head)
}

/// `(d·scale, dmin·min)` of each of the 8 sub-blocks.
pub fn sub_scales(head: &[u8]) -> [(f32, f32); 8] {
    let d = read_f16(head, 0);
    let min = read_f16(head, 2);
    let mut r = [(0.0, 0.0); 8];
    for (j, slot) in r.iter_mut().enumerate() {
        let (s, m) = get_scale_min_k4(j, &head[4..16]);
        *slot = (d * s as f32, min * m as f32);
    }
    r
}
