//! Trainable layers. A linear layer optionally sees its weight through the fake-quant op of the
//! GGUF type it will be exported as, so QAT needs no other model code.

use candle_core::{Result, Tensor};
use qd_model::{Embedding, Linear};
use qd_quant::FakeQuant;

#[derive(Clone)]
pub struct TrainableLinear {
    /// `[out, in]`, GGUF's row layout: the fake-quant blocks run along `in`. The tensor of a
    /// `Var` when trained, a plain tensor when frozen (then no gradient is ever computed for it).
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub fake_quant: Option<FakeQuant>,
}

impl TrainableLinear {
    /// The weight the forward pass multiplies by.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match &self.fake_quant {
            Some(op) => op.apply(&self.weight),
            None => Ok(self.weight.clone()),
        }
    }
}

impl Linear for TrainableLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.effective_weight()?.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn frozen_weight(&self) -> Option<Tensor> {
        let plain = self.bias.is_none() && self.fake_quant.is_none();
        (plain && !self.weight.track_op()).then(|| self.weight.clone())
    }
}

#[derive(Clone)]
pub struct TrainableEmbedding {
    pub weight: Tensor,
    /// Only for a trained embedding under QAT (a frozen one is fake-quantized once up front).
    pub fake_quant: Option<FakeQuant>,
}

impl Embedding for TrainableEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let w = &match &self.fake_quant {
            Some(op) => op.apply(&self.weight)?,
            None => self.weight.clone(),
        };
        let mut dims = ids.dims().to_vec();
        dims.push(w.dim(1)?);
        w.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }
}
