//! Divergences between the teacher's and the student's next-token distributions at
//! temperature T: forward KL (the seed's), reverse KL, and the generalized Jensen–Shannon
//! divergence of TRL's GKD.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::log_softmax;

use super::{masked_sum, TokenSum};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    /// KL(p_T ‖ p_S): mean-seeking, the classic (Hinton) distillation loss.
    Forward,
    /// KL(p_S ‖ p_T): mode-seeking (MiniLLM).
    Reverse,
    /// β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m), m = β·p_T + (1−β)·p_S (TRL GKD). β = 0 and β = 1
    /// are taken as forward and reverse KL, as TRL does.
    Jsd { beta: f64 },
}

/// Per-row divergence between two log-distributions `[n, V]`.
pub(crate) fn rowwise(lp_t: &Tensor, lp_s: &Tensor, div: Divergence) -> Result<Tensor> {
    let kl = |p_log: &Tensor, q_log: &Tensor| -> Result<Tensor> {
        (p_log.exp()? * (p_log - q_log)?)?.sum(D::Minus1)
    };
    match div {
        Divergence::Forward => kl(lp_t, lp_s),
        Divergence::Reverse => kl(lp_s, lp_t),
        Divergence::Jsd { beta } if beta <= 0.0 => kl(lp_t, lp_s),
        Divergence::Jsd { beta } if beta >= 1.0 => kl(lp_s, lp_t),
        Divergence::Jsd { beta } => {
            // log m = logsumexp(log β + lp_T, log(1−β) + lp_S), elementwise.
            let a = (lp_t + beta.ln())?;
            let b = (lp_s + (1.0 - beta).ln())?;
            let m = a.maximum(&b)?;
            let lm = (&m + ((a - &m)?.exp()? + (b - &m)?.exp()?)?.log()?)?;
            kl(lp_t, &lm)?.affine(beta, 0.0)? + kl(lp_s, &lm)?.affine(1.0 - beta, 0.0)?
        }
    }
}

/// Σ over unmasked rows of D(teacher ‖ student) at temperature `t`, unscaled (the T² factor is
/// applied by [`super::combine`]). `student`, `teacher`: logits `[n, V]`; `mask`: `[n]`.
pub fn divergence(
    student: &Tensor,
    teacher: &Tensor,
    mask: &Tensor,
    t: f64,
    div: Divergence,
) -> Result<TokenSum> {
    let lp_s = log_softmax(&student.affine(1.0 / t, 0.0)?, D::Minus1)?;
    let lp_t = log_softmax(&teacher.detach().affine(1.0 / t, 0.0)?, D::Minus1)?;
    masked_sum(&rowwise(&lp_t, &lp_s, div)?, mask)
}
