//! Evaluation on qd-model transformers, following llama.cpp's tools so numbers compare.

pub mod bench;
pub mod error;
pub mod generate;
pub mod imatrix;
pub mod kl;
pub mod nll;
pub mod perplexity;
pub mod sampler;
pub mod topk;

pub use bench::{bench, BenchResult};
pub use error::{EvalError, Result};
pub use generate::{generate, generate_on};
pub use imatrix::{collect_imatrix, Collected};
pub use kl::{kl_divergence, KlReport};
pub use perplexity::{
    bits_per_byte, chunk_bos, perplexity, scored_targets, NllAccumulator, PerplexityParams,
    PerplexityReport,
};
pub use sampler::{Sampler, SamplerParams};
pub use topk::{top_k, PositionTopK};
