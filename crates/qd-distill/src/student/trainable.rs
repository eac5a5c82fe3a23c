//! Trainable layers. A linear layer optionally sees its weight through the fake-quant op of the
//! GGUF type it will be exported as, so QAT needs no other model code.

use candle_core::{Result, Tensor};
use qd_model::q8_0_f32::Q8_0Matrix;
use qd_model::{Embedding, Linear};
use qd_quant::FakeQuant;

#[derive(Clone)]
pub struct TrainableLinear {
    /// `[out, in]`, GGUF's row layout: the fake-quant blocks run along `in`. The tensor of a
    /// `Var` when trained, a plain tensor when frozen (then no gradient is ever computed for it).
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub fake_quant: Option<FakeQuant>,
    /// A frozen weight kept in the teacher's Q8_0 blocks (`weight` then holds no data).
    pub frozen_q8: Option<Q8_0Matrix>,
}

impl TrainableLinear {
    /// A dense layer.
    pub fn new(weight: Tensor, bias: Option<Tensor>, fake_quant: Option<FakeQuant>) -> Self {
        Self {
            weight,
            bias,
            fake_quant,
            frozen_q8: None,
        }
    }

    /// A frozen plain product through the teacher's Q8_0 matrix.
    pub fn frozen_q8_0(m: Q8_0Matrix) -> Self {
        Self {
            weight: Tensor::zeros(0, candle_core::DType::F32, &candle_core::Device::Cpu)
                .expect("an empty tensor"),
            bias: None,
            fake_quant: None,
            frozen_q8: Some(m),
        }
    }

    /// The weight the forward pass multiplies by.
    pub fn effective_weight(&self) -> Result<Tensor> {
        if let Some(m) = &self.frozen_q8 {
            return m.qtensor().dequantize(&candle_core::Device::Cpu);
        }
        match &self.fake_quant {
            Some(op) => op.apply(&self.weight),
            None => Ok(self.weight.clone()),
        }
    }
}

impl Linear for TrainableLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(m) = &self.frozen_q8 {
            let dims = x.dims().to_vec();
            let k = *dims.last().expect("x has an inner dimension");
            let y = m.matmul_t(&x.reshape(((), k))?)?;
            let mut out = dims;
            *out.last_mut().expect("non-empty") = m.dims().0;
            return y.reshape(out);
        }
        let y = x.broadcast_matmul(&self.effective_weight()?.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn frozen_weight(&self) -> Option<Tensor> {
        let plain = self.bias.is_none() && self.fake_quant.is_none() && self.frozen_q8.is_none();
        (plain && !self.weight.track_op()).then(|| self.weight.clone())
    }

    fn is_frozen_plain(&self) -> bool {
        self.frozen_q8.is_some() || self.frozen_weight().is_some()
    }

    fn frozen_input_grad(&self, g: &Tensor) -> Result<Tensor> {
        match (&self.frozen_q8, self.frozen_weight()) {
            (Some(m), _) => m.matmul(g),
            (None, Some(w)) => g.matmul(&w),
            _ => candle_core::bail!("frozen_input_grad: not a frozen plain product"),
        }
    }
}

#[derive(Clone)]
pub struct TrainableEmbedding {
    pub weight: Tensor,
    /// Only for a trained embedding under QAT (a frozen one is fake-quantized once up front).
    pub fake_quant: Option<FakeQuant>,
    /// A frozen table kept in the teacher's Q8_0 blocks, rows dequantized on lookup.
    pub frozen_q8: Option<Q8_0Matrix>,
}

impl Embedding for TrainableEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        if let Some(m) = &self.frozen_q8 {
            return m.qtensor().embedding(ids);
        }
        let w = &match &self.fake_quant {
            Some(op) => op.apply(&self.weight)?,
            None => self.weight.clone(),
        };
        let mut dims = ids.dims().to_vec();
        dims.push(w.dim(1)?);
        w.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }
}
