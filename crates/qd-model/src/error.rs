#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    /// The candle error is shown, not chained as a source: a one-line report (`{:#}`) would
    /// print its message twice.
    #[error("tensor computation failed: {0}")]
    Candle(candle_core::Error),
    #[error("unsupported architecture {0:?} (supported: gemma3, llama, qwen2)")]
    UnsupportedArch(String),
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
