//! The block formats this crate quantizes to: a subset of [`GgmlType`] — the one type that
//! names a block format across the workspace — each bit-exact with llama.cpp's reference
//! quantizer. A type outside the subset is refused with [`QuantError::Unsupported`].

use qd_gguf::GgmlType;

use crate::error::{QuantError, Result};
use crate::{q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0};

/// Every block type this crate quantizes to, in GGML's order.
pub const QUANTIZABLE: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// `t` when this crate quantizes to it.
pub fn quantizable(t: GgmlType) -> Result<GgmlType> {
    if QUANTIZABLE.contains(&t) {
        Ok(t)
    } else {
        Err(QuantError::Unsupported(t.name()))
    }
}

/// The quantizable type named `s`, case-insensitively, as llama.cpp's file types and our
/// recipes spell them (`q4_0`, `Q4_K`).
pub fn parse_type(s: &str) -> Option<GgmlType> {
    QUANTIZABLE
        .into_iter()
        .find(|q| q.name().eq_ignore_ascii_case(s))
}

type QuantizeFn = fn(&[f32], &mut [u8]);
type DequantizeFn = fn(&[u8], &mut [f32]);

/// The reference quantizer and dequantizer of one block of `t`.
pub(crate) fn kernels(t: GgmlType) -> Result<(QuantizeFn, DequantizeFn)> {
    Ok(match t {
        GgmlType::Q4_0 => (q4_0::quantize_block, q4_0::dequantize_block),
        GgmlType::Q4_1 => (q4_1::quantize_block, q4_1::dequantize_block),
        GgmlType::Q5_0 => (q5_0::quantize_block, q5_0::dequantize_block),
        GgmlType::Q5_1 => (q5_1::quantize_block, q5_1::dequantize_block),
        GgmlType::Q8_0 => (q8_0::quantize_block, q8_0::dequantize_block),
        GgmlType::Q2K => (q2_k::quantize_block, q2_k::dequantize_block),
        GgmlType::Q3K => (q3_k::quantize_block, q3_k::dequantize_block),
        GgmlType::Q4K => (q4_k::quantize_block, q4_k::dequantize_block),
        GgmlType::Q5K => (q5_k::quantize_block, q5_k::dequantize_block),
        GgmlType::Q6K => (q6_k::quantize_block, q6_k::dequantize_block),
        other => return Err(QuantError::Unsupported(other.name())),
    })
}
