//! What a run reports: the events the CLI draws its progress from, the same events as lines
//! of `log.jsonl`, and the summary written at the end.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::RunConfig;
use super::error::TrainError;
use super::eval::EvalReport;

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
    /// Block-wise QAT finished (or, resuming, read back) block `block` of `blocks`.
    Block {
        block: usize,
        blocks: usize,
        report: crate::blockwise::shipped::BlockReport,
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

pub(crate) fn append_log(path: &Path, v: &impl Serialize) -> Result<(), TrainError> {
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

pub(crate) fn write_summary(cfg: &RunConfig, summary: &RunSummary) -> Result<(), TrainError> {
    let sp = cfg.out.join("summary.json");
    qd_gguf::write_atomic(
        &sp,
        serde_json::to_string_pretty(summary)
            .expect("serialisable")
            .as_bytes(),
    )
    .map_err(|err| TrainError::Io { path: sp, err })
}
