//! Where a model's weights come from. One trait, so the same loading code builds a quantized
//! teacher, a dequantized f32 reference, or a trainable student (`qd-distill`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::borrow::Cow;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Tensor};
use qd_gguf::GgmlType;
use qd_gguf::GgufFile;

use crate::block::Block;
use crate::error::{ModelError, Result};
use crate::hparams::HParams;
use crate::linear::{DenseEmbedding, DenseLinear, Embedding, Linear, QEmbedding, QLinear};

pub trait WeightSource {
    type Linear: Linear;
    type Embedding: Embedding;
    fn has(&self, name: &str) -> bool;
    /// Row-major shape of a tensor.
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    fn linear(&self, weight: &str, bias: Option<&str>) -> Result<Self::Linear>;
    fn embedding(&self, name: &str) -> Result<Self::Embedding>;
    /// A small f32 tensor (norm weights, biases).
    fn vector(&self, name: &str) -> Result<Tensor>;
}

/// Weights straight from a GGUF file, kept quantized.
pub struct GgufWeights<'a> {
    pub file: &'a GgufFile,
    pub device: Device,
    /// Loaded once even when used twice (tied embedding and LM head).
    cache: Mutex<HashMap<String, Arc<QTensor>>>,
    /// Re-encode Q5_0 as Q8_0 (exact; see `widen`).
    pub widen_q5_0: bool,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile, device: &Device) -> Self {
        Self {
            file,
            device: device.clone(),
            cache: Mutex::new(HashMap::new()),
            widen_q5_0: true,
        }
    }

    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>> {
        let mut cache = self.cache.lock().expect("weight cache poisoned");
        if let Some(t) = cache.get(name) {
            return Ok(t.clone());
        }
        let info = self.file.tensor_info(name)?;
        let t = if info.dtype == GgmlType::Q5_0 && self.widen_q5_0 {
            let bytes = crate::widen::q5_0_to_q8_0(self.file.tensor_bytes(name)?);
            let storage =
                QStorage::from_data(Cow::Owned(bytes), &self.device, GgmlType::Q8_0.to_candle())?;
            Arc::new(QTensor::new(storage, info.shape())?)
        } else {
            Arc::new(self.file.qtensor(name, &self.device)?)
        };
        cache.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn bias(&self, name: Option<&str>) -> Result<Option<Tensor>> {
        match name {
            Some(b) if self.has(b) => Ok(Some(self.vector(b)?)),
            _ => Ok(None),
        }
    }
}

impl WeightSource for GgufWeights<'_> {
    type Linear = QLinear;
    type Embedding = QEmbedding;

    fn has(&self, name: &str) -> bool {
        self.file.has_tensor(name)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.file.tensor_info(name)?.shape())
    }

    fn linear(&self, weight: &str, bias: Option<&str>) -> Result<QLinear> {
        Ok(QLinear::new(self.qtensor(weight)?, self.bias(bias)?)?)
    }

    fn embedding(&self, name: &str) -> Result<QEmbedding> {
        Ok(QEmbedding(self.qtensor(name)?))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        Ok(self.file.dequantize(name, &self.device)?)
    }
}

/// The same file with every weight dequantized to f32: the reference that quantized
/// forwards are compared against.
pub struct DequantizedWeights<'a>(pub GgufWeights<'a>);

impl WeightSource for DequantizedWeights<'_> {
    type Linear = DenseLinear;
    type Embedding = DenseEmbedding;

    fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.0.shape(name)
    }

    fn linear(&self, weight: &str, bias: Option<&str>) -> Result<DenseLinear> {
        Ok(DenseLinear {
            weight: self.0.vector(weight)?,
            bias: self.0.bias(bias)?,
        })
    }

    fn embedding(&self, name: &str) -> Result<DenseEmbedding> {
        Ok(DenseEmbedding(self.0.vector(name)?))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        self.0.vector(name)
    }
}

/// Checks a tensor's row-major shape before it is used, so a malformed file fails with the
/// tensor's name instead of a shape error deep inside a matmul.
pub fn expect_shape<W: WeightSource>(w: &W, name: &str, expected: &[usize]) -> Result<()> {
    let found = w.shape(name)?;
    if found != expected {
        return Err(ModelError::Shape {
            name: name.into(),
            found,
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// The small f32 tensor `name` when `w` has it (optional norms, RoPE factors).
pub fn opt_vector<W: WeightSource>(w: &W, name: &str) -> Result<Option<Tensor>> {
    if w.has(name) {
        Ok(Some(w.vector(name)?))
    } else {
        Ok(None)
    }
}

impl<L: Linear> Block<L> {
    /// Block `il` of a model of `hp` from `w` (its tensors named `blk.{il}.*`), every matrix's
    /// shape checked: what [`crate::Transformer::load`] does for each block, and block-wise
    /// QAT for the one block it trains.
    pub fn load<W: WeightSource<Linear = L>>(
        hp: &HParams,
        il: usize,
        w: &W,
    ) -> crate::Result<Self> {
        let (d, hd, vd) = (hp.n_embd, hp.head_dim, hp.value_dim);
        let n = |s: &str| format!("blk.{il}.{s}");
        expect_shape(w, &n("attn_q.weight"), &[hp.n_head * hd, d])?;
        expect_shape(w, &n("attn_k.weight"), &[hp.n_head_kv * hd, d])?;
        expect_shape(w, &n("attn_v.weight"), &[hp.n_head_kv * vd, d])?;
        expect_shape(w, &n("attn_output.weight"), &[d, hp.n_head * vd])?;
        expect_shape(w, &n("ffn_gate.weight"), &[hp.n_ff, d])?;
        expect_shape(w, &n("ffn_up.weight"), &[hp.n_ff, d])?;
        expect_shape(w, &n("ffn_down.weight"), &[d, hp.n_ff])?;
        Ok(Block {
            attn_norm: w.vector(&n("attn_norm.weight"))?,
            q: w.linear(&n("attn_q.weight"), Some(&n("attn_q.bias")))?,
            k: w.linear(&n("attn_k.weight"), Some(&n("attn_k.bias")))?,
            v: w.linear(&n("attn_v.weight"), Some(&n("attn_v.bias")))?,
            o: w.linear(&n("attn_output.weight"), Some(&n("attn_output.bias")))?,
            q_norm: opt_vector(w, &n("attn_q_norm.weight"))?,
            k_norm: opt_vector(w, &n("attn_k_norm.weight"))?,
            post_attn_norm: opt_vector(w, &n("post_attention_norm.weight"))?,
            ffn_norm: w.vector(&n("ffn_norm.weight"))?,
            gate: w.linear(&n("ffn_gate.weight"), None)?,
            up: w.linear(&n("ffn_up.weight"), None)?,
            down: w.linear(&n("ffn_down.weight"), None)?,
            post_ffn_norm: opt_vector(w, &n("post_ffw_norm.weight"))?,
            swa: hp.is_swa(il),
        })
    }
}
