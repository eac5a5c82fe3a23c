//! Named trainable tensors (GGUF names), and the `WeightSource` that builds a student on them.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use qd_model::{ModelError, WeightSource};
use qd_quant::FakeQuant;

use super::trainable::{TrainableEmbedding, TrainableLinear};

#[derive(Clone, Default)]
pub struct VarStore {
    /// Trained tensors.
    pub vars: BTreeMap<String, Var>,
    /// Tensors the student uses but does not train (by default the 262k-row embedding and the
    /// LM head tied to it: their gradient would cost a full `[vocab, d]` product per chunk).
    pub frozen: BTreeMap<String, Tensor>,
    /// The fake-quant op each trained weight is seen through (QAT); empty otherwise.
    pub fake_quant: BTreeMap<String, FakeQuant>,
}

impl VarStore {
    pub fn insert(&mut self, name: impl Into<String>, t: &Tensor) -> candle_core::Result<()> {
        self.vars.insert(
            name.into(),
            Var::from_tensor(&t.to_dtype(candle_core::DType::F32)?)?,
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> qd_model::Result<&Var> {
        self.vars
            .get(name)
            .ok_or_else(|| ModelError::Config(format!("student has no trained tensor {name:?}")))
    }

    /// A trained or frozen tensor.
    pub fn tensor(&self, name: &str) -> qd_model::Result<Tensor> {
        match (self.vars.get(name), self.frozen.get(name)) {
            (Some(v), _) => Ok(v.as_tensor().clone()),
            (None, Some(t)) => Ok(t.clone()),
            _ => Err(ModelError::Config(format!(
                "student has no tensor {name:?}"
            ))),
        }
    }

    /// Moves a trained tensor to the frozen set.
    pub fn freeze(&mut self, name: &str) {
        if let Some(v) = self.vars.remove(name) {
            self.frozen.insert(name.to_string(), v.as_tensor().detach());
        }
    }

    pub fn all_vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    pub fn n_params(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    pub fn device(&self) -> Device {
        self.vars
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu)
    }
}

impl WeightSource for VarStore {
    type Linear = TrainableLinear;
    type Embedding = TrainableEmbedding;

    fn has(&self, name: &str) -> bool {
        self.vars.contains_key(name) || self.frozen.contains_key(name)
    }

    fn shape(&self, name: &str) -> qd_model::Result<Vec<usize>> {
        Ok(self.tensor(name)?.dims().to_vec())
    }

    fn linear(&self, weight: &str, bias: Option<&str>) -> qd_model::Result<TrainableLinear> {
        Ok(TrainableLinear {
            weight: self.tensor(weight)?,
            bias: match bias {
                Some(b) if self.has(b) => Some(self.tensor(b)?),
                _ => None,
            },
            fake_quant: self.fake_quant.get(weight).copied(),
        })
    }

    fn embedding(&self, name: &str) -> qd_model::Result<TrainableEmbedding> {
        Ok(TrainableEmbedding {
            weight: self.tensor(name)?,
            fake_quant: self.fake_quant.get(name).copied(),
        })
    }

    fn vector(&self, name: &str) -> qd_model::Result<Tensor> {
        self.tensor(name)
    }
}

impl VarStore {
    /// The current weights, by GGUF name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Overwrites every variable from `weights`; names and shapes must match exactly (a
    /// checkpoint of another architecture or size is refused before anything changes).
    pub fn load_weights(
        &self,
        weights: &std::collections::BTreeMap<String, Tensor>,
    ) -> qd_model::Result<()> {
        for (k, v) in &self.vars {
            let w = weights
                .get(k)
                .ok_or_else(|| ModelError::Config(format!("checkpoint has no tensor {k:?}")))?;
            if w.dims() != v.dims() {
                return Err(ModelError::Shape {
                    name: k.clone(),
                    found: w.dims().to_vec(),
                    expected: v.dims().to_vec(),
                });
            }
        }
        if let Some(extra) = weights.keys().find(|k| !self.vars.contains_key(*k)) {
            return Err(ModelError::Config(format!(
                "checkpoint tensor {extra:?} does not belong to this student"
            )));
        }
        for (k, v) in &self.vars {
            v.set(&weights[k].to_dtype(v.dtype())?)?;
        }
        Ok(())
    }
}
