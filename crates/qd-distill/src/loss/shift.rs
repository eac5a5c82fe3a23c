//! Next-token alignment: the logits at position i are scored against the token at i + 1, and
//! positions whose target is padding are masked (the seed scored unshifted labels and padding).

use candle_core::{DType, Device, Result, Tensor};

/// For `tokens [s]` (one sequence), returns `(targets [s−1], mask [s−1])`: the target of row i
/// is `tokens[i+1]`, masked out where it is `pad`.
pub fn next_token_targets(
    tokens: &[u32],
    pad: Option<u32>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    if tokens.len() < 2 {
        candle_core::bail!("a sequence needs at least 2 tokens to have a next-token target");
    }
    let targets = &tokens[1..];
    let mask: Vec<f32> = targets
        .iter()
        .map(|&t| if Some(t) == pad { 0.0 } else { 1.0 })
        .collect();
    Ok((
        Tensor::new(targets, device)?,
        Tensor::from_vec(mask, targets.len(), device)?.to_dtype(DType::F32)?,
    ))
}
