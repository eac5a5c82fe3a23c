//! Distillation losses, all per token: each returns a [`TokenSum`] — the sum over unmasked
//! positions and their count — so that losses computed over chunks of positions add up to the
//! loss over all of them, and the mean is taken once, per token (not per vocabulary entry: the
//! seed's `reduction="mean"` over `[tokens, vocab]` shrank the soft loss by the vocabulary size).
//!
//! Rows are already aligned for next-token prediction: row `i` of the logits is scored against
//! the token at position `i + 1` (see [`shift::next_token_targets`]).

pub mod ce;
pub mod config;
pub mod divergence;
pub mod feature;
pub mod fused;
pub mod fused_topk;
pub mod lanes;
pub mod shift;
pub mod topk;

use candle_core::{Result, Tensor};

pub use ce::cross_entropy;
pub use config::{LossConfig, LossParts};
pub use divergence::{divergence, Divergence};
pub use feature::{feature_loss, FeatureKind};
pub use topk::{divergence_topk, TeacherTopK};

/// A loss summed over unmasked tokens, with their count.
#[derive(Debug, Clone)]
pub struct TokenSum {
    /// Scalar tensor (keeps the autograd graph).
    pub sum: Tensor,
    pub count: f64,
}

impl TokenSum {
    /// Adds another chunk's sum.
    pub fn add(&self, other: &TokenSum) -> Result<TokenSum> {
        Ok(TokenSum {
            sum: (&self.sum + &other.sum)?,
            count: self.count + other.count,
        })
    }

    /// The per-token mean (0 when no token counted).
    pub fn mean(&self) -> Result<Tensor> {
        if self.count == 0.0 {
            return self.sum.zeros_like();
        }
        self.sum.affine(1.0 / self.count, 0.0)
    }
}

/// `α·T²·D(teacher‖student) + (1−α)·CE + β·feature`, each a per-token mean.
pub fn combine(
    kd: &Tensor,
    ce: &Tensor,
    feature: Option<&Tensor>,
    alpha: f64,
    temperature: f64,
    beta: f64,
) -> Result<Tensor> {
    let t2 = temperature * temperature;
    let mut total = (kd.affine(alpha * t2, 0.0)? + ce.affine(1.0 - alpha, 0.0)?)?;
    if let Some(f) = feature {
        total = (total + f.affine(beta, 0.0)?)?;
    }
    Ok(total)
}

/// Sums `per_token [n]` where `mask [n]` is 1.
pub(crate) fn masked_sum(per_token: &Tensor, mask: &Tensor) -> Result<TokenSum> {
    let mask = mask.to_dtype(per_token.dtype())?;
    let count = mask
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(TokenSum {
        sum: (per_token * mask)?.sum_all()?,
        count,
    })
}
