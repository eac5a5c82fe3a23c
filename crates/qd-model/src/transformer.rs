//! The decoder: embeddings, blocks, final norm and LM head.

use std::ops::Range;

use candle_core::{DType, Device, Result as CResult, Tensor};

use crate::block::{rms_norm, Activation, Block, LayerCtx};
use crate::cache::KvCache;
use crate::error::{ModelError, Result};
use crate::hparams::{Arch, HParams};
use crate::linear::{Embedding, Linear};
use crate::mask::{attention_mask, attention_mask_from};
use crate::rope::{Rope, RopeSpec};
use crate::weights::{expect_shape, opt_vector, WeightSource};

/// Which positions get logits. The LM head is 262k wide for gemma3; distillation and
/// perplexity ask for ranges so that it never runs on positions nobody reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logits {
    None,
    All,
    Last,
    Range(Range<usize>),
}

#[derive(Debug, Clone)]
pub struct ForwardOpts {
    pub logits: Logits,
    /// Keep the residual stream after every block.
    pub hidden_states: bool,
}

impl Default for ForwardOpts {
    fn default() -> Self {
        Self {
            logits: Logits::All,
            hidden_states: false,
        }
    }
}

pub struct ForwardOutput {
    /// `[b, n, vocab]` for the requested positions.
    pub logits: Option<Tensor>,
    /// `[b, s, n_embd]` after each block (when asked for).
    pub hidden_states: Vec<Tensor>,
    /// `[b, s, n_embd]` after the final norm: the LM head's input.
    pub normed: Tensor,
}

/// The masks and RoPE tables the blocks of one forward call share ([`Transformer::block_context`]).
pub struct BlockContext {
    global_mask: Option<Tensor>,
    local_mask: Option<Tensor>,
    ropes: Vec<Rope>,
    /// Each block's entry in `ropes`.
    rope_of: Vec<usize>,
}

pub struct Transformer<L, E> {
    pub hp: HParams,
    pub embed: E,
    pub blocks: Vec<Block<L>>,
    pub output_norm: Tensor,
    pub lm_head: L,
    pub device: Device,
    rope_factors: Option<Vec<f32>>,
    /// Reproduce llama.cpp's CPU roundings (f16 KV cache and attention operands, GELU table);
    /// on for quantized GGUF models, off for f32 references and students being trained.
    pub ggml_numerics: bool,
}

impl<L: Linear, E: Embedding> Transformer<L, E> {
    pub fn load<W>(hp: HParams, w: &W, device: &Device) -> Result<Self>
    where
        W: WeightSource<Linear = L, Embedding = E>,
    {
        hp.validate()?;
        let d = hp.n_embd;
        expect_shape(w, "token_embd.weight", &[hp.vocab_size, d])?;
        let blocks = (0..hp.n_layer)
            .map(|il| Block::load(&hp, il, w))
            .collect::<Result<Vec<_>>>()?;
        let head = if w.has("output.weight") {
            expect_shape(w, "output.weight", &[hp.vocab_size, d])?;
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let rope_factors = match opt_vector(w, "rope_freqs.weight")? {
            Some(t) => {
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != hp.rope_dim / 2 {
                    return Err(ModelError::Config(format!(
                        "rope_freqs.weight has {} entries, expected {}",
                        v.len(),
                        hp.rope_dim / 2
                    )));
                }
                Some(v)
            }
            None => None,
        };
        Ok(Self {
            embed: w.embedding("token_embd.weight")?,
            blocks,
            output_norm: w.vector("output_norm.weight")?,
            lm_head: w.linear(head, None)?,
            device: device.clone(),
            rope_factors,
            ggml_numerics: false,
            hp,
        })
    }

    pub(crate) fn activation(&self) -> Activation {
        match self.hp.arch {
            Arch::Gemma3 => Activation::GeluTanh,
            Arch::Llama | Arch::Qwen2 => Activation::Silu,
        }
    }

    pub(crate) fn rope_spec(&self, il: usize) -> RopeSpec {
        let (base, scale) = self.hp.layer_rope(il);
        RopeSpec {
            base,
            scale,
            dim: self.hp.rope_dim,
            style: self.hp.rope_style,
            factors: self.rope_factors.clone(),
        }
    }

    /// Embeddings of `tokens [b, s]`, scaled by √d for gemma.
    pub fn embed_tokens(&self, tokens: &Tensor) -> CResult<Tensor> {
        let x = self.embed.lookup(tokens)?;
        match self.hp.arch {
            Arch::Gemma3 => x * (self.hp.n_embd as f64).sqrt(),
            _ => Ok(x),
        }
    }

    /// What the blocks of one call over `s` positions after `offset` share: the attention
    /// masks and the RoPE tables. `cached`: the call runs after a KV cache (sliding-window
    /// layers then attend within the cache's window).
    pub fn block_context(&self, s: usize, offset: usize, cached: bool) -> CResult<BlockContext> {
        let global_mask = attention_mask(s, offset, None, &self.device)?;
        // Sliding-window layers' caches hold only the keys still in reach (see KvCache).
        let local_mask = match self.hp.sliding_window {
            Some(w) => {
                let start = if cached {
                    KvCache::window_start(offset, w)
                } else {
                    0
                };
                attention_mask_from(s, offset, start, Some(w), &self.device)?
            }
            None => None,
        };
        let mut ropes: Vec<(RopeSpec, Rope)> = Vec::new();
        let mut rope_of = Vec::with_capacity(self.blocks.len());
        for il in 0..self.blocks.len() {
            let spec = self.rope_spec(il);
            let idx = match ropes.iter().position(|(s2, _)| *s2 == spec) {
                Some(i) => i,
                None => {
                    let r = Rope::new(&spec, offset, s, &self.device)?;
                    ropes.push((spec, r));
                    ropes.len() - 1
                }
            };
            rope_of.push(idx);
        }
        Ok(BlockContext {
            global_mask,
            local_mask,
            ropes: ropes.into_iter().map(|(_, r)| r).collect(),
            rope_of,
        })
    }

    /// Block `il` on the residual stream `x [b, s, d]`.
    pub fn block_forward(
        &self,
        il: usize,
        x: &Tensor,
        bc: &BlockContext,
        cache: Option<&mut KvCache>,
    ) -> CResult<Tensor> {
        self.run_block(il, &self.blocks[il], x, bc, self.ggml_numerics, cache)
    }

    /// `block` (of any linear type) run as block `il` of this model: its attention kind, RoPE
    /// and activation. Block-wise QAT runs a student's block this way in the teacher's place,
    /// with `ggml: false` (a trained block's f32 arithmetic).
    pub fn run_block<M: Linear>(
        &self,
        il: usize,
        block: &Block<M>,
        x: &Tensor,
        bc: &BlockContext,
        ggml: bool,
        cache: Option<&mut KvCache>,
    ) -> CResult<Tensor> {
        let ctx = LayerCtx {
            ggml,
            hp: &self.hp,
            rope: &bc.ropes[bc.rope_of[il]],
            mask: if block.swa {
                bc.local_mask.as_ref()
            } else {
                bc.global_mask.as_ref()
            },
            act: self.activation(),
        };
        block.forward(x, &ctx, cache.map(|c| (c, il)))
    }

    /// The final norm: the residual stream after the last block → the LM head's input.
    pub fn final_norm(&self, x: &Tensor) -> CResult<Tensor> {
        rms_norm(x, &self.output_norm, self.hp.rms_eps)
    }

    /// Runs `tokens [b, s]` after whatever `cache` holds (positions continue from it).
    pub fn forward(
        &self,
        tokens: &Tensor,
        mut cache: Option<&mut KvCache>,
        opts: &ForwardOpts,
    ) -> Result<ForwardOutput> {
        let (_, s) = tokens.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c.len());
        if s == 0 {
            return Err(ModelError::Config("forward called with no tokens".into()));
        }
        let mut x = self.embed_tokens(tokens)?;
        // Masks and RoPE tables: one per distinct layer kind, built once per call.
        let bc = self.block_context(s, offset, cache.is_some())?;
        let mut hidden = Vec::new();
        for il in 0..self.blocks.len() {
            x = self.block_forward(il, &x, &bc, cache.as_deref_mut())?;
            if opts.hidden_states {
                hidden.push(x.clone());
            }
        }
        if let Some(c) = cache {
            c.advance(s);
        }
        let normed = self.final_norm(&x)?;
        let logits = match &opts.logits {
            Logits::None => None,
            Logits::All => Some(self.lm_head(&normed)?),
            Logits::Last => Some(self.lm_head(&normed.narrow(1, s - 1, 1)?)?),
            Logits::Range(r) => {
                if r.start >= r.end || r.end > s {
                    return Err(ModelError::Config(format!(
                        "logits range {r:?} outside 0..{s}"
                    )));
                }
                Some(self.lm_head(&normed.narrow(1, r.start, r.end - r.start)?)?)
            }
        };
        Ok(ForwardOutput {
            logits,
            hidden_states: hidden,
            normed,
        })
    }

    /// The LM head on `normed [b, n, d]` → `[b, n, vocab]` f32.
    pub fn lm_head(&self, normed: &Tensor) -> CResult<Tensor> {
        self.lm_head
            .forward(&normed.contiguous()?)?
            .to_dtype(DType::F32)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.hp.n_layer)
    }
}

impl<E: Embedding> Transformer<crate::QLinear, E> {
    /// Every quantized matrix of the model (blocks and LM head) multiplies by its stored
    /// blocks from now on (`QLinear::read_stored_blocks`, `stored_blocks.rs`): a teacher in its file's memory.
    pub fn read_stored_blocks(&mut self) {
        for l in self.blocks.iter_mut().flat_map(Block::linears_mut) {
            l.read_stored_blocks();
        }
        self.lm_head.read_stored_blocks();
    }
}
