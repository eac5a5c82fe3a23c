//! `eval kl --teacher-cache`: a model's divergence from the stored teacher on the stored text —
//! KL(teacher ‖ model) over the teacher's top-k ids and the tail at the cache's temperature, at
//! every position of the chosen sequences — with no teacher file in reach.

use candle_core::{DType, Tensor, D};
use qd_model::{Embedding, ForwardOpts, Linear, Logits, Transformer};

use super::{CacheError, CachedRows, SeqRef, Split, TeacherCache};
use crate::loss::{cross_entropy, divergence_topk, Divergence};

#[derive(Debug, Clone, serde::Serialize)]
pub struct CachedKl {
    /// Mean KL per position over the k + 1 bins, and its standard error.
    pub mean_kl: f64,
    pub kl_stderr: f64,
    /// Positions where the model's most likely id is the teacher's.
    pub same_top: f64,
    /// The model's perplexity on the cached text (every position).
    pub ppl_model: f64,
    pub positions: usize,
    pub sequences: usize,
    pub k: usize,
    pub temperature: f64,
}

/// The sequences of `split` in the cache (held-out or training), at most `max`.
pub fn sequences_of(cache: &TeacherCache, split: Split, max: Option<usize>) -> Vec<SeqRef> {
    let mut v: Vec<SeqRef> = cache
        .manifest
        .shards
        .iter()
        .flat_map(|s| s.sequences.iter().copied())
        .filter(|r| r.split == split)
        .collect();
    v.sort();
    v.truncate(max.unwrap_or(usize::MAX));
    v
}

/// KL(teacher ‖ model) per position over the cached top-k + tail, for `seqs`; `on_seq` sees
/// (done, total, running mean KL).
pub fn kl_to_cache<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    cache: &TeacherCache,
    seqs: &[SeqRef],
    mut on_seq: impl FnMut(usize, usize, f64),
) -> Result<CachedKl, CacheError> {
    let err = |e: candle_core::Error| CacheError::Build(format!("computing the KL: {e}"));
    let t = cache.manifest.identity.temperature;
    let dev = model.device.clone();
    let (mut sum, mut sq, mut same, mut ce, mut n) = (0f64, 0f64, 0usize, 0f64, 0usize);
    let opts = ForwardOpts {
        logits: Logits::All,
        hidden_states: false,
    };
    for (i, &r) in seqs.iter().enumerate() {
        let seq = cache.get(r)?;
        let inputs = &seq.tokens[..seq.tokens.len() - 1];
        let rows = CachedRows::of(&seq, inputs, cache.k()).map_err(CacheError::Build)?;
        let x = Tensor::new(inputs, &dev)
            .and_then(|x| x.unsqueeze(0))
            .map_err(err)?;
        let logits = model
            .forward(&x, None, &opts)
            .map_err(|e| CacheError::Build(e.to_string()))?
            .logits
            .expect("asked for logits")
            .squeeze(0)
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(err)?;
        let len = inputs.len();
        let per_row = (|| -> candle_core::Result<(Vec<f32>, f64, Vec<u32>)> {
            let top = rows.chunk(0, len, &dev)?;
            let ones = Tensor::ones(1, DType::F32, &dev)?;
            // One position at a time, so each KL is its own (for the standard error).
            let mut kls = Vec::with_capacity(len);
            for p in 0..len {
                let sl = logits.narrow(0, p, 1)?;
                let tp = crate::loss::TeacherTopK {
                    ids: top.ids.narrow(0, p, 1)?,
                    logprobs: top.logprobs.narrow(0, p, 1)?,
                    log_tail: top
                        .log_tail
                        .as_ref()
                        .map(|t| t.narrow(0, p, 1))
                        .transpose()?,
                };
                let k = divergence_topk(&sl, &tp, &ones, t, Divergence::Forward)?;
                kls.push(k.sum.to_scalar::<f32>()?);
            }
            let targets = Tensor::new(&seq.tokens[1..], &dev)?;
            let c = cross_entropy(&logits, &targets, &Tensor::ones(len, DType::F32, &dev)?)?;
            let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            Ok((kls, c.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?, argmax))
        })()
        .map_err(err)?;
        let (kls, c, argmax) = per_row;
        for (p, &k) in kls.iter().enumerate() {
            sum += k as f64;
            sq += (k as f64) * (k as f64);
            same += usize::from(argmax[p] == rows.ids[p * rows.k]);
        }
        ce += c;
        n += len;
        on_seq(i + 1, seqs.len(), sum / n as f64);
    }
    if n == 0 {
        return Err(CacheError::Build("no cached sequence to score".into()));
    }
    let mean = sum / n as f64;
    let var = (sq / n as f64 - mean * mean).max(0.0);
    Ok(CachedKl {
        mean_kl: mean,
        kl_stderr: (var / n as f64).sqrt(),
        same_top: same as f64 / n as f64,
        ppl_model: (ce / n as f64).exp(),
        positions: n,
        sequences: seqs.len(),
        k: cache.k(),
        temperature: t,
    })
}
