//! A checkpoint's run state, typed: what a resumed run and export read back. Every field is
//! required except the few added later (`#[serde(default)]`, so older checkpoints still load),
//! so a damaged or renamed key fails loudly instead of silently restarting at step 0.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CheckpointError;
use crate::train::config::RunConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Training steps done.
    pub step: usize,
    /// AdamW's step count (bias correction).
    pub optimizer_step: u64,
    pub config: RunConfig,
    /// sha256 of the packed training tokens.
    pub data_hash: String,
    pub teacher: PathBuf,
    pub teacher_sha256: String,
    /// sha256 of the student file the run started from (`student_file`), if any. Optional so
    /// that checkpoints written before student files existed still load.
    #[serde(default)]
    pub student_sha256: Option<String>,
    /// sha256 of the importance matrix QAT trained against (`imatrix`), if any: export must
    /// write the same weighted grid.
    #[serde(default)]
    pub imatrix_sha256: Option<String>,
    pub architecture: String,
    pub n_layer: usize,
    /// Training tokens and seconds of the whole run so far, every resumed segment included.
    pub train_tokens: f64,
    pub train_seconds: f64,
}

impl RunState {
    /// Reads the state a checkpoint holds; `dir` names it in the error.
    pub fn from_json(value: serde_json::Value, dir: &Path) -> Result<Self, CheckpointError> {
        serde_json::from_value(value).map_err(|e| CheckpointError::Invalid {
            path: dir.to_path_buf(),
            problem: format!("damaged run state (state.json): {e}"),
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a run state serialises")
    }
}
