//! GGUF reading and writing.
//!
//! Our own parser rather than candle's `gguf_file`, because the teacher path must survive hostile
//! files: every count is bounded by the bytes that remain, every tensor extent is checked at
//! open time, and every failure is a [`GgufError`] naming the file.

pub mod dtype;
pub mod error;
pub mod file;
pub mod identity;
pub mod reader;
pub mod validate;
pub mod value;
pub mod writer;

pub use dtype::GgmlType;
pub use error::{GgufError, GgufErrorKind, Result};
pub use file::GgufFile;
pub use identity::file_sha256;
pub use reader::{Header, TensorInfo};
pub use validate::{check_data, BadValue};
pub use value::{Value, ValueType};
pub use writer::{
    remove_stale_temps, string_array, write_atomic, write_atomic_with, GgufWriter, TensorData,
    TensorHeader,
};
