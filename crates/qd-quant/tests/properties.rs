//! Properties of the block formats and the fake-quant op on random tensors.

use candle_core::{Device, Tensor, Var};
use qd_gguf::GgmlType;
use qd_kernels::Isa;
use qd_quant::rows::fake_quantize_into_at;
use qd_quant::{dequantize, fake_quantize, quantize, FakeQuant, QuantError, QUANTIZABLE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rows: usize, n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * n)
        .map(|_| {
            let u: f32 = rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5;
            u * scale
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The fake-quant of `x` at every kernel level this CPU runs (qd-kernels' `fake`: scalar,
/// AVX2, AVX-512, NEON) equals `want`, ggml's reference port, bit for bit.
fn at_every_level(ty: GgmlType, x: &[f32], want: &[f32], what: &str) {
    for isa in Isa::supported() {
        let mut got = vec![f32::NAN; x.len()];
        fake_quantize_into_at(isa, ty, x, &mut got);
        if let Some(i) = got
            .iter()
            .zip(want)
            .position(|(a, b)| a.to_bits() != b.to_bits())
        {
            panic!(
                "{ty} {what} at {}: index {i}: got {} want {} from block {:?}",
                isa.name(),
                got[i],
                want[i],
                &x[i / 32 * 32..i / 32 * 32 + 32]
            );
        }
    }
}

/// Blocks that stress the symmetric types' scale choice at every level: ties between +max and
/// −max (the first wins), signed zeros, subnormals (1/d overflows to infinity), huge values.
#[test]
fn symmetric_fake_quant_at_every_level_on_adversarial_blocks() {
    let r = random(1, 64 * 32, 5, 1.0);
    let x: Vec<f32> = r
        .iter()
        .enumerate()
        .map(|(i, &v)| match ((i / 32) % 8, i % 32) {
            (0, 3) | (1, 9) => 2.0,
            (0, 9) | (1, 3) => -2.0,
            (2, _) => -0.0,
            (3, j) => [0.0, -0.0][j % 2],
            (4, _) => v * 1e-40,
            (5, _) => v * 6e4,
            (6, _) => 0.5,
            _ => v,
        })
        .collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let want = dequantize(ty, &quantize(ty, &x, 256).unwrap()).unwrap();
        at_every_level(ty, &x, &want, "adversarial");
    }
}

#[test]
fn fake_quant_forward_is_dequantize_of_quantize() {
    for ty in QUANTIZABLE {
        for (seed, scale) in [(1, 1.0), (2, 0.02), (3, 300.0)] {
            let (rows, n) = (8, 512);
            let x = random(rows, n, seed, scale);
            let want = dequantize(ty, &quantize(ty, &x, n).unwrap()).unwrap();
            let t = Tensor::from_vec(x.clone(), (rows, n), &Device::Cpu).unwrap();
            let got = FakeQuant::new(ty)
                .apply(&t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(bits(&got), bits(&want), "{ty} seed {seed}");
            assert_eq!(
                bits(&fake_quantize(ty, &x, n).unwrap()),
                bits(&want),
                "{ty} fused path"
            );
        }
    }
}

/// Requantizing dequantized weights returns the same bytes for the legacy types: their scale
/// is a closed form of the block's extreme (Q4_0/Q5_0: signed max, Q8_0: amax, Q4_1/Q5_1: min
/// and max), the extreme lands on a grid end, so the recomputed scale is the stored fp16 one
/// (for Q4_1/Q5_1 up to an f32 rounding far below the fp16 spacing). Not for the K-quants:
/// their scale search (make_qkx2/q3/qx_quants) minimises a weighted error over candidate
/// scales, and on already-gridded data another candidate can tie or win by rounding, so the
/// 6-/8-bit sub-block scales move (measured here: Q2_K 4/512, Q3_K 253/512, Q5_K 25/512, Q6_K
/// 100/512 blocks change; Q4_K 0/512, which is luck of the sample, not a guarantee).
#[test]
fn requantization_is_idempotent_where_ggml_rounding_allows() {
    let holds = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];
    let mut report = Vec::new();
    for ty in QUANTIZABLE {
        let n = 512;
        let (mut differ, mut total) = (0, 0);
        for (seed, scale) in [(11, 1.0), (12, 0.01), (13, 100.0), (14, 3.0)] {
            let x = random(64, n, seed, scale);
            let q = quantize(ty, &x, n).unwrap();
            let q2 = quantize(ty, &dequantize(ty, &q).unwrap(), n).unwrap();
            let bb = ty.type_size();
            differ += q
                .chunks(bb)
                .zip(q2.chunks(bb))
                .filter(|(a, b)| a != b)
                .count();
            total += q.len() / bb;
            if holds.contains(&ty) {
                assert_eq!(q, q2, "{ty} must be idempotent (seed {seed})");
            }
        }
        report.push(format!("{ty}: {differ}/{total} blocks differ"));
    }
    eprintln!("{}", report.join("; "));
}

#[test]
fn backward_is_straight_through() {
    for ty in QUANTIZABLE {
        let x = random(4, 256, 5, 1.0);
        let v = Var::from_vec(x, (4, 256), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(random(4, 256, 6, 1.0), (4, 256), &Device::Cpu).unwrap();
        let y = FakeQuant::new(ty).apply(v.as_tensor()).unwrap();
        let loss = (y * &w).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let grad = g.get(v.as_tensor()).unwrap();
        assert_eq!(
            bits(&grad.flatten_all().unwrap().to_vec1().unwrap()),
            bits(&w.flatten_all().unwrap().to_vec1().unwrap()),
            "{ty}"
        );
    }
}

#[test]
fn clip_mask_zeroes_gradient_outside_the_block_range() {
    // Q4_0: max −8 sets d = 1, grid [−8, 7]; 7.9 lies outside, 6.9 inside.
    let mut x = vec![0.5f32; 32];
    x[0] = -8.0;
    x[1] = 7.9;
    x[2] = 6.9;
    let v = Var::from_vec(x, (1, 32), &Device::Cpu).unwrap();
    let op = FakeQuant {
        ty: GgmlType::Q4_0,
        clip_mask: true,
        weights: None,
    };
    let loss = op.apply(v.as_tensor()).unwrap().sum_all().unwrap();
    let g = loss
        .backward()
        .unwrap()
        .get(v.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(g[0], 1.0);
    assert_eq!(g[1], 0.0, "clipped");
    assert_eq!(g[2], 1.0);
    assert!(g[3..].iter().all(|&v| v == 1.0));
}

#[test]
fn non_finite_values_name_their_row() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = random(3, 64, 1, 1.0);
        x[2 * 64 + 5] = bad;
        for ty in QUANTIZABLE.into_iter().filter(|t| t.block_size() == 32) {
            match quantize(ty, &x, 64) {
                Err(QuantError::NonFinite { row: 2, col: 5, .. }) => {}
                other => panic!("{ty}: {other:?}"),
            }
        }
        let t = Tensor::from_vec(x, (3, 64), &Device::Cpu).unwrap();
        let e = FakeQuant::new(GgmlType::Q4_0)
            .apply(&t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 2"), "{e}");
    }
}

#[test]
fn bad_shapes_and_empty_tensors() {
    assert!(matches!(
        quantize(GgmlType::Q4K, &[0.0; 128], 128),
        Err(QuantError::RowLength {
            n: 128,
            block: 256,
            ..
        })
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &[0.0; 96], 64),
        Err(QuantError::Shape { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 19]),
        Err(QuantError::Bytes { .. })
    ));
    assert!(quantize(GgmlType::Q8_0, &[], 32).unwrap().is_empty());
    assert!(dequantize(GgmlType::Q6K, &[]).unwrap().is_empty());
    let t = Tensor::zeros((0, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        FakeQuant::new(GgmlType::Q4_0).apply(&t).unwrap().dims(),
        &[0, 64]
    );
    let t = Tensor::zeros((2, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(FakeQuant::new(GgmlType::Q4_0).apply(&t).is_err());
}

#[test]
fn scales_beyond_f16_saturate_to_infinity_as_ggml() {
    let mut x = vec![0.0f32; 32];
    x[0] = 1e6; // Q4_0: d = 1e6 / −8 = −125000 → fp16 −inf
    let q = quantize(GgmlType::Q4_0, &x, 32).unwrap();
    assert_eq!(u16::from_le_bytes([q[0], q[1]]), 0xFC00);
    let q = quantize(GgmlType::Q8_0, &x, 32).unwrap(); // d = 1e6 / 127 fits in f16
    assert_eq!(
        u16::from_le_bytes([q[0], q[1]]),
        half::f16::from_f32(1e6 / 127.0).to_bits()
    );
}

/// The K-quant fake-quant runs 16 sub-blocks per SIMD register (AVX-512 where the CPU has it);
/// on inputs that stress its selects — flat groups, all-positive groups (min clamped to 0),
/// ties between candidate scales on gridded data, extreme scales — it must still equal the
/// scalar reference bit for bit.
#[test]
fn k_quant_fake_quant_equals_the_scalar_reference_on_adversarial_inputs() {
    // 4096 values: pairs of super-block pairs only; 1536: one more lone pair at the end;
    // 1280: a lone pair and a last super-block on its own.
    for (rows, n) in [(4, 1024), (3, 512), (5, 256)] {
        adversarial(rows, n);
    }
}

fn adversarial(rows: usize, n: usize) {
    let x = random(rows, n, 7, 1.0);
    let mixed: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| match (i / 32) % 9 {
            0 => 0.0,
            1 => 0.25,
            2 => v.abs(),
            3 => -v.abs(),
            4 => v * 1e-8,
            5 => v * 6e4,
            // Subnormal ranges, where `nmax / range` overflows to infinity.
            6 => v * 1e-40,
            // Ranges that overflow to infinity.
            7 => v * 1e38,
            _ => v,
        })
        .collect();
    for ty in [GgmlType::Q4K, GgmlType::Q5K] {
        let gridded = dequantize(ty, &quantize(ty, &x, n).unwrap()).unwrap();
        let cases: [(&str, Vec<f32>); 6] = [
            ("mixed groups", mixed.clone()),
            ("all positive", x.iter().map(|v| v.abs() + 0.5).collect()),
            ("zeros", vec![0.0; rows * n]),
            ("constant", vec![-1.5; rows * n]),
            ("gridded", gridded),
            (
                "outliers",
                x.iter()
                    .enumerate()
                    .map(|(i, v)| if i % 37 == 0 { v * 80.0 } else { *v })
                    .collect(),
            ),
        ];
        for (name, v) in cases {
            let want = dequantize(ty, &quantize(ty, &v, n).unwrap()).unwrap();
            let got = fake_quantize(ty, &v, n).unwrap();
            assert_eq!(bits(&got), bits(&want), "{ty} {name} ({rows}×{n})");
            at_every_level(ty, &v, &want, name);
        }
    }
}

/// Thousands of random sub-blocks through the K-quant SIMD search, so that every branch of it
/// (clamps needed or provably not, winners that move the minimum) meets the scalar reference.
#[test]
fn k_quant_fake_quant_equals_the_scalar_reference_on_many_random_groups() {
    let n = 4096;
    for (seed, scale) in [(11, 1.0), (12, 0.01)] {
        let mut x = random(32, n, seed, scale);
        // Skewed groups: a minimum above zero or far below the rest moves the fitted offset.
        for (i, v) in x.iter_mut().enumerate() {
            match (i / 32) % 5 {
                1 => *v = v.abs() * 0.2 + 0.05,
                2 => *v = v.powi(3),
                // A subnormal range beside them: `nmax / range` is infinite.
                3 => *v *= 1e-40,
                _ => {}
            }
        }
        for ty in [GgmlType::Q4K, GgmlType::Q5K] {
            let want = dequantize(ty, &quantize(ty, &x, n).unwrap()).unwrap();
            let got = fake_quantize(ty, &x, n).unwrap();
            assert_eq!(bits(&got), bits(&want), "{ty} seed {seed}");
            at_every_level(ty, &x, &want, "random groups");
        }
    }
}

/// The block types outside the quantizable subset of `GgmlType` are refused with a typed error
/// by every entry point that takes a type — never a panic.
#[test]
fn types_outside_the_quantizable_ones_are_refused_typed() {
    let x = vec![0.5f32; 256];
    for ty in GgmlType::ALL
        .into_iter()
        .filter(|t| !QUANTIZABLE.contains(t))
    {
        let unsupported = |r: Result<(), QuantError>| {
            assert!(matches!(r, Err(QuantError::Unsupported(_))), "{ty}: {r:?}");
        };
        unsupported(quantize(ty, &x, 256).map(drop));
        unsupported(dequantize(ty, &[0u8; 64]).map(drop));
        unsupported(fake_quantize(ty, &x, 256).map(drop));
        unsupported(qd_quant::quantize_weighted(ty, &x, 256, &[1.0; 256]).map(drop));
        unsupported(qd_quant::quantizable(ty).map(drop));
        let t = candle_core::Tensor::new(x.as_slice(), &candle_core::Device::Cpu).unwrap();
        assert!(FakeQuant::new(ty).apply(&t).is_err(), "{ty}");
        assert_eq!(qd_quant::parse_type(ty.name()), None, "{ty}");
    }
    for ty in QUANTIZABLE {
        assert_eq!(qd_quant::quantizable(ty).unwrap(), ty);
        assert_eq!(qd_quant::parse_type(&ty.name().to_lowercase()), Some(ty));
    }
}
