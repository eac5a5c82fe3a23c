//! A run's configuration (`train.toml`, the CLI's flags): every knob of a distillation run,
//! its defaults, and the checks that refuse a bad combination before anything is loaded.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::adamw::MomentFormat;
use super::error::TrainError;
use super::schedule::{Schedule, Shape};
use crate::data::Augment;
use crate::loss::Divergence;
use crate::student::StudentConfig;
use qd_export::Recipe;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub teacher: PathBuf,
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    /// Teacher blocks the student starts from, in order (when `student` is not given).
    pub student_blocks: Vec<usize>,
    /// A student from a config instead (a preset in `models/`, e.g. `student-6l.toml`).
    pub student: Option<StudentConfig>,
    /// A student that is a GGUF file (`qat-distill student`: pruned by importance, its
    /// vocabulary trimmed); replaces `student_blocks`. A trimmed student reads the data in its
    /// own tokenization and learns the teacher's distribution restricted to its ids.
    pub student_file: Option<PathBuf>,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub steps: usize,
    pub lr: f64,
    pub warmup: usize,
    pub lr_decay: Shape,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub clip: f64,
    pub alpha: Schedule,
    pub temperature: Schedule,
    pub divergence: String,
    pub jsd_beta: f64,
    pub chunk: usize,
    pub seed: u64,
    pub val_fraction: f64,
    pub eval_every: usize,
    pub eval_sequences: usize,
    pub checkpoint_every: usize,
    pub keep: usize,
    /// Keep the token embedding (and the LM head tied to it) as the teacher's, untrained.
    pub freeze_embeddings: bool,
    /// QAT recipe (`q4_0`, `q4_k`, `q5_0`, `q8_0`, `q4_k_m`, `qat-q4`, ...): the student's
    /// weights are seen through the fake-quant op of the type export will give them.
    pub qat: Option<String>,
    /// The step at which QAT switches on (delayed QAT); 0 = from the start.
    pub qat_start: usize,
    /// Also fake-quantize the token embedding and LM head.
    pub qat_embeddings: bool,
    /// QAT against the importance-weighted grid of this imatrix (llama.cpp's imatrix GGUF, as
    /// `qat-distill imatrix` or `llama-imatrix` writes it): the grid `export-gguf` (and
    /// `llama-quantize --imatrix`) writes with the same file. Its sha256 goes into every
    /// checkpoint; export takes the file from here (or `--imatrix` if it moved).
    pub imatrix: Option<PathBuf>,
    /// When QAT switches on, move the trained weights onto their fake-quant values (the PTQ
    /// model) so that no weight sits on a rounding boundary (`QatPlan::snap`).
    pub snap_to_grid: bool,
    /// Learned step sizes (LSQ): the block scale of every QAT weight of a symmetric type
    /// (Q4_0, Q5_0, Q8_0) is a trained variable, started from the grid the weights are snapped
    /// onto; export writes the learned fp16 scales and the codes they imply.
    pub learned_steps: bool,
    /// The steps' learning rate at the schedule's peak, relative: each update moves a step by
    /// at most about this fraction of its value (the weights' `lr` is absolute).
    pub step_lr: f64,
    /// Keep the tokenized corpus in the user cache (`~/.cache/qat-distill/tokens`).
    pub token_cache: bool,
    /// Random truncation: the probability that a training sequence is cut to a length drawn
    /// from `truncate_min..=seq_len` (0 = off).
    pub truncate_prob: f64,
    pub truncate_min: usize,
    /// Token-noise injection: the probability that an input token is replaced by a random id;
    /// the targets stay clean (0 = off).
    pub token_noise: f64,
    /// Weighted mixing: one weight per `data` entry, each packed and split alone and drawn with
    /// these probabilities (empty = all entries as one corpus).
    pub data_weights: Vec<f64>,
    /// Distil from a stored teacher (`qat-distill teacher-cache`): the KD term over its top-k
    /// ids and tail, no teacher forward pass and no teacher in memory.
    pub teacher_cache: Option<PathBuf>,
    /// The online KD term over the teacher's top `kd_top_k` ids and the tail (what a cache of
    /// that k stores); `None`: the full vocabulary.
    pub kd_top_k: Option<usize>,
    /// Where the run computes: `cpu` (the fused CPU kernels), `cpu-generic` (the path a GPU
    /// runs, on the CPU) or `cuda[:N]`. Checkpoints are the same on every device: a run may
    /// resume on another.
    pub device: String,
    /// Recompute each student block in backward instead of keeping its activations and
    /// fake-quantized weights (activation checkpointing: one block's worth in memory, for a
    /// second forward pass). Same gradients, bit for bit; a run may switch it on resuming.
    pub checkpoint_blocks: bool,
    /// The teacher multiplies by its weights' blocks as stored instead of repacked tiles kept
    /// beside them: its file's memory (a LLaMA-2-7B Q4_K_M teacher: about 4–5 GB less), slower
    /// per token, and its logits may differ from the tiled product's in the last bits.
    pub teacher_stored_blocks: bool,
    /// The optimizer's moments: `adamw` (f32, 8 bytes per trained parameter) or `adamw8`
    /// (8-bit block-wise, 2 bytes; CPU only).
    pub optimizer: String,
    /// `end-to-end` (every step trains the whole student on the KD loss) or `block-ap`
    /// (EfficientQAT's Block-AP: each block of a whole-model QAT student trained in turn to
    /// reproduce the teacher block's output, `steps` steps each over `block_sequences` cached
    /// sequences; memory bounded by one block's training state; writes `out/model.gguf`).
    pub schedule: String,
    /// Block-AP: the training sequences whose hidden states are cached for every block.
    pub block_sequences: usize,
    /// The trained block matrices' master copy: `f32` (4 bytes each) or `bf16` (2 bytes,
    /// updated with stochastic rounding; with `optimizer = "adamw8"`, CPU only).
    pub master_weights: String,
    /// Apply each block's update as soon as backward has made its gradients, so that no
    /// gradient of the whole student is held (4 bytes a trained parameter with f32 gradients,
    /// 2 with the bf16 ones adamw8 otherwise stores): a first recomputing backward measures
    /// the global norm that clipping needs, a second one updates. One block's gradients at a
    /// time stay f32, so the bits are those of the step that keeps the whole graph; one more
    /// backward's time; needs `checkpoint_blocks` and one sequence a step.
    pub update_in_backward: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            data: Vec::new(),
            out: PathBuf::from("runs/student"),
            student_blocks: vec![0, 3, 6, 9, 12, 17],
            student: None,
            student_file: None,
            seq_len: 256,
            batch_size: 1,
            grad_accum: 1,
            steps: 100,
            lr: 3e-4,
            warmup: 10,
            lr_decay: Shape::Cosine,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            clip: 1.0,
            alpha: Schedule::constant(0.5),
            temperature: Schedule::constant(2.0),
            divergence: "forward".into(),
            jsd_beta: 0.5,
            chunk: 64,
            seed: 42,
            val_fraction: 0.05,
            eval_every: 50,
            eval_sequences: 8,
            checkpoint_every: 50,
            keep: 2,
            freeze_embeddings: true,
            qat: None,
            qat_start: 0,
            qat_embeddings: false,
            imatrix: None,
            snap_to_grid: true,
            learned_steps: false,
            step_lr: 2e-3,
            token_cache: true,
            truncate_prob: 0.0,
            truncate_min: 16,
            token_noise: 0.0,
            data_weights: Vec::new(),
            device: "cpu".into(),
            teacher_cache: None,
            kd_top_k: None,
            checkpoint_blocks: false,
            teacher_stored_blocks: false,
            optimizer: "adamw".into(),
            schedule: "end-to-end".into(),
            block_sequences: 16,
            master_weights: "f32".into(),
            update_in_backward: false,
        }
    }
}

impl RunConfig {
    /// The optimizer's moment format (`optimizer`).
    pub fn moment_format(&self) -> Result<MomentFormat, TrainError> {
        MomentFormat::parse(&self.optimizer).ok_or_else(|| {
            TrainError::Config(format!(
                "optimizer {:?} is not adamw (f32 moments) or adamw8 (8-bit moments)",
                self.optimizer
            ))
        })
    }

    /// The learning rate of step `step` (0-based) of `steps`: warm-up, then the decay shape.
    pub fn learning_rate(&self, step: usize) -> f64 {
        super::schedule::learning_rate(
            step,
            self.steps,
            self.lr,
            self.warmup,
            self.lr_decay,
            self.min_lr_ratio,
        )
    }

    /// AdamW over `vars` with the run's weight decay and moment format.
    pub fn optimizer_for(
        &self,
        vars: std::collections::BTreeMap<String, candle_core::Var>,
    ) -> Result<super::adamw::AdamW, TrainError> {
        let cfg = super::adamw::AdamWConfig {
            weight_decay: self.weight_decay,
            ..Default::default()
        };
        Ok(super::adamw::AdamW::with_format(
            vars,
            cfg,
            self.moment_format()?,
        )?)
    }

    /// The tensors the student keeps but does not train (the rebuild at export must agree).
    pub fn frozen_tensors(&self) -> &'static [&'static str] {
        if self.freeze_embeddings {
            &["token_embd.weight", "output.weight"]
        } else {
            &[]
        }
    }

    /// The QAT recipe, if any.
    pub fn recipe(&self) -> Result<Option<Recipe>, TrainError> {
        self.qat
            .as_deref()
            .map(Recipe::parse)
            .transpose()
            .map_err(TrainError::from)
    }

    /// The augmentations of training sequences this run asks for.
    pub fn augment(&self) -> Augment {
        Augment {
            truncate_prob: self.truncate_prob,
            truncate_min: self.truncate_min,
            token_noise: self.token_noise,
        }
    }

    /// The device the run computes on.
    pub fn device_spec(&self) -> Result<qd_model::DeviceSpec, TrainError> {
        self.device
            .parse()
            .map_err(|e: qd_model::DeviceError| TrainError::Config(e.to_string()))
    }

    /// Whether the run trains block by block (`schedule = "block-ap"`), refusing an unknown
    /// schedule and what Block-AP cannot do.
    pub fn block_ap(&self) -> Result<bool, TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        match self.schedule.as_str() {
            "end-to-end" => return Ok(false),
            "block-ap" => {}
            other => {
                return Err(TrainError::Config(format!(
                    "unknown schedule {other:?} (end-to-end, block-ap)"
                )))
            }
        }
        if self.qat.is_none() {
            return bad("schedule block-ap trains a QAT student: give a recipe (--qat)");
        }
        if self.student.is_some() || self.student_file.is_some() {
            return bad(
                "schedule block-ap trains every block of the teacher's own shape (whole-model \
                 QAT): drop the student config or file",
            );
        }
        if self.teacher_cache.is_some() || self.imatrix.is_some() || self.learned_steps {
            return bad(
                "schedule block-ap reads the teacher itself, on the reference grid: drop the \
                 teacher cache, the importance matrix and learned steps",
            );
        }
        if self.block_sequences == 0 {
            return bad("block_sequences must be at least 1");
        }
        Ok(true)
    }

    /// Whether the trained block matrices are kept in bf16 (`master_weights`).
    pub fn bf16_master(&self) -> Result<bool, TrainError> {
        match self.master_weights.as_str() {
            "f32" => Ok(false),
            "bf16" if self.moment_format()? != MomentFormat::Adamw8 => Err(TrainError::Config(
                "master_weights bf16 is updated by the 8-bit optimizer's in-place step: add \
                 --optimizer adamw8"
                    .into(),
            )),
            "bf16" if self.device_spec()?.generic() => Err(TrainError::Config(
                "master_weights bf16 runs on the CPU's own path only for now; use --device cpu"
                    .into(),
            )),
            "bf16" => Ok(true),
            other => Err(TrainError::Config(format!(
                "master_weights {other:?} is not f32 or bf16"
            ))),
        }
    }

    pub fn validate(&self) -> Result<Divergence, TrainError> {
        self.device_spec()?;
        self.block_ap()?;
        self.bf16_master()?;
        if self.moment_format()? == MomentFormat::Adamw8 && self.device_spec()?.generic() {
            return Err(TrainError::Config(
                "optimizer adamw8 (8-bit moments) runs on the CPU's own path only for now; use \
                 --device cpu or optimizer adamw"
                    .into(),
            ));
        }
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.update_in_backward {
            if !self.checkpoint_blocks {
                return bad(
                    "update_in_backward differentiates the recomputed blocks twice: add \
                     --checkpoint-blocks",
                );
            }
            if self.batch_size * self.grad_accum != 1 {
                return bad(
                    "update_in_backward updates from one sequence's gradients: clipping a sum \
                     of sequences needs them all at once (batch_size and grad_accum 1)",
                );
            }
            if self.block_ap()? {
                return bad(
                    "update_in_backward is a schedule end-to-end option: block-ap already holds \
                     one block's gradients",
                );
            }
        }
        if self.seq_len < 2 {
            return bad("seq_len must be at least 2");
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction must be in [0, 1)");
        }
        if self.data.is_empty() {
            return bad("no training data given (--data)");
        }
        if self.student.is_some() && self.student_file.is_some() {
            return bad("give either a student config or a student file, not both");
        }
        if !(0.0..=1.0).contains(&self.truncate_prob) {
            return bad("truncate_prob must be in [0, 1]");
        }
        if self.truncate_prob > 0.0 && !(2..=self.seq_len).contains(&self.truncate_min) {
            return bad("truncate_min must be in [2, seq_len]");
        }
        if !(0.0..1.0).contains(&self.token_noise) {
            return bad("token_noise must be in [0, 1)");
        }
        if !self.data_weights.is_empty() && self.data_weights.len() != self.data.len() {
            return Err(TrainError::Config(format!(
                "data_weights has {} entries for {} data paths",
                self.data_weights.len(),
                self.data.len()
            )));
        }
        if self.kd_top_k == Some(0) {
            return bad("kd_top_k must be at least 1");
        }
        if self.teacher_cache.is_some() && self.token_noise > 0.0 {
            return bad(
                "token noise changes what the teacher reads, and a teacher cache holds its \
                 output on the clean text: drop token_noise or the cache",
            );
        }
        if self.learned_steps && self.qat.is_none() {
            return bad("learned step sizes are QAT's block scales: give a recipe too (--qat)");
        }
        if !(self.step_lr >= 0.0 && self.step_lr < 1.0) {
            return bad(
                "step_lr must be in [0, 1): the largest relative change of a step per update",
            );
        }
        if let Some(p) = &self.imatrix {
            match self.recipe()? {
                None => {
                    return Err(TrainError::Config(format!(
                        "an importance matrix ({}) shapes a QAT grid: give a recipe too (--qat)",
                        p.display()
                    )))
                }
                Some(r) if !r.uses_imatrix() => {
                    return Err(TrainError::Config(format!(
                        "recipe {} does not use an importance matrix (llama-quantize ignores it \
                         too); drop --imatrix",
                        r.name()
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(r @ Recipe::Pure(_)) = self.recipe()? {
            if !self.qat_embeddings {
                return Err(TrainError::Config(format!(
                    "recipe {} quantizes the embedding and LM head too: add --qat-embeddings \
                     (qat_embeddings = true) so that training sees the grid export writes",
                    r.name()
                )));
            }
        }
        match self.divergence.as_str() {
            "forward" => Ok(Divergence::Forward),
            "reverse" => Ok(Divergence::Reverse),
            "jsd" => Ok(Divergence::Jsd {
                beta: self.jsd_beta,
            }),
            other => Err(TrainError::Config(format!(
                "unknown divergence {other:?} (forward, reverse, jsd)"
            ))),
        }
    }
}
