//! The one error of the checkpoint module: a checkpoint that cannot be read, is damaged, does
//! not match the files it is used with, or whose student cannot be rebuilt.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: damaged: its sha256 is {found:.12}…, SHA256SUMS records {recorded:.12}…")]
    Damaged {
        path: PathBuf,
        recorded: String,
        found: String,
    },
    /// The checkpoint and the files, data or options it is used with disagree (another
    /// teacher, student, importance matrix, recipe…); the message names both.
    #[error("invalid configuration: {0}")]
    Refused(String),
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    #[error(transparent)]
    Model(#[from] qd_model::ModelError),
    #[error(transparent)]
    Export(#[from] qd_export::ExportError),
    /// Shown, not chained: a one-line report would print candle's message twice.
    #[error("computation failed: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for CheckpointError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}
