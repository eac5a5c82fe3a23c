use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `known` is the recipe list, given by whoever parsed the name (so this file does not
    /// depend on the recipe table).
    #[error("unknown recipe {name:?} (known: {known})")]
    UnknownRecipe { name: String, known: &'static str },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    #[error("tensor {name}: {err}")]
    Quant {
        name: String,
        err: qd_quant::QuantError,
    },
    #[error("tensor {name}: {err}")]
    Candle {
        name: String,
        err: candle_core::Error,
    },
    #[error("tensor {name} as {ty}: {bad} — a weight too large for {ty} or not finite (damaged input?); nothing written")]
    NotFinite {
        name: String,
        ty: &'static str,
        bad: qd_gguf::BadValue,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("imatrix {0}")]
    Imatrix(String),
}

pub type Result<T> = std::result::Result<T, ExportError>;
