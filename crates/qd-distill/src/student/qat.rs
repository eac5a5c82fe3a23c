//! Quantization-aware training: which fake-quant op each student weight is seen through. The
//! types come from the same [`Recipe::choose`] that export uses, so the trained grid and the
//! shipped one cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use qd_export::{Imatrix, ModelInfo, Recipe, TensorKind};
use qd_gguf::GgmlType;
use qd_quant::FakeQuant;

use super::var_store::{step_name, VarStore};

#[derive(Debug, Clone)]
pub struct QatPlan {
    pub recipe: Recipe,
    /// Tensor name → the block type its forward pass sees.
    pub types: BTreeMap<String, GgmlType>,
    /// One line per tensor whose rows the recipe's type cannot tile, naming llama.cpp's
    /// fallback it trains (and will be exported) with instead.
    pub fallbacks: Vec<String>,
    /// Tensor name → its importance weights (one per column) when the run trains against an
    /// imatrix's weighted grid — the grid `export-gguf` then writes with the same imatrix.
    pub weights: BTreeMap<String, Arc<[f32]>>,
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
                let name_of = |t: Option<GgmlType>| t.map_or("F32", |t| t.name());
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
            weights: BTreeMap::new(),
        }
    }

    /// The plan on `imatrix`'s weighted grid: every planned tensor the imatrix has an entry for
    /// is seen through ggml's importance-weighted quantizer, as export with that imatrix writes
    /// it (the rest stay on the reference grid, as llama-quantize leaves them). `model` must
    /// have been made with `imatrix: true`, so that the recipe's imatrix rules apply.
    pub fn with_imatrix(mut self, imatrix: &Imatrix) -> Self {
        self.weights = self
            .types
            .keys()
            .filter_map(|n| Some((n.clone(), Arc::from(imatrix.weights(n)?))))
            .collect();
        self
    }

    /// The blocks of `w` (rows of `n`) on the grid of `name`'s op: the weighted quantizer's
    /// with an imatrix entry, the reference one otherwise.
    pub(crate) fn grid_bytes(
        &self,
        name: &str,
        ty: GgmlType,
        w: &[f32],
        n: usize,
    ) -> qd_quant::Result<Vec<u8>> {
        match self.weights.get(name) {
            Some(iw) => qd_quant::quantize_weighted(ty, w, n, iw),
            None => qd_quant::quantize(ty, w, n),
        }
    }

    /// The trained weights whose block step can be learned: 2-D, of a symmetric type (Q4_0,
    /// Q5_0, Q8_0), and reached through a linear layer (not the embedding table or the LM
    /// head, which keep the quantizer's own grid).
    pub fn learnable_steps<'a>(
        &'a self,
        store: &'a VarStore,
    ) -> impl Iterator<Item = (&'a str, GgmlType)> + 'a {
        self.types.iter().filter_map(move |(name, &ty)| {
            let v = store.vars.get(name)?;
            let embedding = matches!(name.as_str(), "token_embd.weight" | "output.weight");
            (v.rank() == 2 && !embedding && qd_quant::LearnedStep::supports(ty))
                .then_some((name.as_str(), ty))
        })
    }

    /// Adds a learned-step variable (`<weight>.qstep`) for every weight of
    /// [`Self::learnable_steps`], holding the steps of the grid [`Self::snap`] puts the weight
    /// on. Returns how many; 0 means the recipe has no type with a single step to learn.
    pub fn add_learned_steps(&self, store: &mut VarStore) -> candle_core::Result<usize> {
        let names: Vec<(String, GgmlType)> = self
            .learnable_steps(store)
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        for (name, ty) in &names {
            let steps = self.steps_of(store, name, *ty)?;
            store
                .vars
                .insert(step_name(name), candle_core::Var::from_tensor(&steps)?);
        }
        Ok(names.len())
    }

    /// The steps of the grid `name`'s current weight quantizes to, `[rows, cols/32]`.
    fn steps_of(
        &self,
        store: &VarStore,
        name: &str,
        ty: GgmlType,
    ) -> candle_core::Result<candle_core::Tensor> {
        let msg = |e: qd_quant::QuantError| candle_core::Error::Msg(format!("{name}: {e}"));
        let w = &store.vars[name]
            .as_tensor()
            .to_dtype(candle_core::DType::F32)?;
        let (rows, n) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let bytes = self.grid_bytes(name, ty, &values, n).map_err(msg)?;
        let steps = qd_quant::learned_step::steps_of(ty, &bytes).map_err(msg)?;
        candle_core::Tensor::from_vec(steps, (rows, n / qd_quant::learned_step::BLOCK), w.device())
    }

    /// The op `name` (of block type `ty`) is seen through.
    pub fn op(&self, name: &str, ty: GgmlType) -> FakeQuant {
        match self.weights.get(name) {
            Some(w) => FakeQuant::weighted(ty, w.clone()),
            None => FakeQuant::new(ty),
        }
    }

    /// A store over the same variables whose layers see their weights through the plan's
    /// fake-quant ops. Frozen tensors are fake-quantized once here rather than every step.
    pub fn apply(&self, store: &VarStore) -> candle_core::Result<VarStore> {
        let mut out = store.clone();
        out.fake_quant.clear();
        for (name, &ty) in &self.types {
            let op = self.op(name, ty);
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
    ///
    /// Learned steps, where the run has them, restart from the grid's own steps here.
    pub fn snap(&self, store: &VarStore) -> candle_core::Result<usize> {
        let mut n = 0;
        for (name, &ty) in &self.types {
            if let Some(s) = store.vars.get(&step_name(name)) {
                s.set(&self.steps_of(store, name, ty)?)?;
            }
            if let Some(v) = store.vars.get(name) {
                let w = v.as_tensor().to_dtype(candle_core::DType::F32)?;
                // bf16 master weights hold the grid values rounded to bf16, which moves each by
                // under 1/256 of itself: far less than half a code step, so the codes are the
                // f32 grid's (a block's scale may differ in its last fp16 bit).
                v.set(&self.op(name, ty).apply(&w)?.detach().to_dtype(v.dtype())?)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
