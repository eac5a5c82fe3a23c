//! The Q8_0 × Q8_0 AVX-512 VNNI product (`qd_model::kernels::q8_0`) against candle's quantized
//! matmul on the same weights, at Gemma 3 270M's LM-head shape (262 144 × 640): 1 token
//! (generation: bound by reading the weights, reported in GB/s of weight bytes), 4 and 64 tokens
//! (a training chunk: compute-bound, reported in multiply-adds per second).
//! Then the narrow code formats the same kernel keeps for widened Q5_0 and Q4_0 weights (5 and
//! 4 bits per code) against candle's own Q5_0 and Q4_0 kernels, at the same shape
//! (GB/s of the file type's bytes at 1 token).
//! `RUSTFLAGS="-C target-cpu=native" cargo bench -p qd-model --bench q8_0_matmul`.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qd_model::kernels::q8_0::PackedQ8_0;

const N: usize = 262_144;
const K: usize = 640;

fn weights() -> Vec<u8> {
    let mut w: Vec<u8> = (0..N * K / 32 * 34).map(|i| (i * 31 % 251) as u8).collect();
    for blk in w.chunks_exact_mut(34) {
        blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
    }
    w
}

fn bench(c: &mut Criterion) {
    let w = weights();
    let packed = PackedQ8_0::new(&w, N, K);
    let candle = QMatMul::from_qtensor(
        qtensor_from_ggml(GgmlDType::Q8_0, &w, vec![N, K], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let mut g = c.benchmark_group("q8_0-lm-head");
    g.sample_size(10);
    for t in [1usize, 4, 64] {
        let x: Vec<f32> = (0..t * K).map(|i| (i % 97) as f32 - 48.0).collect();
        let xt = Tensor::from_vec(x.clone(), (t, K), &Device::Cpu).unwrap();
        g.throughput(if t == 1 {
            Throughput::Bytes(w.len() as u64)
        } else {
            Throughput::Elements((N * K * t) as u64)
        });
        if let Some(p) = &packed {
            g.bench_with_input(BenchmarkId::new("vnni", t), &x, |b, x| {
                b.iter(|| p.matmul(std::hint::black_box(x)).unwrap())
            });
        }
        g.bench_with_input(BenchmarkId::new("candle", t), &xt, |b, xt| {
            b.iter(|| candle.forward(std::hint::black_box(xt)).unwrap())
        });
    }
    g.finish();
}

fn narrow(c: &mut Criterion) {
    const R: usize = N;
    let dense: Vec<f32> = (0..R * K)
        .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 500.0)
        .collect();
    let dense = Tensor::from_vec(dense, (R, K), &Device::Cpu).unwrap();
    let mut g = c.benchmark_group("narrow-codes");
    g.sample_size(10);
    for (ty, widen) in [
        (
            GgmlDType::Q5_0,
            qd_model::widen::q5_0_to_q8_0 as fn(&[u8]) -> Vec<u8>,
        ),
        (GgmlDType::Q4_0, qd_model::widen::q4_0_to_q8_0),
    ] {
        let q = candle_core::quantized::QTensor::quantize(&dense, ty).unwrap();
        let bytes = q.data().unwrap().into_owned();
        let packed = PackedQ8_0::new(&widen(&bytes), R, K);
        let candle = QMatMul::from_qtensor(q).unwrap();
        for t in [1usize, 64] {
            let x: Vec<f32> = (0..t * K).map(|i| (i % 97) as f32 - 48.0).collect();
            let xt = Tensor::from_vec(x.clone(), (t, K), &Device::Cpu).unwrap();
            g.throughput(if t == 1 {
                Throughput::Bytes(bytes.len() as u64)
            } else {
                Throughput::Elements((R * K * t) as u64)
            });
            if let Some(p) = &packed {
                g.bench_with_input(BenchmarkId::new(format!("vnni-{ty:?}"), t), &x, |b, x| {
                    b.iter(|| p.matmul(std::hint::black_box(x)).unwrap())
                });
            }
            g.bench_with_input(
                BenchmarkId::new(format!("candle-{ty:?}"), t),
                &xt,
                |b, xt| b.iter(|| candle.forward(std::hint::black_box(xt)).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench, narrow);
criterion_main!(benches);
