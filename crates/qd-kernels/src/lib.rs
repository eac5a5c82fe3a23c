//! CPU kernels at the bottom of the house, beside `qd-gguf`: crates above it ask here which
//! instruction-set level runs, and never probe the CPU themselves.
//!
//! - [`isa`]: the levels (scalar, NEON, NEON + dot product, AVX2, AVX-VNNI, AVX-512 VNNI), the one
//!   CPU-feature probe, and `QAT_DISTILL_ISA` / `--isa`, which lower the level for tests and
//!   benchmarks.
//! - [`packed`]: the packed integer kernels behind qd-model's fused prefill and decoder — tiles
//!   of 16 rows, the activation quantizers, one file per format with its scalar oracle and one
//!   file per instruction set, under the [`packed::Level`] scheme.
//! - [`fake`]: the fake-quants behind quantization-aware training (Q4_0/Q5_0/Q8_0 and the
//!   Q4_K/Q5_K scale search), one scalar oracle and one SIMD body per format, at the same levels.
//! - [`fp16`], [`rounding`]: ggml's scalar conversions and roundings, which the kernels and
//!   qd-quant's ports reproduce bit for bit.

pub mod fake;
pub mod fp16;
pub mod isa;
pub mod packed;
pub mod rounding;

pub use isa::Isa;
