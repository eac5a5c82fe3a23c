//! Held-out loss of the student: cross-entropy (its perplexity) and divergence from the teacher,
//! chunked over positions like training, without gradients.

use candle_core::{Result, Tensor};
use qd_model::{Embedding, ForwardOpts, Linear, Logits, Transformer};

use super::step::TeacherSource;
use crate::loss::{cross_entropy, divergence, divergence_topk, Divergence};
use crate::student::VocabMap;
use crate::teacher_cache::{CachedRows, SeqRef, Split};

/// `log Σ exp` of each row of `[n, v]` logits.
fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(1)?;
    x.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m
}

/// One held-out sequence's teacher: the model with its final hidden states, or cached rows.
enum Side<'a, TL, TE> {
    Model(&'a Transformer<TL, TE>, Tensor),
    Cached(CachedRows),
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EvalReport {
    pub ce: f64,
    pub ppl: f64,
    pub kd: f64,
    pub tokens: f64,
    /// With a trimmed student: the mean teacher probability per token on ids the student does
    /// not have (the mass the restricted, renormalised teacher distribution leaves out).
    pub teacher_mass_dropped: f64,
}

/// The student's held-out figures on `seqs` (the run's first held-out sequences, in order):
/// against the teacher's full distribution, or against a cache's top-k + tail (then `kd` is
/// that divergence).
pub fn evaluate<L, E, TL, TE>(
    student: &Transformer<L, E>,
    source: &TeacherSource<'_, TL, TE>,
    seqs: &[Vec<u32>],
    temperature: f64,
    chunk: usize,
    vocab: Option<(&VocabMap, &TL)>,
) -> Result<EvalReport>
where
    L: Linear,
    E: Embedding,
    TL: Linear,
    TE: Embedding,
{
    let dev = student.device.clone();
    let opts = ForwardOpts {
        logits: Logits::None,
        hidden_states: false,
    };
    let (mut ce, mut kd, mut n, mut dropped) = (0f64, 0f64, 0f64, 0f64);
    for (i, seq) in seqs.iter().enumerate() {
        let (targets, mask) = crate::loss::shift::next_token_targets(seq, None, &dev)?;
        let inputs = &seq[..seq.len() - 1];
        let x = Tensor::new(inputs, &dev)?.unsqueeze(0)?;
        // Block by block: the student's weights are variables, and a whole-model graph
        // would hold every block's activations (gigabytes for a 0.5B student) for nothing.
        let s = super::recompute::forward_detached(student, &x)?;
        let len = s.dim(0)?;
        // The teacher's side of this sequence: its final hidden states, or its cached rows.
        let side = match source {
            TeacherSource::Model { model, .. } => {
                let tx = match vocab {
                    Some((m, _)) => Tensor::new(m.to_teacher(inputs), &dev)?.unsqueeze(0)?,
                    None => x.clone(),
                };
                let t = model
                    .forward(&tx, None, &opts)
                    .map_err(candle_core::Error::wrap)?
                    .normed
                    .squeeze(0)?;
                Side::Model(*model, t)
            }
            TeacherSource::Cache(cache) => {
                let r = SeqRef {
                    split: Split::Val,
                    index: i,
                };
                let seq = cache
                    .get(r)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                Side::Cached(
                    CachedRows::of(&seq, inputs, cache.k()).map_err(candle_core::Error::Msg)?,
                )
            }
        };
        let mut start = 0;
        while start < len {
            let l = chunk.max(1).min(len - start);
            let sl = student
                .lm_head(&s.narrow(0, start, l)?.unsqueeze(0)?)?
                .squeeze(0)?
                .detach();
            let m = mask.narrow(0, start, l)?;
            let k = match &side {
                Side::Cached(rows) => {
                    let t = rows.chunk(start, l, &dev)?;
                    divergence_topk(&sl, &t, &m, temperature, Divergence::Forward)?
                }
                Side::Model(teacher, t) => {
                    let tl = teacher
                        .lm_head(&t.narrow(0, start, l)?.unsqueeze(0)?)?
                        .squeeze(0)?;
                    if let Some((_, full_head)) = vocab {
                        // Kept mass = e^{lse(kept logits) − lse(all logits)}.
                        let full = full_head
                            .forward(&t.narrow(0, start, l)?.contiguous()?)?
                            .to_dtype(candle_core::DType::F32)?;
                        let kept = (logsumexp_rows(&tl)? - logsumexp_rows(&full)?)?.exp()?;
                        let lost = (kept.squeeze(1)?.affine(-1.0, 1.0)?
                            * &m.to_dtype(candle_core::DType::F32)?)?;
                        dropped += lost
                            .sum_all()?
                            .to_dtype(candle_core::DType::F64)?
                            .to_scalar::<f64>()?;
                    }
                    divergence(&sl, &tl, &m, temperature, Divergence::Forward)?
                }
            };
            let c = cross_entropy(&sl, &targets.narrow(0, start, l)?, &m)?;
            ce += c
                .sum
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            kd += k
                .sum
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            n += c.count;
            start += l;
        }
    }
    let ce = if n > 0.0 { ce / n } else { 0.0 };
    Ok(EvalReport {
        ce,
        ppl: ce.exp(),
        kd: if n > 0.0 { kd / n } else { 0.0 },
        tokens: n,
        teacher_mass_dropped: if n > 0.0 { dropped / n } else { 0.0 },
    })
}
