//! One query's attention over a layer's cached keys and values, in buffers allocated once.
//!
//! A sliding-window layer keeps a ring of `window` positions (its query sees exactly the last
//! `window` keys, its own included); a global layer keeps every position up to the decoder's
//! capacity. Keys are visited in position order, as the graph path's matmul visits them.

/// Keys and values of one layer: `[kv_head][slot][dim]`.
pub(crate) struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
    slots: usize,
    n_kv: usize,
    head_dim: usize,
    value_dim: usize,
    /// Sliding window, when this layer has one.
    window: Option<usize>,
}

impl LayerKv {
    pub(crate) fn new(
        n_kv: usize,
        head_dim: usize,
        value_dim: usize,
        window: Option<usize>,
        capacity: usize,
    ) -> Self {
        let slots = window.map_or(capacity, |w| w.min(capacity)).max(1);
        Self {
            k: vec![0.0; n_kv * slots * head_dim],
            v: vec![0.0; n_kv * slots * value_dim],
            slots,
            n_kv,
            head_dim,
            value_dim,
            window,
        }
    }

    /// Stores the key and value of position `pos` (`k [n_kv·head_dim]`, `v [n_kv·value_dim]`).
    pub(crate) fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        let s = pos % self.slots;
        for g in 0..self.n_kv {
            let (hd, vd) = (self.head_dim, self.value_dim);
            let ko = (g * self.slots + s) * hd;
            self.k[ko..ko + hd].copy_from_slice(&k[g * hd..(g + 1) * hd]);
            let vo = (g * self.slots + s) * vd;
            self.v[vo..vo + vd].copy_from_slice(&v[g * vd..(g + 1) * vd]);
        }
    }

    /// Positions a query at `pos` attends to.
    fn visible(&self, pos: usize) -> std::ops::Range<usize> {
        let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        first..pos + 1
    }

    /// `out [n_head·value_dim]` for the query heads `q [n_head·head_dim]` (already scaled) at
    /// `pos`, query head `h` reading KV head `h / (n_head / n_kv)`. With `f16`, the attention
    /// weights are rounded to f16 before they weight the values, as ggml's f16 operands are.
    #[cfg(test)]
    pub(crate) fn attend(
        &self,
        q: &[f32],
        pos: usize,
        f16: bool,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let (hd, vd) = (self.head_dim, self.value_dim);
        for h in 0..q.len() / hd {
            let oh = &mut out[h * vd..(h + 1) * vd];
            self.attend_head(h, q, pos, f16, scores, oh);
        }
    }

    /// Query head `h` of [`LayerKv::attend`] into `out [value_dim]` (the decoder's threads
    /// share the heads of a token).
    pub(crate) fn attend_head(
        &self,
        h: usize,
        q: &[f32],
        pos: usize,
        f16: bool,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let (hd, vd) = (self.head_dim, self.value_dim);
        let rep = q.len() / hd / self.n_kv;
        let g = h / rep;
        let keys = self.visible(pos);
        let scores = &mut scores[..keys.len()];
        let qh = &q[h * hd..(h + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (s, p) in scores.iter_mut().zip(keys.clone()) {
            let ko = (g * self.slots + p % self.slots) * hd;
            *s = dot(qh, &self.k[ko..ko + hd]);
            max = max.max(*s);
        }
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
        }
        let sum: f32 = scores.iter().sum();
        for s in scores.iter_mut() {
            *s /= sum;
        }
        if f16 {
            super::ops::round_f16(scores);
        }
        out.fill(0.0);
        for (&w, p) in scores.iter().zip(keys) {
            let vo = (g * self.slots + p % self.slots) * vd;
            for (o, &v) in out.iter_mut().zip(&self.v[vo..vo + vd]) {
                *o += w * v;
            }
        }
    }

    pub(crate) fn window(&self) -> Option<usize> {
        self.window
    }

    /// Most keys any query of this layer sees.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }
}

/// `a · b` in 16 lanes (a sequential f32 sum would not vectorize: its order is fixed).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 16;
    let mut acc = [0f32; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..W {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Query rows per block of the batch attention: scores are `[rows, keys]`, so a long prompt
/// never holds `[T, T]`, and keys past a block's last query (or before its window) are skipped.
const BLOCK_ROWS: usize = 128;

/// A batch's queries attending to its own keys and values (a prompt from position 0):
/// `q [t, n_head·head_dim]` (scaled), `k [t, n_kv·head_dim]`, `v [t, n_kv·value_dim]` →
/// `out [t, n_head·value_dim]`. Per head and block of query rows, two f32 `gemm`s (scores, then
/// weights × values) over the keys the block can see; a query sees the keys up to its own, the
/// last `window` with one.
pub(crate) fn batch(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: (usize, usize, usize, usize),
    window: Option<usize>,
    f16: bool,
    out: &mut [f32],
) {
    batch_blocks(q, k, v, dims, window, f16, out, BLOCK_ROWS)
}

#[allow(clippy::too_many_arguments)]
fn batch_blocks(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: (usize, usize, usize, usize),
    window: Option<usize>,
    f16: bool,
    out: &mut [f32],
    block: usize,
) {
    use crate::gemm_f32::{matmul, View};
    use rayon::prelude::*;
    let (n_head, n_kv, hd, vd) = dims;
    let t = q.len() / (n_head * hd);
    let rep = n_head / n_kv;
    let blocks = t.div_ceil(block);
    let first_key = |i: usize| window.map_or(0, |w| (i + 1).saturating_sub(w));
    let dst = crate::kernels::tasks::SharedOut(out.as_mut_ptr());
    (0..n_head * blocks).into_par_iter().for_each(|task| {
        let (h, b) = (task / blocks, task % blocks);
        let g = h / rep;
        let (i0, i1) = (b * block, ((b + 1) * block).min(t));
        let (k0, nk) = (first_key(i0), i1 - first_key(i0));
        let m = i1 - i0;
        let mut s = vec![0f32; m * nk];
        // SAFETY: every pointer walks inside `q`, `k`, `v`, `s` by the strides given; a task
        // writes only rows `i0..i1` of head `h`'s `vd` columns of `out`.
        unsafe {
            matmul(
                (m, nk, hd),
                View::rows(s.as_mut_ptr(), nk),
                false,
                View::rows(q.as_ptr().add(i0 * n_head * hd + h * hd), n_head * hd),
                // Kᵀ: key j is column j.
                View {
                    ptr: k.as_ptr().add(k0 * n_kv * hd + g * hd),
                    row_stride: 1,
                    col_stride: n_kv * hd,
                },
            );
        }
        for (r, row) in s.chunks_exact_mut(nk).enumerate() {
            let i = i0 + r;
            let (lo, hi) = (first_key(i) - k0, i + 1 - k0);
            let seen = &mut row[lo..hi];
            let max = seen.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            for x in seen.iter_mut() {
                *x = (*x - max).exp();
            }
            let sum: f32 = seen.iter().sum();
            for x in seen.iter_mut() {
                *x /= sum;
            }
            if f16 {
                super::ops::round_f16(seen);
            }
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
        }
        let d = &dst;
        // SAFETY: as above.
        unsafe {
            matmul(
                (m, vd, nk),
                View::rows(d.0.add(i0 * n_head * vd + h * vd), n_head * vd),
                false,
                View::rows(s.as_ptr(), nk),
                View::rows(v.as_ptr().add(k0 * n_kv * vd + g * vd), n_kv * vd),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against softmax attention written out in f64 over explicitly listed positions: grouped
    /// heads, a window the ring wraps around many times, a global layer, with and without the
    /// f16 rounding of the weights.
    #[test]
    fn attention_window() {
        let (n_kv, n_head, hd, vd) = (2, 4, 8, 5);
        let val = |p: usize, g: usize, i: usize, salt: usize| {
            (((p * 31 + g * 17 + i * 7 + salt * 13) % 23) as f32 - 11.0) / 9.0
        };
        for window in [Some(3), None] {
            let mut kv = LayerKv::new(n_kv, hd, vd, window, 40);
            let (mut scores, mut out) = (vec![0.0; 40], vec![0.0; n_head * vd]);
            for pos in 0..40 {
                let k: Vec<f32> = (0..n_kv * hd)
                    .map(|i| val(pos, i / hd, i % hd, 1))
                    .collect();
                let v: Vec<f32> = (0..n_kv * vd)
                    .map(|i| val(pos, i / vd, i % vd, 2))
                    .collect();
                kv.store(pos, &k, &v);
                let q: Vec<f32> = (0..n_head * hd)
                    .map(|i| val(pos, i / hd, i % hd, 3) * 0.5)
                    .collect();
                for f16 in [false, true] {
                    kv.attend(&q, pos, f16, &mut scores, &mut out);
                    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    for h in 0..n_head {
                        let g = h / (n_head / n_kv);
                        let s: Vec<f64> = (first..=pos)
                            .map(|p| {
                                (0..hd)
                                    .map(|i| q[h * hd + i] as f64 * val(p, g, i, 1) as f64)
                                    .sum()
                            })
                            .collect();
                        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                        for i in 0..vd {
                            let want: f64 = s
                                .iter()
                                .zip(first..=pos)
                                .map(|(x, p)| (x - max).exp() / z * val(p, g, i, 2) as f64)
                                .sum();
                            let got = out[h * vd + i] as f64;
                            // f16 weights: 2⁻¹¹ relative each, on values below 2 in magnitude.
                            let tol = if f16 { 2e-3 } else { 1e-5 };
                            assert!(
                                (got - want).abs() <= tol,
                                "window {window:?} pos {pos} head {h} dim {i} f16 {f16}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The batch attention (blocks of 4 and of 128 query rows) against one query at a time
    /// through the rings, with and without a window and the f16 weights.
    #[test]
    fn batch_equals_one_query_at_a_time() {
        let (n_kv, n_head, hd, vd, t) = (2, 4, 8, 5, 23);
        let val = |i: usize, salt: usize| (((i * 37 + salt * 11) % 29) as f32 - 14.0) / 10.0;
        let q: Vec<f32> = (0..t * n_head * hd).map(|i| val(i, 1) * 0.5).collect();
        let k: Vec<f32> = (0..t * n_kv * hd).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..t * n_kv * vd).map(|i| val(i, 3)).collect();
        for window in [Some(3), None] {
            for f16 in [false, true] {
                let mut kv = LayerKv::new(n_kv, hd, vd, window, t);
                let (mut scores, mut one) = (vec![0.0; t], vec![0.0; n_head * vd]);
                let mut want = Vec::new();
                for p in 0..t {
                    kv.store(
                        p,
                        &k[p * n_kv * hd..(p + 1) * n_kv * hd],
                        &v[p * n_kv * vd..(p + 1) * n_kv * vd],
                    );
                    kv.attend(
                        &q[p * n_head * hd..(p + 1) * n_head * hd],
                        p,
                        f16,
                        &mut scores,
                        &mut one,
                    );
                    want.extend_from_slice(&one);
                }
                for block in [4, 128] {
                    let mut got = vec![0.0; t * n_head * vd];
                    batch_blocks(
                        &q,
                        &k,
                        &v,
                        (n_head, n_kv, hd, vd),
                        window,
                        f16,
                        &mut got,
                        block,
                    );
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        // f16 weights: a sum-order ulp can round a weight the other way.
                        let tol = if f16 { 2e-3 } else { 1e-5 };
                        assert!(
                            (a - b).abs() <= tol,
                            "window {window:?} f16 {f16} block {block} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
