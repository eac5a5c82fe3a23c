//! Trainable layers. A linear layer optionally sees its weight through the fake-quant op of the
//! GGUF type it will be exported as, so QAT needs no other model code.

use candle_core::{Result, Tensor, Var};
use qd_model::{Embedding, Linear};
use qd_quant::FakeQuant;

#[derive(Clone)]
pub struct TrainableLinear {
    /// `[out, in]`, GGUF's row layout: the fake-quant blocks run along `in`.
    pub weight: Var,
    pub bias: Option<Var>,
    pub fake_quant: Option<FakeQuant>,
}

impl TrainableLinear {
    /// The weight the forward pass multiplies by.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match &self.fake_quant {
            Some(op) => op.apply(self.weight.as_tensor()),
            None => Ok(self.weight.as_tensor().clone()),
        }
    }
}

impl Linear for TrainableLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.effective_weight()?.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b.as_tensor()),
            None => Ok(y),
        }
    }
}

#[derive(Clone)]
pub struct TrainableEmbedding {
    pub weight: Var,
}

impl Embedding for TrainableEmbedding {
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let mut dims = ids.dims().to_vec();
        dims.push(w.dim(1)?);
        w.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }
}
