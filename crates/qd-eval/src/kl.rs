//! KL divergence of a model to a reference, as `llama-perplexity --kl-divergence` reports it:
//! over exactly the positions `perplexity` scores, chunk by chunk (no store of all reference
//! logits), mean KL(reference‖model) with its standard error and quantiles, the perplexity of
//! both and their ratio, and how often both put the same token on top.

use std::time::Instant;

use candle_core::Tensor;
use qd_model::{Decoder, Embedding, ForwardOpts, Linear, Logits, Transformer};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::perplexity::{chunk_input, plan_chunks, NllAccumulator, PerplexityParams};

#[derive(Debug, Clone, Serialize)]
pub struct KlReport {
    pub mean_kl: f64,
    pub kl_stderr: f64,
    pub kl_median: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    /// Fraction of positions where both models' most likely token is the same.
    pub same_top: f64,
    pub same_top_stderr: f64,
    pub ppl_reference: f64,
    pub ppl_model: f64,
    /// PPL(model) / PPL(reference) = exp(mean(NLL_model − NLL_reference)).
    pub ppl_ratio: f64,
    pub n_scored: usize,
    pub n_chunks: usize,
    pub ctx: usize,
    pub seconds: f64,
}

/// Per scored position: (KL(ref‖model), NLL_ref, NLL_model, same argmax).
fn compare_row(r: &[f32], m: &[f32], target: usize) -> (f64, f64, f64, bool) {
    let lse = |x: &[f32]| {
        let mx = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        mx + x.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln()
    };
    let (lr, lm) = (lse(r), lse(m));
    let mut kl = 0.0;
    for (&a, &b) in r.iter().zip(m) {
        let lpr = a as f64 - lr;
        kl += lpr.exp() * (lpr - (b as f64 - lm));
    }
    let argmax = |x: &[f32]| {
        x.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0
    };
    (
        kl.max(0.0),
        lr - r[target] as f64,
        lm - m[target] as f64,
        argmax(r) == argmax(m),
    )
}

fn scored_logits<L: Linear, E: Embedding>(
    m: &Transformer<L, E>,
    decoder: Option<&mut Decoder>,
    batch: &[u32],
    first: usize,
) -> Result<Vec<Vec<f32>>> {
    if let Some(d) = decoder {
        let logits = d.prefill(batch, first..batch.len() - 1)?;
        return Ok(logits
            .chunks_exact(m.hp.vocab_size)
            .map(<[f32]>::to_vec)
            .collect());
    }
    let input = Tensor::new(batch, &m.device)?.unsqueeze(0)?;
    let out = m.forward(
        &input,
        None,
        &ForwardOpts {
            logits: Logits::Range(first..batch.len() - 1),
            hidden_states: false,
        },
    )?;
    let logits = out.logits.expect("logits were requested");
    Ok(logits
        .squeeze(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec2()?)
}

pub fn kl_divergence<L1: Linear, E1: Embedding, L2: Linear, E2: Embedding>(
    model: &Transformer<L1, E1>,
    reference: &Transformer<L2, E2>,
    tokens: &[u32],
    p: &PerplexityParams,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<KlReport> {
    let n_chunks = plan_chunks(tokens.len(), p)?;
    let first = p.ctx / 2;
    let (mut nll_r, mut nll_m) = (NllAccumulator::default(), NllAccumulator::default());
    let (mut kls, mut same) = (Vec::new(), 0usize);
    let (mut dr, mut dm) = if p.graph {
        (None, None)
    } else {
        (Decoder::new(reference, p.ctx)?, Decoder::new(model, p.ctx)?)
    };
    let start = Instant::now();
    for i in 0..n_chunks {
        let batch = chunk_input(tokens, i, p);
        let r = scored_logits(reference, dr.as_mut(), &batch, first)?;
        let m = scored_logits(model, dm.as_mut(), &batch, first)?;
        let rows: Vec<(f64, f64, f64, bool)> = r
            .par_iter()
            .zip(&m)
            .enumerate()
            .map(|(j, (r, m))| compare_row(r, m, batch[first + j + 1] as usize))
            .collect();
        for (kl, a, b, s) in rows {
            kls.push(kl);
            nll_r.add(a);
            nll_m.add(b);
            same += usize::from(s);
        }
        on_chunk(i + 1, n_chunks, kls.iter().sum::<f64>() / kls.len() as f64);
    }
    let n = kls.len() as f64;
    let mean = kls.iter().sum::<f64>() / n;
    let var = kls.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let mut sorted = kls.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |f: f64| sorted[((n - 1.0) * f).round() as usize];
    let top = same as f64 / n;
    Ok(KlReport {
        mean_kl: mean,
        kl_stderr: (var / n).sqrt(),
        kl_median: q(0.5),
        kl_p99: q(0.99),
        kl_max: q(1.0),
        same_top: top,
        same_top_stderr: (top * (1.0 - top) / (n - 1.0).max(1.0)).sqrt(),
        ppl_reference: nll_r.ppl(),
        ppl_model: nll_m.ppl(),
        ppl_ratio: ((nll_m.sum - nll_r.sum) / n).exp(),
        n_scored: kls.len(),
        n_chunks,
        ctx: p.ctx,
        seconds: start.elapsed().as_secs_f64(),
    })
}
