//! Perplexity exactly as llama.cpp's `llama-perplexity` computes it, so numbers compare 1:1:
//! the whole text tokenized once (BOS at the start when the model adds one), cut into chunks of
//! `ctx` tokens, the first token of each chunk replaced by BOS — only when the model's
//! `tokenizer.ggml.add_bos_token` says so (Qwen2's gpt2 tokenizer does not: replacing there
//! put a token the model never sees first and raised its perplexity by a third) — and only the
//! second half scored (the logits at positions ctx/2 … ctx−2 predict the following token).

use std::time::Instant;

use candle_core::Tensor;
use qd_model::{Decoder, Embedding, ForwardOpts, Linear, Logits, Transformer};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::nll::nll_of_targets;

#[derive(Debug, Clone, Copy)]
pub struct PerplexityParams {
    pub ctx: usize,
    /// At most this many chunks (all that fit when `None`).
    pub chunks: Option<usize>,
    /// The token that replaces each chunk's first: the model's BOS when its tokenizer adds one
    /// (`tokenizer.ggml.add_bos_token`), `None` when it does not (see [`chunk_bos`]).
    pub bos: Option<u32>,
    /// Through candle's graph even where the fused prefill (`qd_model::Decoder`) applies.
    pub graph: bool,
}

/// Running sums in llama-perplexity's form.
#[derive(Debug, Default, Clone, Copy)]
pub struct NllAccumulator {
    pub sum: f64,
    pub sum_sq: f64,
    pub count: usize,
}

impl NllAccumulator {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// Standard error of the perplexity, propagated from the NLLs as llama.cpp does.
    pub fn ppl_stderr(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            self.ppl() * (var / (n - 1.0)).sqrt()
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PerplexityReport {
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub n_scored: usize,
    pub n_chunks: usize,
    pub ctx: usize,
    pub n_tokens: usize,
    pub seconds: f64,
    /// Tokens evaluated (chunks × ctx) per second of forward passes.
    pub tokens_per_second: f64,
    /// Per-chunk running PPL, as llama-perplexity prints `[1]…,[2]…`.
    pub running: Vec<f64>,
}

/// How many chunks `tokens` gives and the range each scores; shared with `eval kl`.
pub fn plan_chunks(n_tokens: usize, p: &PerplexityParams) -> Result<usize> {
    if p.ctx < 4 || !p.ctx.is_multiple_of(2) {
        return Err(EvalError::Input(format!(
            "--ctx must be an even number ≥ 4, got {}",
            p.ctx
        )));
    }
    if n_tokens < 2 * p.ctx {
        return Err(EvalError::Input(format!(
            "the text has {n_tokens} tokens; at least 2×ctx = {} are needed",
            2 * p.ctx
        )));
    }
    let max = n_tokens / p.ctx;
    Ok(p.chunks.map_or(max, |c| c.min(max)).max(1))
}

/// llama-perplexity's choice of the chunks' first token, from the tokenizer's metadata: BOS
/// when the tokenizer adds BOS (an error when it has none to add), nothing otherwise; a
/// tokenizer that adds EOS is refused, as llama-perplexity asserts (an EOS appended to the
/// whole text would be scored as if the text ended there).
pub fn chunk_bos(add_bos: bool, bos: Option<u32>, add_eos: bool) -> Result<Option<u32>> {
    if add_eos {
        return Err(EvalError::Input(
            "the tokenizer appends EOS (tokenizer.ggml.add_eos_token), which llama-perplexity's \
             method does not allow"
                .into(),
        ));
    }
    match (add_bos, bos) {
        (false, _) => Ok(None),
        (true, Some(b)) => Ok(Some(b)),
        (true, None) => Err(EvalError::Input(
            "the tokenizer adds BOS (tokenizer.ggml.add_bos_token) but has no BOS token id".into(),
        )),
    }
}

/// The tokens the chunks score (each chunk's second half, less its first position), in order:
/// what bits per byte divides by, as UTF-8 bytes.
pub fn scored_targets(tokens: &[u32], p: &PerplexityParams) -> Result<Vec<u32>> {
    let n_chunks = plan_chunks(tokens.len(), p)?;
    Ok((0..n_chunks)
        .flat_map(|i| {
            tokens[i * p.ctx + p.ctx / 2 + 1..(i + 1) * p.ctx]
                .iter()
                .copied()
        })
        .collect())
}

/// Bits per byte: the scored tokens' total NLL in bits (`n_scored · ln ppl / ln 2`) over the
/// UTF-8 bytes they stand for. Unlike perplexity it compares models with different
/// tokenizers on the same text.
pub fn bits_per_byte(ppl: f64, n_scored: usize, bytes: u64) -> f64 {
    n_scored as f64 * ppl.ln() / std::f64::consts::LN_2 / bytes as f64
}

/// One chunk's input: its tokens with the first replaced by BOS where the model adds BOS.
pub fn chunk_input(tokens: &[u32], i: usize, p: &PerplexityParams) -> Vec<u32> {
    let mut batch = tokens[i * p.ctx..(i + 1) * p.ctx].to_vec();
    if let Some(b) = p.bos {
        batch[0] = b;
    }
    batch
}

pub fn perplexity<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    tokens: &[u32],
    p: &PerplexityParams,
    mut on_chunk: impl FnMut(usize, usize, &NllAccumulator),
) -> Result<PerplexityReport> {
    let n_chunks = plan_chunks(tokens.len(), p)?;
    let first = p.ctx / 2;
    let mut acc = NllAccumulator::default();
    let mut running = Vec::with_capacity(n_chunks);
    let mut decoder = if p.graph {
        None
    } else {
        Decoder::new(model, p.ctx)?
    };
    let start = Instant::now();
    for i in 0..n_chunks {
        let batch = chunk_input(tokens, i, p);
        let scored = first..p.ctx - 1;
        let normed = match decoder.as_mut() {
            Some(d) => Tensor::from_vec(
                d.prefill_normed(&batch, scored.clone())?,
                (scored.len(), model.hp.n_embd),
                &model.device,
            )?,
            None => {
                let input = Tensor::new(batch.as_slice(), &model.device)?.unsqueeze(0)?;
                let out = model.forward(
                    &input,
                    None,
                    &ForwardOpts {
                        logits: Logits::None,
                        hidden_states: false,
                    },
                )?;
                out.normed.squeeze(0)?.narrow(0, first, scored.len())?
            }
        };
        for (nll, _) in nll_of_targets(model, &normed, &batch[first + 1..])? {
            acc.add(nll);
        }
        running.push(acc.ppl());
        on_chunk(i + 1, n_chunks, &acc);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(PerplexityReport {
        ppl: acc.ppl(),
        ppl_stderr: acc.ppl_stderr(),
        n_scored: acc.count,
        n_chunks,
        ctx: p.ctx,
        n_tokens: tokens.len(),
        seconds,
        tokens_per_second: (n_chunks * p.ctx) as f64 / seconds,
        running,
    })
}
