//! AdamW's update written into the parameter and moment buffers themselves (candle's in-place
//! ops) instead of through seven fresh tensors per parameter: no allocation, and no page
//! clearing of buffers the size of the largest weight, per step. The arithmetic is the tensor
//! path's, operation for operation (each `affine` a multiply and an add, `+ 0.0` included), so
//! the two give the same bits — the tensor path stays for devices without these CPU loops.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result};
use half::bf16;

/// The contiguous `f32` slice a storage and layout describe.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("optimizer buffers must be contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("optimizer buffers must be f32"),
    }
}

pub(crate) fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous_mut(v, l),
        _ => candle_core::bail!("optimizer buffers must be f32"),
    }
}

/// A bf16 master weight's values (`master_weights = "bf16"`).
pub(crate) fn slice_mut_bf16<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [bf16]> {
    match s {
        CpuStorage::BF16(v) => contiguous_mut(v, l),
        _ => candle_core::bail!("a bf16 parameter was expected"),
    }
}

fn contiguous_mut<'a, T>(v: &'a mut [T], l: &Layout) -> Result<&'a mut [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("optimizer buffers must be contiguous".into()))?;
    Ok(&mut v[a..b])
}

/// `m ← m·a + g·b` (or `g²·b`): a moment's running average.
pub struct Ema {
    pub a: f64,
    pub b: f64,
    pub square: bool,
}

impl InplaceOp2 for Ema {
    fn name(&self) -> &'static str {
        "adamw-ema"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = slice(s2, l2)?;
        let m = slice_mut(s1, l1)?;
        if m.len() != g.len() {
            candle_core::bail!("moment and gradient differ in size");
        }
        let (a, b) = (self.a as f32, self.b as f32);
        for (m, &g) in m.iter_mut().zip(g) {
            let g = if self.square { g * g } else { g };
            *m = (*m * a + 0.0) + (g * b + 0.0);
        }
        Ok(())
    }
}

/// The parameter's update from its moments (bias-corrected), decayed or relative.
pub struct Update {
    /// `1/(1−β₁ᵗ)`, `1/(1−β₂ᵗ)`.
    pub c1: f64,
    pub c2: f64,
    pub eps: f64,
    pub lr: f64,
    /// `Some(k)`: relative update `p ← p − lr·k·|p|·u`; else `p ← p·(1−lr·decay) − lr·u`.
    pub relative: Option<f64>,
    pub decay: f64,
}

impl Update {
    /// The update `u = m̂/(√v̂ + ε)` and the new parameter, as the tensor path computes them.
    #[inline]
    pub fn apply(&self, p: f32, m: f32, v: f32) -> f32 {
        let m_hat = m * self.c1 as f32 + 0.0;
        let v_hat = v * self.c2 as f32 + 0.0;
        let u = m_hat / (v_hat.sqrt() * 1.0 + self.eps as f32);
        match self.relative {
            Some(k) => p - ((u * p.abs()) * (self.lr * k) as f32 + 0.0),
            None => (p * (1.0 - self.lr * self.decay) as f32 + 0.0) - (u * self.lr as f32 + 0.0),
        }
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (m, v) = (slice(s2, l2)?, slice(s3, l3)?);
        let p = slice_mut(s1, l1)?;
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("parameter and moments differ in size");
        }
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p = self.apply(*p, m, v);
        }
        Ok(())
    }
}

/// `g ← g·s + 0` (gradient clipping's rescale, as `affine(s, 0)` computes it).
pub struct Scale(pub f64);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "clip-scale"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let k = self.0 as f32;
        for x in slice_mut(s, l)? {
            *x = *x * k + 0.0;
        }
        Ok(())
    }
}
