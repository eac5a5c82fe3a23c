//! Quantization-aware training: which fake-quant op each student weight is seen through. The
//! types come from the same [`Recipe::choose`] that export uses, so the trained grid and the
//! shipped one cannot drift apart.

use std::collections::BTreeMap;

use qd_export::{Recipe, TensorKind};
use qd_quant::{FakeQuant, QuantType};

use super::var_store::VarStore;

#[derive(Debug, Clone)]
pub struct QatPlan {
    pub recipe: Recipe,
    /// Tensor name → the block type its forward pass sees.
    pub types: BTreeMap<String, QuantType>,
}

impl QatPlan {
    /// Every 2-D weight of `store` gets its recipe type; the embedding and a tied or separate LM
    /// head only when `embeddings`.
    pub fn new(recipe: Recipe, store: &VarStore, n_layer: usize, embeddings: bool) -> Self {
        let names = store.shapes();
        let has_output = names.iter().any(|(n, _)| n == "output.weight");
        let mut types = BTreeMap::new();
        for (name, dims) in names {
            let kind = TensorKind::of(&name, &dims, has_output);
            if matches!(kind, TensorKind::Output | TensorKind::Embedding) && !embeddings {
                continue;
            }
            let row = dims.last().copied().unwrap_or(0);
            if let Some(ty) = recipe.choose(kind, row, n_layer).used {
                types.insert(name, ty);
            }
        }
        Self { recipe, types }
    }

    /// A store over the same variables whose layers see their weights through the plan's
    /// fake-quant ops. Frozen tensors are fake-quantized once here rather than every step.
    pub fn apply(&self, store: &VarStore) -> candle_core::Result<VarStore> {
        let mut out = store.clone();
        out.fake_quant.clear();
        for (name, &ty) in &self.types {
            let op = FakeQuant::new(ty);
            if let Some(t) = out.frozen.get_mut(name) {
                *t = op.apply(t)?;
            } else if let Some(m) = out.frozen_q8.remove(name) {
                let dense = m.qtensor().dequantize(&store.device())?;
                out.frozen.insert(name.clone(), op.apply(&dense)?);
            } else {
                out.fake_quant.insert(name.clone(), op);
            }
        }
        Ok(out)
    }
}
