//! Training one block of a block-wise QAT run: the teacher's block `il` dequantized into f32
//! variables, put on the recipe's grid (`QatPlan::snap`, the measured pitfall of a student made
//! from a quantized teacher), seen through the fake-quant ops export's grid is made of, and
//! trained with AdamW to reproduce the teacher block's output on the cached inputs (mean
//! squared error, as Block-AP). The state of one block is all that is trained at a time: its
//! f32 weights, gradients and moments — for Llama-3.2-3B's blocks about 0.1 B parameters.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use qd_export::{ModelInfo, Recipe};
use qd_gguf::GgufFile;
use qd_model::block::Block;
use qd_model::{BlockContext, Linear, QModel};

use super::shipped::{BlockReport, ShippedBlock, ShippedMatrix};
use super::streams::Streams;
use crate::student::{QatPlan, VarStore};
use crate::train::adamw::clip_owned_grads;
use crate::train::chunked::only_params;
use crate::train::config::RunConfig;
use crate::train::error::TrainError;

/// What every block's training shares.
pub struct BlockTrainer<'a> {
    pub cfg: &'a RunConfig,
    pub teacher: &'a QModel,
    /// The teacher's file, opened for each block's tensors and closed again: its pages stay
    /// out of the resident set between blocks (the 3B teacher's 2 GB).
    pub file: &'a Path,
    pub recipe: Recipe,
    /// The whole model's facts the recipe's per-layer choices depend on.
    pub model: ModelInfo,
    pub bc: &'a BlockContext,
    pub dev: &'a Device,
    /// The device-generic path (`--device cpu-generic`, `cuda`).
    pub portable: bool,
}

/// One optimizer step's figures, for the run's log.
pub struct BlockStep {
    pub step: usize,
    pub mse: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// Mean squared error of `block` (run as block `il`) on `x` against `target`, with its graph.
fn mse<L: Linear>(
    t: &BlockTrainer,
    il: usize,
    block: &Block<L>,
    x: &Tensor,
    target: &Tensor,
) -> candle_core::Result<Tensor> {
    let y = t.teacher.run_block(il, block, x, t.bc, false, None)?;
    (y - target)?.sqr()?.mean_all()
}

impl BlockTrainer<'_> {
    /// Trains block `il` on `streams` (the teacher side holding its block's outputs already)
    /// and returns it as shipped. `on_step` sees each step (and may stop the run).
    pub fn train(
        &self,
        il: usize,
        streams: &Streams,
        mut on_step: impl FnMut(&BlockStep) -> Result<(), TrainError>,
    ) -> Result<ShippedBlock, TrainError> {
        let t0 = Instant::now();
        let cfg = self.cfg;
        let mut store = VarStore {
            portable: self.portable,
            ..VarStore::default()
        };
        let prefix = format!("blk.{il}.");
        let file = GgufFile::open(self.file)?;
        for t in file.tensors() {
            if t.name.starts_with(&prefix) {
                store.insert_from_teacher(&file, &t.name, t.name.clone(), &[], self.dev)?;
            }
        }
        drop(file);
        let plan = QatPlan::new(self.recipe, &store, &self.model, false);
        if cfg.snap_to_grid {
            plan.snap(&store)?;
        }
        // bf16 master weights after the snap, which breaks the teacher's ties on the grid in
        // f32 (see `Students::build`).
        if cfg.bf16_master()? {
            store.bf16_matrices()?;
        }
        let block = Block::load(&self.teacher.hp, il, &plan.apply(&store)?)?;
        let params = store.all_vars();
        let mut opt = cfg.optimizer_for(store.vars.clone())?;
        let held_out = |block: &Block<_>| -> Result<f64, TrainError> {
            let mut sum = 0.0;
            for n in streams.held_out() {
                let e = mse(self, il, block, &streams.student[n], &streams.teacher[n])?;
                sum += e.to_scalar::<f32>()? as f64;
            }
            Ok(sum / streams.held_out().len().max(1) as f64)
        };
        let val_mse_before = held_out(&block)?;
        let mut train_mse_last = f64::NAN;
        for step in 0..cfg.steps {
            let n = step % streams.n_train();
            let loss = mse(self, il, &block, &streams.student[n], &streams.teacher[n])?;
            train_mse_last = loss.to_scalar::<f32>()? as f64;
            if !train_mse_last.is_finite() {
                return Err(TrainError::NonFinite {
                    what: "loss",
                    step: il * cfg.steps + step + 1,
                    value: train_mse_last,
                    last: format!("the blocks before block {il}"),
                });
            }
            let mut grads = only_params(&loss.backward()?, &params);
            drop(loss);
            let grad_norm = clip_owned_grads(&mut grads, &store.vars, cfg.clip)?;
            let lr = cfg.learning_rate(step);
            opt.step(&grads, lr)?;
            on_step(&BlockStep {
                step: step + 1,
                mse: train_mse_last,
                lr,
                grad_norm,
            })?;
        }
        let val_mse_after = held_out(&block)?;
        drop((block, opt));
        let mut matrices = BTreeMap::new();
        let mut vectors = BTreeMap::new();
        for (name, var) in &store.vars {
            let t = var.as_tensor().detach().to_dtype(candle_core::DType::F32)?;
            match plan.types.get(name) {
                Some(&ty) => {
                    let dims = t.dims().to_vec();
                    let values = t.flatten_all()?.to_vec1::<f32>()?;
                    let row = dims.last().copied().unwrap_or(0);
                    let bytes = plan.grid_bytes(name, ty, &values, row)?;
                    matrices.insert(name.clone(), ShippedMatrix { ty, dims, bytes });
                }
                None => {
                    vectors.insert(name.clone(), t);
                }
            }
        }
        Ok(ShippedBlock {
            il,
            matrices,
            vectors,
            report: BlockReport {
                val_mse_before,
                val_mse_after,
                train_mse_last,
                seconds: t0.elapsed().as_secs_f64(),
            },
        })
    }
}
