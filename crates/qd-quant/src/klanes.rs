//! `make_qkx2_quants` on 16 sub-blocks at once, one per SIMD lane, for the Q4_K/Q5_K
//! fake-quant. Each lane runs the reference's scalar algorithm on its own sub-block — every sum
//! in the same sequential order, branches turned into per-lane selects — so the results are
//! bit-identical to the scalar port while the compiler vectorises across lanes. On CPUs with
//! AVX-512 `fake_affine_pairs` hands the whole op to `klanes_avx512`; this is the fallback.

use crate::helpers::nearest_int;
use crate::kscales::{pack_affine, sub_block_weights, AffineSearch};

const LANES: usize = 16;
type V = [f32; LANES];

#[inline(always)]
fn splat(v: f32) -> V {
    [v; LANES]
}

/// Lane `k` fits sub-block `k`: `xs[i][k]` is its `i`-th value. Returns (scale, the_min) per
/// lane and writes each lane's codes to `l[i][k]`.
#[allow(clippy::needless_range_loop)]
fn qkx2_lanes(
    xs: &[V; 32],
    ws: &[V; 32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [V; 32],
) -> (V, V) {
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
        let mut sum_l = splat(0.0);
        let mut sum_l2 = splat(0.0);
        let mut sum_xl = splat(0.0);
        for k in 0..LANES {
            iscale[k] = (rmin + rdelta * is as f32 + nmaxf) / (max[k] - min[k]);
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
        let mut cur = splat(0.0);
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

/// Fake-quant of two consecutive 256-value super-blocks (`x.len() == 512`) of Q4_K
/// ([`Q4_K_SEARCH`](crate::kscales::Q4_K_SEARCH)) or Q5_K
/// ([`Q5_K_SEARCH`](crate::kscales::Q5_K_SEARCH)).
pub fn fake_affine_pair(x: &[f32], y: &mut [f32], search: AffineSearch) {
    fake_affine_pairs::<1>(x, y, search);
}

/// As [`fake_affine_pair`] on `S` consecutive pairs (`x.len() == 512·S`), searched together.
pub fn fake_affine_pairs<const S: usize>(x: &[f32], y: &mut [f32], search: AffineSearch) {
    let AffineSearch { nmax, rmin, nstep } = search;
    assert!(x.len() == 512 * S && y.len() == x.len());
    #[cfg(target_arch = "x86_64")]
    if crate::avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked at run time); lengths asserted above.
        return unsafe { crate::klanes_avx512::fake_affine_sets::<S>(x, y, nmax, rmin, nstep) };
    }
    let mut xs = [[[0f32; LANES]; 32]; S];
    let mut ws = [[[0f32; LANES]; 32]; S];
    let mut w = [0f32; 32];
    for s in 0..S {
        for k in 0..LANES {
            let sub = &x[512 * s + 32 * k..512 * s + 32 * k + 32];
            sub_block_weights(sub, &mut w);
            for i in 0..32 {
                xs[s][i][k] = sub[i];
                ws[s][i][k] = w[i];
            }
        }
    }
    let mut lanes_l = [[[0f32; LANES]; 32]; S];
    let fits = portable::<S>(&xs, &ws, nmax, rmin, nstep, &mut lanes_l);
    for s in 0..S {
        let (scales, mins) = &fits[s];
        for h in 0..2 {
            let xb = &x[512 * s + 256 * h..512 * s + 256 * h + 256];
            let mut l = [0u8; 256];
            for j in 0..8 {
                for i in 0..32 {
                    l[32 * j + i] = lanes_l[s][i][8 * h + j] as u8;
                }
            }
            let mut head = [0u8; 16];
            pack_affine(
                xb,
                &scales[8 * h..8 * h + 8],
                &mins[8 * h..8 * h + 8],
                &mut head,
                &mut l,
                nmax,
            );
            let sc = crate::kscales::sub_scales(&head);
            for j in 0..8 {
                let (d, m) = sc[j];
                for i in 0..32 {
                    y[512 * s + 256 * h + 32 * j + i] = d * l[32 * j + i] as f32 - m;
                }
            }
        }
    }
}

fn portable<const S: usize>(
    xs: &[[V; 32]; S],
    ws: &[[V; 32]; S],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [[V; 32]; S],
) -> [(V, V); S] {
    std::array::from_fn(|s| qkx2_lanes(&xs[s], &ws[s], nmax, rmin, 0.1, nstep, &mut l[s]))
}
