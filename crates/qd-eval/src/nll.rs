//! Negative log-likelihoods of target tokens, computed over the LM head in slices of positions
//! so that `[positions, vocab]` logits are never all alive at once.

use candle_core::{Tensor, D};
use qd_model::{Embedding, Linear, Transformer};

use crate::error::Result;

/// Positions per LM-head slice: 64 × 262 144 f32 logits = 64 MiB for gemma3.
pub const HEAD_SLICE: usize = 64;

/// For `normed [n, d]` and `targets[n]`, the NLL of each target and whether it was the argmax.
pub fn nll_of_targets<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    normed: &Tensor,
    targets: &[u32],
) -> Result<Vec<(f64, bool)>> {
    let n = normed.dim(0)?;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = HEAD_SLICE.min(n - start);
        let logits = model
            .lm_head(&normed.narrow(0, start, len)?.unsqueeze(0)?)?
            .squeeze(0)?;
        let lse = logits.log_sum_exp(D::Minus1)?.to_vec1::<f32>()?;
        let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let tgt = Tensor::new(&targets[start..start + len], logits.device())?.unsqueeze(1)?;
        let picked = logits.gather(&tgt, 1)?.squeeze(1)?.to_vec1::<f32>()?;
        for i in 0..len {
            out.push((
                lse[i] as f64 - picked[i] as f64,
                argmax[i] == targets[start + i],
            ));
        }
        start += len;
    }
    Ok(out)
}
