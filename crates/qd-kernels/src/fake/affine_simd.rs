//! [`affine`](super::affine)'s sixteen-lane `make_qkx2_quants` in [`F32x16`] operations, on `S`
//! independent sets of 16 sub-blocks (one vector per value index and set), for every SIMD level.
//! Every floating-point operation is the scalar oracle's, in its order and without fused
//! multiply-adds, so the results are bit-identical; what it saves are operations whose result
//! is known:
//!
//! - the clamps `max(·, 0)` / `min(·, nmax)`: a code `iscale·(x − min)` is ≥ 0 while `min` is
//!   at most the data's minimum, and ≤ nmax while the candidate's numerator is ≤ nmax (since
//!   `fl(x − min) ≤ fl(max − min)` and `iscale = fl(num / fl(max − min))`);
//! - `x − min`, kept until a candidate moves `min`;
//! - copying the winning codes: the winner's `(iscale, min)` are kept instead and its codes
//!   recomputed once at the end (the same operations, so the same codes).
//!
//! Where a lane's `iscale` is not a finite positive number (a non-flat range so small that
//! `num / range` overflows, or an infinite range) the reference's magic-number `nearest_int`
//! differs from true rounding; such candidates take the exact integer path.

use super::affine::{AffineSearch, StoredGrid, LANES, RDELTA};
use super::vector::{code_exact, F32x16};

/// One candidate's codes (into `laux`) and weighted sums over `S` sets; `LO`/`HI` add the
/// clamps, `EXACT` uses [`code_exact`] instead of rounding.
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn candidate_sums<
    V: F32x16,
    const S: usize,
    const LO: bool,
    const HI: bool,
    const EXACT: bool,
>(
    iscale: &[V; S],
    xm: &[[V; 32]; S],
    x: &[[V; 32]; S],
    w: &[[V; 32]; S],
    laux: &mut [[V; 32]; S],
    nmaxf: V,
    nmaxi: V::I,
) -> ([V; S], [V; S], [V; S]) {
    // SAFETY: the caller's contract.
    unsafe {
        let zero = V::zero();
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; S], [zero; S], [zero; S]);
        for i in 0..32 {
            for s in 0..S {
                let t = iscale[s].mul(xm[s][i]);
                let lf = if EXACT {
                    code_exact(t, nmaxi)
                } else {
                    let mut r = t.round_even();
                    if LO {
                        r = r.max(zero);
                    }
                    if HI {
                        r = r.min(nmaxf);
                    }
                    r
                };
                laux[s][i] = lf;
                let wl = w[s][i].mul(lf);
                sum_l[s] = sum_l[s].add(wl);
                sum_l2[s] = sum_l2[s].add(wl.mul(lf));
                sum_xl[s] = sum_xl[s].add(wl.mul(x[s][i]));
            }
        }
        (sum_l, sum_l2, sum_xl)
    }
}

/// The fit's state per set: what the search keeps between candidates.
#[derive(Clone, Copy)]
struct Fit<V: F32x16> {
    data_min: V,
    max: V,
    min: V,
    sum_w: V,
    sum_x: V,
    flat: V::M,
    scale: V,
    best: V,
    /// The grid the best codes so far came from.
    used_iscale: V,
    used_min: V,
}

/// The first candidate (the range's own grid) of one set; `xm` gets `x − min`.
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
unsafe fn first_fit<V: F32x16>(x: &[V; 32], w: &[V; 32], nmax: i32, xm: &mut [V; 32]) -> Fit<V> {
    // SAFETY: the caller's contract.
    unsafe {
        let zero = V::zero();
        let nmaxi = V::splat_i(nmax);
        let (mut data_min, mut max, mut sum_w) = (x[0], x[0], w[0]);
        let mut sum_x = sum_w.mul(x[0]);
        for i in 1..32 {
            data_min = x[i].min(data_min);
            max = x[i].max(max);
            sum_w = sum_w.add(w[i]);
            sum_x = sum_x.add(w[i].mul(x[i]));
        }
        let min = V::select(data_min.gt(zero), zero, data_min);
        let flat = max.eq(min);
        let iscale = V::splat(nmax as f32).div(max.sub(min));
        let scale = V::splat(1.0).div(iscale);
        let mut best = zero;
        for i in 0..32 {
            xm[i] = x[i].sub(min);
            let q = code_exact(iscale.mul(xm[i]), nmaxi);
            let diff = scale.mul(q).add(min).sub(x[i]);
            best = best.add(w[i].mul(diff.mul(diff)));
        }
        Fit {
            data_min,
            max,
            min,
            sum_w,
            sum_x,
            flat,
            scale,
            best,
            used_iscale: iscale,
            used_min: min,
        }
    }
}

/// Lane `k` of set `s` fits sub-block `xs[s][·][k]` with weights `ws[s][·][k]`; returns
/// `(scale, the_min)` per lane and writes the codes to `l`.
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn qkx2_lanes<V: F32x16, const S: usize>(
    x: &[[V; 32]; S],
    w: &[[V; 32]; S],
    search: AffineSearch,
    l: &mut [[V; 32]; S],
) -> [(V, V); S] {
    // SAFETY: the caller's contract.
    unsafe {
        let AffineSearch { nmax, rmin, nstep } = search;
        let zero = V::zero();
        let nmaxf = V::splat(nmax as f32);
        let nmaxi = V::splat_i(nmax);
        let inf = V::splat(f32::INFINITY);
        let mut xm = [[zero; 32]; S];
        // No closures here: a closure does not inherit the entry point's target features, so
        // the vector operations inside it would not inline.
        let mut fit: [Fit<V>; S] = [first_fit(&x[0], &w[0], nmax, &mut xm[0]); S];
        for s in 1..S {
            fit[s] = first_fit(&x[s], &w[s], nmax, &mut xm[s]);
        }
        let mut laux = [[zero; 32]; S];
        for is in 0..=nstep {
            let numf = rmin + RDELTA * is as f32 + nmax as f32;
            let num = V::splat(numf);
            let hi = numf > nmax as f32;
            let (mut lo, mut exact) = (false, false);
            let mut iscale = [zero; S];
            for s in 0..S {
                let f = &fit[s];
                iscale[s] = num.div(f.max.sub(f.min));
                lo |= V::m_any(f.data_min.lt(f.min));
                let finite_pos = V::m_and(iscale[s].lt(inf), iscale[s].gt(zero));
                exact |= V::m_any(V::m_not(V::m_or(finite_pos, f.flat)));
            }
            let a = (&iscale, &xm, x, w, &mut laux, nmaxf, nmaxi);
            let (sum_l, sum_l2, sum_xl) = match (exact, lo, hi) {
                (true, _, _) => {
                    candidate_sums::<V, S, true, true, true>(a.0, a.1, a.2, a.3, a.4, a.5, a.6)
                }
                (false, false, false) => {
                    candidate_sums::<V, S, false, false, false>(a.0, a.1, a.2, a.3, a.4, a.5, a.6)
                }
                (false, true, false) => {
                    candidate_sums::<V, S, true, false, false>(a.0, a.1, a.2, a.3, a.4, a.5, a.6)
                }
                (false, false, true) => {
                    candidate_sums::<V, S, false, true, false>(a.0, a.1, a.2, a.3, a.4, a.5, a.6)
                }
                (false, true, true) => {
                    candidate_sums::<V, S, true, true, false>(a.0, a.1, a.2, a.3, a.4, a.5, a.6)
                }
            };
            for s in 0..S {
                let f = &mut fit[s];
                let d = f.sum_w.mul(sum_l2[s]).sub(sum_l[s].mul(sum_l[s]));
                let ok = d.gt(zero);
                let mut this_scale = f.sum_w.mul(sum_xl[s]).sub(f.sum_x.mul(sum_l[s])).div(d);
                let mut this_min = sum_l2[s].mul(f.sum_x).sub(sum_l[s].mul(sum_xl[s])).div(d);
                // A fourth division only where some lane's offset came out positive.
                let pos = this_min.gt(zero);
                if V::m_any(pos) {
                    this_min = V::select(pos, zero, this_min);
                    this_scale = V::select(pos, sum_xl[s].div(sum_l2[s]), this_scale);
                }
                let mut cur = zero;
                for i in 0..32 {
                    let diff = this_scale.mul(laux[s][i]).add(this_min).sub(x[s][i]);
                    cur = cur.add(w[s][i].mul(diff.mul(diff)));
                }
                let take = V::m_and(ok, cur.lt(f.best));
                if !V::m_any(take) {
                    continue;
                }
                f.best = V::select(take, cur, f.best);
                f.scale = V::select(take, this_scale, f.scale);
                f.used_iscale = V::select(take, iscale[s], f.used_iscale);
                f.used_min = V::select(take, f.min, f.used_min);
                f.min = V::select(take, this_min, f.min);
                for i in 0..32 {
                    xm[s][i] = x[s][i].sub(f.min);
                }
            }
        }
        let mut out = [(zero, zero); S];
        for s in 0..S {
            let f = &fit[s];
            for i in 0..32 {
                let q = code_exact(f.used_iscale.mul(x[s][i].sub(f.used_min)), nmaxi);
                l[s][i] = V::select(f.flat, zero, q);
            }
            // −min as a sign flip (−0 for 0), as the scalar code negates.
            out[s] = (V::select(f.flat, zero, f.scale), f.min.neg());
        }
        out
    }
}

/// Fake-quant of `2·S` consecutive super-blocks (`x.len() == y.len() == 512·S`), all in the
/// transposed lane layout: values transposed to one sub-block per lane, the reference's weights
/// `rms + |x|` (a lane-wise sequential sum, so the same value), the search, `grid`'s stored
/// scales per super-block, then codes recomputed against them and dequantized lane-wise and
/// transposed back.
///
/// # Safety
/// This CPU runs `V`'s level.
#[inline(always)]
pub(crate) unsafe fn simd<V: F32x16, const S: usize>(
    x: &[f32],
    y: &mut [f32],
    search: AffineSearch,
    grid: &impl StoredGrid,
) {
    assert!(x.len() == 512 * S && y.len() == x.len());
    // SAFETY: the caller's contract; memory is touched only through bounds-checked slices.
    unsafe {
        let zero = V::zero();
        let mut xs = [[zero; 32]; S];
        let mut ws = [[zero; 32]; S];
        for s in 0..S {
            let mut sum_x2 = zero;
            for half in 0..2 {
                let mut r = [zero; 16];
                for (k, v) in r.iter_mut().enumerate() {
                    *v = V::load(&x[512 * s + 32 * k + 16 * half..]);
                }
                V::transpose16(&mut r);
                for (j, v) in r.into_iter().enumerate() {
                    sum_x2 = sum_x2.add(v.mul(v));
                    xs[s][16 * half + j] = v;
                }
            }
            let av = sum_x2.div(V::splat(32.0)).sqrt();
            for i in 0..32 {
                ws[s][i] = av.add(xs[s][i].abs());
            }
        }
        let mut codes = [[zero; 32]; S];
        let fits = qkx2_lanes::<V, S>(&xs, &ws, search, &mut codes);
        let nmaxi = V::splat_i(search.nmax);
        for s in 0..S {
            let (mut scales, mut mins) = ([0f32; LANES], [0f32; LANES]);
            fits[s].0.store(&mut scales);
            fits[s].1.store(&mut mins);
            let (mut d, mut m) = ([0f32; LANES], [0f32; LANES]);
            for h in 0..2 {
                let sc = grid(&scales[8 * h..8 * h + 8], &mins[8 * h..8 * h + 8]);
                for (j, (dj, mj)) in sc.into_iter().enumerate() {
                    d[8 * h + j] = dj;
                    m[8 * h + j] = mj;
                }
            }
            let (d, m) = (V::load(&d), V::load(&m));
            // Where a stored scale is 0 the reference keeps the fit's codes.
            let keep = d.eq(zero);
            let mut outs = [zero; 32];
            for (i, o) in outs.iter_mut().enumerate() {
                let q = code_exact(xs[s][i].add(m).div(d), nmaxi);
                *o = d.mul(V::select(keep, codes[s][i], q)).sub(m);
            }
            for half in 0..2 {
                let mut r = [zero; 16];
                r.copy_from_slice(&outs[16 * half..16 * half + 16]);
                V::transpose16(&mut r);
                for (k, v) in r.into_iter().enumerate() {
                    v.store(&mut y[512 * s + 32 * k + 16 * half..]);
                }
            }
        }
    }
}
