//! Named trainable tensors (GGUF names), and the `WeightSource` that builds a student on them.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use qd_model::{ModelError, WeightSource};
use qd_quant::FakeQuant;

use super::trainable::{TrainableEmbedding, TrainableLinear};
use qd_model::q8_0_f32::Q8_0Matrix;

/// The name suffix of a weight's learned block steps (`blk.0.attn_q.weight.qstep`, one per 32
/// values of each row): trained and checkpointed like the weights, but not a tensor of the
/// model (no GGUF file holds them; export writes them into the weight's blocks).
pub const STEP_SUFFIX: &str = ".qstep";

/// The learned-step variable name of weight `name`.
pub fn step_name(name: &str) -> String {
    format!("{name}{STEP_SUFFIX}")
}

#[derive(Clone, Default)]
pub struct VarStore {
    /// Trained tensors.
    pub vars: BTreeMap<String, Var>,
    /// Tensors the student uses but does not train (by default the 262k-row embedding and the
    /// LM head tied to it: their gradient would cost a full `[vocab, d]` product per chunk).
    pub frozen: BTreeMap<String, Tensor>,
    /// Frozen tensors kept in the teacher's Q8_0 blocks (exactly the values of their f32 form,
    /// at a quarter of the memory: 671 → 178 MB for Gemma 3's tied embedding).
    pub frozen_q8: BTreeMap<String, Q8_0Matrix>,
    /// The fake-quant op each trained weight is seen through (QAT); empty otherwise.
    pub fake_quant: BTreeMap<String, FakeQuant>,
    /// Layers built from this store take the device-generic path (`--device cpu-generic` or
    /// `cuda`): learned steps through candle's ops instead of the CPU op.
    pub portable: bool,
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

    /// A trained or frozen tensor (a Q8_0 one dequantized).
    pub fn tensor(&self, name: &str) -> qd_model::Result<Tensor> {
        match (self.vars.get(name), self.frozen.get(name)) {
            (Some(v), _) => Ok(v.as_tensor().clone()),
            (None, Some(t)) => Ok(t.clone()),
            _ => match self.frozen_q8.get(name) {
                Some(m) => Ok(m.qtensor().dequantize(&self.device())?),
                None => Err(ModelError::Config(format!(
                    "student has no tensor {name:?}"
                ))),
            },
        }
    }

    /// Every tensor's name and shape: trained, frozen, frozen in Q8_0 (not the learned steps,
    /// which belong to their weights).
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let vars = self
            .vars
            .iter()
            .filter(|(k, _)| !k.ends_with(STEP_SUFFIX))
            .map(|(k, v)| (k.clone(), v.dims().to_vec()));
        let frozen = self
            .frozen
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()));
        let q8 = self.frozen_q8.iter().map(|(k, m)| {
            let (r, c) = m.dims();
            (k.clone(), vec![r, c])
        });
        vars.chain(frozen).chain(q8).collect()
    }

    /// The teacher's tensor `name` as this store's `as_name`: a frozen Q8_0 matrix (`frozen`
    /// names it) stays in the teacher's blocks, anything else is dequantized to f32.
    pub fn insert_from_teacher(
        &mut self,
        teacher: &qd_gguf::GgufFile,
        name: &str,
        as_name: String,
        frozen: &[&str],
        device: &Device,
    ) -> qd_model::Result<()> {
        let info = teacher.tensor_info(name)?;
        if frozen.contains(&as_name.as_str()) && info.dtype == qd_gguf::GgmlType::Q8_0 {
            let q = std::sync::Arc::new(teacher.qtensor(name, device)?);
            if let Some(m) = Q8_0Matrix::new(q) {
                self.frozen_q8.insert(as_name, m);
                return Ok(());
            }
        }
        self.insert(as_name, &teacher.dequantize(name, device)?)?;
        Ok(())
    }

    /// Adds the learned steps of `weights` (a checkpoint's tensors) whose weight this store
    /// trains, as variables: they belong to the run, not to the student rebuilt from its
    /// teacher. Returns how many. `load_weights` then still refuses any stray tensor.
    pub fn adopt_learned_steps(
        &mut self,
        weights: &BTreeMap<String, Tensor>,
    ) -> candle_core::Result<usize> {
        let mut n = 0;
        for (k, t) in weights {
            if k.strip_suffix(STEP_SUFFIX)
                .is_some_and(|base| self.vars.contains_key(base))
            {
                self.insert(k.clone(), t)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The device-generic form of this store: frozen Q8_0 tensors dequantized (the panel
    /// products of `Q8_0Matrix` are CPU code; the f32 values are the same) and learned steps
    /// through candle's ops.
    pub fn make_portable(&mut self) -> qd_model::Result<()> {
        let dev = self.device();
        for (name, m) in std::mem::take(&mut self.frozen_q8) {
            self.frozen.insert(name, m.qtensor().dequantize(&dev)?);
        }
        self.portable = true;
        Ok(())
    }

    /// Moves a trained tensor to the frozen set.
    pub fn freeze(&mut self, name: &str) {
        if let Some(v) = self.vars.remove(name) {
            self.frozen.insert(name.to_string(), v.as_tensor().detach());
        }
    }

    /// Keeps every trained block matrix (`blk.*`, 2-D) in bf16 instead of f32: the master
    /// weights of `master_weights = "bf16"`. Returns how many.
    pub fn bf16_matrices(&mut self) -> candle_core::Result<usize> {
        let mut n = 0;
        for (name, v) in self.vars.iter_mut() {
            if name.starts_with("blk.") && v.rank() == 2 && v.dtype() == candle_core::DType::F32 {
                *v = Var::from_tensor(&v.as_tensor().to_dtype(candle_core::DType::BF16)?)?;
                n += 1;
            }
        }
        Ok(n)
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
        (self.vars.contains_key(name) && !name.ends_with(STEP_SUFFIX))
            || self.frozen.contains_key(name)
            || self.frozen_q8.contains_key(name)
    }

    fn shape(&self, name: &str) -> qd_model::Result<Vec<usize>> {
        if let Some(m) = self.frozen_q8.get(name) {
            let (r, c) = m.dims();
            return Ok(vec![r, c]);
        }
        Ok(self.tensor(name)?.dims().to_vec())
    }

    fn linear(&self, weight: &str, bias: Option<&str>) -> qd_model::Result<TrainableLinear> {
        let bias = match bias {
            Some(b) if self.has(b) => Some(self.tensor(b)?),
            _ => None,
        };
        let fake_quant = self.fake_quant.get(weight).cloned();
        match self.frozen_q8.get(weight) {
            Some(m) if bias.is_none() && fake_quant.is_none() => {
                Ok(TrainableLinear::frozen_q8_0(m.clone()))
            }
            _ => {
                let step = fake_quant
                    .as_ref()
                    .and(self.vars.get(&step_name(weight)))
                    .map(|v| v.as_tensor().clone());
                Ok(TrainableLinear::new(self.tensor(weight)?, bias, fake_quant)
                    .with_step(step, self.portable))
            }
        }
    }

    fn embedding(&self, name: &str) -> qd_model::Result<TrainableEmbedding> {
        let fake_quant = self.fake_quant.get(name).cloned();
        match self.frozen_q8.get(name) {
            Some(m) if fake_quant.is_none() => Ok(TrainableEmbedding::FrozenQ8(m.clone())),
            _ => Ok(TrainableEmbedding::Dense {
                weight: self.tensor(name)?,
                fake_quant,
            }),
        }
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
        self.check_weights(
            |k| weights.get(k).map(|w| w.dims().to_vec()),
            weights.keys().map(String::as_str),
        )?;
        for (k, v) in &self.vars {
            v.set(&weights[k].to_dtype(v.dtype())?)?;
        }
        Ok(())
    }

    /// Whether a source of weights (each name's dims, and every name it holds) names exactly
    /// this store's variables with their shapes: what [`Self::load_weights`] checks before
    /// anything changes, for sources read one tensor at a time.
    pub fn check_weights<'a>(
        &self,
        dims: impl Fn(&str) -> Option<Vec<usize>>,
        mut names: impl Iterator<Item = &'a str>,
    ) -> qd_model::Result<()> {
        for (k, v) in &self.vars {
            let found = dims(k)
                .ok_or_else(|| ModelError::Config(format!("checkpoint has no tensor {k:?}")))?;
            if found != v.dims() {
                return Err(ModelError::Shape {
                    name: k.clone(),
                    found,
                    expected: v.dims().to_vec(),
                });
            }
        }
        if let Some(extra) = names.find(|k| !self.vars.contains_key(*k)) {
            return Err(ModelError::Config(format!(
                "checkpoint tensor {extra:?} does not belong to this student"
            )));
        }
        Ok(())
    }

    /// Overwrites variable `name` with `value` (checked by [`Self::check_weights`] first).
    pub fn set_weight(&self, name: &str, value: &Tensor) -> qd_model::Result<()> {
        let v = self
            .vars
            .get(name)
            .ok_or_else(|| ModelError::Config(format!("no variable {name:?}")))?;
        v.set(&value.to_dtype(v.dtype())?)?;
        Ok(())
    }
}
