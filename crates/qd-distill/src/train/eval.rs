//! Held-out loss of the student: cross-entropy (its perplexity) and divergence from the teacher,
//! chunked over positions like training, without gradients.

use candle_core::{Result, Tensor};
use qd_model::{Embedding, ForwardOpts, Linear, Logits, Transformer};

use crate::loss::{cross_entropy, divergence, Divergence};
use crate::student::VocabMap;

/// `log Σ exp` of each row of `[n, v]` logits.
fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(1)?;
    x.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m
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

pub fn evaluate<L, E, TL, TE>(
    student: &Transformer<L, E>,
    teacher: &Transformer<TL, TE>,
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
    for seq in seqs {
        let (targets, mask) = crate::loss::shift::next_token_targets(seq, None, &dev)?;
        let x = Tensor::new(&seq[..seq.len() - 1], &dev)?.unsqueeze(0)?;
        let s = student
            .forward(&x, None, &opts)
            .map_err(candle_core::Error::wrap)?
            .normed
            .squeeze(0)?
            .detach();
        let tx = match vocab {
            Some((m, _)) => Tensor::new(m.to_teacher(&seq[..seq.len() - 1]), &dev)?.unsqueeze(0)?,
            None => x.clone(),
        };
        let t = teacher
            .forward(&tx, None, &opts)
            .map_err(candle_core::Error::wrap)?
            .normed
            .squeeze(0)?;
        let len = s.dim(0)?;
        let mut start = 0;
        while start < len {
            let l = chunk.max(1).min(len - start);
            let sl = student
                .lm_head(&s.narrow(0, start, l)?.unsqueeze(0)?)?
                .squeeze(0)?
                .detach();
            let tl = teacher
                .lm_head(&t.narrow(0, start, l)?.unsqueeze(0)?)?
                .squeeze(0)?;
            let m = mask.narrow(0, start, l)?;
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
            let c = cross_entropy(&sl, &targets.narrow(0, start, l)?, &m)?;
            let k = divergence(&sl, &tl, &m, temperature, Divergence::Forward)?;
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
