//! The student's forward pass with its blocks recomputed in backward (activation
//! checkpointing, `checkpoint_blocks`): the forward keeps only each block's input, and the
//! backward runs one block at a time — recompute it from its input, backpropagate the
//! gradient that reached its output, keep its weights' gradients and pass on the one of its
//! input. Peak memory holds one block's activations and fake-quantized weights instead of every
//! block's (for Qwen2.5-0.5B at 512 tokens: 5.7 GB of a 15 GB step), for a second forward pass.
//!
//! Both passes build the same graph (the weights are variables, so every op takes its
//! differentiable form), so the recomputed blocks produce the forward's values bit for bit.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use qd_model::{BlockContext, Embedding, Linear, Transformer};

use super::chunked::only_params;

/// `t` without its graph, still a tracked tensor (a leaf) where `t` was one: the next block
/// then takes the same (differentiable) ops as in a forward pass that keeps the graph, so its
/// values are those bits.
fn cut(t: &Tensor) -> Result<Tensor> {
    if t.track_op() {
        Ok(Var::from_tensor(&t.detach())?.as_tensor().clone())
    } else {
        Ok(t.detach())
    }
}

/// The final norm's output `[s, d]` of `tokens [1, s]`, without a graph, computed block by
/// block so that no block's activations outlive it: an evaluation's forward pass over a
/// student whose weights are variables, in the memory of one block, with the bits of
/// [`Transformer::forward`].
pub fn forward_detached<L: Linear, E: Embedding>(
    student: &Transformer<L, E>,
    tokens: &Tensor,
) -> Result<Tensor> {
    let (_, s) = tokens.dims2()?;
    let bc = student.block_context(s, 0, false)?;
    let mut x = cut(&student.embed_tokens(tokens)?)?;
    for il in 0..student.blocks.len() {
        x = cut(&student.block_forward(il, &x, &bc, None)?)?;
    }
    Ok(student.final_norm(&x)?.squeeze(0)?.detach())
}

/// Which part of the student a batch of gradients from [`StudentPass::backward_blocks`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Block `il`'s parameters (no other part has them).
    Block(usize),
    /// The trained embeddings' (a tied embedding also has a part from the loss's head).
    Embeddings,
}

/// One sequence's forward through the student's body.
pub struct StudentPass {
    /// The final norm's output `[s, d]`, with its graph (through every block, or only through
    /// the final norm from `leaf` when recomputing).
    pub normed: Tensor,
    recompute: Option<Recompute>,
}

struct Recompute {
    bc: BlockContext,
    /// The embeddings with their graph (a trained embedding's gradient starts here).
    embedded: Tensor,
    /// Each block's input, detached.
    inputs: Vec<Tensor>,
    /// The last block's output as a leaf: the final norm's graph starts here.
    leaf: Var,
}

impl StudentPass {
    /// The forward over `tokens [1, s]`; with `recompute`, keeping only each block's input.
    pub fn run<L: Linear, E: Embedding>(
        student: &Transformer<L, E>,
        tokens: &Tensor,
        recompute: bool,
    ) -> Result<Self> {
        if !recompute {
            let normed = student
                .forward(
                    tokens,
                    None,
                    &qd_model::ForwardOpts {
                        logits: qd_model::Logits::None,
                        hidden_states: false,
                    },
                )
                .map_err(candle_core::Error::wrap)?
                .normed
                .squeeze(0)?;
            return Ok(Self {
                normed,
                recompute: None,
            });
        }
        let (_, s) = tokens.dims2()?;
        let bc = student.block_context(s, 0, false)?;
        let embedded = student.embed_tokens(tokens)?;
        let mut inputs = Vec::with_capacity(student.blocks.len());
        let mut x = cut(&embedded)?;
        for il in 0..student.blocks.len() {
            let y = cut(&student.block_forward(il, &x, &bc, None)?)?;
            inputs.push(x);
            x = y;
        }
        let leaf = Var::from_tensor(&x)?;
        let normed = student.final_norm(leaf.as_tensor())?.squeeze(0)?;
        Ok(Self {
            normed,
            recompute: Some(Recompute {
                bc,
                embedded,
                inputs,
                leaf,
            }),
        })
    }

    /// The tensor whose gradient the loss's backward must report besides the parameters'.
    pub fn leaf(&self) -> Option<&Var> {
        self.recompute.as_ref().map(|r| &r.leaf)
    }

    /// The parameters' gradients: `grads` from the loss (every one when not recomputing), plus,
    /// when recomputing, each block's from `leaf_grad` (the gradient of [`Self::leaf`]) back.
    /// With `bf16`, each block's gradients are stored in bf16 as soon as they are made.
    pub fn finish<L: Linear, E: Embedding>(
        self,
        student: &Transformer<L, E>,
        params: &[Var],
        grads: GradStore,
        leaf_grad: Option<Tensor>,
        bf16: bool,
    ) -> Result<GradStore> {
        if self.recompute.is_none() {
            return Ok(grads);
        }
        let mut pass = self;
        // The head's gradients too, so that a tied embedding's two parts add in one dtype.
        let mut grads = narrow_grads(grads, params, bf16)?;
        pass.backward_blocks(
            student,
            params,
            leaf_grad.as_ref(),
            bf16,
            false,
            &mut |_, g| grads.extend(g),
        )?;
        Ok(grads)
    }

    /// The recomputing backward from `leaf_grad` (the gradient of [`Self::leaf`]): each block,
    /// last to first, recomputed from its input and differentiated; its parameters' gradients
    /// (bf16 with `bf16`) handed to `sink` as soon as they are made, then the embeddings'
    /// (where they are trained). With `again`, the blocks' inputs are kept so that it can run
    /// a second time with the same bits; without, each is freed once its block is done.
    pub fn backward_blocks<L: Linear, E: Embedding>(
        &mut self,
        student: &Transformer<L, E>,
        params: &[Var],
        leaf_grad: Option<&Tensor>,
        bf16: bool,
        again: bool,
        sink: &mut dyn FnMut(Part, GradStore) -> Result<()>,
    ) -> Result<()> {
        let Some(r) = self.recompute.as_mut() else {
            candle_core::bail!("the blocks' backward needs a recomputing pass (checkpoint_blocks)");
        };
        let mut grad_y = leaf_grad.cloned().ok_or_else(|| {
            candle_core::Error::Msg("the loss does not depend on the student's blocks".into())
        })?;
        for il in (0..student.blocks.len()).rev() {
            let input = if again {
                r.inputs[il].clone()
            } else {
                r.inputs.pop().ok_or_else(|| {
                    candle_core::Error::Msg("a recomputing pass runs once without `again`".into())
                })?
            };
            let x = Var::from_tensor(&input)?;
            drop(input);
            let y = student.block_forward(il, x.as_tensor(), &r.bc, None)?;
            let g = (y * &grad_y)?.sum_all()?.backward()?;
            super::memory::mark(&format!("block {il} backward"));
            let next = g
                .get(x.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("block {il} ignores its input")))?;
            sink(
                Part::Block(il),
                narrow_grads(only_params(&g, params), params, bf16)?,
            )?;
            grad_y = next;
        }
        if r.embedded.track_op() {
            let g = (&r.embedded * grad_y)?.sum_all()?.backward()?;
            sink(
                Part::Embeddings,
                narrow_grads(only_params(&g, params), params, bf16)?,
            )?;
        }
        Ok(())
    }
}

/// `grads` with every gradient in bf16 when `bf16` (else unchanged).
pub fn narrow_grads(grads: GradStore, params: &[Var], bf16: bool) -> Result<GradStore> {
    if !bf16 {
        return Ok(grads);
    }
    let mut out = GradStore::default();
    for p in params {
        if let Some(g) = grads.get(p.as_tensor()) {
            out.insert(p.as_tensor(), g.to_dtype(candle_core::DType::BF16)?);
        }
    }
    Ok(out)
}
