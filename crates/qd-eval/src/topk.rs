//! Per-position top-k next tokens: what a user looks at when a model misbehaves.

use candle_core::{Tensor, D};
use qd_model::{Embedding, ForwardOpts, Linear, Logits, Transformer};
use serde::Serialize;

use crate::error::Result;
use crate::nll::HEAD_SLICE;

#[derive(Debug, Clone, Serialize)]
pub struct PositionTopK {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub logsumexp: f32,
}

pub fn top_k<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    tokens: &[u32],
    k: usize,
) -> Result<Vec<PositionTopK>> {
    let input = Tensor::new(tokens, &model.device)?.unsqueeze(0)?;
    let out = model.forward(
        &input,
        None,
        &ForwardOpts {
            logits: Logits::None,
            hidden_states: false,
        },
    )?;
    let normed = out.normed.squeeze(0)?;
    let n = tokens.len();
    let mut res = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = HEAD_SLICE.min(n - start);
        let logits = model
            .lm_head(&normed.narrow(0, start, len)?.unsqueeze(0)?)?
            .squeeze(0)?;
        let lse = logits.log_sum_exp(D::Minus1)?.to_vec1::<f32>()?;
        for (i, row) in logits.to_vec2::<f32>()?.into_iter().enumerate() {
            let top = top_k_of_row(&row, k);
            res.push(PositionTopK {
                ids: top.iter().map(|&(id, _)| id).collect(),
                logprobs: top.iter().map(|&(_, l)| l - lse[i]).collect(),
                logsumexp: lse[i],
            });
        }
        start += len;
    }
    Ok(res)
}

/// The `k` largest entries, best first (ties by lower id).
pub fn top_k_of_row(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(row.len());
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}
