#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] qd_model::ModelError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;
