#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] qd_model::ModelError),
    /// The candle error is shown, not chained as a source: a one-line report (`{:#}`) would
    /// print its message twice.
    #[error("tensor computation failed: {0}")]
    Candle(candle_core::Error),
    #[error("{0}")]
    Input(String),
}

impl From<candle_core::Error> for EvalError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
