//! What a step's loss is asked to compute (the weights of its terms, the temperature, how it
//! is laid out in memory) and the parts it reports, per token.

use super::Divergence;

#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    pub alpha: f64,
    pub temperature: f64,
    pub divergence: Divergence,
    /// Positions per chunk.
    pub chunk: usize,
    /// The fused CPU loss (`loss::fused`) where it applies; off on the device-generic path,
    /// which composes the same loss from candle's ops and differentiates it by autograd.
    pub fused: bool,
    /// Recompute each block in backward instead of keeping its activations
    /// (`train::recompute`).
    pub checkpoint_blocks: bool,
    /// Keep the blocks' gradients in bf16 as they are made (the compact optimizer state with
    /// stored gradients and recomputed blocks: 2 bytes per parameter instead of 4; clipping
    /// and the update read them in f32). Only a recomputing backward narrows them.
    pub bf16_grads: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LossParts {
    /// `α·T²·KL + (1−α)·CE`, per token.
    pub total: f64,
    pub kd: f64,
    pub ce: f64,
    pub tokens: f64,
}
