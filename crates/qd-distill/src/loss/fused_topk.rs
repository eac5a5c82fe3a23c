//! The forward-KL top-k + tail loss (a cached teacher's, or the online one of the same k) and
//! its gradient with respect to the student's logits in one pass per row, as `fused.rs` does for
//! the full vocabulary — without it a cached teacher saves the teacher's forward pass but pays
//! it back in the composed loss's `[chunk, vocab]` autograd buffers.
//!
//! Over the bins `K ∪ {tail}` (the teacher's top-k ids and the rest), with `p` the student's
//! softmax at temperature T, `P_K = Σ_K p`, `q = max(1 − P_K, 1e-12)` its tail and `t` the
//! teacher's probabilities (`t_tail` stored): `KL = Σ_K t·(log t − log p) + t_tail·(log t_tail −
//! log q)`, and `∂KL/∂s_j = (p_j − t_j)/T` for `j ∈ K`, `p_j·(1 − t_tail/q)/T` elsewhere (the
//! floor, where it binds, takes the tail's term out of the gradient, as `max` does under
//! autograd).

use candle_core::{Result, Tensor};

use super::fused::{student_normalisers, FusedChunk};
use super::lanes;

/// A teacher's top-k rows on the host: `ids`, `logprobs` (`[n·k]`, at the loss's temperature)
/// and `log_tail` (`[n]`).
pub struct TopKRows<'a> {
    pub k: usize,
    pub ids: &'a [u32],
    pub logprobs: &'a [f32],
    pub log_tail: &'a [f32],
}

const TAIL_FLOOR: f64 = 1e-12;

/// `student [n, V]` logits; `targets[i]`, `mask[i]` as in `fused::fused_loss`.
#[allow(clippy::too_many_arguments)]
pub fn fused_topk_loss(
    student: &Tensor,
    teacher: &TopKRows<'_>,
    targets: &[u32],
    mask: &[f32],
    temperature: f64,
    w_kd: f64,
    w_ce: f64,
) -> Result<FusedChunk> {
    use rayon::prelude::*;
    let (n, v) = student.dims2()?;
    let k = teacher.k;
    if teacher.ids.len() != n * k || teacher.log_tail.len() != n {
        candle_core::bail!(
            "top-k loss: {n} rows of logits, teacher rows for {}",
            teacher.log_tail.len()
        );
    }
    let temp = temperature as f32;
    let inv = 1.0 / temp;
    let (wk, wc) = ((w_kd / temperature) as f32, w_ce as f32);
    let s = student
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut grad = vec![0f32; n * v];
    let sums: Vec<(f64, f64)> = grad
        .par_chunks_mut(v)
        .enumerate()
        .map(|(i, g)| {
            if mask[i] == 0.0 {
                return (0.0, 0.0);
            }
            let sr = &s[i * v..(i + 1) * v];
            let (lse_s, lse1, ce_term) = student_normalisers(sr, temp);
            let ids = &teacher.ids[i * k..(i + 1) * k];
            let lpt = &teacher.logprobs[i * k..(i + 1) * k];
            let p_kept: f64 = ids
                .iter()
                .map(|&j| ((sr[j as usize] * inv - lse_s) as f64).exp())
                .sum();
            let t_tail = (teacher.log_tail[i] as f64).exp();
            let q_raw = 1.0 - p_kept;
            let floored = q_raw < TAIL_FLOOR;
            let q = q_raw.max(TAIL_FLOOR);
            let mut kd = t_tail * (teacher.log_tail[i] as f64 - q.ln());
            for (&j, &lt) in ids.iter().zip(lpt) {
                let lps = (sr[j as usize] * inv - lse_s) as f64;
                kd += (lt as f64).exp() * (lt as f64 - lps);
            }
            // Outside K: p·(1 − t_tail/q)/T; where the floor binds the tail's term has no
            // gradient, which leaves p·(1 − t_tail)/T outside K and p·(1 − t_tail)/T − t inside.
            let (c, c_in) = if floored {
                let c = (1.0 - t_tail) as f32;
                (c, c)
            } else {
                ((1.0 - t_tail / q) as f32, 1.0)
            };
            for (gj, &a) in g.iter_mut().zip(sr) {
                let ps = lanes::exp(a * inv - lse_s);
                *gj = wk * ps * c + wc * ce_term.eval(a, ps);
            }
            // Inside K: (p·c_in − t)/T instead of p·c/T.
            for (&j, &lt) in ids.iter().zip(lpt) {
                let a = sr[j as usize];
                let ps = lanes::exp(a * inv - lse_s);
                g[j as usize] += wk * (ps * (c_in - c) - lanes::exp(lt));
            }
            let y = targets[i] as usize;
            g[y] -= wc;
            (kd, (lse1 - sr[y]) as f64)
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
