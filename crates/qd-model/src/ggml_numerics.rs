//! llama.cpp's CPU rounding, reproduced where it changes results. With quantized weights a
//! forward pass is chaotic: every matmul re-quantizes its input to 8 bits, so an ulp-sized
//! difference upstream flips roundings downstream (measured on the teacher: llama.cpp against
//! itself with an f16 instead of an f32 KV cache moves mean |Δ log p| by 0.10 nats). Matching
//! llama.cpp therefore means matching its roundings, not only its math: activations quantized
//! as ggml-cpu quantizes them, the f16 KV cache and f16 attention operands, and GELU through
//! ggml's f16 lookup table.

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};
use half::f16;
use qd_gguf::GgmlType;
use qd_kernels::packed::scales::{q8_0_scale, q8_k_scale};

/// The 8-bit format ggml quantizes a matmul's activations to, by weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActQuant {
    /// For Q4_0, Q5_0, Q8_0 weights (`quantize_row_q8_0`, x86 AVX path).
    Q8_0,
    /// For the K-quants (`quantize_row_q8_K_ref`).
    Q8K,
}

impl ActQuant {
    pub fn for_weight(t: GgmlType) -> Option<Self> {
        match t {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(Self::Q8_0),
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
                Some(Self::Q8K)
            }
            _ => None,
        }
    }

    fn block(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Q8K => 256,
        }
    }
}

/// Round half to even, as `_mm256_round_ps(_MM_ROUND_NEAREST)` and ggml's `nearest_int` do.
fn rne(x: f32) -> f32 {
    x.round_ties_even()
}

/// Replaces each block by the values ggml's quantizer gives it (`q·d`, with `d` as stored).
/// candle's own quantizer, fed these, recovers exactly ggml's integers and scale: its per-block
/// maximum is then `127·d` and every value an integer multiple of `d`.
fn requantize_block(kind: ActQuant, x: &mut [f32]) {
    match kind {
        ActQuant::Q8_0 => {
            let (d, id) = q8_0_scale(x);
            for v in x.iter_mut() {
                *v = rne(*v * id) * d;
            }
        }
        ActQuant::Q8K => {
            let Some((iscale, d)) = q8_k_scale(x) else {
                x.fill(0.0);
                return;
            };
            for v in x.iter_mut() {
                *v = rne(iscale * *v).min(127.0) * d;
            }
        }
    }
}

/// `x` (last dimension = the matmul's inner dimension) as ggml quantizes it before a matmul.
pub fn quantize_activations(x: &Tensor, kind: ActQuant) -> Result<Tensor> {
    let k = x.dims().last().copied().unwrap_or(0);
    if !k.is_multiple_of(kind.block()) || x.dtype() != DType::F32 {
        return Ok(x.clone());
    }
    let dims = x.dims().to_vec();
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for b in v.chunks_exact_mut(kind.block()) {
        requantize_block(kind, b);
    }
    Tensor::from_vec(v, dims, x.device())
}

/// Rounds to f16 and back (ggml's f16 KV cache, and the f16 operands of its attention matmuls).
pub fn round_f16(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::F16)?.to_dtype(DType::F32)
}

/// GELU, tanh form, in f32.
pub(crate) fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16 value, rounded to f16.
fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| f16::from_f32(gelu_f32(f16::from_bits(b).to_f32())).to_f32())
            .collect()
    })
}

fn gelu_in(table: &[f32], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[f16::from_f32(x).to_bits() as usize]
    }
}

/// One value of [`gelu`].
pub(crate) fn gelu_ggml(x: f32) -> f32 {
    gelu_in(gelu_table(), x)
}

/// GELU (tanh form) as ggml-cpu computes it: through the f16 table inside (−10, 10).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let table = gelu_table();
    let dims = x.dims().to_vec();
    let v: Vec<f32> = x
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|x| gelu_in(table, x))
        .collect();
    Tensor::from_vec(v, dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed kernels' activation quantizers, at every level this CPU runs, give exactly the
    /// values this module's ggml rounding hands candle's path: Q8_0 per 32 values, Q8_K per 256
    /// (−0 and +0 alike).
    #[test]
    fn packed_kernels_quantize_activations_as_these() {
        use qd_kernels::packed::{kquant, q8_0};
        use qd_kernels::Isa;
        let ggml = |x: &[f32], t: usize, k: usize, kind: ActQuant| {
            let xt = Tensor::from_vec(x.to_vec(), (t, k), &candle_core::Device::Cpu).unwrap();
            let q = quantize_activations(&xt, kind).unwrap();
            q.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        // Every (tokens, width) of the kernel's product test, with its inputs.
        for (t, k) in [
            (1, 640),
            (5, 96),
            (4, 2048),
            (13, 640),
            (21, 640),
            (21, 96),
            (4, 64),
        ] {
            let x: Vec<f32> = (0..t * k)
                .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
                .collect();
            let want = ggml(&x, t, k, ActQuant::Q8_0);
            for isa in Isa::supported() {
                let ours = q8_0::Acts::quantize(isa, &x, k).values();
                assert_eq!(ours, want, "Q8_0 {isa:?} t {t} k {k}");
            }
        }
        let x: Vec<f32> = (0..2 * 512)
            .map(|i| ((i * 31 % 211) as f32 - 100.0) / 7.0)
            .collect();
        let want = ggml(&x, 2, 512, ActQuant::Q8K);
        for isa in Isa::supported() {
            let ours = kquant::Acts::quantize(isa, &x, 32).values();
            assert_eq!(ours, want, "Q8_K {isa:?}");
        }
    }

    #[test]
    fn q8_0_requantized_block_is_a_fixed_point_of_candles_quantizer() {
        use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
        let mut x: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 11) as f32 - 5.3) * 0.173)
            .collect();
        requantize_block(ActQuant::Q8_0, &mut x);
        let mut b = [BlockQ8_0::zeros()];
        BlockQ8_0::from_float(&x, &mut b);
        let mut y = vec![0f32; 32];
        BlockQ8_0::to_float(&b, &mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn ties_round_to_even_as_ggml_does() {
        // 2.5 → 2 and 3.5 → 4 under _MM_ROUND_NEAREST; Rust's `round` would give 3 and 4.
        assert_eq!(rne(2.5), 2.0);
        assert_eq!(rne(3.5), 4.0);
        assert_eq!(rne(-2.5), -2.0);
    }

    #[test]
    fn gelu_matches_the_formula_to_f16_precision() {
        let x = Tensor::new(
            &[-12.0f32, -1.5, -0.1, 0.0, 0.3, 2.0, 9.9, 11.0],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let y = gelu(&x).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in x.to_vec1::<f32>().unwrap().iter().zip(&y) {
            let want = if *a <= -10.0 {
                0.0
            } else if *a >= 10.0 {
                *a
            } else {
                gelu_f32(*a)
            };
            assert!(
                (want - b).abs() <= 1e-3 * want.abs().max(1e-2),
                "{a}: {b} vs {want}"
            );
        }
    }
}
