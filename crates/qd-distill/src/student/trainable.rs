//! Trainable layers. A linear layer optionally sees its weight through the fake-quant op of the
//! GGUF type it will be exported as, so QAT needs no other model code.

use candle_core::{DType, Result, Tensor};
use qd_model::q8_0_f32::Q8_0Matrix;
use qd_model::{Embedding, Linear};
use qd_quant::FakeQuant;

#[derive(Clone)]
pub enum TrainableLinear {
    Dense {
        /// `[out, in]`, GGUF's row layout: the fake-quant blocks run along `in`. The tensor of a
        /// `Var` when trained, a plain tensor when frozen (then no gradient is ever computed
        /// for it).
        weight: Tensor,
        bias: Option<Tensor>,
        fake_quant: Option<FakeQuant>,
        /// The learned block steps the fake-quant grid uses instead of the quantizer's own
        /// (`[out, in/32]`, the tensor of a `Var`; see `qd_quant::learned_step`).
        step: Option<Tensor>,
        /// Learned steps through candle's ops (the device-generic path) instead of the CPU op.
        portable: bool,
    },
    /// A frozen plain product kept in the teacher's Q8_0 blocks (the 262k-row tied LM head
    /// would be 671 MB as f32).
    FrozenQ8(Q8_0Matrix),
}

impl TrainableLinear {
    /// A dense layer.
    pub fn new(weight: Tensor, bias: Option<Tensor>, fake_quant: Option<FakeQuant>) -> Self {
        Self::Dense {
            weight,
            bias,
            fake_quant,
            step: None,
            portable: false,
        }
    }

    /// The layer with learned block steps (only with a fake-quant op; ignored otherwise),
    /// applied through candle's ops when `portable`.
    pub fn with_step(mut self, learned: Option<Tensor>, portable: bool) -> Self {
        if let Self::Dense {
            step,
            fake_quant: Some(_),
            portable: p,
            ..
        } = &mut self
        {
            *step = learned;
            *p = portable;
        }
        self
    }

    /// A frozen plain product through the teacher's Q8_0 matrix.
    pub fn frozen_q8_0(m: Q8_0Matrix) -> Self {
        Self::FrozenQ8(m)
    }

    /// The weight the forward pass multiplies by, in f32 (bf16 master weights converted, their
    /// gradient flowing back in bf16; an f32 weight's `to_dtype` is the tensor itself).
    pub fn effective_weight(&self) -> Result<Tensor> {
        match self {
            Self::FrozenQ8(m) => m.qtensor().dequantize(&m.qtensor().device()),
            Self::Dense {
                weight,
                fake_quant: Some(op),
                step: Some(step),
                portable,
                ..
            } => {
                let op = qd_quant::LearnedStep { ty: op.ty };
                let weight = &weight.to_dtype(DType::F32)?;
                if *portable {
                    op.apply_portable(weight, step)
                } else {
                    op.apply(weight, step)
                }
            }
            Self::Dense {
                weight,
                fake_quant: Some(op),
                ..
            } => op.apply(&weight.to_dtype(DType::F32)?),
            Self::Dense { weight, .. } => weight.to_dtype(DType::F32),
        }
    }
}

impl Linear for TrainableLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::FrozenQ8(m) => {
                let dims = x.dims().to_vec();
                let k = *dims.last().expect("x has an inner dimension");
                let y = m.matmul_t(&x.reshape(((), k))?)?;
                let mut out = dims;
                *out.last_mut().expect("non-empty") = m.dims().0;
                y.reshape(out)
            }
            Self::Dense { bias, .. } => {
                let y = x.broadcast_matmul(&self.effective_weight()?.t()?)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }

    fn frozen_weight(&self) -> Option<Tensor> {
        match self {
            Self::Dense {
                weight,
                bias: None,
                fake_quant: None,
                ..
            } if !weight.track_op() => Some(weight.clone()),
            _ => None,
        }
    }

    fn is_frozen_plain(&self) -> bool {
        matches!(self, Self::FrozenQ8(_)) || self.frozen_weight().is_some()
    }

    fn frozen_input_grad(&self, g: &Tensor) -> Result<Tensor> {
        match (self, self.frozen_weight()) {
            (Self::FrozenQ8(m), _) => m.matmul(g),
            (_, Some(w)) => g.matmul(&w),
            _ => candle_core::bail!("frozen_input_grad: not a frozen plain product"),
        }
    }
}

#[derive(Clone)]
pub enum TrainableEmbedding {
    Dense {
        weight: Tensor,
        /// Only for a trained embedding under QAT (a frozen one is fake-quantized once up
        /// front).
        fake_quant: Option<FakeQuant>,
    },
    /// A frozen table kept in the teacher's Q8_0 blocks, rows dequantized on lookup.
    FrozenQ8(Q8_0Matrix),
}

impl Embedding for TrainableEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (weight, fake_quant) = match self {
            Self::FrozenQ8(m) => return m.qtensor().embedding(ids),
            Self::Dense { weight, fake_quant } => (weight, fake_quant),
        };
        let w = &match fake_quant {
            Some(op) => op.apply(weight)?,
            None => weight.clone(),
        };
        let mut dims = ids.dims().to_vec();
        dims.push(w.dim(1)?);
        w.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }
}
