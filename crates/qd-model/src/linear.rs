//! The two seams the transformer is generic over: linear layers and the token embedding.
//!
//! The teacher uses quantized matmuls; the student (trainer) plugs in trainable or
//! fake-quantized matrices through the same traits without touching the model code.

use std::sync::{Arc, OnceLock};

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use qd_gguf::GgmlType;

use crate::ggml_numerics::{quantize_activations, ActQuant};

pub trait Linear {
    /// `x [.., in] -> [.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The `[out, in]` matrix when the layer is a plain product whose weight takes no gradient.
    /// Autograd would still compute that weight's gradient (candle differentiates both sides of
    /// a matmul), so a trainer can backpropagate through such a layer by hand instead: for the
    /// 262k-row tied LM head that gradient is a 671 MB tensor and as much work as the forward.
    fn frozen_weight(&self) -> Option<Tensor> {
        None
    }

    /// Whether the layer is a plain product `x·Wᵀ` whose weight takes no gradient, so that a
    /// trainer may backpropagate through it with [`Linear::frozen_input_grad`].
    fn is_frozen_plain(&self) -> bool {
        self.frozen_weight().is_some()
    }

    /// The GGUF weight behind the layer, for the single-token decoder.
    fn as_quantized(&self) -> Option<&QLinear> {
        None
    }

    /// `g·W`, the gradient of a frozen plain product with respect to its input.
    fn frozen_input_grad(&self, g: &Tensor) -> Result<Tensor> {
        match self.frozen_weight() {
            Some(w) => g.matmul(&w),
            None => candle_core::bail!("frozen_input_grad: not a frozen plain product"),
        }
    }
}

pub trait Embedding {
    /// `ids [..] -> [.., dim]`.
    fn lookup(&self, ids: &Tensor) -> Result<Tensor>;

    /// The GGUF table behind the embedding, for the single-token decoder.
    fn quantized_table(&self) -> Option<&QTensor> {
        None
    }
}

/// A GGUF weight used through candle's quantized matmul (activations quantized to Q8 as
/// llama.cpp does), with an optional f32 bias.
#[derive(Clone)]
pub struct QLinear {
    pub weight: QMatMul,
    pub bias: Option<Tensor>,
    /// How ggml quantizes this matmul's input; reproduced exactly before candle's kernel
    /// (whose own rounding differs: see `ggml_numerics`).
    pub act: Option<ActQuant>,
    /// The weight repacked for `kernels::q8_0`, made on first use (`None` inside: not applicable).
    packed: Arc<OnceLock<Option<crate::kernels::q8_0::PackedQ8_0>>>,
    /// The weight repacked for `kernels::kquant`, made on the decoder's first use.
    kpacked: Arc<OnceLock<Option<crate::kernels::kquant::PackedKQuant>>>,
    /// Multiply by the blocks as stored, never a repacked copy (`stored_blocks`).
    stored: bool,
}

impl QLinear {
    pub fn new(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let act = ActQuant::for_weight(GgmlType::from_candle(weight.dtype()));
        Ok(Self {
            weight: QMatMul::from_arc(weight)?,
            bias,
            act,
            packed: Arc::new(OnceLock::new()),
            kpacked: Arc::new(OnceLock::new()),
            stored: false,
        })
    }

    /// From now on the graph path multiplies by the weight's blocks as stored, neither
    /// candle's nor our kernels' repacked tiles: the layer's memory is its file's bytes, at
    /// the speed of candle's unpacked kernel (see `stored_blocks`). The integer sums are
    /// ggml's either way; the f32 sums run in another order, so results may differ in the
    /// last bits from the tiled product's.
    pub fn read_stored_blocks(&mut self) {
        self.stored = true;
    }
}

impl QLinear {
    /// The same layer producing only outputs `rows` (in that order): a vocabulary-restricted
    /// LM head. Quantized rows are whole blocks, so their bytes are copied and every kept
    /// output is computed exactly as before.
    pub fn gather_rows(&self, rows: &[u32]) -> Result<Self> {
        let bias = match &self.bias {
            Some(b) => Some(b.index_select(&Tensor::new(rows, b.device())?, 0)?),
            None => None,
        };
        let weight = match &self.weight {
            QMatMul::QTensor(w) => {
                let (n, k) = w.shape().dims2()?;
                let data = w.data()?;
                let row = data.len() / n;
                let mut out = Vec::with_capacity(row * rows.len());
                for &r in rows {
                    let r = r as usize;
                    if r >= n {
                        candle_core::bail!("row {r} of a {n}-row weight");
                    }
                    out.extend_from_slice(&data[r * row..(r + 1) * row]);
                }
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(out),
                    &w.device(),
                    w.dtype(),
                )?;
                Arc::new(QTensor::new(storage, (rows.len(), k))?)
            }
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                let t = t.index_select(&Tensor::new(rows, t.device())?, 0)?;
                Arc::new(QTensor::quantize(
                    &t.to_dtype(DType::F32)?,
                    GgmlType::F32.to_candle(),
                )?)
            }
        };
        let mut out = Self::new(weight, bias)?;
        out.act = self.act;
        out.stored = self.stored;
        Ok(out)
    }
}

impl QLinear {
    /// The weight repacked for the packed Q8_0 kernel: Q8_0 weights, and Q4_0 ones
    /// widened (exactly representable as Q8_0 with the same scale, and multiplied by ggml
    /// against the same Q8_0 activations, so the integer sums do not change), Q5_0 ones widened
    /// at load. Made on first use and kept (34, 22 or 18 bytes per 32 values for Q8_0, Q5_0 or
    /// Q4_0); `None` for other types or off the CPU.
    pub(crate) fn packed_q8_0(&self) -> Option<&crate::kernels::q8_0::PackedQ8_0> {
        let QMatMul::QTensor(w) = &self.weight else {
            return None;
        };
        let widen = match GgmlType::from_candle(w.dtype()) {
            GgmlType::Q8_0 => None,
            GgmlType::Q4_0 => Some(crate::widen::q4_0_to_q8_0 as fn(&[u8]) -> Vec<u8>),
            _ => return None,
        };
        if !w.device().is_cpu() {
            return None;
        }
        self.packed
            .get_or_init(|| {
                let (n, k) = w.shape().dims2().ok()?;
                let data = w.data().ok()?;
                match widen {
                    Some(f) => crate::kernels::q8_0::PackedQ8_0::new(&f(&data), n, k),
                    None => crate::kernels::q8_0::PackedQ8_0::new(&data, n, k),
                }
            })
            .as_ref()
    }

    /// The weight repacked for the packed K-quant kernel (Q4_K, Q6_K), made on first use.
    /// The fused prefill and decoder use it; the graph path keeps candle's kernels (see
    /// `kernels::kquant`).
    pub(crate) fn packed_kquant(&self) -> Option<&crate::kernels::kquant::PackedKQuant> {
        use crate::kernels::kquant::PackedKQuant;
        let QMatMul::QTensor(w) = &self.weight else {
            return None;
        };
        let kind = GgmlType::from_candle(w.dtype());
        if !matches!(kind, GgmlType::Q4K | GgmlType::Q6K) || !w.device().is_cpu() {
            return None;
        }
        self.kpacked
            .get_or_init(|| {
                let (n, k) = w.shape().dims2().ok()?;
                PackedKQuant::new(kind, &w.data().ok()?, n, k)
            })
            .as_ref()
    }

    /// The packed product for Q8_0 (and Q4_0, widened) weights on the CPU, when it runs at a
    /// SIMD level.
    fn forward_q8_0_packed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        // At the scalar level candle's own SIMD kernels are the faster graph path.
        if !crate::kernels::q8_0::available() {
            return Ok(None);
        }
        let Some(packed) = self.packed_q8_0() else {
            return Ok(None);
        };
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let Some(y) = packed.matmul(&xs) else {
            return Ok(None);
        };
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("x has an inner dimension") = packed.rows();
        Ok(Some(Tensor::from_vec(y, dims, x.device())?))
    }
}

impl Linear for QLinear {
    fn as_quantized(&self) -> Option<&QLinear> {
        Some(self)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self.forward_without_bias(x)? {
            Some(y) => y,
            None => {
                if x.device().is_cpu() && matches!(self.weight, QMatMul::QTensor(_)) {
                    crate::stored_blocks::candle_kernels_run_here()?;
                }
                let x = self.quantized_input(x)?;
                let x = if x.is_contiguous() {
                    x
                } else {
                    x.contiguous()?
                };
                self.weight.forward(&x)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl QLinear {
    /// `x` as ggml quantizes it before this matmul (exactly representable, so candle's own
    /// re-quantization keeps it), or `x` itself.
    fn quantized_input(&self, x: &Tensor) -> Result<Tensor> {
        match self.act {
            Some(kind) if x.device().is_cpu() => quantize_activations(x, kind),
            _ => Ok(x.clone()),
        }
    }

    /// The product by the stored blocks (`read_stored_blocks`) or by our packed tiles, where
    /// one applies; `None` leaves it to candle's matmul.
    fn forward_without_bias(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if let (true, QMatMul::QTensor(w)) = (self.stored, &self.weight) {
            if let Some(y) = crate::stored_blocks::matmul(w, &self.quantized_input(x)?)? {
                return Ok(Some(y));
            }
        }
        self.forward_q8_0_packed(x)
    }
}

/// Rows dequantized on demand: the 262k-row table is never expanded to f32.
#[derive(Clone)]
pub struct QEmbedding(pub Arc<QTensor>);

impl Embedding for QEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        self.0.embedding(ids)
    }

    fn quantized_table(&self) -> Option<&QTensor> {
        Some(&self.0)
    }
}

/// A plain f32 matrix `[out, in]`, for reference forwards and trainable students.
#[derive(Clone)]
pub struct DenseLinear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear for DenseLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Clone)]
pub struct DenseEmbedding(pub Tensor);

impl Embedding for DenseEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.0.dim(1)?);
        self.0.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }
}
