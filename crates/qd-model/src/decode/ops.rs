//! The decoder's elementwise steps on one token, written to give the values the graph path's
//! candle kernels give (same formulas, same order of sums where it matters).

use candle_core::quantized::k_quants::{
    BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::QTensor;
use half::f16;
use qd_gguf::GgmlType as Format;

use crate::block::Activation;
use crate::hparams::RopeStyle;

/// `out = x / √(mean(x²) + eps) · w`, as candle's `rms_norm`.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &a) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * a;
    }
}

/// In place, per row of `w.len()` values (the per-head Q/K norms).
pub(crate) fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    for row in x.chunks_exact_mut(w.len()) {
        rms_norm(row, w, eps, tmp);
        row.copy_from_slice(&tmp[..w.len()]);
    }
}

/// Candle's `x * s` (an affine op: `x·s + 0`).
pub(crate) fn scale(x: &mut [f32], s: f32) {
    for v in x {
        *v = *v * s + 0.0;
    }
}

pub(crate) fn round_f16(x: &mut [f32]) {
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Rotates each head of `x` (rows of `head_dim`) at one position; `cos`/`sin` hold the
/// `rope_dim / 2` angles, dimensions past `rope_dim` pass through.
pub(crate) fn rope(x: &mut [f32], head_dim: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for h in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (i1, i2) = match style {
                RopeStyle::Neox => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (a, b) = (h[i1], h[i2]);
            h[i1] = a * cos[i] - b * sin[i];
            h[i2] = a * sin[i] + b * cos[i];
        }
    }
}

/// `gate = act(gate) · up`, with ggml's f16-table GELU when reproducing llama.cpp.
pub(crate) fn gated(gate: &mut [f32], up: &[f32], act: Activation, ggml: bool) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let a = match act {
            Activation::GeluTanh if ggml => crate::ggml_numerics::gelu_ggml(*g),
            Activation::GeluTanh => crate::ggml_numerics::gelu_f32(*g),
            Activation::Silu => *g / (1.0 + (-*g).exp()),
        };
        *g = a * u;
    }
}

/// Dequantizes a whole number of blocks.
type RowFn = fn(&[u8], &mut [f32]);

/// Rows of an embedding table, dequantized one at a time from the file's bytes.
pub(crate) struct EmbedRows<'m> {
    bytes: &'m [u8],
    row_bytes: usize,
    dequant: RowFn,
}

fn blocks<T: GgmlType>(b: &[u8], out: &mut [f32]) {
    // SAFETY: `EmbedRows::new` checked that the table splits into whole, aligned blocks of `T`,
    // and a row is a whole number of them; every bit pattern is a valid block.
    let (pre, xs, post) = unsafe { b.align_to::<T>() };
    debug_assert!(pre.is_empty() && post.is_empty());
    T::to_float(xs, out)
}

fn f32_row(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_row(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

impl<'m> EmbedRows<'m> {
    /// `None` for types not listed here, or bytes not in memory as whole aligned blocks.
    pub(crate) fn new(t: &'m QTensor) -> Option<Self> {
        let (rows, dim) = t.shape().dims2().ok()?;
        let bytes = match t.data().ok()? {
            std::borrow::Cow::Borrowed(b) => b,
            std::borrow::Cow::Owned(_) => return None,
        };
        fn check<T: GgmlType>(b: &[u8]) -> bool {
            // SAFETY: only the split is inspected.
            let (pre, _, post) = unsafe { b.align_to::<T>() };
            pre.is_empty() && post.is_empty()
        }
        // candle's block structs read the bytes; the decision is made on the workspace's type.
        let dt = Format::from_candle(t.dtype());
        let (dequant, ok): (RowFn, bool) = match dt {
            Format::F32 => (f32_row, true),
            Format::F16 => (f16_row, true),
            Format::Q8_0 => (blocks::<BlockQ8_0>, check::<BlockQ8_0>(bytes)),
            Format::Q4_0 => (blocks::<BlockQ4_0>, check::<BlockQ4_0>(bytes)),
            Format::Q4K => (blocks::<BlockQ4K>, check::<BlockQ4K>(bytes)),
            Format::Q5K => (blocks::<BlockQ5K>, check::<BlockQ5K>(bytes)),
            Format::Q6K => (blocks::<BlockQ6K>, check::<BlockQ6K>(bytes)),
            _ => return None,
        };
        if !ok || !dim.is_multiple_of(dt.block_size()) || rows == 0 {
            return None;
        }
        let row_bytes = dim / dt.block_size() * dt.type_size();
        if bytes.len() != rows * row_bytes {
            return None;
        }
        Some(Self {
            bytes,
            row_bytes,
            dequant,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.bytes.len() / self.row_bytes
    }

    /// Row `r` (checked by the caller) into `out`.
    pub(crate) fn row(&self, r: usize, out: &mut [f32]) {
        (self.dequant)(
            &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes],
            out,
        )
    }
}
