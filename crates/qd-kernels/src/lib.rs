//! CPU kernels at the bottom of the house, beside `qd-gguf`: crates above it ask here which
//! instruction-set level runs, and never probe the CPU themselves.
//!
//! - [`isa`]: the levels (scalar, NEON, NEON + dot product, AVX2, AVX-VNNI, AVX-512 VNNI), the one
//!   CPU-feature probe, and `QAT_DISTILL_ISA` / `--isa`, which lower the level for tests and
//!   benchmarks.
//! - [`packed`]: the packed integer kernels behind qd-model's fused prefill and decoder — tiles
//!   of 16 rows, the activation quantizers, one file per format with its scalar oracle and one
//!   file per instruction set, under the [`packed::Level`] scheme.
//!
//! Issue 31's plan brings qd-quant's fake-quant SIMD here too, under the same levels.

pub mod isa;
pub mod packed;

pub use isa::Isa;
