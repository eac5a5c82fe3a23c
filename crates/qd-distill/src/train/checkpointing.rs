//! The run's side of checkpoints: where a run starts (step 0, or the newest intact checkpoint,
//! checked against this run and restored into the student and the optimizer), and the
//! checkpoint it writes (weights, moments and the provenance of everything it read).

use std::path::PathBuf;

use candle_core::Device;

use super::adamw::AdamW;
use super::config::RunConfig;
use super::error::TrainError;
use crate::checkpoint::{check_resumable, latest_intact, load_store, RunFiles, RunState};
use crate::student::VarStore;

/// Where a run starts: step 0, or the latest checkpoint's step with the training tokens and
/// seconds of the segments before it (so that the summary covers the whole run).
pub(crate) struct Start {
    pub step: usize,
    /// The checkpoint resumed from, as the non-finite-loss error names it.
    pub checkpoint: Option<String>,
    /// Newer checkpoints passed over because they are damaged, each with why.
    pub skipped: Vec<String>,
    pub tokens: f64,
    pub seconds: f64,
}

impl Start {
    pub const FRESH: Start = Start {
        step: 0,
        checkpoint: None,
        skipped: Vec::new(),
        tokens: 0.0,
        seconds: 0.0,
    };
}

/// Loads the latest intact checkpoint under `cfg.out` into `store` and `opt`, after checking
/// that it was trained with this student, sequence length, seed, QAT recipe, files and data.
pub(crate) fn resume_from_latest(
    cfg: &RunConfig,
    files: &RunFiles,
    data_hash: &str,
    store: &VarStore,
    opt: &mut AdamW,
    dev: &Device,
) -> Result<Start, TrainError> {
    let Some(latest) = latest_intact(&cfg.out)? else {
        return Ok(Start::FRESH);
    };
    let (dir, ck, state) = (&latest.dir, &latest.checkpoint, &latest.state);
    check_resumable(dir, state, cfg, files, data_hash)?;
    // One tensor at a time, copied into place and dropped: the student's weights and moments
    // are never held twice (the 1.1B pairing's resume peaked 3 GB above its steps that way).
    load_store(store, &ck.weights, dev)?;
    for k in store.vars.keys() {
        let mut read_error = None;
        let restored = opt.restore(k, |name| match ck.optimizer.read(name, dev) {
            Ok(t) => t,
            Err(e) => {
                read_error = Some(e);
                None
            }
        });
        if let Some(e) = read_error {
            return Err(e.into());
        }
        restored.map_err(|e| TrainError::Config(format!("{}: {e}", dir.display())))?;
    }
    opt.step = state.optimizer_step;
    Ok(Start {
        step: state.step,
        checkpoint: Some(dir.display().to_string()),
        skipped: latest.skipped,
        tokens: state.train_tokens,
        seconds: state.train_seconds,
    })
}

/// What a checkpoint records besides weights and moments.
pub(crate) struct Provenance<'a> {
    pub cfg: &'a RunConfig,
    pub data_hash: &'a str,
    pub files: &'a RunFiles,
    pub architecture: String,
    pub n_layer: usize,
}

/// Writes checkpoint `step` (weights, AdamW moments, typed state) and prunes old ones.
pub(crate) fn save_checkpoint(
    p: &Provenance,
    store: &VarStore,
    opt: &AdamW,
    step: usize,
    (tokens, seconds): (f64, f64),
) -> Result<PathBuf, TrainError> {
    let state = RunState {
        step,
        optimizer_step: opt.step,
        config: p.cfg.clone(),
        data_hash: p.data_hash.to_string(),
        teacher: p.cfg.teacher.clone(),
        teacher_sha256: p.files.teacher_sha256.clone(),
        student_sha256: p.files.student_sha256.clone(),
        imatrix_sha256: p.files.imatrix_sha256.clone(),
        architecture: p.architecture.clone(),
        n_layer: p.n_layer,
        train_tokens: tokens,
        train_seconds: seconds,
    };
    let moments = opt.state_tensors()?;
    Ok(crate::checkpoint::write(
        &p.cfg.out,
        p.cfg.keep,
        &state,
        store.snapshot(),
        moments,
    )?)
}
