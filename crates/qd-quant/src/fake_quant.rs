//! The fake-quant op: forward `dequantize(quantize(w))` row-wise in the GGUF block type the
//! tensor will be exported as, backward the straight-through estimator.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::format::QuantType;
use crate::fp16::read_f16;
use crate::rows::{check_finite, fake_quantize_into};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeQuant {
    pub ty: QuantType,
    /// Zero the gradient of values outside their block's representable range (the types whose
    /// grid is one range per 32 values: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). Identity otherwise.
    pub clip_mask: bool,
}

impl FakeQuant {
    pub fn new(ty: QuantType) -> Self {
        Self {
            ty,
            clip_mask: false,
        }
    }

    /// Applies the op with its gradient; the last dimension is the GGUF row.
    pub fn apply(&self, w: &Tensor) -> Result<Tensor> {
        w.apply_op1(*self)
    }

    fn check(&self, l: &Layout) -> Result<(usize, usize)> {
        let (o1, o2) = l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("fake-quant needs a contiguous tensor".into())
        })?;
        let n = l.shape().dims().last().copied().unwrap_or(0);
        let bs = self.ty.block_size();
        if n % bs != 0 {
            candle_core::bail!(
                "fake-quant {}: row length {n} is not a multiple of {bs}",
                self.ty
            );
        }
        Ok((o1, o2))
    }
}

/// The grid's value range of one block, from its bytes.
type RangeFn = fn(&[u8]) -> (f32, f32);

/// 1 where `x` lies inside the grid range of its 32-value block after quantization, else 0.
pub fn clip_mask(ty: QuantType, x: &[f32]) -> Vec<f32> {
    let range: Option<RangeFn> = match ty {
        QuantType::Q4_0 => Some(|b| span(read_f16(b, 0), -8.0, 7.0, 0.0)),
        QuantType::Q5_0 => Some(|b| span(read_f16(b, 0), -16.0, 15.0, 0.0)),
        QuantType::Q8_0 => Some(|b| span(read_f16(b, 0), -128.0, 127.0, 0.0)),
        QuantType::Q4_1 => Some(|b| span(read_f16(b, 0), 0.0, 15.0, read_f16(b, 2))),
        QuantType::Q5_1 => Some(|b| span(read_f16(b, 0), 0.0, 31.0, read_f16(b, 2))),
        _ => None,
    };
    let Some(range) = range else {
        return vec![1.0; x.len()];
    };
    let (q, _) = ty.kernels();
    let mut block = [0u8; 34];
    let mut out = Vec::with_capacity(x.len());
    for xb in x.chunks_exact(32) {
        q(xb, &mut block[..ty.block_bytes()]);
        let (lo, hi) = range(&block);
        out.extend(
            xb.iter()
                .map(|&v| if v >= lo && v <= hi { 1.0 } else { 0.0 }),
        );
    }
    out
}

fn span(d: f32, qmin: f32, qmax: f32, m: f32) -> (f32, f32) {
    let (a, b) = (qmin * d + m, qmax * d + m);
    (a.min(b), a.max(b))
}

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "gguf-fake-quant"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (o1, o2) = self.check(l)?;
        let x = match s {
            CpuStorage::F32(v) => &v[o1..o2],
            _ => candle_core::bail!("fake-quant: f32 weights only"),
        };
        let n = l.shape().dims().last().copied().unwrap_or(0);
        check_finite(x, n).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut y = vec![0f32; x.len()];
        fake_quantize_into(self.ty, x, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (o1, o2) = self.check(l)?;
        let n = l.shape().dims().last().copied().unwrap_or(0);
        crate::cuda::fake_quant_fwd(self.ty, s, o1, o2, n).map(|st| (st, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !self.clip_mask {
            return Ok(Some(grad_res.clone()));
        }
        let x = arg
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<f32>()?;
        let mask = Tensor::from_vec(
            clip_mask(self.ty, &x),
            arg.shape(),
            &candle_core::Device::Cpu,
        )?
        .to_device(arg.device())?;
        Ok(Some(grad_res.mul(&mask)?))
    }
}
