//! The Q4_K/Q6_K × Q8_K AVX-512 VNNI product (`qd_model::kernels::kquant`) against candle's
//! quantized matmul on the same weights, at Gemma 3 270M's FFN down-projection shape (640 × 2048)
//! and that shape repeated to 16 384 rows (so the weights leave the 2 MiB L2): 1 token (reported
//! in GB/s of the file's weight bytes) and 64 tokens (multiply-adds per second). `RUSTFLAGS="-C target-cpu=native" cargo bench -p qd-model --bench kquant_matmul`.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qd_gguf::GgmlType;
use qd_model::kernels::kquant::PackedKQuant;

const K: usize = 2048;

/// Arbitrary codes with small normal fp16 scales.
fn weights(kind: GgmlType, n: usize) -> Vec<u8> {
    let bb = kind.type_size();
    let mut w: Vec<u8> = (0..n * K / 256 * bb)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let d = half::f16::from_f32(0.001).to_bits().to_le_bytes();
    for blk in w.chunks_exact_mut(bb) {
        match kind {
            GgmlType::Q4K => {
                blk[0..2].copy_from_slice(&d);
                blk[2..4].copy_from_slice(&d);
            }
            _ => blk[208..210].copy_from_slice(&d),
        }
    }
    w
}

fn bench(c: &mut Criterion) {
    for kind in [GgmlType::Q4K, GgmlType::Q6K] {
        let (dtype, name) = (kind.to_candle(), kind.name().to_lowercase());
        for n in [640, 16_384] {
            let w = weights(kind, n);
            let packed = PackedKQuant::new(kind, &w, n, K);
            let candle = QMatMul::from_qtensor(
                qtensor_from_ggml(dtype, &w, vec![n, K], &Device::Cpu).unwrap(),
            )
            .unwrap();
            let mut g = c.benchmark_group(format!("{name}-matmul-{n}x{K}"));
            g.sample_size(10);
            for t in [1usize, 64] {
                let x: Vec<f32> = (0..t * K)
                    .map(|i| ((i % 97) as f32 - 48.0) / 16.0)
                    .collect();
                let xt = Tensor::from_vec(x.clone(), (t, K), &Device::Cpu).unwrap();
                g.throughput(if t == 1 {
                    Throughput::Bytes(w.len() as u64)
                } else {
                    Throughput::Elements((n * K * t) as u64)
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
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
