//! The bottom of the house for CPU kernels, beside `qd-gguf`: crates above it ask here which
//! instruction-set level runs, and never probe the CPU themselves.
//!
//! - [`isa`]: the levels (scalar, NEON, NEON + dot product, AVX2, AVX-VNNI, AVX-512 VNNI), the one
//!   CPU-feature probe, and `QAT_DISTILL_ISA` / `--isa`, which lower the level for tests and
//!   benchmarks.
//!
//! Issue 31's plan moves the packed tiles and their levels (today `qd-model/src/kernels/`), the
//! activation quantizers and the fake-quant SIMD (today `qd-quant`) here under the one `Level`
//! scheme; the probe came first, so that every crate already asks it.

pub mod isa;

pub use isa::Isa;
