//! Evaluation on qd-model transformers, following llama.cpp's tools so numbers compare.

pub mod error;
pub mod generate;
pub mod nll;
pub mod perplexity;
pub mod sampler;
pub mod topk;

pub use error::{EvalError, Result};
pub use generate::generate;
pub use perplexity::{perplexity, NllAccumulator, PerplexityParams, PerplexityReport};
pub use sampler::{Sampler, SamplerParams};
pub use topk::{top_k, PositionTopK};
