//! GPU check for the fake-quant kernels (run by tools/gpu-check.sh on the lent GPU machine):
//! bit-exact equality with the CPU op on random and adversarial inputs, then throughput next to
//! the device's own copy bandwidth measured in the same run. Exit code 0 only if all pass.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use qd_gguf::GgmlType;
use qd_quant::FakeQuant;

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

/// Bits of the op's output on `x` (the CPU op's error text where it fails).
fn run_op(x: &Tensor, op: &FakeQuant) -> std::result::Result<Vec<u32>, String> {
    x.apply_op1_no_bwd(op)
        .and_then(|y| y.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>())
        .map(|v| v.iter().map(|f| f.to_bits()).collect())
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
}

/// Non-finite input (same error as the CPU op, naming the same row), short and offset views,
/// and the backward pass (identity, and the clipping mask) against the CPU.
fn edge_checks(dev: &Device, types: &[GgmlType]) -> Result<bool> {
    let mut ok = true;
    let mut report = |what: String, pass: bool| {
        ok &= pass;
        println!("[{}] {what}", if pass { "PASS" } else { "FAIL" });
    };
    for &ty in types {
        let op = FakeQuant::new(ty);
        let (rows, cols) = (5usize, 512usize);
        let base: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (label, bad) in [
            ("NaN", f32::NAN),
            ("+Inf", f32::INFINITY),
            ("-Inf", f32::NEG_INFINITY),
        ] {
            let mut x = base.clone();
            x[3 * cols + 300] = bad;
            x[4 * cols + 7] = bad;
            let cpu = Tensor::from_vec(x, (rows, cols), &Device::Cpu)?;
            let want = run_op(&cpu, &op);
            let got = run_op(&cpu.to_device(dev)?, &op);
            report(
                format!("{ty} {label} at row 3: cpu {want:?} / gpu {got:?}"),
                want.is_err() && want == got,
            );
        }
        // One row of one block (fewer threads than a CUDA block), and a view at an offset.
        let bs = ty.block_size();
        let cpu = Tensor::from_vec(base.clone(), (rows, cols), &Device::Cpu)?;
        let gpu = cpu.to_device(dev)?;
        let one = (
            cpu.narrow(1, 0, bs)?.contiguous()?,
            gpu.narrow(1, 0, bs)?.contiguous()?,
        );
        let view = (cpu.narrow(0, 1, 3)?, gpu.narrow(0, 1, 3)?);
        // A single row starting 5 floats into its storage: not 16-byte aligned.
        let flat = Tensor::from_vec(base[..2 * bs + 5].to_vec(), (1, 2 * bs + 5), &Device::Cpu)?;
        let odd = (
            flat.narrow(1, 5, 2 * bs)?,
            flat.to_device(dev)?.narrow(1, 5, 2 * bs)?,
        );
        let cases = [
            ("one block per row", one),
            ("rows 1..4 view", view),
            ("unaligned view", odd),
        ];
        for (label, (c, g)) in cases {
            let (want, got) = (run_op(&c, &op), run_op(&g, &op));
            report(format!("{ty} {label}"), want.is_ok() && want == got);
        }
        // Backward: the straight-through gradient, with and without the clipping mask.
        for clip_mask in [false, true] {
            let op = FakeQuant {
                ty,
                clip_mask,
                weights: None,
            };
            let gw: Vec<f32> = (0..rows * cols).map(|i| (i % 13) as f32 - 6.0).collect();
            let grad_on = |d: &Device| -> Result<Vec<f32>> {
                let w = Var::from_tensor(&cpu.to_device(d)?)?;
                let g = Tensor::from_vec(gw.clone(), (rows, cols), d)?;
                let loss = op.apply(w.as_tensor())?.mul(&g)?.sum_all()?;
                let grads = loss.backward()?;
                grads
                    .get(w.as_tensor())
                    .expect("w takes part in the loss")
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            };
            let (want, got) = (grad_on(&Device::Cpu)?, grad_on(dev)?);
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            let masked = want.iter().zip(&gw).filter(|(a, b)| a != b).count();
            report(
                format!(
                    "{ty} backward clip_mask={clip_mask}: {masked} of {} zeroed by the mask",
                    gw.len()
                ),
                same,
            );
        }
    }
    Ok(ok)
}

fn main() -> Result<()> {
    let dev = Device::new_cuda(0)?;
    let mut ok = true;
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
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
    ok &= edge_checks(&dev, &types)?;
    // Throughput on 2^27 weights, next to a device copy of the same tensor in the same run.
    let big_n = 1usize << 27;
    let big = Tensor::randn(0f32, 1.0, (big_n / 4096, 4096), &dev)?;
    let bytes = 2.0 * 4.0 * big_n as f64;
    // The reference is the faster of candle's tensor copy and a raw device-to-device memcpy.
    let tensor_copy_ms = time_ms(&dev, 20, || big.copy())?;
    let cd = dev.as_cuda_device()?;
    let src = cd.alloc_zeros::<f32>(big_n)?;
    let mut dst = cd.alloc_zeros::<f32>(big_n)?;
    let memcpy_ms = time_ms(&dev, 20, || {
        cd.memcpy_dtod(&src, &mut dst)?;
        Ok(big.clone())
    })?;
    let copy_ms = tensor_copy_ms.min(memcpy_ms);
    let copy_gbs = bytes / copy_ms / 1e6;
    println!(
        "copy: tensor {tensor_copy_ms:.3} ms, memcpy {memcpy_ms:.3} ms; best {copy_gbs:.0} GB/s (read+write)"
    );
    let (storage, _) = big.storage_and_layout();
    let candle_core::Storage::Cuda(cs) = &*storage else {
        candle_core::bail!("the big tensor is not on the GPU")
    };
    let xs = cs.as_cuda_slice::<f32>()?;
    let mut bad = cd.alloc_zeros::<u64>(1)?;
    // The op under the memory pool's default (freed memory returned at every synchronisation),
    // then as qat-distill runs it, with keep_freed_memory.
    let q4 = FakeQuant::new(GgmlType::Q4_0);
    let default_ms = time_ms(&dev, 20, || big.apply_op1_no_bwd(&q4))?;
    let default_copy_ms = time_ms(&dev, 20, || big.copy())?;
    qd_quant::cuda::keep_freed_memory(cd)?;
    println!(
        "default pool: Q4_0 op {default_ms:.3} ms ({:.1}% of copy), tensor copy {default_copy_ms:.3} ms; \
         below: pool keeps freed memory",
        100.0 * copy_ms / default_ms
    );
    for ty in types {
        let op = FakeQuant::new(ty);
        // The op as training calls it: allocation, kernel, and the wait for its non-finite flag.
        let ms = time_ms(&dev, 20, || big.apply_op1_no_bwd(&op))?;
        // The kernel alone, launched back to back into one output buffer.
        let kernel_ms = time_ms(&dev, 20, || {
            qd_quant::cuda::launch(ty, cd, &xs.slice(0..big_n), &mut dst, &mut bad)?;
            Ok(big.clone())
        })?;
        let gbs = bytes / ms / 1e6;
        let kernel_gbs = bytes / kernel_ms / 1e6;
        let pct = 100.0 * gbs / copy_gbs;
        let kernel_pct = 100.0 * kernel_gbs / copy_gbs;
        let pass = ty != GgmlType::Q4_0 || pct >= 90.0;
        ok &= pass;
        println!(
            "[{}] {ty} fake-quant 2^27: op {ms:.3} ms, {gbs:.0} GB/s = {pct:.1}% of copy; \
             kernel alone {kernel_ms:.3} ms, {kernel_gbs:.0} GB/s = {kernel_pct:.1}%",
            if pass { "PASS" } else { "FAIL" }
        );
    }
    println!("{}", if ok { "ALL PASS" } else { "SOME FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
