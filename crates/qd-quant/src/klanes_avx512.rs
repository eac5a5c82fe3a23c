//! The AVX-512 form of [`crate::klanes`]' 16-lane `make_qkx2_quants`, on `S` independent sets
//! of 16 sub-blocks (one zmm register per value index and set). Every floating-point operation
//! is the scalar reference's, in its order and without fused multiply-adds, so the results are
//! bit-identical; what it saves are operations whose result is known:
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

use std::arch::x86_64::*;

const LANES: usize = 16;
type V = [f32; LANES];

/// `nearest_int(v).clamp(0, nmax) as f32` exactly as the reference computes it, for any `v`
/// (infinities and NaN included).
#[inline]
#[target_feature(enable = "avx512f")]
fn code_exact(v: __m512, nmax: __m512i) -> __m512 {
    let t = _mm512_add_ps(v, _mm512_set1_ps(12_582_912.0));
    let i = _mm512_sub_epi32(
        _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(0x007f_ffff)),
        _mm512_set1_epi32(0x0040_0000),
    );
    let i = _mm512_min_epi32(_mm512_max_epi32(i, _mm512_setzero_si512()), nmax);
    _mm512_cvtepi32_ps(i)
}

/// Round half to even: the reference's `nearest_int` wherever |v| < 2^22 or v is NaN (which
/// the callers only let through where a lower clamp follows, turning it into 0 as the
/// reference does).
#[inline]
#[target_feature(enable = "avx512f")]
fn round_even(v: __m512) -> __m512 {
    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
}

/// One candidate's quantization and weighted sums over `S` sets; `LO`/`HI` add the clamps,
/// `EXACT` uses [`code_exact`] instead of rounding.
macro_rules! candidate_sums {
    ($lo:expr, $hi:expr, $exact:expr, $S:ident, $iscale:ident, $xm:ident, $x:ident, $w:ident,
     $laux:ident, $nmaxf:ident, $nmaxi:ident) => {{
        let zero = _mm512_setzero_ps();
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; $S], [zero; $S], [zero; $S]);
        for i in 0..32 {
            for s in 0..$S {
                let t = _mm512_mul_ps($iscale[s], $xm[s][i]);
                let lf = if $exact {
                    code_exact(t, $nmaxi)
                } else {
                    let mut r = round_even(t);
                    if $lo {
                        r = _mm512_max_ps(r, zero);
                    }
                    if $hi {
                        r = _mm512_min_ps(r, $nmaxf);
                    }
                    r
                };
                $laux[s][i] = lf;
                let wl = _mm512_mul_ps($w[s][i], lf);
                sum_l[s] = _mm512_add_ps(sum_l[s], wl);
                sum_l2[s] = _mm512_add_ps(sum_l2[s], _mm512_mul_ps(wl, lf));
                sum_xl[s] = _mm512_add_ps(sum_xl[s], _mm512_mul_ps(wl, $x[s][i]));
            }
        }
        (sum_l, sum_l2, sum_xl)
    }};
}

/// Lane `k` of set `s` fits sub-block `xs[s][·][k]` with weights `ws[s][·][k]`; returns
/// `(scale, the_min)` per lane and writes the codes to `l`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn qkx2_lanes<const S: usize>(
    xs: &[[V; 32]; S],
    ws: &[[V; 32]; S],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [[V; 32]; S],
) -> [(V, V); S] {
    let zero = _mm512_setzero_ps();
    let nmaxf = _mm512_set1_ps(nmax as f32);
    let nmaxi = _mm512_set1_epi32(nmax);
    let inf = _mm512_set1_ps(f32::INFINITY);
    let mut x = [[zero; 32]; S];
    let mut w = [[zero; 32]; S];
    for s in 0..S {
        for i in 0..32 {
            // SAFETY: each row is 16 f32.
            unsafe {
                x[s][i] = _mm512_loadu_ps(xs[s][i].as_ptr());
                w[s][i] = _mm512_loadu_ps(ws[s][i].as_ptr());
            }
        }
    }
    let mut data_min = [zero; S];
    let mut max = [zero; S];
    let mut min = [zero; S];
    let mut sum_w = [zero; S];
    let mut sum_x = [zero; S];
    let mut flat = [0u16; S];
    let mut scale = [zero; S];
    let mut best = [zero; S];
    // The grid the best codes so far came from.
    let mut used_iscale = [zero; S];
    let mut used_min = [zero; S];
    let mut xm = [[zero; 32]; S];
    for s in 0..S {
        data_min[s] = x[s][0];
        max[s] = x[s][0];
        sum_w[s] = w[s][0];
        sum_x[s] = _mm512_mul_ps(sum_w[s], x[s][0]);
        for i in 1..32 {
            data_min[s] = _mm512_min_ps(x[s][i], data_min[s]);
            max[s] = _mm512_max_ps(x[s][i], max[s]);
            sum_w[s] = _mm512_add_ps(sum_w[s], w[s][i]);
            sum_x[s] = _mm512_add_ps(sum_x[s], _mm512_mul_ps(w[s][i], x[s][i]));
        }
        min[s] = _mm512_mask_mov_ps(
            data_min[s],
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(data_min[s], zero),
            zero,
        );
        flat[s] = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max[s], min[s]);
        let iscale = _mm512_div_ps(nmaxf, _mm512_sub_ps(max[s], min[s]));
        scale[s] = _mm512_div_ps(_mm512_set1_ps(1.0), iscale);
        used_iscale[s] = iscale;
        used_min[s] = min[s];
        for i in 0..32 {
            xm[s][i] = _mm512_sub_ps(x[s][i], min[s]);
            let q = code_exact(_mm512_mul_ps(iscale, xm[s][i]), nmaxi);
            let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale[s], q), min[s]), x[s][i]);
            best[s] = _mm512_add_ps(best[s], _mm512_mul_ps(w[s][i], _mm512_mul_ps(diff, diff)));
        }
    }
    let mut laux = [[zero; 32]; S];
    for is in 0..=nstep {
        let numf = rmin + rdelta * is as f32 + nmax as f32;
        let num = _mm512_set1_ps(numf);
        let hi = numf > nmax as f32;
        let mut lo = false;
        let mut exact = false;
        let mut iscale = [zero; S];
        for s in 0..S {
            iscale[s] = _mm512_div_ps(num, _mm512_sub_ps(max[s], min[s]));
            lo |= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(data_min[s], min[s]) != 0;
            let finite_pos = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(iscale[s], inf)
                & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(iscale[s], zero);
            exact |= !finite_pos & !flat[s] != 0;
        }
        let (sum_l, sum_l2, sum_xl) = match (exact, lo, hi) {
            (true, _, _) => {
                candidate_sums!(true, true, true, S, iscale, xm, x, w, laux, nmaxf, nmaxi)
            }
            (false, false, false) => {
                candidate_sums!(false, false, false, S, iscale, xm, x, w, laux, nmaxf, nmaxi)
            }
            (false, true, false) => {
                candidate_sums!(true, false, false, S, iscale, xm, x, w, laux, nmaxf, nmaxi)
            }
            (false, false, true) => {
                candidate_sums!(false, true, false, S, iscale, xm, x, w, laux, nmaxf, nmaxi)
            }
            (false, true, true) => {
                candidate_sums!(true, true, false, S, iscale, xm, x, w, laux, nmaxf, nmaxi)
            }
        };
        let mut ok = [0u16; S];
        let mut this_scale = [zero; S];
        let mut this_min = [zero; S];
        for s in 0..S {
            let d = _mm512_sub_ps(
                _mm512_mul_ps(sum_w[s], sum_l2[s]),
                _mm512_mul_ps(sum_l[s], sum_l[s]),
            );
            ok[s] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, zero);
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
            // A fourth division only where some lane's offset came out positive.
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(this_min[s], zero);
            if pos != 0 {
                this_min[s] = _mm512_mask_mov_ps(this_min[s], pos, zero);
                this_scale[s] =
                    _mm512_mask_mov_ps(this_scale[s], pos, _mm512_div_ps(sum_xl[s], sum_l2[s]));
            }
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
            let take = ok[s] & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(cur[s], best[s]);
            if take == 0 {
                continue;
            }
            best[s] = _mm512_mask_mov_ps(best[s], take, cur[s]);
            scale[s] = _mm512_mask_mov_ps(scale[s], take, this_scale[s]);
            used_iscale[s] = _mm512_mask_mov_ps(used_iscale[s], take, iscale[s]);
            used_min[s] = _mm512_mask_mov_ps(used_min[s], take, min[s]);
            min[s] = _mm512_mask_mov_ps(min[s], take, this_min[s]);
            for i in 0..32 {
                xm[s][i] = _mm512_sub_ps(x[s][i], min[s]);
            }
        }
    }
    let mut out = [([0f32; LANES], [0f32; LANES]); S];
    for s in 0..S {
        for i in 0..32 {
            let q = code_exact(
                _mm512_mul_ps(used_iscale[s], _mm512_sub_ps(x[s][i], used_min[s])),
                nmaxi,
            );
            // SAFETY: each row is 16 f32.
            unsafe { _mm512_storeu_ps(l[s][i].as_mut_ptr(), _mm512_mask_mov_ps(q, flat[s], zero)) };
        }
        let sc = _mm512_mask_mov_ps(scale[s], flat[s], zero);
        // −min as a sign flip (−0 for 0), as the scalar code negates.
        let neg = _mm512_xor_si512(_mm512_castps_si512(min[s]), _mm512_set1_epi32(i32::MIN));
        // SAFETY: each output is 16 f32.
        unsafe {
            _mm512_storeu_ps(out[s].0.as_mut_ptr(), sc);
            _mm512_storeu_ps(out[s].1.as_mut_ptr(), _mm512_castsi512_ps(neg));
        }
    }
    out
}

/// Fake-quant of `2·S` consecutive super-blocks (`x.len() == y.len() == 512·S`) of Q4_K or Q5_K,
/// all in the transposed lane layout: values transposed to one sub-block per lane, the reference's
/// weights `rms + |x|` (a lane-wise sequential sum, so the same value), the search, the fp16
/// super-scales packed per super-block, then codes recomputed against the stored grid and
/// dequantized lane-wise and transposed back.
///
/// # Safety
/// `x.len() == y.len() == 512·S`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
pub unsafe fn fake_affine_sets<const S: usize>(
    x: &[f32],
    y: &mut [f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) {
    debug_assert!(x.len() == 512 * S && y.len() == 512 * S);
    let mut xs = [[[0f32; LANES]; 32]; S];
    let mut ws = [[[0f32; LANES]; 32]; S];
    for s in 0..S {
        let mut sum_x2 = _mm512_setzero_ps();
        for half in 0..2 {
            // SAFETY: 512·s + 32·k + 16·half + 16 ≤ 512·S.
            let mut r: [__m512; 16] = std::array::from_fn(|k| unsafe {
                _mm512_loadu_ps(x.as_ptr().add(512 * s + 32 * k + 16 * half))
            });
            transpose16(&mut r);
            for (j, v) in r.into_iter().enumerate() {
                sum_x2 = _mm512_add_ps(sum_x2, _mm512_mul_ps(v, v));
                // SAFETY: each row is 16 f32.
                unsafe { _mm512_storeu_ps(xs[s][16 * half + j].as_mut_ptr(), v) };
            }
        }
        let av = _mm512_sqrt_ps(_mm512_div_ps(sum_x2, _mm512_set1_ps(32.0)));
        for i in 0..32 {
            // SAFETY: each row is 16 f32.
            unsafe {
                let v = _mm512_loadu_ps(xs[s][i].as_ptr());
                _mm512_storeu_ps(ws[s][i].as_mut_ptr(), _mm512_add_ps(av, _mm512_abs_ps(v)));
            }
        }
    }
    let mut codes = [[[0f32; LANES]; 32]; S];
    let fits = qkx2_lanes::<S>(&xs, &ws, nmax, rmin, 0.1, nstep, &mut codes);
    let nmaxi = _mm512_set1_epi32(nmax);
    for s in 0..S {
        let (scales, mins) = &fits[s];
        let (mut d, mut m) = ([0f32; LANES], [0f32; LANES]);
        for h in 0..2 {
            let mut head = [0u8; 16];
            crate::kscales::pack_head(
                &scales[8 * h..8 * h + 8],
                &mins[8 * h..8 * h + 8],
                &mut head,
            );
            for (j, (dj, mj)) in crate::kscales::sub_scales(&head).into_iter().enumerate() {
                d[8 * h + j] = dj;
                m[8 * h + j] = mj;
            }
        }
        // SAFETY: 16 f32 each.
        let (d, m) = unsafe { (_mm512_loadu_ps(d.as_ptr()), _mm512_loadu_ps(m.as_ptr())) };
        // Where a stored scale is 0 the reference keeps the fit's codes.
        let keep = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(d, _mm512_setzero_ps());
        let mut outs = [_mm512_setzero_ps(); 32];
        for (i, o) in outs.iter_mut().enumerate() {
            // SAFETY: rows of 16 f32.
            let (v, fit) = unsafe {
                (
                    _mm512_loadu_ps(xs[s][i].as_ptr()),
                    _mm512_loadu_ps(codes[s][i].as_ptr()),
                )
            };
            let q = code_exact(_mm512_div_ps(_mm512_add_ps(v, m), d), nmaxi);
            let q = _mm512_mask_mov_ps(q, keep, fit);
            *o = _mm512_sub_ps(_mm512_mul_ps(d, q), m);
        }
        for half in 0..2 {
            let mut r: [__m512; 16] = std::array::from_fn(|j| outs[16 * half + j]);
            transpose16(&mut r);
            for (k, v) in r.into_iter().enumerate() {
                // SAFETY: 512·s + 32·k + 16·half + 16 ≤ 512·S.
                unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(512 * s + 32 * k + 16 * half), v) };
            }
        }
    }
}

/// Transposes a 16×16 matrix of f32 held as 16 rows, in four rounds of in-lane and
/// cross-lane shuffles (64 shuffles instead of 16 gathers or scatters of 16).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for j in 0..8 {
        t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
    }
    let pd = _mm512_castps_pd;
    for j in 0..4 {
        let (a, b, c, d) = (t[4 * j], t[4 * j + 1], t[4 * j + 2], t[4 * j + 3]);
        r[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        r[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        r[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        r[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Now 128-bit lane L of r[4j + e] holds rows 4j..4j+3 of column 4L + e.
    let mut out = [_mm512_setzero_ps(); 16];
    for e in 0..4 {
        let lo01 = _mm512_shuffle_f32x4::<0x88>(r[e], r[4 + e]);
        let hi01 = _mm512_shuffle_f32x4::<0xDD>(r[e], r[4 + e]);
        let lo23 = _mm512_shuffle_f32x4::<0x88>(r[8 + e], r[12 + e]);
        let hi23 = _mm512_shuffle_f32x4::<0xDD>(r[8 + e], r[12 + e]);
        out[e] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        out[8 + e] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
        out[4 + e] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        out[12 + e] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
    }
    *r = out;
}
