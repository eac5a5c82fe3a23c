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

pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    dim: usize,
    style: RopeStyle,
}

impl Rope {
    /// Tables `[seq, dim/2]` for positions `offset..offset+seq`.
    pub fn new(spec: &RopeSpec, offset: usize, seq: usize, device: &Device) -> Result<Self> {
        let RopeSpec {
            base,
            scale,
            dim,
            style,
            ref factors,
        } = *spec;
        let half = dim / 2;
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                let f = 1.0 / base.powf((2 * i) as f32 / dim as f32);
                f / factors.as_ref().map_or(1.0, |fs| fs[i])
            })
            .collect();
        for p in offset..offset + seq {
            let pos = p as f32 / scale;
            for &f in &inv {
                let theta = pos * f;
                cos.push(theta.cos());
                sin.push(theta.sin());
            }
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
