//! The LM heads and the loss over chunks of positions, so that `[positions, vocab]` logits of
//! both models never exist at once: for each chunk, teacher logits, student logits, the loss and
//! its gradient; then one backward pass through the student's body with the gradient that
//! reached its final hidden state.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use qd_model::{Embedding, Linear, Transformer};

use crate::loss::fused_topk::{fused_topk_loss, TopKRows};
use crate::loss::{cross_entropy, divergence, divergence_topk, fused, Divergence, TeacherTopK};
use crate::teacher_cache::{codec, CachedRows};

pub use crate::loss::{LossConfig, LossParts};

/// Keeps only the gradients of `params`: candle's backward also returns one for every
/// intermediate tensor (each `[chunk, vocab]` logits buffer among them), which must not be
/// carried from chunk to chunk.
pub fn only_params(g: &GradStore, params: &[Var]) -> GradStore {
    let mut out = GradStore::default();
    for p in params {
        if let Some(t) = g.get(p.as_tensor()) {
            out.insert(p.as_tensor(), t.clone());
        }
    }
    out
}

/// The teacher's side of the loss for one sequence.
pub enum TeacherRows<'a, TL, TE> {
    /// The teacher's final hidden states `[n, dt]`; its LM head runs chunk by chunk, and the
    /// loss sees the full vocabulary, or the top `top_k` ids and the tail when given.
    Model {
        model: &'a Transformer<TL, TE>,
        normed: &'a Tensor,
        top_k: Option<usize>,
    },
    /// A stored teacher (`teacher_cache`): its top-k ids, log-probabilities and tail.
    Cached(&'a CachedRows),
}

impl<TL: Linear, TE: Embedding> TeacherRows<'_, TL, TE> {
    /// Rows `start..start + len`: full logits, or the top-k signal.
    fn chunk(&self, start: usize, len: usize, temperature: f64) -> Result<Signal<'_>> {
        match self {
            Self::Model {
                model,
                normed,
                top_k,
            } => {
                let logits = model
                    .lm_head(&normed.narrow(0, start, len)?.unsqueeze(0)?)?
                    .squeeze(0)?;
                match top_k {
                    None => Ok(Signal::Logits(logits)),
                    Some(k) => Ok(Signal::TopK(TeacherTopK::from_logits(
                        &logits,
                        *k,
                        temperature,
                    )?)),
                }
            }
            Self::Cached(rows) => Ok(Signal::Cached(rows, start, len)),
        }
    }
}

/// One chunk of the teacher's signal.
enum Signal<'r> {
    Logits(Tensor),
    TopK(TeacherTopK),
    /// Rows `start..start + len` of a cached teacher.
    Cached(&'r CachedRows, usize, usize),
}

impl Signal<'_> {
    /// Whether the fused CPU loss handles this signal with `div`.
    fn fused(&self, div: Divergence) -> bool {
        match self {
            Signal::Logits(_) => fused::supports(div),
            _ => div == Divergence::Forward,
        }
    }

    /// The top-k signal as a tensor teacher (the composed loss's input).
    fn topk_tensors(&self, dev: &candle_core::Device) -> Result<Option<TeacherTopK>> {
        match self {
            Signal::Logits(_) => Ok(None),
            Signal::TopK(t) => Ok(Some(t.clone())),
            Signal::Cached(rows, start, len) => Ok(Some(rows.chunk(*start, *len, dev)?)),
        }
    }

    /// The fused loss of this chunk.
    fn fused_loss(
        &self,
        s_logits: &Tensor,
        targets: &[u32],
        mask: &[f32],
        cfg: &LossConfig,
        w_kd: f64,
        w_ce: f64,
    ) -> Result<fused::FusedChunk> {
        let t = cfg.temperature;
        let topk = |ids: &[u32], lps: &[f32], tails: &[f32], k: usize| {
            let rows = TopKRows {
                k,
                ids,
                logprobs: lps,
                log_tail: tails,
            };
            fused_topk_loss(s_logits, &rows, targets, mask, t, w_kd, w_ce)
        };
        match self {
            Signal::Logits(tl) => {
                fused::fused_loss(s_logits, tl, targets, mask, t, cfg.divergence, w_kd, w_ce)
            }
            Signal::TopK(tk) => {
                let k = tk.ids.dim(1)?;
                let ids = tk.ids.flatten_all()?.to_vec1::<u32>()?;
                let lps = tk.logprobs.flatten_all()?.to_vec1::<f32>()?;
                let tails: Vec<f32> = lps.chunks(k).map(codec::log_tail).collect();
                topk(&ids, &lps, &tails, k)
            }
            Signal::Cached(rows, start, len) => {
                let (a, b) = (start * rows.k, (start + len) * rows.k);
                topk(
                    &rows.ids[a..b],
                    &rows.logprobs[a..b],
                    &rows.log_tail[*start..start + len],
                    rows.k,
                )
            }
        }
    }
}

/// `student_normed [n, d]` is the student's final hidden state *with its graph*; the teacher's
/// side is `teacher`'s; row `i` predicts `targets[i]` where `mask[i]` is 1.
/// Returns the loss and the gradients of `params` (the student's trained tensors).
#[allow(clippy::too_many_arguments)]
pub fn chunked_loss_and_grads<L, E, TL, TE>(
    student: &Transformer<L, E>,
    params: &[Var],
    student_normed: &Tensor,
    teacher: &TeacherRows<'_, TL, TE>,
    targets: &Tensor,
    mask: &Tensor,
    cfg: &LossConfig,
) -> Result<(LossParts, GradStore)>
where
    L: Linear,
    E: Embedding,
    TL: Linear,
    TE: Embedding,
{
    let (parts, grads, _) = chunked_loss_and_grads_to(
        student,
        params,
        student_normed,
        None,
        teacher,
        targets,
        mask,
        cfg,
    )?;
    Ok((parts, grads))
}

/// As [`chunked_loss_and_grads`], also returning the gradient of `leaf` when given (a tensor
/// `student_normed`'s graph starts from: the last block's output when blocks are recomputed).
#[allow(clippy::too_many_arguments)]
pub fn chunked_loss_and_grads_to<L, E, TL, TE>(
    student: &Transformer<L, E>,
    params: &[Var],
    student_normed: &Tensor,
    leaf: Option<&Var>,
    teacher: &TeacherRows<'_, TL, TE>,
    targets: &Tensor,
    mask: &Tensor,
    cfg: &LossConfig,
) -> Result<(LossParts, GradStore, Option<Tensor>)>
where
    L: Linear,
    E: Embedding,
    TL: Linear,
    TE: Embedding,
{
    let n = student_normed.dim(0)?;
    let count = mask
        .to_dtype(candle_core::DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    let norm = if count > 0.0 { 1.0 / count } else { 0.0 };
    // A leaf standing for the hidden state: chunk graphs end here and are freed one by one.
    let h = Var::from_tensor(&student_normed.detach())?;
    let mut grad_h = h.as_tensor().zeros_like()?;
    let mut head_grads: Option<GradStore> = None;
    let mut parts = LossParts {
        tokens: count,
        ..Default::default()
    };
    // A frozen, plain LM head is differentiated by hand (grad_h = G·W, with G the loss's gradient
    // with respect to the logits), so autograd never builds the head weight's gradient it would
    // otherwise compute and drop — and a head kept in Q8_0 needs no autograd support at all.
    let by_hand = student.lm_head.is_frozen_plain();
    let h_plain = h.as_tensor().detach();
    let mut grad_rows = Vec::new();
    let mut start = 0;
    while start < n {
        let len = cfg.chunk.max(1).min(n - start);
        let h_in = if by_hand { &h_plain } else { h.as_tensor() };
        let chunk = Chunk {
            s_logits: student
                .lm_head(&h_in.narrow(0, start, len)?.unsqueeze(0)?)?
                .squeeze(0)?,
            signal: teacher.chunk(start, len, cfg.temperature)?,
            targets: targets.narrow(0, start, len)?,
            mask: mask.narrow(0, start, len)?,
        };
        match chunk_loss(student, chunk, cfg, norm, by_hand, &mut parts)? {
            ChunkOut::HiddenGrad(g) => grad_rows.push(g),
            ChunkOut::Loss(loss) => {
                let g = loss.backward()?;
                if let Some(gh) = g.get(h.as_tensor()) {
                    grad_h = (grad_h + gh)?;
                }
                let g = only_params(&g, params);
                match head_grads.as_mut() {
                    None => head_grads = Some(g),
                    Some(acc) => acc.extend(g)?,
                }
            }
        }
        start += len;
    }
    if !grad_rows.is_empty() {
        grad_h = Tensor::cat(&grad_rows, 0)?;
    }
    super::memory::mark("loss and LM head");
    // One pass through the body: d(⟨normed, grad_h⟩)/dθ is exactly the chain rule's term.
    let body = (student_normed * grad_h.detach())?.sum_all()?.backward()?;
    super::memory::mark("backward");
    let mut grads = only_params(&body, params);
    let leaf_grad = leaf.and_then(|v| body.get(v.as_tensor()).cloned());
    drop(body);
    if let Some(hg) = head_grads {
        grads.extend(hg)?;
    }
    Ok((parts, grads, leaf_grad))
}

/// One chunk of positions: the student's logits, the teacher's signal, targets and mask.
struct Chunk<'r> {
    s_logits: Tensor,
    signal: Signal<'r>,
    targets: Tensor,
    mask: Tensor,
}

/// What a chunk's loss leaves: with the head done by hand, the gradient of the hidden rows
/// directly; otherwise the loss, still to be differentiated.
enum ChunkOut {
    HiddenGrad(Tensor),
    Loss(Tensor),
}

/// One chunk's loss (fused on the CPU where the signal allows it, else composed of candle
/// ops), its parts added to `parts`.
fn chunk_loss<L: Linear, E: Embedding>(
    student: &Transformer<L, E>,
    c: Chunk<'_>,
    cfg: &LossConfig,
    norm: f64,
    by_hand: bool,
    parts: &mut LossParts,
) -> Result<ChunkOut> {
    let t2 = cfg.temperature * cfg.temperature;
    let (w_kd, w_ce) = (cfg.alpha * t2 * norm, (1.0 - cfg.alpha) * norm);
    if cfg.fused && c.signal.fused(cfg.divergence) {
        let f = c.signal.fused_loss(
            &c.s_logits.detach(),
            &c.targets.to_dtype(DType::U32)?.to_vec1::<u32>()?,
            &c.mask.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            cfg,
            w_kd,
            w_ce,
        )?;
        parts.kd += f.kd_sum * norm;
        parts.ce += f.ce_sum * norm;
        parts.total += w_kd * f.kd_sum + w_ce * f.ce_sum;
        if by_hand {
            // logits = h·Wᵀ, and the loss's gradient with respect to them is `f.grad`.
            return Ok(ChunkOut::HiddenGrad(
                student.lm_head.frozen_input_grad(&f.grad)?,
            ));
        }
        // Its gradient with respect to the logits is exactly `f.grad`.
        return Ok(ChunkOut::Loss((c.s_logits * f.grad)?.sum_all()?));
    }
    // Under autograd: a leaf for the logits when the head is done by hand.
    let logits_leaf = if by_hand {
        Some(Var::from_tensor(&c.s_logits)?)
    } else {
        None
    };
    let s_logits = match &logits_leaf {
        Some(v) => v.as_tensor().clone(),
        None => c.s_logits,
    };
    let (m, t) = (&c.mask, cfg.temperature);
    let kd = match (&c.signal, c.signal.topk_tensors(s_logits.device())?) {
        (_, Some(tk)) => divergence_topk(&s_logits, &tk, m, t, cfg.divergence)?,
        (Signal::Logits(tl), None) => divergence(&s_logits, tl, m, t, cfg.divergence)?,
        _ => unreachable!("every top-k signal has its tensors"),
    };
    let ce = cross_entropy(&s_logits, &c.targets, m)?;
    let loss = (kd.sum.affine(w_kd, 0.0)? + ce.sum.affine(w_ce, 0.0)?)?;
    parts.kd += kd.sum.to_dtype(DType::F64)?.to_scalar::<f64>()? * norm;
    parts.ce += ce.sum.to_dtype(DType::F64)?.to_scalar::<f64>()? * norm;
    parts.total += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let Some(leaf) = &logits_leaf else {
        return Ok(ChunkOut::Loss(loss));
    };
    let g = loss.backward()?;
    let gl = g
        .get(leaf.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("loss does not depend on the logits".into()))?;
    Ok(ChunkOut::HiddenGrad(student.lm_head.frozen_input_grad(gl)?))
}
