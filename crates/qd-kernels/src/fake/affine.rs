//! The affine K-quant fake-quants (Q4_K, Q5_K) sixteen sub-blocks at a time: ggml's
//! `make_qkx2_quants` fit of each 32-value sub-block, one sub-block per lane, then the codes
//! against the grid the caller stores (6-bit multiples of fp16 super-scales: the caller's
//! format knowledge, passed in as a [`StoredGrid`]).
//!
//! This file is the scalar oracle and the portable level: each lane runs the reference's scalar
//! algorithm on its own sub-block — every sum in the same sequential order, branches turned into
//! per-lane selects — so the results are the reference's bits while the compiler vectorises
//! across lanes. `affine_simd.rs` is the same fit in [`F32x16`](super::vector::F32x16)
//! operations for the SIMD levels.

use crate::rounding::nearest_int;

pub(crate) const LANES: usize = 16;
pub(crate) type V = [f32; LANES];

/// What a K-quant type fixes of `make_qkx2_quants`'s search: the largest code, where the
/// scale search starts (`rmin`, with ggml's `rdelta = 0.1`) and how many steps it tries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineSearch {
    pub nmax: i32,
    pub rmin: f32,
    pub nstep: i32,
}

/// ggml's `rdelta` for both K-quant searches.
pub(crate) const RDELTA: f32 = 0.1;

/// The grid a format stores for one 256-value super-block: given the 8 sub-blocks' fitted
/// scales and (negated) minimums, the `(d, m)` each sub-block dequantizes with (`d·code − m`),
/// after the format's packing.
pub trait StoredGrid: Fn(&[f32], &[f32]) -> [(f32, f32); 8] + Sync {}
impl<G: Fn(&[f32], &[f32]) -> [(f32, f32); 8] + Sync> StoredGrid for G {}

/// Lane `k` fits sub-block `k`: `xs[i][k]` is its `i`-th value. Returns (scale, the_min) per
/// lane and writes each lane's codes to `l[i][k]`.
#[allow(clippy::needless_range_loop)]
fn qkx2_lanes(xs: &[V; 32], ws: &[V; 32], search: AffineSearch, l: &mut [V; 32]) -> (V, V) {
    let AffineSearch { nmax, rmin, nstep } = search;
    let mut min = xs[0];
    let mut max = xs[0];
    let mut sum_w = ws[0];
    let mut sum_x = [0f32; LANES];
    for k in 0..LANES {
        sum_x[k] = sum_w[k] * xs[0][k];
    }
    for i in 1..32 {
        for k in 0..LANES {
            let x = xs[i][k];
            if x < min[k] {
                min[k] = x;
            }
            if x > max[k] {
                max[k] = x;
            }
            let w = ws[i][k];
            sum_w[k] += w;
            sum_x[k] += w * x;
        }
    }
    let nmaxf = nmax as f32;
    let mut flat = [false; LANES];
    let mut iscale = [0f32; LANES];
    let mut scale = [0f32; LANES];
    let mut best = [0f32; LANES];
    for k in 0..LANES {
        if min[k] > 0.0 {
            min[k] = 0.0;
        }
        flat[k] = max[k] == min[k];
        iscale[k] = nmaxf / (max[k] - min[k]);
        scale[k] = 1.0 / iscale[k];
    }
    for i in 0..32 {
        for k in 0..LANES {
            let q = nearest_int(iscale[k] * (xs[i][k] - min[k])).clamp(0, nmax) as f32;
            l[i][k] = q;
            let diff = scale[k] * q + min[k] - xs[i][k];
            best[k] += ws[i][k] * (diff * diff);
        }
    }
    let mut laux = [[0f32; LANES]; 32];
    for is in 0..=nstep {
        let mut sum_l = [0f32; LANES];
        let mut sum_l2 = [0f32; LANES];
        let mut sum_xl = [0f32; LANES];
        for k in 0..LANES {
            iscale[k] = (rmin + RDELTA * is as f32 + nmaxf) / (max[k] - min[k]);
        }
        for i in 0..32 {
            for k in 0..LANES {
                let lf = nearest_int(iscale[k] * (xs[i][k] - min[k])).clamp(0, nmax) as f32;
                laux[i][k] = lf;
                let w = ws[i][k];
                sum_l[k] += w * lf;
                sum_l2[k] += w * lf * lf;
                sum_xl[k] += w * lf * xs[i][k];
            }
        }
        let mut this_scale = [0f32; LANES];
        let mut this_min = [0f32; LANES];
        let mut take = [false; LANES];
        let mut cur = [0f32; LANES];
        for k in 0..LANES {
            let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            take[k] = d > 0.0;
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
            if this_min[k] > 0.0 {
                this_min[k] = 0.0;
                this_scale[k] = sum_xl[k] / sum_l2[k];
            }
        }
        for i in 0..32 {
            for k in 0..LANES {
                let diff = this_scale[k] * laux[i][k] + this_min[k] - xs[i][k];
                cur[k] += ws[i][k] * (diff * diff);
            }
        }
        for k in 0..LANES {
            take[k] &= cur[k] < best[k];
        }
        for i in 0..32 {
            for k in 0..LANES {
                l[i][k] = if take[k] { laux[i][k] } else { l[i][k] };
            }
        }
        for k in 0..LANES {
            if take[k] {
                best[k] = cur[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
    }
    let mut the_min = [0f32; LANES];
    for k in 0..LANES {
        if flat[k] {
            scale[k] = 0.0;
            for row in l.iter_mut() {
                row[k] = 0.0;
            }
        }
        the_min[k] = -min[k];
    }
    (scale, the_min)
}

/// The reference's importance weights for a 32-value sub-block: `rms(x) + |x_i|` (qd-quant's
/// Q4_K/Q5_K quantizers use it too).
pub fn sub_block_weights(xs: &[f32], weights: &mut [f32]) {
    let mut sum_x2 = 0f32;
    for &v in xs {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    for (w, v) in weights.iter_mut().zip(xs) {
        *w = av_x + v.abs();
    }
}

/// Fake-quant of `2·S` consecutive super-blocks (`x.len() == y.len() == 512·S`) at the scalar
/// level: `S` sets of 16 sub-blocks fitted lane-wise, then each super-block's codes recomputed
/// against `grid` (the fit's codes kept where a stored scale is 0, as the reference does) and
/// dequantized.
pub(crate) fn scalar<const S: usize>(
    x: &[f32],
    y: &mut [f32],
    search: AffineSearch,
    grid: &impl StoredGrid,
) {
    assert!(x.len() == 512 * S && y.len() == x.len());
    let mut xs = [[0f32; LANES]; 32];
    let mut ws = [[0f32; LANES]; 32];
    let mut w = [0f32; 32];
    for (xset, yset) in x.chunks_exact(512).zip(y.chunks_exact_mut(512)) {
        for k in 0..LANES {
            let sub = &xset[32 * k..32 * k + 32];
            sub_block_weights(sub, &mut w);
            for i in 0..32 {
                xs[i][k] = sub[i];
                ws[i][k] = w[i];
            }
        }
        let mut l = [[0f32; LANES]; 32];
        let (scales, mins) = qkx2_lanes(&xs, &ws, search, &mut l);
        for h in 0..2 {
            let sc = grid(&scales[8 * h..8 * h + 8], &mins[8 * h..8 * h + 8]);
            for (j, (d, m)) in sc.into_iter().enumerate() {
                let k = 8 * h + j;
                for i in 0..32 {
                    let v = xset[32 * k + i];
                    let q = if d == 0.0 {
                        l[i][k]
                    } else {
                        nearest_int((v + m) / d).clamp(0, search.nmax) as f32
                    };
                    yset[32 * k + i] = d * q - m;
                }
            }
        }
    }
}
