//! `make_qkx2_quants` on 16 sub-blocks at once, one per SIMD lane, for the Q4_K/Q5_K
//! fake-quant. Each lane runs the reference's scalar algorithm on its own sub-block — every sum
//! in the same sequential order, branches turned into per-lane selects — so the results are
//! bit-identical to the scalar port while the compiler vectorises across lanes.

use crate::helpers::nearest_int;
use crate::kscales::{pack_affine, sub_block_weights};

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
/// (`nmax = 15, rmin = −1, nstep = 20`) or Q5_K (`31, −0.5, 15`).
pub fn fake_affine_pair(x: &[f32], y: &mut [f32], nmax: i32, rmin: f32, nstep: i32) {
    fake_affine_pairs::<1>(x, y, nmax, rmin, nstep);
}

/// As [`fake_affine_pair`] on `S` consecutive pairs (`x.len() == 512·S`), searched together.
pub fn fake_affine_pairs<const S: usize>(
    x: &[f32],
    y: &mut [f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) {
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
    #[cfg(target_arch = "x86_64")]
    let fits = if crate::avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked at run time).
        unsafe { qkx2_lanes_avx512::<S>(&xs, &ws, nmax, rmin, 0.1, nstep, &mut lanes_l) }
    } else {
        portable::<S>(&xs, &ws, nmax, rmin, nstep, &mut lanes_l)
    };
    #[cfg(not(target_arch = "x86_64"))]
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

/// [`qkx2_lanes`] with explicit AVX-512 on `S` independent sets of 16 sub-blocks: one register
/// per value index and set, every operation the scalar reference's, in its order (no fused
/// multiply-adds). 1.9× the compiler's auto-vectorised portable code, which ran half-width with
/// spills. Interleaving two sets (`S = 2`) to hide the sequential sums' latency measured no
/// faster, so the callers use one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn qkx2_lanes_avx512<const S: usize>(
    xs: &[[V; 32]; S],
    ws: &[[V; 32]; S],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [[V; 32]; S],
) -> [(V, V); S] {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    let nmaxf = _mm512_set1_ps(nmax as f32);
    // nearest_int(v).clamp(0, nmax) as f32. The reference's magic-number rounding is
    // round-half-even for |v| < 2^22, which these products never leave (at most about nmax + 1;
    // NaN, from a flat sub-block's infinite scale, clamps to 0 either way).
    let code = |v: __m512| {
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        _mm512_min_ps(_mm512_max_ps(r, zero), nmaxf)
    };
    let mut x = [[zero; 32]; S];
    let mut w = [[zero; 32]; S];
    for s in 0..S {
        for i in 0..32 {
            x[s][i] = _mm512_loadu_ps(xs[s][i].as_ptr());
            w[s][i] = _mm512_loadu_ps(ws[s][i].as_ptr());
        }
    }
    let mut min = [zero; S];
    let mut max = [zero; S];
    let mut sum_w = [zero; S];
    let mut sum_x = [zero; S];
    let mut flat = [0u16; S];
    let mut scale = [zero; S];
    let mut best = [zero; S];
    let mut lv = [[zero; 32]; S];
    for s in 0..S {
        min[s] = x[s][0];
        max[s] = x[s][0];
        sum_w[s] = w[s][0];
        sum_x[s] = _mm512_mul_ps(sum_w[s], x[s][0]);
        for i in 1..32 {
            min[s] = _mm512_min_ps(x[s][i], min[s]);
            max[s] = _mm512_max_ps(x[s][i], max[s]);
            sum_w[s] = _mm512_add_ps(sum_w[s], w[s][i]);
            sum_x[s] = _mm512_add_ps(sum_x[s], _mm512_mul_ps(w[s][i], x[s][i]));
        }
        min[s] = _mm512_mask_mov_ps(min[s], _mm512_cmp_ps_mask::<_CMP_GT_OQ>(min[s], zero), zero);
        flat[s] = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max[s], min[s]);
        let iscale = _mm512_div_ps(nmaxf, _mm512_sub_ps(max[s], min[s]));
        scale[s] = _mm512_div_ps(_mm512_set1_ps(1.0), iscale);
        for i in 0..32 {
            let q = code(_mm512_mul_ps(iscale, _mm512_sub_ps(x[s][i], min[s])));
            lv[s][i] = q;
            let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale[s], q), min[s]), x[s][i]);
            best[s] = _mm512_add_ps(best[s], _mm512_mul_ps(w[s][i], _mm512_mul_ps(diff, diff)));
        }
    }
    let mut laux = [[zero; 32]; S];
    for is in 0..=nstep {
        let num = _mm512_set1_ps(rmin + rdelta * is as f32 + nmax as f32);
        // `min` moves when a candidate wins, as in the reference.
        let mut iscale = [zero; S];
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; S], [zero; S], [zero; S]);
        for s in 0..S {
            iscale[s] = _mm512_div_ps(num, _mm512_sub_ps(max[s], min[s]));
        }
        for i in 0..32 {
            for s in 0..S {
                let lf = code(_mm512_mul_ps(iscale[s], _mm512_sub_ps(x[s][i], min[s])));
                laux[s][i] = lf;
                let wl = _mm512_mul_ps(w[s][i], lf);
                sum_l[s] = _mm512_add_ps(sum_l[s], wl);
                sum_l2[s] = _mm512_add_ps(sum_l2[s], _mm512_mul_ps(wl, lf));
                sum_xl[s] = _mm512_add_ps(sum_xl[s], _mm512_mul_ps(wl, x[s][i]));
            }
        }
        let mut take = [0u16; S];
        let mut this_scale = [zero; S];
        let mut this_min = [zero; S];
        for s in 0..S {
            let d = _mm512_sub_ps(
                _mm512_mul_ps(sum_w[s], sum_l2[s]),
                _mm512_mul_ps(sum_l[s], sum_l[s]),
            );
            take[s] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, zero);
            this_scale[s] = _mm512_div_ps(
                _mm512_sub_ps(
                    _mm512_mul_ps(sum_w[s], sum_xl[s]),
                    _mm512_mul_ps(sum_x[s], sum_l[s]),
                ),
                d,
            );
            this_min[s] = _mm512_div_ps(
                _mm512_sub_ps(
                    _mm512_mul_ps(sum_l2[s], sum_x[s]),
                    _mm512_mul_ps(sum_l[s], sum_xl[s]),
                ),
                d,
            );
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(this_min[s], zero);
            this_min[s] = _mm512_mask_mov_ps(this_min[s], pos, zero);
            this_scale[s] =
                _mm512_mask_mov_ps(this_scale[s], pos, _mm512_div_ps(sum_xl[s], sum_l2[s]));
        }
        let mut cur = [zero; S];
        for i in 0..32 {
            for s in 0..S {
                let diff = _mm512_sub_ps(
                    _mm512_add_ps(_mm512_mul_ps(this_scale[s], laux[s][i]), this_min[s]),
                    x[s][i],
                );
                cur[s] = _mm512_add_ps(cur[s], _mm512_mul_ps(w[s][i], _mm512_mul_ps(diff, diff)));
            }
        }
        for s in 0..S {
            take[s] &= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(cur[s], best[s]);
            for i in 0..32 {
                lv[s][i] = _mm512_mask_mov_ps(lv[s][i], take[s], laux[s][i]);
            }
            best[s] = _mm512_mask_mov_ps(best[s], take[s], cur[s]);
            scale[s] = _mm512_mask_mov_ps(scale[s], take[s], this_scale[s]);
            min[s] = _mm512_mask_mov_ps(min[s], take[s], this_min[s]);
        }
    }
    let mut out = [([0f32; LANES], [0f32; LANES]); S];
    for s in 0..S {
        let sc = _mm512_mask_mov_ps(scale[s], flat[s], zero);
        for i in 0..32 {
            _mm512_storeu_ps(
                l[s][i].as_mut_ptr(),
                _mm512_mask_mov_ps(lv[s][i], flat[s], zero),
            );
        }
        _mm512_storeu_ps(out[s].0.as_mut_ptr(), sc);
        // −min as a sign flip (−0 for 0), as the scalar code negates.
        let neg = _mm512_xor_si512(_mm512_castps_si512(min[s]), _mm512_set1_epi32(i32::MIN));
        _mm512_storeu_ps(out[s].1.as_mut_ptr(), _mm512_castsi512_ps(neg));
    }
    out
}
