//! The per-chunk loss `α·T²·D + (1−α)·CE` and its gradient with respect to the student's
//! logits in one pass per row, without autograd. The composed ops (scale, log-softmax twice,
//! exp, subtract, multiply, sum — and their backward) allocate and stream about a dozen
//! `[chunk, vocab]` buffers per chunk; this reads each logit row a few times and writes the
//! gradient once. Forward and reverse KL have closed-form gradients; JSD keeps the composed path.

use candle_core::{DType, Result, Tensor};

use super::Divergence;

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

/// log-softmax of `x / t` into `out`, in f64 for the normaliser.
fn log_softmax_into(x: &[f32], t: f32, out: &mut [f32]) {
    let inv = 1.0 / t;
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * inv;
    let z: f64 = x.iter().map(|&v| ((v * inv - m) as f64).exp()).sum();
    let lse = m + z.ln() as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * inv - lse;
    }
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
    let s = student
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let t = teacher
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let temp = temperature as f32;
    let mut grad = vec![0f32; n * v];
    let sums: Vec<(f64, f64)> = grad
        .par_chunks_mut(v)
        .enumerate()
        .map(|(i, g)| {
            if mask[i] == 0.0 {
                return (0.0, 0.0);
            }
            let (sr, tr) = (&s[i * v..(i + 1) * v], &t[i * v..(i + 1) * v]);
            // g holds log p_S^T for now; a scratch row holds log p_T^T.
            let mut lpt = vec![0f32; v];
            log_softmax_into(sr, temp, g);
            log_softmax_into(tr, temp, &mut lpt);
            let (mut kd, mut grad_scale) = (0f64, 0f64);
            match div {
                Divergence::Reverse => {
                    for (&a, &b) in g.iter().zip(&lpt) {
                        kd += (a.exp() * (a - b)) as f64;
                    }
                    grad_scale = kd;
                }
                _ => {
                    for (&a, &b) in g.iter().zip(&lpt) {
                        kd += (b.exp() * (b - a)) as f64;
                    }
                }
            }
            // CE at temperature 1: log p_S(y) = s_y − logsumexp(s).
            let m = sr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let z: f64 = sr.iter().map(|&x| ((x - m) as f64).exp()).sum();
            let lse1 = m + z.ln() as f32;
            let y = targets[i] as usize;
            let ce = (lse1 - sr[y]) as f64;
            let (wk, wc) = ((w_kd / temperature) as f32, w_ce as f32);
            let c = grad_scale as f32;
            for j in 0..v {
                let lps_t = g[j];
                let ps_t = lps_t.exp();
                let d_kd = match div {
                    // ∂KL(p_T‖p_S)/∂s = (p_S − p_T)/T
                    Divergence::Forward => ps_t - lpt[j].exp(),
                    // ∂KL(p_S‖p_T)/∂s = p_S·(log p_S − log p_T − KL)/T
                    _ => ps_t * (lps_t - lpt[j] - c),
                };
                g[j] = wk * d_kd + wc * (sr[j] - lse1).exp();
            }
            g[y] -= wc;
            (kd, ce)
        })
        .collect();
    let (kd_sum, ce_sum) = sums
        .iter()
        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
    Ok(FusedChunk {
        kd_sum,
        ce_sum,
        grad: Tensor::from_vec(grad, (n, v), student.device())?,
    })
}
