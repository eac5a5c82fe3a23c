//! The fake-quant at every kernel level this CPU runs against the port of ggml's reference
//! quantizers (quantize, then dequantize), bit for bit; qd-kernels' own tests compare each level
//! with its scalar oracle, here with the ground truth.

use super::{dequantize, fake_quantize_into_at, quantize, QuantType};
use qd_kernels::Isa;

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

/// K-quant rows: sub-blocks of nine kinds (zeros, constants, all positive or negative, tiny,
/// huge, subnormal ranges whose `nmax / range` overflows, ranges that overflow) beside plain
/// ones: 43 super-blocks, so ten pairs of pairs, a lone pair and a last super-block on its own.
fn k_rows() -> Vec<f32> {
    let x = adversarial();
    (0..43 * 256)
        .map(|i| {
            let v = x[i % x.len()].clamp(-1.0, 1.0);
            match (i / 32) % 9 {
                0 => 0.0,
                1 => 0.25,
                2 => v.abs(),
                3 => -v.abs(),
                4 => v * 1e-8,
                5 => v * 6e4,
                6 => v * 1e-40,
                7 => v * 1e38,
                _ => v,
            }
        })
        .collect()
}

#[test]
fn fake_quant_at_every_level_equals_the_reference_port() {
    let symmetric = adversarial();
    let k = k_rows();
    for (ty, x, n) in [
        (QuantType::Q4_0, &symmetric, 256),
        (QuantType::Q5_0, &symmetric, 256),
        (QuantType::Q8_0, &symmetric, 256),
        (QuantType::Q4K, &k, 256),
        (QuantType::Q5K, &k, 256),
    ] {
        let want = dequantize(ty, &quantize(ty, x, n).unwrap()).unwrap();
        for isa in Isa::supported() {
            let mut got = vec![f32::NAN; x.len()];
            fake_quantize_into_at(isa, ty, x, &mut got);
            if let Some(i) = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a.to_bits() != b.to_bits())
            {
                panic!(
                    "{ty} at {}: index {i}: got {} want {} from block {:?}",
                    isa.name(),
                    got[i],
                    want[i],
                    &x[i / 32 * 32..i / 32 * 32 + 32]
                );
            }
        }
    }
}
