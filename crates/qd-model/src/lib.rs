//! One decoder-only transformer for gemma3, llama and qwen2, written once and generic over its
//! linear layers: quantized matmuls for GGUF teachers, dense or fake-quantized matrices for
//! students.

pub mod block;
pub mod cache;
pub mod decode;
pub mod device;
pub mod error;
mod gemm_f32;
pub mod ggml_numerics;
pub mod hparams;
/// The packed integer kernels, from qd-kernels (the paths `qd_model::kernels::…` as before).
pub use qd_kernels::packed as kernels;
pub mod linear;
pub mod mask;
pub mod q8_0_f32;
pub mod rope;
pub mod stored_blocks;
pub mod transformer;
pub mod weights;
pub mod widen;

pub use cache::KvCache;
pub use decode::Decoder;
pub use device::{DeviceError, DeviceSpec};
pub use error::{ModelError, Result};
pub use hparams::{Arch, HParams, RopeStyle};
pub use kernels::isa::{self, Isa};
pub use linear::{DenseEmbedding, DenseLinear, Embedding, Linear, QEmbedding, QLinear};
pub use transformer::{BlockContext, ForwardOpts, ForwardOutput, Logits, Transformer};
pub use weights::{DequantizedWeights, GgufWeights, WeightSource};

use candle_core::Device;
use qd_gguf::GgufFile;

/// A GGUF model kept quantized.
pub type QModel = Transformer<QLinear, QEmbedding>;
/// A GGUF model dequantized to f32.
pub type DenseModel = Transformer<DenseLinear, DenseEmbedding>;

pub fn load_quantized(f: &GgufFile, device: &Device) -> Result<QModel> {
    let hp = HParams::from_gguf(f)?;
    let mut m = Transformer::load(hp, &GgufWeights::new(f, device), device)?;
    m.ggml_numerics = true;
    Ok(m)
}

pub fn load_dequantized(f: &GgufFile, device: &Device) -> Result<DenseModel> {
    let hp = HParams::from_gguf(f)?;
    Transformer::load(hp, &DequantizedWeights(GgufWeights::new(f, device)), device)
}
