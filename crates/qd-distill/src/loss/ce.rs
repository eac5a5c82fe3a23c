//! Hard-label cross-entropy, per token.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

use super::{masked_sum, TokenSum};

/// Σ over unmasked rows of −log p_S(label). `logits [n, V]`, `labels [n]` (any integer type;
/// masked rows may hold any id, e.g. padding).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, mask: &Tensor) -> Result<TokenSum> {
    let lp = log_softmax(logits, D::Minus1)?;
    let picked = lp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    masked_sum(&picked.neg()?, mask)
}
