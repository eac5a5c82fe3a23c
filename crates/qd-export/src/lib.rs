//! From f32 weights to a GGUF file llama.cpp runs: which block type each tensor gets (a
//! [`Recipe`], with llama.cpp's own per-tensor rules and fallbacks), and the file itself
//! (metadata and tokenizer taken verbatim from a template model, tensors quantized by the same
//! code the fake-quant op runs in training, written atomically).

pub mod assemble;
pub mod error;
pub mod imatrix;
pub mod recipe;
pub mod requantize;
pub mod shape;
pub mod synthetic;
pub mod synthetic_shape;
pub mod synthetic_vocab;
pub mod trim_vocab;

pub use assemble::{assemble, write_new, Exported, TensorReport, TensorSource, WithImatrix};
pub use error::{ExportError, Result};
pub use imatrix::Imatrix;
pub use recipe::{Choice, Ftype, ModelInfo, Recipe, TensorKind};
pub use requantize::{requantize, FileSource};
pub use shape::ModelShape;
pub use synthetic_shape::{write_shape_model, ShapeModelReport};
