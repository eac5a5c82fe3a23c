//! A distillation run: data, teacher, student, the loop, logs and checkpoints. The order of
//! the training data is a function of (seed, step) alone, so a resumed run sees exactly the
//! batches the uninterrupted one would have.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::adamw::{clip_owned_grads, AdamW, AdamWConfig, MomentFormat};
use super::batches::Data;
use super::checkpoint::{checkpoint_dir, list, prune, Checkpoint, CheckpointError};
use super::chunked::LossConfig;
use super::eval::{evaluate, EvalReport};
use super::memory;
use super::schedule::{learning_rate, Schedule, Shape};
use super::state::RunState;
use super::step::batch_loss_and_grads;
use super::teacher::Teacher;
use crate::data::{Augment, DataError};
use crate::loss::Divergence;
use crate::student::{
    build_student, student_from_file, vocab_map, QatPlan, Student, StudentConfig, VarStore,
    VocabMap, STEP_SUFFIX,
};
use crate::teacher_cache::{SeqRef, Split};
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
    /// The optimizer's moments: `adamw` (f32, 8 bytes per trained parameter) or `adamw8`
    /// (8-bit block-wise, 2 bytes; CPU only).
    pub optimizer: String,
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
            optimizer: "adamw".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    #[error(transparent)]
    Model(#[from] qd_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] qd_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Export(#[from] qd_export::ExportError),
    #[error(transparent)]
    Cache(#[from] crate::teacher_cache::CacheError),
    /// The candle error is shown, not chained as a source: a one-line report (`{:#}`) would
    /// print its message twice.
    #[error("computation failed: {0}")]
    Candle(candle_core::Error),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the {what} became {value} at step {step}; stopped without writing a checkpoint of it (last good checkpoint: {last})")]
    NonFinite {
        /// "loss" or "gradient norm".
        what: &'static str,
        step: usize,
        value: f64,
        last: String,
    },
    #[error("interrupted at step {step}; checkpoint written to {path}")]
    Interrupted { step: usize, path: PathBuf },
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

/// What the loop reports as it goes (the CLI draws the progress bar from these).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        step: usize,
        steps: usize,
        train_sequences: usize,
        val_sequences: usize,
        student_params: usize,
        /// Tensors whose QAT type fell back to llama.cpp's replacement (one line each).
        qat_fallbacks: Vec<String>,
        /// A trimmed student's vocabulary and the teacher's: `[student, teacher]` tokens.
        trimmed_vocab: Option<[usize; 2]>,
        /// Damaged checkpoints that resuming passed over (one line each) and the one it used.
        skipped_checkpoints: Vec<String>,
        resumed_from: Option<String>,
    },
    Step {
        step: usize,
        loss: f64,
        kd: f64,
        ce: f64,
        lr: f64,
        alpha: f64,
        temperature: f64,
        grad_norm: f64,
        tokens_per_second: f64,
    },
    Eval {
        step: usize,
        val: EvalReport,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    /// Training tokens and seconds over the whole run, the segments before a resume included
    /// (seconds also count the held-out evaluations).
    pub tokens: f64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub final_val: EvalReport,
    pub data_hash: String,
    /// The process's peak resident set (VmHWM), 0 where /proc is not available.
    pub peak_rss_bytes: u64,
}

pub use super::memory::peak_rss_bytes;

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

    pub fn validate(&self) -> Result<Divergence, TrainError> {
        self.device_spec()?;
        if self.moment_format()? == MomentFormat::Adamw8 && self.device_spec()?.generic() {
            return Err(TrainError::Config(
                "optimizer adamw8 (8-bit moments) runs on the CPU's own path only for now; use \
                 --device cpu or optimizer adamw"
                    .into(),
            ));
        }
        let bad = |m: &str| Err(TrainError::Config(m.into()));
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

fn append_log(path: &Path, v: &impl Serialize) -> Result<(), TrainError> {
    let io = |err| TrainError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{}", serde_json::to_string(v).expect("serialisable")).map_err(io)
}

/// The trained student, and for QAT runs its fake-quant twin (same variables) and the plan
/// that made it.
struct Students {
    student: Student,
    store: VarStore,
    qat: Option<(Student, QatPlan)>,
}

impl Students {
    /// The student from its file `sf`, else from the teacher's file `tf` (one is given).
    fn build(
        cfg: &RunConfig,
        tf: Option<&qd_gguf::GgufFile>,
        sf: Option<&qd_gguf::GgufFile>,
        imatrix: Option<(&qd_export::Imatrix, &Path)>,
        dev: &Device,
        portable: bool,
    ) -> Result<Self, TrainError> {
        let (mut student, mut store) = match sf {
            Some(sf) => student_from_file(sf, cfg.frozen_tensors(), dev)?,
            None => build_student(
                tf.ok_or_else(|| {
                    TrainError::Config("a student needs its file or the teacher's".into())
                })?,
                &cfg.student_blocks,
                cfg.student.as_ref(),
                cfg.frozen_tensors(),
                dev,
            )?,
        };
        if portable {
            // The device-generic path: no CPU-only layer (the frozen Q8_0 panels) in the student.
            store.make_portable()?;
            student = qd_model::Transformer::load(student.hp.clone(), &store, dev)?;
        }
        let qat = match cfg.recipe()? {
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
                let q = qd_model::Transformer::load(student.hp.clone(), &plan.apply(&store)?, dev)?;
                Some((q, plan))
            }
            None => None,
        };
        Ok(Self {
            student,
            store,
            qat,
        })
    }

    /// The forward pass of step `s` (0-based): QAT from `qat_start` on.
    fn at(&self, cfg: &RunConfig, s: usize) -> &Student {
        match &self.qat {
            Some((q, _)) if s >= cfg.qat_start => q,
            _ => &self.student,
        }
    }

    fn plan(&self) -> Option<&QatPlan> {
        self.qat.as_ref().map(|(_, p)| p)
    }
}

/// Where a run starts: step 0, or the latest checkpoint's step with the training tokens and
/// seconds of the segments before it (so that the summary covers the whole run).
struct Start {
    step: usize,
    /// The checkpoint resumed from, as the non-finite-loss error names it.
    checkpoint: Option<String>,
    /// Newer checkpoints passed over because they are damaged, each with why.
    skipped: Vec<String>,
    tokens: f64,
    seconds: f64,
}

impl Start {
    const FRESH: Start = Start {
        step: 0,
        checkpoint: None,
        skipped: Vec::new(),
        tokens: 0.0,
        seconds: 0.0,
    };
}

/// Loads the latest checkpoint under `cfg.out` into `store` and `opt`, after checking that it
/// was trained with this student, sequence length, seed, QAT recipe and data.
fn resume_from_latest(
    cfg: &RunConfig,
    data: &Data,
    store: &VarStore,
    opt: &mut AdamW,
    student_sha256: &Option<String>,
    imatrix_sha256: &Option<String>,
    dev: &Device,
) -> Result<Start, TrainError> {
    // The newest checkpoint whose files are intact: a damaged one (its sha256, its state, a
    // file missing) is passed over for the one before it while `keep` left one, and named.
    let mut dirs = list(&cfg.out);
    let mut skipped = Vec::new();
    let (dir, ck, state) = loop {
        let Some(dir) = dirs.pop() else {
            return Ok(Start::FRESH);
        };
        let loaded = Checkpoint::load(&dir, dev).and_then(|mut ck| {
            let state = RunState::from_json(std::mem::take(&mut ck.state), &dir)?;
            Ok((ck, state))
        });
        match loaded {
            Ok((ck, state)) => break (dir, ck, state),
            Err(e) if !dirs.is_empty() => skipped.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    };
    let saved = &state.config;
    if saved.student_blocks != cfg.student_blocks
        || saved.student != cfg.student
        || saved.student_file != cfg.student_file
        || saved.seq_len != cfg.seq_len
        || saved.seed != cfg.seed
        || saved.qat != cfg.qat
        || saved.learned_steps != cfg.learned_steps
        || saved.kd_top_k != cfg.kd_top_k
        || saved.teacher_cache.is_some() != cfg.teacher_cache.is_some()
        || saved.optimizer != cfg.optimizer
    {
        return Err(TrainError::Config(format!(
            "{} was trained with another student, sequence length, seed, QAT recipe, step-size \
             setting, teacher signal (full, top-k, cached) or optimizer",
            dir.display()
        )));
    }
    if state.student_sha256 != *student_sha256 {
        return Err(TrainError::Config(format!(
            "{} was trained from another student file (sha256 {})",
            dir.display(),
            state.student_sha256.as_deref().unwrap_or("none")
        )));
    }
    if state.imatrix_sha256 != *imatrix_sha256 {
        return Err(TrainError::Config(format!(
            "{} was trained against another importance matrix (sha256 {})",
            dir.display(),
            state.imatrix_sha256.as_deref().unwrap_or("none")
        )));
    }
    if state.data_hash != data.packed.hash {
        return Err(TrainError::Config(format!(
            "{} was trained on other data",
            dir.display()
        )));
    }
    store.load_weights(&ck.weights)?;
    for k in store.vars.keys() {
        opt.restore(k, |name| ck.optimizer.get(name).cloned())
            .map_err(|e| TrainError::Config(format!("{}: {e}", dir.display())))?;
    }
    opt.step = state.optimizer_step;
    Ok(Start {
        step: state.step,
        checkpoint: Some(dir.display().to_string()),
        skipped,
        tokens: state.train_tokens,
        seconds: state.train_seconds,
    })
}

/// Refuses, before the first step, a CPU run whose step would not fit in the memory left,
/// with its estimate and what would make it fit.
fn check_memory(
    cfg: &RunConfig,
    students: &Students,
    spec: &qd_model::DeviceSpec,
) -> Result<(), TrainError> {
    let (Some(free), false) = (memory::available_bytes(), spec.generic()) else {
        return Ok(());
    };
    let hp = &students.student.hp;
    let est = memory::StepEstimate {
        trained_params: students.store.n_params(),
        moment_bytes: cfg.moment_format()?.bytes_per_param(),
        n_layer: hp.n_layer,
        n_embd: hp.n_embd,
        n_ff: hp.n_ff,
        n_head: hp.n_head,
        vocab: hp.vocab_size,
        seq_len: cfg.seq_len,
        chunk: cfg.chunk,
        recompute: cfg.checkpoint_blocks,
        qat: students.plan().is_some(),
    }
    .bytes();
    let loaded = memory::rss_bytes();
    // Within reach of the limit, freed pages go back to the system instead of waiting for a
    // reuse that buffers of other sizes never make (a little page clearing, much less peak).
    if est > free / 4 {
        memory::free_pages_back();
    }
    if est > free {
        let gb = |b: u64| b as f64 / 1e9;
        return Err(TrainError::Config(format!(
            "this run needs about {:.1} GB at its first step ({:.1} GB loaded now + {:.1} GB of \
             gradients, optimizer state and activations for {:.0} M trained parameters) but only \
             {:.1} GB more are free; try{} a shorter seq_len or fewer trained tensors",
            gb(loaded + est),
            gb(loaded),
            gb(est),
            students.store.n_params() as f64 / 1e6,
            gb(free),
            [
                (!cfg.checkpoint_blocks).then_some(" --checkpoint-blocks,"),
                (cfg.optimizer != "adamw8").then_some(" --optimizer adamw8,"),
            ]
            .into_iter()
            .flatten()
            .collect::<String>()
        )));
    }
    Ok(())
}

/// What a checkpoint records besides weights and moments.
struct Provenance<'a> {
    cfg: &'a RunConfig,
    data_hash: &'a str,
    teacher_sha256: &'a str,
    student_sha256: Option<String>,
    imatrix_sha256: Option<String>,
    architecture: String,
    n_layer: usize,
}

/// Writes checkpoint `step` (weights, AdamW moments, typed state) and prunes old ones.
fn save_checkpoint(
    p: &Provenance,
    store: &VarStore,
    opt: &AdamW,
    step: usize,
    (tokens, seconds): (f64, f64),
) -> Result<PathBuf, TrainError> {
    let moments = opt.state_tensors()?;
    let dir = checkpoint_dir(&p.cfg.out, step as u64);
    let state = RunState {
        step,
        optimizer_step: opt.step,
        config: p.cfg.clone(),
        data_hash: p.data_hash.to_string(),
        teacher: p.cfg.teacher.clone(),
        teacher_sha256: p.teacher_sha256.to_string(),
        student_sha256: p.student_sha256.clone(),
        imatrix_sha256: p.imatrix_sha256.clone(),
        architecture: p.architecture.clone(),
        n_layer: p.n_layer,
        train_tokens: tokens,
        train_seconds: seconds,
    }
    .to_json();
    Checkpoint {
        weights: store.snapshot(),
        optimizer: moments,
        state,
    }
    .save(&dir)?;
    prune(&p.cfg.out, p.cfg.keep)?;
    Ok(dir)
}

/// Writes `summary.json` atomically.
fn write_summary(cfg: &RunConfig, summary: &RunSummary) -> Result<(), TrainError> {
    let sp = cfg.out.join("summary.json");
    qd_gguf::write_atomic(
        &sp,
        serde_json::to_string_pretty(summary)
            .expect("serialisable")
            .as_bytes(),
    )
    .map_err(|err| TrainError::Io { path: sp, err })
}

/// Runs (or resumes, when `resume` and `out` holds checkpoints) the configured distillation.
pub fn run(
    cfg: &RunConfig,
    resume: bool,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&Event),
) -> Result<RunSummary, TrainError> {
    let div = cfg.validate()?;
    let spec = cfg.device_spec()?;
    let dev = spec.open().map_err(|e| TrainError::Config(e.to_string()))?;
    // Freed device memory stays in the pool between steps instead of being mapped afresh.
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &dev {
        qd_quant::cuda::keep_freed_memory(d)?;
    }
    let tf = qd_gguf::GgufFile::open(&cfg.teacher)?;
    let sf = cfg
        .student_file
        .as_ref()
        .map(qd_gguf::GgufFile::open)
        .transpose()?;
    let vmap: Option<VocabMap> = match &sf {
        Some(sf) => vocab_map(&tf, sf)?,
        None => None,
    };
    // The data in the student's tokenization (the teacher's unless it is trimmed).
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(sf.as_ref().unwrap_or(&tf))?;
    memory::mark("tokenizer");
    let teacher = Teacher::open(cfg, &tf, vmap.as_ref(), &dev)?;
    memory::mark("teacher");
    let teacher_vocab = teacher.vocab_size;
    let teacher_sha256 = qd_export::file_sha256(&cfg.teacher)?;
    let student_sha256 = cfg
        .student_file
        .as_deref()
        .map(qd_export::file_sha256)
        .transpose()?;
    let data = Data::load(
        cfg,
        &tok,
        student_sha256.as_deref().unwrap_or(&teacher_sha256),
    )?;
    teacher.check_cache(cfg, &tf, &teacher_sha256, &data.packed.hash)?;
    memory::mark("data");
    let imatrix = match &cfg.imatrix {
        Some(p) => Some((qd_export::Imatrix::open(p)?, p.as_path())),
        None => None,
    };
    let imatrix_sha256 = cfg
        .imatrix
        .as_deref()
        .map(qd_export::file_sha256)
        .transpose()?;
    // A student from its own file needs nothing more of the teacher's: unmapping it now keeps
    // its pages (4 GB for a 7B teacher) out of the peak while the student is built.
    let tf = match sf {
        Some(_) => {
            drop(tf);
            None
        }
        None => Some(tf),
    };
    let students = Students::build(
        cfg,
        tf.as_ref(),
        sf.as_ref(),
        imatrix.as_ref().map(|(m, p)| (m, *p)),
        &dev,
        spec.generic(),
    )?;
    drop(imatrix);
    memory::mark("students");
    // Everything needed is copied out of the model files by now: unmapping them takes their
    // file pages out of the resident set for the rest of the run.
    drop(tf);
    drop(sf);
    memory::mark("model files unmapped");
    check_memory(cfg, &students, &spec)?;
    let eval_vocab = vmap.as_ref().zip(teacher.full_head.as_ref());
    let source = teacher.source(cfg.kd_top_k);
    let store = &students.store;
    let mut opt = AdamW::with_format(
        store.vars.clone(),
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
        cfg.moment_format()?,
    )?;
    memory::mark("optimizer state");
    // Learned steps move relative to their size (a step is 1e-4…1e-1 depending on the
    // tensor), at `step_lr` at the schedule's peak.
    opt.relative = store
        .vars
        .keys()
        .filter(|k| k.ends_with(STEP_SUFFIX))
        .map(|k| (k.clone(), cfg.step_lr / cfg.lr.max(f64::MIN_POSITIVE)))
        .collect();
    std::fs::create_dir_all(&cfg.out).map_err(|err| TrainError::Io {
        path: cfg.out.clone(),
        err,
    })?;
    let start = if resume {
        resume_from_latest(
            cfg,
            &data,
            store,
            &mut opt,
            &student_sha256,
            &imatrix_sha256,
            &dev,
        )?
    } else {
        Start::FRESH
    };
    let mut last_ckpt = start
        .checkpoint
        .clone()
        .unwrap_or_else(|| "none".to_string());
    let provenance = Provenance {
        cfg,
        data_hash: &data.packed.hash,
        teacher_sha256: &teacher_sha256,
        student_sha256: student_sha256.clone(),
        imatrix_sha256,
        architecture: students.student.hp.arch.name().to_string(),
        n_layer: students.student.hp.n_layer,
    };
    let log = cfg.out.join("log.jsonl");
    let val: Vec<Vec<u32>> = data
        .packed
        .val
        .iter()
        .take(cfg.eval_sequences)
        .cloned()
        .collect();
    on_event(&Event::Start {
        step: start.step,
        steps: cfg.steps,
        train_sequences: data.packed.train.len(),
        val_sequences: data.packed.val.len(),
        student_params: store.n_params(),
        qat_fallbacks: students
            .plan()
            .map(|p| p.fallbacks.clone())
            .unwrap_or_default(),
        trimmed_vocab: vmap.as_ref().map(|m| [m.kept.len(), teacher_vocab]),
        skipped_checkpoints: start.skipped.clone(),
        resumed_from: start.checkpoint.clone(),
    });
    let per_step = cfg.batch_size * cfg.grad_accum;
    let params = store.all_vars();
    let augment = cfg.augment();
    let vocab = tok.vocab_size as u32;
    let t0 = Instant::now();
    let mut tokens = 0f64;
    let elapsed = |tokens: f64| {
        (
            start.tokens + tokens,
            start.seconds + t0.elapsed().as_secs_f64(),
        )
    };
    for step in start.step..cfg.steps {
        let progress = step as f64 / cfg.steps.max(1) as f64;
        let epoch = step * per_step / data.packed.train.len();
        let alpha = cfg.alpha.at(progress, epoch);
        let temperature = cfg.temperature.at(progress, epoch);
        let lcfg = LossConfig {
            alpha,
            temperature,
            divergence: div,
            chunk: cfg.chunk,
            fused: !spec.generic(),
            checkpoint_blocks: cfg.checkpoint_blocks,
            bf16_grads: cfg.moment_format()? == MomentFormat::Adamw8,
        };
        if step == cfg.qat_start && cfg.snap_to_grid {
            // QAT switches on now: the trained weights start at their grid values (see
            // `QatPlan::snap`). Deterministic, so a run resumed at this step snaps the same.
            if let Some(plan) = students.plan() {
                plan.snap(store)?;
            }
        }
        let indices = data.batch_refs(cfg, step);
        let examples = data.batch(cfg, step, &indices, &augment, vocab);
        let model = students.at(cfg, step);
        let refs: Vec<SeqRef> = indices
            .into_iter()
            .map(|index| SeqRef {
                split: Split::Train,
                index,
            })
            .collect();
        let (parts, mut grads) = batch_loss_and_grads(
            model,
            &params,
            &source,
            &examples,
            &refs,
            None,
            &lcfg,
            vmap.as_ref(),
        )?;
        if !parts.total.is_finite() {
            return Err(TrainError::NonFinite {
                what: "loss",
                step: step + 1,
                value: parts.total,
                last: last_ckpt,
            });
        }
        let grad_norm = clip_owned_grads(&mut grads, &store.vars, cfg.clip)?;
        memory::mark("clipped");
        if !grad_norm.is_finite() {
            // A finite loss with a non-finite gradient (an overflow in backward): the update
            // would carry it into every weight.
            return Err(TrainError::NonFinite {
                what: "gradient norm",
                step: step + 1,
                value: grad_norm,
                last: last_ckpt,
            });
        }
        let lr = learning_rate(
            step,
            cfg.steps,
            cfg.lr,
            cfg.warmup,
            cfg.lr_decay,
            cfg.min_lr_ratio,
        );
        opt.step(&grads, lr)?;
        drop(grads);
        memory::mark("optimizer step");
        tokens += parts.tokens;
        let ev = Event::Step {
            step: step + 1,
            loss: parts.total,
            kd: parts.kd,
            ce: parts.ce,
            lr,
            alpha,
            temperature,
            grad_norm,
            tokens_per_second: tokens / t0.elapsed().as_secs_f64(),
        };
        append_log(&log, &ev)?;
        on_event(&ev);
        let done = step + 1;
        if cfg.eval_every > 0 && done % cfg.eval_every == 0 && !val.is_empty() {
            let ev = Event::Eval {
                step: done,
                val: evaluate(model, &source, &val, temperature, cfg.chunk, eval_vocab)?,
            };
            append_log(&log, &ev)?;
            on_event(&ev);
        }
        let interrupted = stop.load(Ordering::SeqCst);
        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0)
            || done == cfg.steps
            || interrupted
        {
            let path = save_checkpoint(&provenance, store, &opt, done, elapsed(tokens))?;
            last_ckpt = path.display().to_string();
            on_event(&Event::Checkpoint {
                step: done,
                path: path.clone(),
            });
            if interrupted && done < cfg.steps {
                return Err(TrainError::Interrupted { step: done, path });
            }
        }
    }
    let final_val = if val.is_empty() {
        EvalReport::default()
    } else {
        evaluate(
            students.at(cfg, cfg.steps),
            &source,
            &val,
            cfg.temperature.at(1.0, 0),
            cfg.chunk,
            eval_vocab,
        )?
    };
    let (tokens, seconds) = elapsed(tokens);
    let summary = RunSummary {
        steps: cfg.steps,
        tokens,
        seconds,
        tokens_per_second: if seconds > 0.0 { tokens / seconds } else { 0.0 },
        final_val,
        data_hash: data.packed.hash.clone(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    write_summary(cfg, &summary)?;
    Ok(summary)
}
