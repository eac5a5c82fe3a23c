//! Quantization-aware training: which fake-quant op each student weight is seen through. The
//! types come from the same [`Recipe::choose`] that export uses, so the trained grid and the
//! shipped one cannot drift apart.

use std::collections::BTreeMap;

use qd_export::{ModelInfo, Recipe, TensorKind};
use qd_quant::{FakeQuant, QuantType};

use super::var_store::VarStore;

#[derive(Debug, Clone)]
pub struct QatPlan {
    pub recipe: Recipe,
    /// Tensor name → the block type its forward pass sees.
    pub types: BTreeMap<String, QuantType>,
    /// One line per tensor whose rows the recipe's type cannot tile, naming llama.cpp's
    /// fallback it trains (and will be exported) with instead.
    pub fallbacks: Vec<String>,
}

impl QatPlan {
    /// Every 2-D weight of `store` gets its recipe type; the embedding and a tied or separate LM
    /// head only when `embeddings`.
    pub fn new(recipe: Recipe, store: &VarStore, model: &ModelInfo, embeddings: bool) -> Self {
        let names = store.shapes();
        let has_output = names.iter().any(|(n, _)| n == "output.weight");
        let mut types = BTreeMap::new();
        let mut fallbacks = Vec::new();
        for (name, dims) in names {
            let kind = TensorKind::of(&name, &dims, has_output);
            if matches!(kind, TensorKind::Output | TensorKind::Embedding) && !embeddings {
                continue;
            }
            let row = dims.last().copied().unwrap_or(0);
            let choice = recipe.choose(kind, row, model);
            if choice.fell_back() {
                let name_of = |t: Option<QuantType>| t.map_or("F32", |t| t.name());
                fallbacks.push(format!(
                    "{name}: rows of {row} do not fit {}; training and exporting {} as llama.cpp does",
                    name_of(choice.wanted),
                    name_of(choice.used)
                ));
            }
            if let Some(ty) = choice.used {
                types.insert(name, ty);
            }
        }
        Self {
            recipe,
            types,
            fallbacks,
        }
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

    /// Moves every trained weight of the plan onto its own fake-quant value, so that QAT starts
    /// from the post-training-quantized model with each weight at the centre of its grid cell.
    ///
    /// Why: a student built from an already quantized teacher has weights *on* the rounding
    /// boundaries of the QAT grid (a Q5_0 block requantized to Q4_0 gets exactly twice its
    /// scale, so every odd Q5_0 code lands halfway between two Q4_0 codes — about half of
    /// Gemma 3 270M's Q5_0-origin weights). The first optimizer step, of any size, would then
    /// re-round about half of them coherently along the gradient's sign (measured: KD loss
    /// 0.91 → 5.25 nats after one step at any learning rate). At the grid values, a step
    /// smaller than half a grid cell changes no code. The block scales are unchanged too: the
    /// block's largest magnitude is its own grid value, which re-derives the same scale.
    pub fn snap(&self, store: &VarStore) -> candle_core::Result<usize> {
        let mut n = 0;
        for (name, &ty) in &self.types {
            if let Some(v) = store.vars.get(name) {
                v.set(&FakeQuant::new(ty).apply(v.as_tensor())?.detach())?;
                n += 1;
            }
        }
        Ok(n)
    }
}
