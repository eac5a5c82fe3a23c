//! The block formats by type: sizes and the per-block quantize / dequantize functions.

use qd_gguf::GgmlType;

use crate::error::{QuantError, Result};
use crate::{q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0};

/// A GGUF block type we quantize to, bit-exact with llama.cpp's reference quantizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

type QuantizeFn = fn(&[f32], &mut [u8]);
type DequantizeFn = fn(&[u8], &mut [f32]);

impl QuantType {
    pub const ALL: [QuantType; 10] = [
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    pub fn ggml(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q5_0 => GgmlType::Q5_0,
            Self::Q5_1 => GgmlType::Q5_1,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q2K => GgmlType::Q2K,
            Self::Q3K => GgmlType::Q3K,
            Self::Q4K => GgmlType::Q4K,
            Self::Q5K => GgmlType::Q5K,
            Self::Q6K => GgmlType::Q6K,
        }
    }

    pub fn from_ggml(t: GgmlType) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.ggml() == t)
            .ok_or(QuantError::Unsupported(t.name()))
    }

    /// Lower-case names as llama.cpp's file types and our recipes spell them.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        self.ggml().name()
    }

    pub fn block_size(self) -> usize {
        self.ggml().block_size()
    }

    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }

    pub(crate) fn kernels(self) -> (QuantizeFn, DequantizeFn) {
        match self {
            Self::Q4_0 => (q4_0::quantize_block, q4_0::dequantize_block),
            Self::Q4_1 => (q4_1::quantize_block, q4_1::dequantize_block),
            Self::Q5_0 => (q5_0::quantize_block, q5_0::dequantize_block),
            Self::Q5_1 => (q5_1::quantize_block, q5_1::dequantize_block),
            Self::Q8_0 => (q8_0::quantize_block, q8_0::dequantize_block),
            Self::Q2K => (q2_k::quantize_block, q2_k::dequantize_block),
            Self::Q3K => (q3_k::quantize_block, q3_k::dequantize_block),
            Self::Q4K => (q4_k::quantize_block, q4_k::dequantize_block),
            Self::Q5K => (q5_k::quantize_block, q5_k::dequantize_block),
            Self::Q6K => (q6_k::quantize_block, q6_k::dequantize_block),
        }
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
