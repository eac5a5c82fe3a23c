//! The fake-quant op: forward `dequantize(quantize(w))` row-wise in the GGUF block type the
//! tensor will be exported as, backward the straight-through estimator. With importance
//! weights (an imatrix) the forward pass is ggml's weighted quantizer's grid, the one
//! `export-gguf --imatrix` (and `llama-quantize --imatrix`) writes.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::fp16::read_f16;
use qd_gguf::GgmlType;

#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    pub ty: GgmlType,
    /// Zero the gradient of values outside their block's representable range (the types whose
    /// grid is one range per 32 values: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). Identity otherwise.
    pub clip_mask: bool,
    /// Importance weights, one per column of a row (an imatrix's mean squared activations):
    /// the grid is then [`crate::quantize_weighted`]'s. Shared, since every step applies the op.
    pub weights: Option<Arc<[f32]>>,
}

impl FakeQuant {
    pub fn new(ty: GgmlType) -> Self {
        Self {
            ty,
            clip_mask: false,
            weights: None,
        }
    }

    /// The op on the importance-weighted grid of `weights` (one per column).
    pub fn weighted(ty: GgmlType, weights: Arc<[f32]>) -> Self {
        Self {
            ty,
            clip_mask: false,
            weights: Some(weights),
        }
    }

    /// Applies the op with its gradient; the last dimension is the GGUF row.
    pub fn apply(&self, w: &Tensor) -> Result<Tensor> {
        w.apply_op1(self.clone())
    }

    /// The grid's values of `x` (rows of `n`): the reference or the weighted quantizer's.
    fn values(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let msg = |e: crate::QuantError| candle_core::Error::Msg(e.to_string());
        match &self.weights {
            Some(w) => crate::weighted::fake_quantize_weighted(self.ty, x, n, w),
            None => crate::rows::fake_quantize(self.ty, x, n),
        }
        .map_err(msg)
    }

    /// The blocks' bytes of `x` (rows of `n`) on this op's grid.
    fn bytes(&self, x: &[f32], n: usize) -> Result<Vec<u8>> {
        let r = match &self.weights {
            Some(w) => crate::weighted::quantize_weighted(self.ty, x, n, w),
            None => crate::rows::quantize(self.ty, x, n),
        };
        r.map_err(|e| candle_core::Error::Msg(e.to_string()))
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
pub fn clip_mask(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let bb = ty.type_size();
    let mut bytes = Vec::new();
    // A type outside the quantizable ones has no grid: no mask (all ones), as for K-quants.
    if let (32, Ok((q, _))) = (ty.block_size(), crate::format::kernels(ty)) {
        bytes = vec![0u8; x.len() / 32 * bb];
        for (xb, b) in x.chunks_exact(32).zip(bytes.chunks_exact_mut(bb)) {
            q(xb, b);
        }
    }
    clip_mask_of(ty, x, &bytes)
}

/// [`clip_mask`] from the blocks' bytes of `x` (whichever quantizer made them).
pub fn clip_mask_of(ty: GgmlType, x: &[f32], bytes: &[u8]) -> Vec<f32> {
    let range: Option<RangeFn> = match ty {
        GgmlType::Q4_0 => Some(|b| span(read_f16(b, 0), -8.0, 7.0, 0.0)),
        GgmlType::Q5_0 => Some(|b| span(read_f16(b, 0), -16.0, 15.0, 0.0)),
        GgmlType::Q8_0 => Some(|b| span(read_f16(b, 0), -128.0, 127.0, 0.0)),
        GgmlType::Q4_1 => Some(|b| span(read_f16(b, 0), 0.0, 15.0, read_f16(b, 2))),
        GgmlType::Q5_1 => Some(|b| span(read_f16(b, 0), 0.0, 31.0, read_f16(b, 2))),
        _ => None,
    };
    let Some(range) = range else {
        return vec![1.0; x.len()];
    };
    let mut out = Vec::with_capacity(x.len());
    for (xb, block) in x.chunks_exact(32).zip(bytes.chunks_exact(ty.type_size())) {
        let (lo, hi) = range(block);
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
        let y = self.values(x, n)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (o1, o2) = self.check(l)?;
        let n = l.shape().dims().last().copied().unwrap_or(0);
        if self.weights.is_some() || !crate::cuda::has_kernel(self.ty) {
            // No kernel for this grid yet (the importance-weighted search, the other K-quants):
            // the CPU op's values, through the host — bit-identical, at the cost of two copies.
            let (y, shape) = self.cpu_fwd(&s.to_cpu_storage()?, l)?;
            let CpuStorage::F32(v) = y else {
                candle_core::bail!("fake-quant: f32 weights only")
            };
            let dev = s.device().clone();
            let slice = dev.clone_htod(&v)?;
            return Ok((candle_core::CudaStorage::wrap_cuda_slice(slice, dev), shape));
        }
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
        let n = arg.dims().last().copied().unwrap_or(0);
        let mask = match &self.weights {
            None => clip_mask(self.ty, &x),
            Some(_) => clip_mask_of(self.ty, &x, &self.bytes(&x, n)?),
        };
        let mask = Tensor::from_vec(mask, arg.shape(), &candle_core::Device::Cpu)?
            .to_device(arg.device())?;
        Ok(Some(grad_res.mul(&mask)?))
    }
}
