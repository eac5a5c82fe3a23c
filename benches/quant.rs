//! Quantize, dequantize and fake-quant throughput per GGUF type on one CPU thread, in GB/s of
//! f32 read + written (for quantize: f32 read + block bytes written), next to a plain memcpy of
//! the same f32 bytes in the same run. `cargo bench -p qd-quant --bench quant`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qd_quant::{dequantize, quantize, rows::fake_quantize_into, QUANTIZABLE};

const N: usize = 1 << 20; // 4 MiB of f32: the row-block working set of a 2048×512 matrix

fn data() -> Vec<f32> {
    let mut s = 0x9E3779B97F4A7C15u64;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let x = data();
    let mut y = vec![0f32; N];
    let mut g = c.benchmark_group("one-thread");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((2 * 4 * N) as u64));
    g.bench_function("memcpy", |b| {
        b.iter(|| y.copy_from_slice(std::hint::black_box(&x)))
    });
    for ty in QUANTIZABLE {
        let q = quantize(ty, &x, 4096).unwrap();
        g.throughput(Throughput::Bytes((2 * 4 * N) as u64));
        g.bench_with_input(BenchmarkId::new("fake-quant", ty), &ty, |b, &ty| {
            b.iter(|| pool.install(|| fake_quantize_into(ty, &x, &mut y)))
        });
        g.throughput(Throughput::Bytes((4 * N + q.len()) as u64));
        g.bench_with_input(BenchmarkId::new("quantize", ty), &ty, |b, &ty| {
            b.iter(|| pool.install(|| quantize(ty, &x, 4096).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("dequantize", ty), &ty, |b, &ty| {
            b.iter(|| pool.install(|| dequantize(ty, &q).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
