#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error(
        "row {row} holds a non-finite value ({value}) at column {col}; refusing to quantize it"
    )]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("row length {n} is not a multiple of {ty}'s block size {block}")]
    RowLength {
        ty: &'static str,
        n: usize,
        block: usize,
    },
    #[error("{len} values do not make whole rows of {n}")]
    Shape { len: usize, n: usize },
    #[error("{len} bytes are not whole {ty} blocks of {bytes}")]
    Bytes {
        ty: &'static str,
        len: usize,
        bytes: usize,
    },
    #[error("importance weights: {0}")]
    Weights(String),
    #[error("{0} is not a quantized block type this crate implements")]
    Unsupported(&'static str),
}

pub type Result<T> = std::result::Result<T, QuantError>;
