//! A step whose gradients are never held whole (`update_in_backward`): the student's blocks are
//! differentiated twice. The first backward only measures — each block's gradients are made,
//! their squared norms kept, the gradients dropped — so that the global norm, and with it the
//! clipping factor, is known; the second recomputes each block's gradients and updates that
//! block at once, before the block below is differentiated. Memory holds one block's gradients
//! instead of every parameter's (bf16: 2 bytes a parameter, f32: 4), for one more recomputing
//! backward's time.
//!
//! The bits are the stored-gradient step's: each parameter's gradient is made by the same ops
//! from the same inputs (a block's gradients do not depend on its own update, which comes after
//! them, nor on the blocks below), the norm sums the same squared norms in the same order as
//! [`super::adamw::clip_owned_grads`], and each parameter's update depends only on its own
//! gradient and state ([`AdamW::apply`]). One sequence a step: a batch's gradients are a sum,
//! whose norm needs every sequence's gradients at once.

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};
use qd_model::{Embedding, Linear, Transformer};

use crate::student::VocabMap;
use crate::teacher_cache::SeqRef;

use super::adamw::{clip_scale, scale_grads, squared_norm, AdamW};
use super::chunked::{LossConfig, LossParts};
use super::memory;
use super::recompute::{narrow_grads, Part, StudentPass};
use super::step::{sequence_loss, SequenceLoss, TeacherSource};

/// A sequence's loss and gradient norm after the measuring backward; [`Self::update`] runs the
/// second backward and the update.
pub struct Measured {
    pub parts: LossParts,
    /// The global gradient norm before clipping, as the stored-gradient step reports it.
    pub grad_norm: f64,
    pass: StudentPass,
    /// The loss's own gradients (the final norm's; the head's where trained).
    loss_grads: GradStore,
    leaf_grad: Option<Tensor>,
    bf16: bool,
}

/// The loss of `ex` (sequence `seq`) and the norm of its gradients, none of which is kept.
#[allow(clippy::too_many_arguments)]
pub fn measure<L, E, TL, TE>(
    student: &Transformer<L, E>,
    params: &[Var],
    named: &BTreeMap<String, Var>,
    teacher: &TeacherSource<'_, TL, TE>,
    ex: &crate::data::Example,
    seq: Option<SeqRef>,
    cfg: &LossConfig,
    vocab: Option<&VocabMap>,
) -> Result<Measured>
where
    L: Linear,
    E: Embedding,
    TL: Linear,
    TE: Embedding,
{
    if !cfg.checkpoint_blocks {
        candle_core::bail!("update_in_backward recomputes the blocks: it needs checkpoint_blocks");
    }
    let SequenceLoss {
        parts,
        mut pass,
        grads,
        leaf_grad,
    } = sequence_loss(student, params, teacher, ex, seq, None, cfg, vocab)?;
    let loss_grads = narrow_grads(grads, params, cfg.bf16_grads)?;
    let mut sq: HashMap<TensorId, f64> = HashMap::new();
    let mut embeddings = None;
    pass.backward_blocks(
        student,
        params,
        leaf_grad.as_ref(),
        cfg.bf16_grads,
        true,
        &mut |part, g| {
            match part {
                Part::Block(_) => {
                    for id in g.get_ids() {
                        let v = squared_norm(g.get_id(*id).expect("listed"))?;
                        if sq.insert(*id, v).is_some() {
                            candle_core::bail!("a parameter with gradients in two blocks");
                        }
                    }
                }
                Part::Embeddings => embeddings = Some(g),
            }
            Ok(())
        },
    )?;
    memory::mark("gradient norm");
    // The loss's gradients with the embeddings' added as the stored step adds them (`extend`).
    for id in loss_grads.get_ids() {
        let g = loss_grads.get_id(*id).expect("listed");
        let v = match embeddings.as_ref().and_then(|e| e.get_id(*id)) {
            Some(e) => squared_norm(&g.add(e)?)?,
            None => squared_norm(g)?,
        };
        sq.insert(*id, v);
    }
    if let Some(e) = &embeddings {
        for id in e.get_ids() {
            if loss_grads.get_id(*id).is_none() {
                sq.insert(*id, squared_norm(e.get_id(*id).expect("listed"))?);
            }
        }
    }
    let total: f64 = named
        .values()
        .filter_map(|p| sq.get(&p.as_tensor().id()))
        .sum();
    Ok(Measured {
        parts,
        grad_norm: total.sqrt(),
        pass,
        loss_grads,
        leaf_grad,
        bf16: cfg.bf16_grads,
    })
}

impl Measured {
    /// The step: every block recomputed and differentiated again, its gradients clipped (at
    /// `max_norm`) and applied at once, then the loss's and embeddings' — one optimizer step at
    /// learning rate `lr`.
    pub fn update<L: Linear, E: Embedding>(
        self,
        student: &Transformer<L, E>,
        params: &[Var],
        named: &BTreeMap<String, Var>,
        opt: &mut AdamW,
        lr: f64,
        max_norm: f64,
    ) -> Result<()> {
        let Self {
            grad_norm,
            mut pass,
            mut loss_grads,
            leaf_grad,
            bf16,
            ..
        } = self;
        let scale = clip_scale(grad_norm, max_norm);
        opt.begin_step();
        let mut apply = |mut g: GradStore| -> Result<()> {
            if let Some(s) = scale {
                scale_grads(&mut g, named, s, true)?;
            }
            opt.apply(&g, lr, true)
        };
        let mut embeddings = None;
        pass.backward_blocks(
            student,
            params,
            leaf_grad.as_ref(),
            bf16,
            false,
            &mut |part, g| match part {
                Part::Block(_) => apply(g),
                Part::Embeddings => {
                    embeddings = Some(g);
                    Ok(())
                }
            },
        )?;
        drop(pass);
        if let Some(e) = embeddings {
            loss_grads.extend(e)?;
        }
        apply(loss_grads)?;
        memory::mark("updated in backward");
        Ok(())
    }
}
