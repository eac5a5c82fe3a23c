//! A prompt in one batch without the graph: the decoder's kernels over all its tokens, the
//! attention as two `gemm`s per head, and each step parallel over rows. Through candle a prompt
//! spent a third of its time outside the products — fresh buffers zeroed and copied, elementwise
//! ops one at a time, and the K-quant products re-quantizing their input twice (ggml's rounding,
//! then candle's own); here the K-quant tensors go through `kernels::kquant` as in generation.

use std::ops::Range;

use rayon::prelude::*;

use super::{add_bias, attention, dims, ops, Decoder, Layer};
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeStyle};

/// `out[r] = rms_norm(x[r]) · w` for every row, in parallel.
fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.par_chunks_mut(w.len())
        .zip(x.par_chunks(w.len()))
        .for_each(|(o, x)| ops::rms_norm(x, w, eps, o));
}

/// `x[r] += norm(y[r] + bias)` for every row of `d` values (the norm when the block has one).
fn residual(
    x: &mut [f32],
    y: &mut [f32],
    d: usize,
    bias: &Option<Vec<f32>>,
    norm: &Option<Vec<f32>>,
    eps: f32,
) {
    x.par_chunks_mut(d).zip(y.par_chunks_mut(d)).for_each_init(
        || vec![0f32; d],
        |tmp, (x, y)| {
            add_bias(y, bias);
            if let Some(w) = norm {
                ops::rms_norm_rows(y, w, eps, tmp);
            }
            for (x, y) in x.iter_mut().zip(y.iter()) {
                *x += y;
            }
        },
    );
}

/// What [`Decoder::prefill_observed`] calls: block index, which input, `[t, width]` values.
pub type Observer<'a> = dyn FnMut(usize, MatmulInput, &[f32]) + 'a;

/// Which weight matrices of a block multiply an input (several share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulInput {
    /// The attention-normed stream: `attn_q`, `attn_k`, `attn_v`.
    Attention,
    /// The heads' concatenated outputs: `attn_output`.
    AttnOutput,
    /// The FFN-normed stream: `ffn_gate`, `ffn_up`.
    Ffn,
    /// The gated activation: `ffn_down`.
    FfnDown,
}

impl MatmulInput {
    /// The GGUF names (without `blk.N.` and `.weight`) of the matrices this input feeds.
    pub fn tensors(self) -> &'static [&'static str] {
        match self {
            Self::Attention => &["attn_q", "attn_k", "attn_v"],
            Self::AttnOutput => &["attn_output"],
            Self::Ffn => &["ffn_gate", "ffn_up"],
            Self::FfnDown => &["ffn_down"],
        }
    }
}

impl Decoder<'_> {
    /// Runs `tokens` from an empty context in one batch and returns the logits of the positions
    /// in `rows` (`[rows.len(), vocab]`; the last alone for generation); the decoder then
    /// continues from there with [`Decoder::step`].
    pub fn prefill(&mut self, tokens: &[u32], rows: Range<usize>) -> Result<Vec<f32>> {
        let normed = self.prefill_normed(tokens, rows)?;
        Ok(self.head.matmul(self.isa, &normed))
    }

    /// As [`Decoder::prefill`], the rows' final-normed hidden states (`[rows.len(), n_embd]`,
    /// the LM head's input) instead of their logits.
    pub fn prefill_normed(&mut self, tokens: &[u32], rows: Range<usize>) -> Result<Vec<f32>> {
        if rows.start >= rows.end || rows.end > tokens.len() {
            return Err(ModelError::Config(format!(
                "rows {rows:?} outside a prompt of {} tokens",
                tokens.len()
            )));
        }
        let x = self.run_batch(tokens, None)?;
        let d = self.hp.n_embd;
        let mut normed = vec![0f32; rows.len() * d];
        norm_rows(
            &x[rows.start * d..rows.end * d],
            &self.output_norm,
            self.hp.rms_eps as f32,
            &mut normed,
        );
        Ok(normed)
    }

    /// Runs `tokens` as [`Decoder::prefill`] does and shows `observe` the input `[t, width]` of
    /// every weight matrix of every block, as it is multiplied (what `llama-imatrix` collects).
    /// The LM head's input is not shown: llama-imatrix skips it too.
    pub fn prefill_observed(&mut self, tokens: &[u32], observe: &mut Observer<'_>) -> Result<()> {
        self.run_batch(tokens, Some(observe)).map(|_| ())
    }

    /// The residual stream `[t, n_embd]` after the last block.
    fn run_batch(
        &mut self,
        tokens: &[u32],
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<Vec<f32>> {
        self.check_prompt(tokens)?;
        let t = tokens.len();
        let mut x = self.embed_rows(tokens);
        let angles = self.rope_angles(t);
        let hp = &self.hp;
        let (d, hd, vd, nh, nkv, ff) = dims(hp);
        let eps = hp.rms_eps as f32;
        let ggml = self.ggml;
        let mut h = vec![0f32; t * d];
        let mut att = vec![0f32; t * nh * vd];
        let kv = &mut self.state.0.get_mut().kv;
        for (il, l) in self.layers.iter().enumerate() {
            norm_rows(&x, &l.attn_norm, eps, &mut h);
            if let Some(f) = observe.as_mut() {
                f(il, MatmulInput::Attention, &h);
            }
            let (mut q, mut k, mut v) = (
                l.q.matmul(self.isa, &h),
                l.k.matmul(self.isa, &h),
                l.v.matmul(self.isa, &h),
            );
            let style = self.ropes[l.rope].spec.style;
            finish_qkv(
                hp,
                l,
                style,
                ggml,
                &angles[l.rope],
                (&mut q, &mut k, &mut v),
            );
            let layer_kv = &mut kv[il];
            attention::batch(
                &q,
                &k,
                &v,
                (nh, nkv, hd, vd),
                layer_kv.window(),
                ggml,
                &mut att,
            );
            for p in t.saturating_sub(layer_kv.slots())..t {
                layer_kv.store(
                    p,
                    &k[p * nkv * hd..(p + 1) * nkv * hd],
                    &v[p * nkv * vd..(p + 1) * nkv * vd],
                );
            }
            if let Some(f) = observe.as_mut() {
                f(il, MatmulInput::AttnOutput, &att);
            }
            let mut o = l.o.matmul(self.isa, &att);
            residual(&mut x, &mut o, d, &l.bo, &l.post_attn_norm, eps);
            norm_rows(&x, &l.ffn_norm, eps, &mut h);
            if let Some(f) = observe.as_mut() {
                f(il, MatmulInput::Ffn, &h);
            }
            let (mut gate, up) = (l.gate.matmul(self.isa, &h), l.up.matmul(self.isa, &h));
            gate.par_chunks_mut(ff)
                .zip(up.par_chunks(ff))
                .for_each(|(g, u)| ops::gated(g, u, self.act, ggml));
            if let Some(f) = observe.as_mut() {
                f(il, MatmulInput::FfnDown, &gate);
            }
            let mut down = l.down.matmul(self.isa, &gate);
            residual(&mut x, &mut down, d, &None, &l.post_ffn_norm, eps);
        }
        self.pos = t;
        Ok(x)
    }

    /// A prompt fits the context and every token is in the vocabulary.
    fn check_prompt(&self, tokens: &[u32]) -> Result<()> {
        let t = tokens.len();
        if t == 0 || t > self.capacity {
            return Err(ModelError::Config(format!(
                "a prompt of {t} tokens: the decoder holds 1 to {} positions",
                self.capacity
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= self.hp.vocab_size) {
            return Err(ModelError::Config(format!(
                "token {bad} outside the vocabulary of {}",
                self.hp.vocab_size
            )));
        }
        Ok(())
    }

    /// The tokens' embeddings `[t, n_embd]` (scaled where the architecture scales them).
    fn embed_rows(&self, tokens: &[u32]) -> Vec<f32> {
        let d = self.hp.n_embd;
        let mut x = vec![0f32; tokens.len() * d];
        x.par_chunks_mut(d)
            .zip(tokens.par_iter())
            .for_each(|(row, &tok)| {
                self.embed.row(tok as usize, row);
                if let Some(m) = self.embed_scale {
                    ops::scale(row, m);
                }
            });
        x
    }

    /// Per RoPE kind, the cosines and sines of positions `0..t` (`[t, rope_dim / 2]` each).
    fn rope_angles(&self, t: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let half = self.hp.rope_dim / 2;
        self.ropes
            .iter()
            .map(|r| {
                let (mut c, mut s) = (vec![0f32; t * half], vec![0f32; t * half]);
                for p in 0..t {
                    let range = p * half..(p + 1) * half;
                    r.spec
                        .angles(&r.inv, p, &mut c[range.clone()], &mut s[range]);
                }
                (c, s)
            })
            .collect()
    }
}

/// Every position's q, k and v rows made ready for attention: biases, the q/k norms, RoPE,
/// the attention scale on q, and (`ggml`) the f16 rounding llama.cpp's KV cache and its
/// attention's q input apply.
fn finish_qkv(
    hp: &HParams,
    l: &Layer<'_>,
    style: RopeStyle,
    ggml: bool,
    (cos, sin): &(Vec<f32>, Vec<f32>),
    (q, k, v): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let (hd, vd, nh, nkv) = (hp.head_dim, hp.value_dim, hp.n_head, hp.n_head_kv);
    let eps = hp.rms_eps as f32;
    let half = hp.rope_dim / 2;
    q.par_chunks_mut(nh * hd)
        .zip(k.par_chunks_mut(nkv * hd))
        .zip(v.par_chunks_mut(nkv * vd))
        .enumerate()
        .for_each_init(
            || vec![0f32; hd],
            |tmp, (p, ((qr, kr), vr))| {
                add_bias(qr, &l.bq);
                add_bias(kr, &l.bk);
                add_bias(vr, &l.bv);
                if let Some(w) = &l.q_norm {
                    ops::rms_norm_rows(qr, w, eps, tmp);
                }
                if let Some(w) = &l.k_norm {
                    ops::rms_norm_rows(kr, w, eps, tmp);
                }
                let range = p * half..(p + 1) * half;
                ops::rope(qr, hd, style, &cos[range.clone()], &sin[range.clone()]);
                ops::rope(kr, hd, style, &cos[range.clone()], &sin[range]);
                if ggml {
                    ops::round_f16(kr);
                    ops::round_f16(vr);
                }
                ops::scale(qr, hp.attn_scale as f32);
                if ggml {
                    ops::round_f16(qr);
                }
            },
        );
}
