#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
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

pub type Result<T> = std::result::Result<T, ModelError>;
