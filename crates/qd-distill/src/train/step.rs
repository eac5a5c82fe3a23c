//! One optimizer step's worth of work: forward both models over each sequence of a batch,
//! the chunked loss and gradients, accumulated and averaged over the sequences.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use qd_model::{Embedding, ForwardOpts, Linear, Logits, Transformer};

use crate::student::VocabMap;
use crate::teacher_cache::{CachedRows, SeqRef, TeacherCache};

use super::chunked::{chunked_loss_and_grads_to, LossConfig, LossParts, TeacherRows};
use super::memory;
use super::recompute::StudentPass;

/// Where a step's teacher signal comes from.
pub enum TeacherSource<'a, TL, TE> {
    /// The teacher run on each example (full vocabulary, or its top `top_k` + tail).
    Model {
        model: &'a Transformer<TL, TE>,
        top_k: Option<usize>,
    },
    /// A stored teacher: each example's positions read from the cache.
    Cache(&'a TeacherCache),
}

/// One sequence's loss, taken as far as the student's blocks: the loss's parts, the
/// gradients the loss itself gives (the head's, the final norm's; every parameter's when
/// blocks are not recomputed), and the pass that carries them through the blocks.
pub struct SequenceLoss {
    pub parts: LossParts,
    pub pass: StudentPass,
    pub grads: GradStore,
    /// The gradient of the pass's leaf (recomputing passes only).
    pub leaf_grad: Option<Tensor>,
}

/// [`SequenceLoss`] of `ex` (sequence `seq`, where a teacher cache needs it) under `cfg`.
#[allow(clippy::too_many_arguments)]
pub fn sequence_loss<L, E, TL, TE>(
    student: &Transformer<L, E>,
    params: &[candle_core::Var],
    teacher: &TeacherSource<'_, TL, TE>,
    ex: &crate::data::Example,
    seq: Option<SeqRef>,
    pad: Option<u32>,
    cfg: &LossConfig,
    vocab: Option<&VocabMap>,
) -> Result<SequenceLoss>
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
    let (targets, mask) = crate::loss::shift::next_token_targets(&ex.tokens, pad, &dev)?;
    if ex.inputs.len() + 1 != ex.tokens.len() {
        candle_core::bail!("an example's inputs must be its tokens but the last");
    }
    let x = Tensor::new(ex.inputs.as_slice(), &dev)?.unsqueeze(0)?;
    let pass = StudentPass::run(student, &x, cfg.checkpoint_blocks)?;
    memory::mark("student forward");
    // The teacher's side of this sequence, then one loss over it.
    let (t_normed, cached);
    let rows = match teacher {
        TeacherSource::Model { model, top_k } => {
            let tx = match vocab {
                Some(m) => Tensor::new(m.to_teacher(&ex.inputs), &dev)?.unsqueeze(0)?,
                None => x.clone(),
            };
            t_normed = model
                .forward(&tx, None, &opts)
                .map_err(candle_core::Error::wrap)?
                .normed
                .squeeze(0)?;
            memory::mark("teacher forward");
            TeacherRows::Model {
                model: *model,
                normed: &t_normed,
                top_k: *top_k,
            }
        }
        TeacherSource::Cache(cache) => {
            let r = seq.ok_or_else(|| {
                candle_core::Error::Msg("a cached teacher needs each example's sequence".into())
            })?;
            let stored = cache
                .get(r)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            cached =
                CachedRows::of(&stored, &ex.inputs, cache.k()).map_err(candle_core::Error::Msg)?;
            TeacherRows::Cached(&cached)
        }
    };
    let (parts, grads, leaf_grad) = chunked_loss_and_grads_to(
        student,
        params,
        &pass.normed,
        pass.leaf(),
        &rows,
        &targets,
        &mask,
        cfg,
    )?;
    Ok(SequenceLoss {
        parts,
        pass,
        grads,
        leaf_grad,
    })
}

/// Loss and gradients averaged over `examples` (each at least 2 tokens; targets shifted by one,
/// `pad` targets masked; both models read each example's `inputs`; `refs[i]` is example `i`'s
/// sequence, where a cache needs it). With a trimmed student, `vocab` maps its ids to the
/// teacher's, and `teacher`'s LM head is restricted to the kept ids.
#[allow(clippy::too_many_arguments)]
pub fn batch_loss_and_grads<L, E, TL, TE>(
    student: &Transformer<L, E>,
    params: &[candle_core::Var],
    teacher: &TeacherSource<'_, TL, TE>,
    examples: &[crate::data::Example],
    refs: &[SeqRef],
    pad: Option<u32>,
    cfg: &LossConfig,
    vocab: Option<&VocabMap>,
) -> Result<(LossParts, GradStore)>
where
    L: Linear,
    E: Embedding,
    TL: Linear,
    TE: Embedding,
{
    if examples.is_empty() {
        candle_core::bail!("empty batch");
    }
    let scale = 1.0 / examples.len() as f64;
    let mut total = LossParts::default();
    let mut acc: Option<GradStore> = None;
    for (i, ex) in examples.iter().enumerate() {
        let SequenceLoss {
            parts: p,
            pass,
            grads,
            leaf_grad,
        } = sequence_loss(
            student,
            params,
            teacher,
            ex,
            refs.get(i).copied(),
            pad,
            cfg,
            vocab,
        )?;
        let grads = pass.finish(student, params, grads, leaf_grad, cfg.bf16_grads)?;
        memory::mark("gradients");
        total.total += p.total * scale;
        total.kd += p.kd * scale;
        total.ce += p.ce * scale;
        total.tokens += p.tokens;
        // Scale this sequence's gradients by 1/len before adding them up — not for a batch of
        // one, where it would copy every gradient to multiply it by 1 (the `+ 0` of the copy
        // only turns -0 into +0, which every later use does as well: the same bits).
        let scaled = if examples.len() == 1 {
            grads
        } else {
            let mut scaled = GradStore::default();
            for id in grads.get_ids().copied().collect::<Vec<_>>() {
                scaled.insert_id(id, grads.get_id(id).expect("listed").affine(scale, 0.0)?);
            }
            scaled
        };
        match acc.as_mut() {
            None => acc = Some(scaled),
            Some(a) => a.extend(scaled)?,
        }
    }
    Ok((total, acc.expect("non-empty batch")))
}
