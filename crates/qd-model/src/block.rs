//! One transformer block: pre-norm attention and gated MLP, with gemma3's extra norms.

use candle_core::{Result, Tensor};

use crate::cache::KvCache;
use crate::hparams::HParams;
use crate::linear::Linear;
use crate::rope::Rope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Gemma: GELU, tanh approximation (ggml_gelu).
    GeluTanh,
    /// Llama, Qwen2.
    Silu,
}

pub struct Block<L> {
    pub attn_norm: Tensor,
    pub q: L,
    pub k: L,
    pub v: L,
    pub o: L,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: L,
    pub up: L,
    pub down: L,
    pub post_ffn_norm: Option<Tensor>,
    pub swa: bool,
}

/// Per-call context shared by every layer.
pub struct LayerCtx<'a> {
    pub hp: &'a HParams,
    pub rope: &'a Rope,
    pub mask: Option<&'a Tensor>,
    pub act: Activation,
    /// llama.cpp's roundings (see `ggml_numerics`).
    pub ggml: bool,
}

/// Whether autograd must see through this computation (a student being trained): candle's
/// fused RMSNorm, softmax and RoPE kernels have no backward, so a graph takes the composed ops.
pub fn needs_grad(xs: &[&Tensor]) -> bool {
    xs.iter().any(|t| t.track_op())
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if needs_grad(&[x, w]) {
        candle_nn::ops::rms_norm_slow(x, w, eps as f32)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
    }
}

impl<L> Block<L> {
    /// The block's seven weight matrices (attention q, k, v, output; FFN gate, up, down).
    pub fn linears(&self) -> [&L; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// [`Block::linears`], to change them.
    pub fn linears_mut(&mut self) -> [&mut L; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

impl<L: Linear> Block<L> {
    pub fn forward(
        &self,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let hp = ctx.hp;
        let h = rms_norm(x, &self.attn_norm, hp.rms_eps)?;
        let a = self.attention(&h, ctx, cache)?;
        let a = match &self.post_attn_norm {
            Some(w) => rms_norm(&a, w, hp.rms_eps)?,
            None => a,
        };
        let x = (x + a)?;
        let h = rms_norm(&x, &self.ffn_norm, hp.rms_eps)?;
        let gate = self.gate.forward(&h)?;
        let gate = match ctx.act {
            // ggml-cpu's f16 table is a host loop: on a GPU, candle's tanh GELU instead.
            Activation::GeluTanh if ctx.ggml && gate.device().is_cpu() => {
                crate::ggml_numerics::gelu(&gate)?
            }
            Activation::GeluTanh => gate.gelu()?,
            Activation::Silu => candle_nn::ops::silu(&gate)?,
        };
        let m = self.down.forward(&(gate * self.up.forward(&h)?)?)?;
        let m = match &self.post_ffn_norm {
            Some(w) => rms_norm(&m, w, hp.rms_eps)?,
            None => m,
        };
        x + m
    }

    fn attention(
        &self,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let hp = ctx.hp;
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd, vd) = (hp.n_head, hp.n_head_kv, hp.head_dim, hp.value_dim);
        let q = self.q.forward(x)?.reshape((b, s, nh, hd))?;
        let k = self.k.forward(x)?.reshape((b, s, nkv, hd))?;
        let v = self.v.forward(x)?.reshape((b, s, nkv, vd))?;
        let q = match &self.q_norm {
            Some(w) => rms_norm(&q, w, hp.rms_eps)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(w) => rms_norm(&k, w, hp.rms_eps)?,
            None => k,
        };
        let q = ctx.rope.apply(&q.transpose(1, 2)?.contiguous()?)?;
        let k = ctx.rope.apply(&k.transpose(1, 2)?.contiguous()?)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        // llama.cpp keeps K and V in an f16 cache and multiplies Q and the attention weights
        // as f16 against them.
        let f16 = |t: Tensor| {
            if ctx.ggml {
                crate::ggml_numerics::round_f16(&t)
            } else {
                Ok(t)
            }
        };
        let (k, v) = (f16(k)?, f16(v)?);
        let keep = match (self.swa, hp.sliding_window) {
            (true, Some(w)) => Some(w.saturating_sub(1)),
            _ => None,
        };
        let (k, v) = match cache {
            Some((c, il)) => c.append(il, k, v, keep)?,
            None => (k, v),
        };
        let t = k.dim(2)?;
        // Grouped-query attention without copying K/V: fold the query heads that share a
        // KV head into the sequence axis.
        let rep = nh / nkv;
        let q = f16((q * hp.attn_scale)?)?.reshape((b, nkv, rep * s, hd))?;
        let att = q.matmul(&k.t()?)?;
        let att = match ctx.mask {
            Some(m) => att
                .reshape((b, nkv, rep, s, t))?
                .broadcast_add(m)?
                .reshape((b, nkv, rep * s, t))?,
            None => att,
        };
        let att = if needs_grad(&[&att]) {
            candle_nn::ops::softmax(&att, candle_core::D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        };
        let out = f16(att)?.matmul(&v)?.reshape((b, nh, s, vd))?;
        let out = out.transpose(1, 2)?.reshape((b, s, nh * vd))?;
        self.o.forward(&out)
    }
}
