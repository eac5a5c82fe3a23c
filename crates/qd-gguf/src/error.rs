use std::path::PathBuf;

/// What went wrong, independent of which file it was.
#[derive(Debug, thiserror::Error)]
pub enum GgufErrorKind {
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("not a GGUF file (magic {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("truncated file: needed {needed} bytes at offset {offset} while reading {what}, file has {len}")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: u64,
        len: usize,
    },
    #[error("absurd {what} count {count} (the file can hold at most {max})")]
    AbsurdCount {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("unknown metadata value type id {0}")]
    UnknownValueType(u32),
    #[error("unknown tensor type id {id} for tensor {tensor:?}")]
    UnknownTensorType { tensor: String, id: u32 },
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    #[error("nested metadata arrays deeper than {0} levels")]
    TooDeep(usize),
    #[error("tensor {tensor:?}: {problem}")]
    BadTensor { tensor: String, problem: String },
    #[error("tensor {tensor:?} data [{start}, {end}) runs past the end of the file ({len} bytes)")]
    TensorPastEnd {
        tensor: String,
        start: u64,
        end: u64,
        len: usize,
    },
    #[error("invalid general.alignment {0} (must be a non-zero power of two)")]
    BadAlignment(u64),
    #[error("duplicate {what} {name:?}")]
    Duplicate { what: &'static str, name: String },
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error(
        "tensor {tensor:?} {bad}: not finite (damaged or overflowed data, which computes NaN)"
    )]
    NonFinite {
        tensor: String,
        bad: crate::validate::BadValue,
    },
    #[error("tensor {0:?} cannot be converted: {1}")]
    Candle(String, String),
}

impl From<std::io::Error> for GgufErrorKind {
    fn from(e: std::io::Error) -> Self {
        GgufErrorKind::Io(e)
    }
}

/// An error reading a GGUF file; always names the file. The message carries the whole story
/// (no separate `source`), so a one-line report does not repeat it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct GgufError {
    pub path: PathBuf,
    pub kind: GgufErrorKind,
}

impl GgufError {
    pub fn new(path: impl Into<PathBuf>, kind: GgufErrorKind) -> Self {
        Self {
            path: path.into(),
            kind,
        }
    }
}

pub type Result<T> = std::result::Result<T, GgufError>;
