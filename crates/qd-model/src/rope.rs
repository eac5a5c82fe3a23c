//! Rotary position embeddings, computed for the positions of one forward call only (never a
//! table for the whole context in every layer).

use candle_core::{Device, Result, Tensor};

use crate::hparams::RopeStyle;

/// What determines a layer's rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub base: f32,
    /// Linear scaling: positions are divided by it.
    pub scale: f32,
    pub dim: usize,
    pub style: RopeStyle,
    /// llama3's `rope_freqs.weight`: per-pair frequency divisors.
    pub factors: Option<Vec<f32>>,
}

impl RopeSpec {
    /// Per-pair frequencies `1 / base^(2i/dim)`, divided by llama3's factors.
    pub fn inv_freqs(&self) -> Vec<f32> {
        (0..self.dim / 2)
            .map(|i| {
                let f = 1.0 / self.base.powf((2 * i) as f32 / self.dim as f32);
                f / self.factors.as_ref().map_or(1.0, |fs| fs[i])
            })
            .collect()
    }

    /// `cos` and `sin` of each pair's angle at position `p`.
    pub fn angles(&self, inv: &[f32], p: usize, cos: &mut [f32], sin: &mut [f32]) {
        let pos = p as f32 / self.scale;
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv) {
            let theta = pos * f;
            *c = theta.cos();
            *s = theta.sin();
        }
    }
}

pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    dim: usize,
    style: RopeStyle,
}

impl Rope {
    /// Tables `[seq, dim/2]` for positions `offset..offset+seq`.
    pub fn new(spec: &RopeSpec, offset: usize, seq: usize, device: &Device) -> Result<Self> {
        let (dim, style) = (spec.dim, spec.style);
        let half = dim / 2;
        let mut cos = vec![0f32; seq * half];
        let mut sin = vec![0f32; seq * half];
        let inv = spec.inv_freqs();
        for (i, p) in (offset..offset + seq).enumerate() {
            let r = i * half..(i + 1) * half;
            spec.angles(&inv, p, &mut cos[r.clone()], &mut sin[r]);
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (seq, half), device)?,
            sin: Tensor::from_vec(sin, (seq, half), device)?,
            dim,
            style,
        })
    }

    /// Rotates `x [b, h, s, head_dim]`; dimensions past `dim` pass through unchanged.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let head_dim = x.dim(3)?;
        let (rot, pass) = if self.dim < head_dim {
            (
                x.narrow(3, 0, self.dim)?,
                Some(x.narrow(3, self.dim, head_dim - self.dim)?),
            )
        } else {
            (x.clone(), None)
        };
        let rot = rot.contiguous()?;
        let cos = self.cos.to_dtype(rot.dtype())?;
        let sin = self.sin.to_dtype(rot.dtype())?;
        // The fused kernels have no backward; a graph being trained takes the composed form.
        let out = match (self.style, rot.track_op()) {
            (RopeStyle::Neox, false) => candle_nn::rotary_emb::rope(&rot, &cos, &sin)?,
            (RopeStyle::Interleaved, false) => candle_nn::rotary_emb::rope_i(&rot, &cos, &sin)?,
            (RopeStyle::Neox, true) => candle_nn::rotary_emb::rope_slow(&rot, &cos, &sin)?,
            (RopeStyle::Interleaved, true) => candle_nn::rotary_emb::rope_i_slow(&rot, &cos, &sin)?,
        };
        match pass {
            Some(p) => Tensor::cat(&[out, p], 3),
            None => Ok(out),
        }
    }
}
