//! GPU check for the fake-quant kernels (run by tools/gpu-check.sh on the lent GPU machine):
//! bit-exact equality with the CPU op on random and adversarial inputs, then throughput next to
//! the device's own copy bandwidth measured in the same run. Exit code 0 only if all pass.

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use qd_quant::{FakeQuant, QuantType};

fn cases(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut s = 0x2545F4914F6CDD1Du64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let normal: Vec<f32> = (0..n).map(|_| rnd() + rnd() + rnd()).collect();
    let mut outliers = normal.clone();
    for i in (0..n).step_by(97) {
        outliers[i] *= 50.0;
    }
    let mut ties = normal.clone();
    for b in (0..n).step_by(32) {
        ties[b + 3] = 4.0;
        ties[b + 17] = -4.0;
    }
    let mixed: Vec<f32> = (0..n)
        .map(|i| match (i / 256) % 5 {
            0 => 0.0,
            1 => 1e-8 * normal[i],
            2 => 6e4 * normal[i].signum().max(0.5),
            3 => 3.25,
            _ => normal[i],
        })
        .collect();
    vec![
        ("normal", normal.clone()),
        ("outliers", outliers),
        ("ties_pm_max", ties),
        ("zeros", vec![0.0; n]),
        ("neg_zeros", vec![-0.0; n]),
        ("constant", vec![0.7; n]),
        ("tiny_1e-8", normal.iter().map(|v| v * 1e-8).collect()),
        ("huge_6e4", normal.iter().map(|v| v * 6e4).collect()),
        ("subnormal", normal.iter().map(|v| v * 1e-40).collect()),
        ("all_positive", normal.iter().map(|v| v.abs()).collect()),
        ("all_negative", normal.iter().map(|v| -v.abs()).collect()),
        ("mixed_blocks", mixed),
    ]
}

fn time_ms(dev: &Device, iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    dev.synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

fn main() -> Result<()> {
    let dev = Device::new_cuda(0)?;
    let mut ok = true;
    let types = [
        QuantType::Q4_0,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::Q4K,
    ];
    let n = 1 << 20;
    for ty in types {
        let op = FakeQuant::new(ty);
        let mut line = format!("{:5}", ty.name());
        for (name, x) in cases(n) {
            let cpu = Tensor::from_vec(x, (n / 1024, 1024), &Device::Cpu)?;
            let want = cpu.apply_op1_no_bwd(&op)?.flatten_all()?.to_vec1::<f32>()?;
            let got = cpu
                .to_device(&dev)?
                .apply_op1_no_bwd(&op)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let bad = want
                .iter()
                .zip(&got)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            if bad > 0 {
                ok = false;
                let i = want
                    .iter()
                    .zip(&got)
                    .position(|(a, b)| a.to_bits() != b.to_bits())
                    .unwrap();
                println!(
                    "[FAIL] {ty} {name}: {bad} of {n} differ; first at {i}: cpu {} gpu {}",
                    want[i], got[i]
                );
            }
            line.push_str(&format!(" {name}:{}", if bad == 0 { "ok" } else { "DIFF" }));
        }
        println!("[{}] bit-exact {line}", if ok { "PASS" } else { "FAIL" });
    }
    // Throughput on 2^27 weights, next to a device copy of the same tensor in the same run.
    let big_n = 1usize << 27;
    let big = Tensor::randn(0f32, 1.0, (big_n / 4096, 4096), &dev)?;
    let bytes = 2.0 * 4.0 * big_n as f64;
    let copy_ms = time_ms(&dev, 20, || big.copy())?;
    let copy_gbs = bytes / copy_ms / 1e6;
    println!("copy: {copy_ms:.3} ms, {copy_gbs:.0} GB/s (read+write)");
    for ty in types {
        let op = FakeQuant::new(ty);
        let ms = time_ms(&dev, 20, || big.apply_op1_no_bwd(&op))?;
        let gbs = bytes / ms / 1e6;
        let pct = 100.0 * gbs / copy_gbs;
        let pass = ty != QuantType::Q4_0 || pct >= 90.0;
        ok &= pass;
        println!(
            "[{}] {ty} fake-quant 2^27: {ms:.3} ms, {gbs:.0} GB/s = {pct:.1}% of copy",
            if pass { "PASS" } else { "FAIL" }
        );
    }
    println!("{}", if ok { "ALL PASS" } else { "SOME FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
