//! `dequantize(quantize(x))` for the symmetric 32-value types written without the byte packing
//! and with branch-free inner loops that the compiler vectorises (AVX-512/AVX2 with
//! `-C target-cpu=native`, SSE2 otherwise). Same f32 operations in the same order as the
//! reference port, so the results are bit-identical (tested against it).

use crate::format::QuantType;
use crate::fp16::{fp16_to_fp32, fp32_to_fp16};
use crate::helpers::c_f32_to_i8;

/// A whole-block `dequantize(quantize(x))`.
pub type FusedFn = fn(&[f32], &mut [f32]);

/// The symmetric 32-value types: one fp16 scale per block, codes centred on zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symmetric {
    Q4_0,
    Q5_0,
    Q8_0,
}

/// A symmetric type's round trip as ggml's `quantize_row_*_ref` writes it:
/// `d = extreme / div`, code `min((int8)(x/d + bias), qmax) − off`. Q8_0 divides the largest
/// magnitude and rounds half away from zero instead (its `bias` and `off` are 0); Q4_0/Q5_0 divide
/// the first value of largest magnitude, sign kept, by a negative `div`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SymmetricGrid {
    pub div: f32,
    pub bias: f32,
    pub qmax: i32,
    pub off: i32,
}

impl Symmetric {
    pub fn of(ty: QuantType) -> Option<Self> {
        match ty {
            QuantType::Q4_0 => Some(Self::Q4_0),
            QuantType::Q5_0 => Some(Self::Q5_0),
            QuantType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }

    pub fn grid(self) -> SymmetricGrid {
        match self {
            Self::Q4_0 => SymmetricGrid {
                div: -8.0,
                bias: 8.5,
                qmax: 15,
                off: 8,
            },
            Self::Q5_0 => SymmetricGrid {
                div: -16.0,
                bias: 16.5,
                qmax: 31,
                off: 16,
            },
            Self::Q8_0 => SymmetricGrid {
                div: 127.0,
                bias: 0.0,
                qmax: 127,
                off: 0,
            },
        }
    }
}

#[inline(always)]
fn abs_max(x: &[f32; 32]) -> f32 {
    let mut m = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (a, v) in m.iter_mut().zip(c) {
            *a = a.max(v.abs());
        }
    }
    m.iter().fold(0f32, |a, &b| a.max(b))
}

/// The value of largest magnitude, first occurrence on ties, +0 when all are zero: what the
/// reference's `if (amax < fabsf(v))` scan keeps.
#[inline(always)]
fn signed_max(x: &[f32; 32]) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        return 0.0;
    }
    *x.iter()
        .find(|v| v.abs() == amax)
        .expect("amax comes from x")
}

#[inline(always)]
fn symmetric(x: &[f32; 32], y: &mut [f32; 32], grid: SymmetricGrid) {
    let SymmetricGrid {
        div,
        bias,
        qmax,
        off,
    } = grid;
    let d = signed_max(x) / div;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = fp16_to_fp32(fp32_to_fp16(d));
    for (o, &v) in y.iter_mut().zip(x) {
        let q = (c_f32_to_i8(v * id + bias) as i32).min(qmax);
        *o = (q - off) as f32 * d16;
    }
}

pub fn q4_0(x: &[f32], y: &mut [f32]) {
    symmetric(
        x.try_into().unwrap(),
        y.try_into().unwrap(),
        Symmetric::Q4_0.grid(),
    );
}

pub fn q5_0(x: &[f32], y: &mut [f32]) {
    symmetric(
        x.try_into().unwrap(),
        y.try_into().unwrap(),
        Symmetric::Q5_0.grid(),
    );
}

pub fn q8_0(x: &[f32], y: &mut [f32]) {
    let x: &[f32; 32] = x.try_into().unwrap();
    let y: &mut [f32; 32] = y.try_into().unwrap();
    let d = abs_max(x) / Symmetric::Q8_0.grid().div;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = fp16_to_fp32(fp32_to_fp16(d));
    for (o, &v) in y.iter_mut().zip(x) {
        *o = c_f32_to_i8((v * id).round()) as f32 * d16;
    }
}

#[cfg(test)]
mod tests {
    use crate::format::QuantType;

    /// Blocks that stress the scale choice: ties of ±max, signed zeros, subnormals, huge values.
    fn adversarial() -> Vec<f32> {
        let mut v = Vec::new();
        let mut s = 7u64;
        for b in 0..64 {
            for i in 0..32 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let r = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                v.push(match b % 8 {
                    0 => {
                        if i == 3 {
                            2.0
                        } else if i == 9 {
                            -2.0
                        } else {
                            r
                        }
                    }
                    1 => {
                        if i == 3 {
                            -2.0
                        } else if i == 9 {
                            2.0
                        } else {
                            r
                        }
                    }
                    2 => -0.0,
                    3 => {
                        if i % 2 == 0 {
                            0.0
                        } else {
                            -0.0
                        }
                    }
                    4 => r * 1e-40,
                    5 => r * 6e4,
                    6 => 0.5,
                    _ => r * (i as f32 - 16.0),
                });
            }
        }
        v
    }

    #[test]
    fn fused_and_simd_paths_equal_the_reference_port() {
        let x = adversarial();
        for (ty, f) in [
            (QuantType::Q4_0, super::q4_0 as fn(&[f32], &mut [f32])),
            (QuantType::Q5_0, super::q5_0),
            (QuantType::Q8_0, super::q8_0),
        ] {
            let kind = super::Symmetric::of(ty).expect("a symmetric type");
            let (q, dq) = ty.kernels();
            let mut want = vec![0f32; x.len()];
            let mut block = vec![0u8; ty.block_bytes()];
            for (xb, yb) in x.chunks(32).zip(want.chunks_mut(32)) {
                q(xb, &mut block);
                dq(&block, yb);
            }
            let mut got = vec![0f32; x.len()];
            for (xb, yb) in x.chunks(32).zip(got.chunks_mut(32)) {
                f(xb, yb);
            }
            let first_diff = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .position(|(x, y)| x.to_bits() != y.to_bits())
            };
            if let Some(i) = first_diff(&got, &want) {
                panic!(
                    "{ty} portable: index {i} (block {}): got {} want {} from x {:?}",
                    i / 32,
                    got[i],
                    want[i],
                    &x[i / 32 * 32..i / 32 * 32 + 32]
                );
            }
            if crate::avx512::available() {
                let mut simd = vec![0f32; x.len()];
                crate::avx512::run(kind, &x, &mut simd);
                if let Some(i) = first_diff(&simd, &want) {
                    panic!("{ty} avx512: index {i}: got {} want {}", simd[i], want[i]);
                }
            }
        }
    }
}
