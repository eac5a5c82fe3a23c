//! The run's students: the trained one and, for QAT, its fake-quant twin over the same
//! variables, with the plan that made it (recipe, fallbacks, importance matrix, learned steps).

use std::path::Path;

use candle_core::Device;

use super::config::RunConfig;
use super::error::TrainError;
use super::memory;
use crate::checkpoint::build_run_student;
use crate::student::{QatPlan, Student, VarStore};

/// The trained student, and for QAT runs its fake-quant twin (same variables) and the plan
/// that made it.
pub(crate) struct Students {
    pub(crate) student: Student,
    pub(crate) store: VarStore,
    pub(crate) qat: Option<(Student, QatPlan)>,
    /// The trained weights were put on the grid while the students were built (bf16 master
    /// weights are snapped in f32, before they are rounded): the first step does not again.
    pub(crate) snapped: bool,
}

impl Students {
    /// The student from its file `sf`, else from the teacher's file `tf` (one is given).
    pub(crate) fn build(
        cfg: &RunConfig,
        tf: Option<&qd_gguf::GgufFile>,
        sf: Option<&qd_gguf::GgufFile>,
        imatrix: Option<(&qd_export::Imatrix, &Path)>,
        dev: &Device,
        portable: bool,
    ) -> Result<Self, TrainError> {
        let (mut student, mut store) = build_run_student(cfg, tf, sf, dev)?;
        if portable {
            // The device-generic path: no CPU-only layer (the frozen Q8_0 panels) in the student.
            store.make_portable()?;
            student = qd_model::Transformer::load(student.hp.clone(), &store, dev)?;
        }
        let plan = match cfg.recipe()? {
            Some(recipe) => {
                let model = qd_export::ModelInfo {
                    n_layer: student.hp.n_layer,
                    n_gqa: student.hp.n_head / student.hp.n_head_kv.max(1),
                    imatrix: imatrix.is_some(),
                };
                let mut plan = QatPlan::new(recipe, &store, &model, cfg.qat_embeddings);
                if let Some((im, path)) = imatrix {
                    im.check_model(path, &store.shapes())?;
                    plan = plan.with_imatrix(im);
                }
                if cfg.learned_steps && plan.add_learned_steps(&mut store)? == 0 {
                    return Err(TrainError::Config(format!(
                        "recipe {} trains no weight of a type with one step per block (Q4_0, \
                         Q5_0, Q8_0): there is no step to learn; drop --learned-steps",
                        recipe.name()
                    )));
                }
                Some(plan)
            }
            None => None,
        };
        let mut snapped = false;
        if cfg.bf16_master()? {
            // Onto the grid in f32 first: a quantized teacher's weights sit on the grid's
            // rounding boundaries (`QatPlan::snap`), and rounding them to bf16 first would break
            // those ties by bf16's rounding instead of ggml's — another starting point (on the
            // real 270M teacher, a first-step loss of 0.969 instead of 0.915). The grid values'
            // bf16 roundings keep their codes.
            if let (Some(plan), true, 0) = (&plan, cfg.snap_to_grid, cfg.qat_start) {
                plan.snap(&store)?;
                snapped = true;
            }
            // The f32 student goes first, so that each matrix's f32 copy is freed as soon as
            // its bf16 one is made (Llama-3.2-3B shape: 11 GB at once instead of 17).
            let hp = student.hp.clone();
            drop(student);
            store.bf16_matrices()?;
            student = qd_model::Transformer::load(hp, &store, dev)?;
        }
        let qat = match plan {
            Some(plan) => {
                let view = plan.apply(&store)?;
                Some((
                    qd_model::Transformer::load(student.hp.clone(), &view, dev)?,
                    plan,
                ))
            }
            None => None,
        };
        Ok(Self {
            student,
            store,
            qat,
            snapped,
        })
    }

    /// The forward pass of step `s` (0-based): QAT from `qat_start` on.
    pub(crate) fn at(&self, cfg: &RunConfig, s: usize) -> &Student {
        match &self.qat {
            Some((q, _)) if s >= cfg.qat_start => q,
            _ => &self.student,
        }
    }

    pub(crate) fn plan(&self) -> Option<&QatPlan> {
        self.qat.as_ref().map(|(_, p)| p)
    }

    /// Refuses, before the first step, a CPU run whose step would not fit in the memory left,
    /// with its estimate and what would make it fit.
    pub(crate) fn check_fits(
        &self,
        cfg: &RunConfig,
        spec: &qd_model::DeviceSpec,
        teacher_tiles: u64,
    ) -> Result<(), TrainError> {
        let (Some(free), false) = (memory::available_bytes(), spec.generic()) else {
            memory::keep_freed_pages(true);
            return Ok(());
        };
        let hp = &self.student.hp;
        let est = memory::StepEstimate {
            trained_params: self.store.n_params(),
            moment_bytes: cfg.moment_format()?.bytes_per_param(),
            gradient_bytes: if cfg.update_in_backward { 0.0 } else { 4.0 },
            n_layer: hp.n_layer,
            n_embd: hp.n_embd,
            n_ff: hp.n_ff,
            n_head: hp.n_head,
            vocab: hp.vocab_size,
            seq_len: cfg.seq_len,
            chunk: cfg.chunk,
            recompute: cfg.checkpoint_blocks,
            qat: self.plan().is_some(),
        }
        .bytes()
            + teacher_tiles;
        let loaded = memory::rss_bytes();
        // Far from the limit, freed pages are kept for reuse (no page clearing); within reach of
        // it they go on back to the system instead of waiting for a reuse that buffers of other
        // sizes never make (a little page clearing, much less peak).
        memory::keep_freed_pages(est <= free / 4);
        if est > free {
            let gb = |b: u64| b as f64 / 1e9;
            return Err(TrainError::Config(format!(
                "this run needs about {:.1} GB at its first step ({:.1} GB loaded now + {:.1} GB of \
                 gradients, optimizer state, activations and the teacher's tiles for {:.0} M trained \
                 parameters) but only {:.1} GB more are free; try{} a shorter seq_len or fewer \
                 trained tensors",
                gb(loaded + est),
                gb(loaded),
                gb(est),
                self.store.n_params() as f64 / 1e6,
                gb(free),
                [
                    (!cfg.checkpoint_blocks).then_some(" --checkpoint-blocks,"),
                    (cfg.optimizer != "adamw8").then_some(" --optimizer adamw8,"),
                    (cfg.master_weights != "bf16").then_some(" --master-weights bf16,"),
                    (!cfg.update_in_backward && cfg.batch_size * cfg.grad_accum == 1)
                        .then_some(" --update-in-backward,"),
                    (teacher_tiles > 0).then_some(" --teacher-stored-blocks,"),
                ]
                .into_iter()
                .flatten()
                .collect::<String>()
            )));
        }
        Ok(())
    }
}
