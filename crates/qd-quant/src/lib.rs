//! GGUF block formats, implemented once and used twice: `quantize` at export and
//! `dequantize(quantize(w))` as the fake-quant op inside training, so a student ships with
//! exactly the weights it trained against.
//!
//! Each quantizer is a port of llama.cpp's `quantize_row_*_ref` (what `ggml_quantize_chunk`
//! runs without an importance matrix), operation for operation in plain f32 so the bytes match;
//! `weighted.rs` ports the `quantize_row_*_impl` that run with one (`llama-quantize --imatrix`).

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod fake_quant;
pub mod format;
mod helpers;
mod kscales;
pub mod learned_step;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod rows;
mod weighted;
mod weighted_search;

pub use error::{QuantError, Result};
pub use fake_quant::FakeQuant;
pub use format::{parse_type, quantizable, QUANTIZABLE};
/// The grid Q4_K/Q5_K store for a super-block's 8 fits (what the kernels' K-quant fake-quant
/// recomputes codes against).
pub use kscales::stored_grid;
pub use learned_step::{quantize_with_steps, LearnedStep};
/// ggml's fp16 conversions live with the kernels (which round through fp16 too); re-exported
/// here, where the block formats read and write them.
pub use qd_kernels::fp16;
pub use rows::{dequantize, fake_quantize, quantize};
pub use weighted::{fake_quantize_weighted, quantize_weighted};
