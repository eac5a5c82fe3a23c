//! The per-chunk loss `α·T²·D + (1−α)·CE` and its gradient with respect to the student's
//! logits in one pass per row, without autograd. The composed ops (scale, log-softmax twice,
//! exp, subtract, multiply, sum — and their backward) allocate and stream about a dozen
//! `[chunk, vocab]` buffers per chunk; this reads each logit row a few times and writes the
//! gradient once. Forward and reverse KL have closed-form gradients; JSD keeps the composed path.

use candle_core::{DType, Result, Storage, Tensor};

use super::{lanes, Divergence};

/// Sums over the unmasked rows of a chunk, and `∂(w_kd·ΣD + w_ce·ΣCE)/∂logits`.
pub struct FusedChunk {
    pub kd_sum: f64,
    pub ce_sum: f64,
    pub grad: Tensor,
}

/// Whether [`fused_loss`] handles `div`.
pub fn supports(div: Divergence) -> bool {
    matches!(div, Divergence::Forward | Divergence::Reverse)
}

/// `log Σ_j e^{x_j/t}` of a row, shifted by its maximum.
fn log_normaliser(x: &[f32], inv_t: f32) -> f32 {
    let m = lanes::max(x) * inv_t;
    let z = lanes::sum_map(x, |v| lanes::exp(v * inv_t - m));
    m + z.ln() as f32
}

/// `(log Σ e^{x/2}, log Σ e^x)` in one pass: `e^{x−m} = (e^{(x−m)/2})²`.
fn log_normalisers_t2(x: &[f32]) -> (f32, f32) {
    let m = lanes::max(x);
    let h = 0.5 * m;
    let (z2, z1) = lanes::sum_map_pair(x, |v| {
        let e = lanes::exp(0.5 * v - h);
        (e, e * e)
    });
    (h + z2.ln() as f32, m + z1.ln() as f32)
}

/// How the CE term's `e^{s − lse₁}` comes from the soft pass's `p_S = e^{s/T − lse_T}`: at T = 1
/// it is `p_S`; at T = 2 it is `p_S² · e^{2·lse_T − lse₁}`; otherwise its own `exp`. Saves one
/// of the three `exp`s per logit and one of the three normaliser passes for the usual T.
#[derive(Clone, Copy)]
pub(super) enum CeTerm {
    Same,
    Square(f32),
    Exp(f32),
}

impl CeTerm {
    #[inline(always)]
    pub(super) fn eval(self, a: f32, ps: f32) -> f32 {
        match self {
            CeTerm::Same => ps,
            CeTerm::Square(c) => ps * ps * c,
            CeTerm::Exp(lse1) => lanes::exp(a - lse1),
        }
    }
}

/// `(lse_T, lse₁, CE term)` of a student row.
pub(super) fn student_normalisers(sr: &[f32], temperature: f32) -> (f32, f32, CeTerm) {
    if temperature == 1.0 {
        let l = log_normaliser(sr, 1.0);
        (l, l, CeTerm::Same)
    } else if temperature == 2.0 {
        let (l2, l1) = log_normalisers_t2(sr);
        (l2, l1, CeTerm::Square((2.0 * l2 - l1).exp()))
    } else {
        let (lt, l1) = (
            log_normaliser(sr, 1.0 / temperature),
            log_normaliser(sr, 1.0),
        );
        (lt, l1, CeTerm::Exp(l1))
    }
}

/// The logits of a contiguous f32 CPU tensor without copying them (a copy elsewhere).
fn with_rows<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    if let Storage::Cpu(cpu) = &*storage {
        let all = cpu.as_slice::<f32>()?;
        let start = layout.start_offset();
        return f(&all[start..start + t.elem_count()]);
    }
    drop(storage);
    f(&t.flatten_all()?.to_vec1::<f32>()?)
}

/// `student`, `teacher`: logits `[n, V]` (no graph needed); `targets[i]` the label of row `i`;
/// rows with `mask[i] == 0` contribute nothing.
#[allow(clippy::too_many_arguments)]
pub fn fused_loss(
    student: &Tensor,
    teacher: &Tensor,
    targets: &[u32],
    mask: &[f32],
    temperature: f64,
    div: Divergence,
    w_kd: f64,
    w_ce: f64,
) -> Result<FusedChunk> {
    use rayon::prelude::*;
    let (n, v) = student.dims2()?;
    let temp = temperature as f32;
    let inv = 1.0 / temp;
    let (wk, wc) = ((w_kd / temperature) as f32, w_ce as f32);
    let mut grad = vec![0f32; n * v];
    let sums: Vec<(f64, f64)> = with_rows(student, |s| {
        with_rows(teacher, |t| {
            Ok(grad
                .par_chunks_mut(v)
                .enumerate()
                .map(|(i, g)| {
                    if mask[i] == 0.0 {
                        return (0.0, 0.0);
                    }
                    let (sr, tr) = (&s[i * v..(i + 1) * v], &t[i * v..(i + 1) * v]);
                    // CE at temperature 1: log p_S(y) = s_y − logsumexp(s).
                    let (lse_s, lse1, ce_term) = student_normalisers(sr, temp);
                    let lse_t = log_normaliser(tr, inv);
                    let y = targets[i] as usize;
                    let ce = (lse1 - sr[y]) as f64;
                    let kd = match div {
                        Divergence::Reverse => {
                            let kd = lanes::sum_map2(sr, tr, |a, b| {
                                let (lps, lpt) = (a * inv - lse_s, b * inv - lse_t);
                                lanes::exp(lps) * (lps - lpt)
                            });
                            let c = kd as f32;
                            // ∂KL(p_S‖p_T)/∂s = p_S·(log p_S − log p_T − KL)/T
                            lanes::map_sum2_into(g, sr, tr, |a, b| {
                                let (lps, lpt) = (a * inv - lse_s, b * inv - lse_t);
                                let ps = lanes::exp(lps);
                                (wk * ps * (lps - lpt - c) + wc * ce_term.eval(a, ps), 0.0)
                            });
                            kd
                        }
                        // ∂KL(p_T‖p_S)/∂s = (p_S − p_T)/T
                        _ => lanes::map_sum2_into(g, sr, tr, |a, b| {
                            let (lps, lpt) = (a * inv - lse_s, b * inv - lse_t);
                            let (ps, pt) = (lanes::exp(lps), lanes::exp(lpt));
                            (wk * (ps - pt) + wc * ce_term.eval(a, ps), pt * (lpt - lps))
                        }),
                    };
                    g[y] -= wc;
                    (kd, ce)
                })
                .collect())
        })
    })?;
    let (kd_sum, ce_sum) = sums
        .iter()
        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
    Ok(FusedChunk {
        kd_sum,
        ce_sum,
        grad: Tensor::from_vec(grad, (n, v), student.device())?,
    })
}
