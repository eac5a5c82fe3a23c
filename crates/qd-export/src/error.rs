use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown recipe {0:?} (known: f32, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, qat-q4, <type>-pure)")]
    UnknownRecipe(String),
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
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ExportError>;
