//! What can stop a run, as one typed error (the CLI prints it on one line).

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::data::DataError;

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
    /// Boxed: the checkpoint error's own variants would double this enum's size.
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    #[error(transparent)]
    Export(#[from] qd_export::ExportError),
    #[error(transparent)]
    Cache(#[from] crate::teacher_cache::CacheError),
    #[error(transparent)]
    Quant(#[from] qd_quant::QuantError),
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

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(Box::new(e))
    }
}
