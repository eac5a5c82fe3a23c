//! The importance matrix `llama-imatrix` computes, from our fused prefill: for every weight
//! matrix of every block, the sum over tokens of each input column's squared activation, and the
//! number of tokens. Chunks as llama-imatrix cuts them (its method is llama-perplexity's: the
//! whole text tokenized once, chunks of `ctx` tokens, the first replaced by BOS where the model
//! adds one); every token of a chunk counts, not only the scored half.
//!
//! Sums are kept in f64 (llama.cpp adds in f32, which loses about 1e-7 × √tokens relatively;
//! stored as f32 in the file either way).

use std::collections::BTreeMap;
use std::time::Instant;

use qd_model::decode::MatmulInput;
use qd_model::{Decoder, Embedding, Linear, Transformer};

use crate::error::{EvalError, Result};
use crate::perplexity::{chunk_input, plan_chunks, PerplexityParams};

/// What the passes collected, per weight matrix (`blk.N.attn_q.weight`, …).
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub sums: BTreeMap<String, Vec<f64>>,
    /// Tokens every matrix saw (chunks × ctx).
    pub tokens: u64,
    pub chunks: usize,
    pub seconds: f64,
}

/// Runs `chunks` of `tokens` through the fused prefill and collects the squared inputs of every
/// block's weight matrices; `on_chunk(done, total)` after each chunk (progress).
pub fn collect_imatrix<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    tokens: &[u32],
    p: &PerplexityParams,
    mut on_chunk: impl FnMut(usize, usize),
) -> Result<Collected> {
    let n_chunks = plan_chunks(tokens.len(), p)?;
    let mut decoder = Decoder::new(model, p.ctx)?.ok_or_else(|| {
        EvalError::Input(
            "this model's weights have no fused prefill path, which the imatrix collects from"
                .into(),
        )
    })?;
    let mut out = Collected::default();
    let start = Instant::now();
    for i in 0..n_chunks {
        let batch = chunk_input(tokens, i, p);
        let sums = &mut out.sums;
        decoder.prefill_observed(&batch, &mut |il, site: MatmulInput, x: &[f32]| {
            let width = x.len() / batch.len();
            let mut acc = vec![0f64; width];
            for row in x.chunks_exact(width) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += (v as f64) * (v as f64);
                }
            }
            for name in site.tensors() {
                let slot = sums
                    .entry(format!("blk.{il}.{name}.weight"))
                    .or_insert_with(|| vec![0f64; width]);
                for (s, a) in slot.iter_mut().zip(&acc) {
                    *s += a;
                }
            }
        })?;
        out.tokens += batch.len() as u64;
        out.chunks += 1;
        on_chunk(i + 1, n_chunks);
    }
    out.seconds = start.elapsed().as_secs_f64();
    if let Some((name, _)) = out
        .sums
        .iter()
        .find(|(_, v)| v.iter().any(|s| !s.is_finite()))
    {
        return Err(EvalError::Input(format!(
            "non-finite activations reached {name}; the model or text is damaged"
        )));
    }
    Ok(out)
}
