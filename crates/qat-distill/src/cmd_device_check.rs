//! `device-check`: the GPU acceptance in one command, one JSON report — run by
//! `tools/gpu-check.sh` on a lent GPU (`--device cuda`) and, with `--quick`, on the CPU's
//! device-generic path in every test run (`--device cpu-generic`), so that the check itself
//! cannot rot while no GPU is lent.
//!
//! What it checks, each against the CPU:
//! - `ops`: the fake-quant op of every type (and the importance-weighted grid) bit for bit, the
//!   learned-step op, and the loss composed from candle's ops on the device against the fused CPU
//!   loss (loss and logit gradients);
//! - `parity`: 20 QAT steps on the device and on the CPU (fused) from one seed on a tiny model of
//!   each family — the loss at every step, the codes of the two exports, and the device run's
//!   export evaluated on the CPU against its perplexity on the device;
//! - `speed`: training tokens/s and memory (peak RSS; GPU memory held) at B = 4, T = 512 for a
//!   6-block and a whole-model student of the teacher given (random weights of the real
//!   teacher's shape on a GPU machine, where the real one cannot go);
//! - `bench`: pp512 and tg128 of that teacher on the device.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use qd_distill::train::run::{run, Event, RunConfig};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::DeviceSpec;
use qd_quant::{FakeQuant, LearnedStep};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// The device under test (the CPU's fused path is the reference).
    #[arg(long, value_parser = crate::device::parse, default_value = "cuda")]
    device: DeviceSpec,
    /// The teacher of the speed and bench sections, or a skeleton of one (`synth --skeleton`:
    /// random weights of its shape are made first). Default: a tiny Gemma 3 model.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// The text training reads (e.g. tests/data/corpora/pydoc.txt).
    #[arg(long)]
    data: PathBuf,
    /// Small shapes and few steps everywhere (the CPU run in tools/test.sh).
    #[arg(long)]
    quick: bool,
    /// The JSON report (written atomically, also printed).
    #[arg(long)]
    out: PathBuf,
}

/// The sizes of one check: full on a GPU, small with `--quick`.
struct Sizes {
    values: usize,
    steps: usize,
    batch: usize,
    seq: usize,
    pp: usize,
    tg: usize,
}

pub fn run_cmd(a: Args) -> anyhow::Result<()> {
    let sizes = if a.quick {
        Sizes {
            values: 1 << 14,
            steps: 4,
            batch: 2,
            seq: 64,
            pp: 32,
            tg: 8,
        }
    } else {
        Sizes {
            values: 1 << 20,
            steps: 20,
            batch: 4,
            seq: 512,
            pp: 512,
            tg: 128,
        }
    };
    let dev = crate::device::open(a.device)?;
    let work = WorkDir(tempfile_dir(&a.out)?);
    let work = &work.0;
    let t0 = Instant::now();
    let gpu = crate::device::gpu_info(&dev)?;
    let mut report = json!({
        "date_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "device": a.device.to_string(),
        "backend": crate::device::backend(a.device),
        "gpu_info": gpu.as_ref().map(|g| g.0.clone()).unwrap_or_default(),
        "cpu_threads": rayon::current_num_threads(),
        "quick": a.quick,
    });
    eprintln!("device-check: ops");
    report["ops"] = ops(&dev, sizes.values)?;
    eprintln!(
        "device-check: parity ({} QAT steps per family, device and CPU)",
        sizes.steps
    );
    report["parity"] = parity(a.device, &dev, &a.data, work, sizes.steps)?;
    let teacher = teacher_file(a.teacher.as_deref(), work)?;
    eprintln!("device-check: speed ({})", teacher.display());
    report["speed"] = speed(a.device, &dev, &teacher, &a.data, work, &sizes)?;
    eprintln!("device-check: bench");
    report["bench"] = bench(&dev, a.device, &teacher, &sizes)?;
    report["pass"] = json!(passes(&report));
    report["seconds"] = json!(t0.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    qd_gguf::write_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("{text}");
    anyhow::ensure!(
        report["pass"] == true,
        "{}: a figure is out of its tolerance (see the report)",
        a.out.display()
    );
    Ok(())
}

/// A tiny model of `spec` written to `dir/name` (errors, not panics, on a bad folder).
fn write_tiny(dir: &Path, name: &str, spec: &TinySpec) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    qd_gguf::write_atomic(&path, &tiny_gguf(spec))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The working folder, removed however the check ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh working folder beside the report.
fn tempfile_dir(out: &Path) -> anyhow::Result<PathBuf> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = parent
        .unwrap_or(Path::new("."))
        .join(format!("device-check.{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Values with every case the quantizers branch on: normal, outliers, ties, zeros, tiny, huge.
fn test_values(n: usize) -> Vec<f32> {
    let mut x = 0x9e37_79b9u32;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let u = x as f32 / u32::MAX as f32 - 0.5;
            match (i / 256) % 8 {
                0 => 0.0,
                1 => u * 1e-8,
                2 => u * 6e4,
                3 => (u * 16.0).round(),
                4 => u.abs() * 0.1,
                5 if i % 97 == 0 => u * 50.0,
                _ => u * 0.1,
            }
        })
        .collect()
}

fn host(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?)
}

fn bit_mismatches(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
        + a.len().abs_diff(b.len())
}

/// The fake-quant op (every type, and the weighted grid), the learned-step op and the composed
/// loss on `dev` against the CPU.
fn ops(dev: &Device, n: usize) -> anyhow::Result<Value> {
    let cols = 4096;
    let rows = (n / cols).max(1);
    let v = test_values(rows * cols);
    let cpu = Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
    let on = cpu.to_device(dev)?;
    let mut fq = serde_json::Map::new();
    let weights: std::sync::Arc<[f32]> = (0..cols).map(|j| 1.0 + (j % 13) as f32).collect();
    let mut cases: Vec<(String, FakeQuant)> = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ]
    .into_iter()
    .map(|t| (t.name().to_string(), FakeQuant::new(t)))
    .collect();
    cases.push((
        "Q4_0 (imatrix)".into(),
        FakeQuant::weighted(GgmlType::Q4_0, weights),
    ));
    for (name, op) in cases {
        let want = host(&op.apply(&cpu)?)?;
        let got = host(&op.apply(&on)?)?;
        fq.insert(name, json!(bit_mismatches(&want, &got)));
    }
    // Learned steps: the device-generic form on the device against the CPU op.
    let steps: Vec<f32> = (0..rows * cols / 32)
        .map(|i| 0.01 * (1.0 + (i % 7) as f32 * 0.3))
        .collect();
    let d_cpu = Tensor::from_vec(steps, (rows, cols / 32), &Device::Cpu)?;
    let op = LearnedStep { ty: GgmlType::Q4_0 };
    let want = host(&op.apply(&cpu, &d_cpu)?)?;
    let got = host(&op.apply_portable(&on, &d_cpu.to_device(dev)?)?)?;
    let ls = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    Ok(json!({
        "values": rows * cols,
        "fake_quant_bit_mismatches": fq,
        "learned_step_mismatches": ls,
        "loss": loss_parity(dev)?,
    }))
}

/// The KD + CE loss composed from candle's ops on `dev` (autograd for the logit gradient)
/// against the fused CPU loss: largest relative differences.
fn loss_parity(dev: &Device) -> anyhow::Result<Value> {
    use qd_distill::loss::{cross_entropy, divergence, fused::fused_loss, Divergence};
    let (n, v) = (16, 8192);
    // Deterministic logits (the test values, scaled), so that every run checks the same case.
    let vals = test_values(2 * n * v);
    let logits = |part: &[f32], scale: f32| {
        let x: Vec<f32> = part
            .iter()
            .map(|x| (x * 40.0).clamp(-1.0, 1.0) * scale)
            .collect();
        Tensor::from_vec(x, (n, v), &Device::Cpu)
    };
    let s = logits(&vals[..n * v], 6.0)?;
    let t = logits(&vals[n * v..], 8.0)?;
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 331 + 17) % v as u32).collect();
    let mask = vec![1f32; n];
    let (mut worst_loss, mut worst_grad) = (0f64, 0f64);
    for div in [Divergence::Forward, Divergence::Reverse] {
        for temp in [1.0, 2.0] {
            let (w_kd, w_ce) = (0.5 * temp * temp / n as f64, 0.5 / n as f64);
            let f = fused_loss(&s, &t, &targets, &mask, temp, div, w_kd, w_ce)?;
            let want = w_kd * f.kd_sum + w_ce * f.ce_sum;
            let var = candle_core::Var::from_tensor(&s.to_device(dev)?)?;
            let m = Tensor::new(mask.as_slice(), dev)?;
            let tg = Tensor::new(targets.as_slice(), dev)?;
            let kd = divergence(var.as_tensor(), &t.to_device(dev)?, &m, temp, div)?;
            let ce = cross_entropy(var.as_tensor(), &tg, &m)?;
            let total = (kd.sum.affine(w_kd, 0.0)? + ce.sum.affine(w_ce, 0.0)?)?;
            let got = total.to_device(&Device::Cpu)?.to_scalar::<f32>()? as f64;
            worst_loss = worst_loss.max((got - want).abs() / want.abs());
            let g = total.backward()?;
            let g = host(g.get(var.as_tensor()).context("no logit gradient")?)?;
            let fg = host(&f.grad)?;
            let scale = fg.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
            let d = g
                .iter()
                .zip(&fg)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
            worst_grad = worst_grad.max(d / scale);
        }
    }
    Ok(json!({ "max_rel_loss": worst_loss, "max_rel_logit_grad": worst_grad }))
}

/// A QAT run of `steps` on `device` over `data`: per-step losses and its out folder.
fn qat_run(
    teacher: &Path,
    data: &Path,
    out: PathBuf,
    device: DeviceSpec,
    steps: usize,
    learned_steps: bool,
) -> anyhow::Result<Vec<f64>> {
    let cfg = RunConfig {
        teacher: teacher.to_path_buf(),
        data: vec![data.to_path_buf()],
        out,
        student_blocks: vec![0, 1],
        seq_len: 32,
        batch_size: 2,
        steps,
        lr: 1e-3,
        warmup: 2,
        eval_every: 0,
        eval_sequences: 2,
        checkpoint_every: 0,
        qat: Some("q4_0".into()),
        learned_steps,
        token_cache: false,
        device: device.to_string(),
        ..Default::default()
    };
    let mut losses = Vec::new();
    run(&cfg, false, &AtomicBool::new(false), |e| {
        if let Event::Step { loss, .. } = e {
            losses.push(*loss);
        }
    })?;
    Ok(losses)
}

/// The exported student of the run in `out`, written to `path`.
fn export(out: &Path, path: &Path) -> anyhow::Result<GgufFile> {
    let e = qd_distill::export::export_checkpoint(out, &Default::default())?;
    qd_export::write_new(&e.exported, path, true)?;
    Ok(GgufFile::open(path)?)
}

/// Codes that differ between two exports of the same tensors (values more than half a grid step
/// apart), and how many values were compared.
fn differing_codes(a: &GgufFile, b: &GgufFile) -> anyhow::Result<(usize, usize)> {
    let (mut differ, mut values) = (0, 0);
    for t in a.tensors().iter().filter(|t| t.name.starts_with("blk.")) {
        let Ok(ty) = qd_quant::quantizable(t.dtype) else {
            continue;
        };
        let va = qd_quant::dequantize(ty, a.tensor_bytes(&t.name)?)?;
        let vb = qd_quant::dequantize(ty, b.tensor_bytes(&t.name)?)?;
        values += va.len();
        for (ba, bb) in va.chunks(32).zip(vb.chunks(32)) {
            let step = ba.iter().chain(bb).fold(0f32, |m, v| m.max(v.abs())) / 8.0;
            differ += ba
                .iter()
                .zip(bb)
                .filter(|(x, y)| (*x - *y).abs() > 0.5 * step)
                .count();
        }
    }
    Ok((differ, values))
}

/// Mean NLL (ln perplexity) of `f` on `dev` over `data`.
fn mean_nll(f: &GgufFile, dev: &Device, graph: bool, data: &Path) -> anyhow::Result<f64> {
    let model = crate::loaded::model_on(f, dev)?;
    let tok = crate::loaded::tokenizer(f)?;
    let (tokens, mut p) = crate::loaded::chunked_text(&tok, data, 64, Some(4), "student")?;
    p.graph = graph;
    Ok(qd_eval::perplexity(&model, &tokens, &p, |_, _, _| {})?
        .ppl
        .ln())
}

/// Training parity on a tiny model of each family (the Gemma 3 one with learned steps too).
fn parity(
    device: DeviceSpec,
    dev: &Device,
    data: &Path,
    work: &Path,
    steps: usize,
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for (fam, ty, learned) in [
        (Family::Gemma3, GgmlType::Q8_0, false),
        (Family::Gemma3, GgmlType::Q8_0, true),
        (Family::Llama, GgmlType::Q8_0, false),
        (Family::Qwen2, GgmlType::Q8_0, true),
    ] {
        let name = format!("{}{}", fam.arch(), if learned { "+steps" } else { "" });
        let dir = work.join(&name);
        let teacher = write_tiny(&dir, "teacher.gguf", &TinySpec::new(fam, ty))?;
        let on = qat_run(&teacher, data, dir.join("device"), device, steps, learned)?;
        let cpu = qat_run(
            &teacher,
            data,
            dir.join("cpu"),
            DeviceSpec::Cpu,
            steps,
            learned,
        )?;
        let rel: Vec<f64> = on
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
            .collect();
        let fd = export(&dir.join("device"), &dir.join("device.gguf"))?;
        let fc = export(&dir.join("cpu"), &dir.join("cpu.gguf"))?;
        let (differ, values) = differing_codes(&fd, &fc)?;
        let nll_device = mean_nll(&fd, dev, true, data)?;
        let nll_cpu = mean_nll(&fd, &Device::Cpu, false, data)?;
        rows.push(json!({
            "model": name,
            "steps": on.len(),
            "max_rel_loss": rel.iter().cloned().fold(0f64, f64::max),
            "rel_loss": rel,
            "codes_differing": differ,
            "codes": values,
            "export_nll_device": nll_device,
            "export_nll_cpu": nll_cpu,
            "export_rel_nll": (nll_device - nll_cpu).abs() / nll_cpu.abs(),
        }));
    }
    Ok(Value::Array(rows))
}

/// The teacher file: `given` (random weights made first when it is a skeleton), or a tiny one.
fn teacher_file(given: Option<&Path>, work: &Path) -> anyhow::Result<PathBuf> {
    let Some(p) = given else {
        return write_tiny(
            work,
            "tiny-teacher.gguf",
            &TinySpec::new(Family::Gemma3, GgmlType::Q4K),
        );
    };
    let f = GgufFile::open(p)?;
    if f.get(qd_export::synthetic::SKELETON_KEY).is_none() {
        return Ok(p.to_path_buf());
    }
    let out = work.join("synthetic-teacher.gguf");
    let w = qd_export::synthetic::synthetic(&f, 0)?;
    qd_gguf::write_atomic(&out, &w.to_bytes())?;
    Ok(out)
}

/// Training speed and memory of a 6-block and a whole-model student of `teacher`.
fn speed(
    device: DeviceSpec,
    dev: &Device,
    teacher: &Path,
    data: &Path,
    work: &Path,
    s: &Sizes,
) -> anyhow::Result<Value> {
    let n_layer = qd_model::HParams::from_gguf(&GgufFile::open(teacher)?)?.n_layer;
    // The main job's 6-block student where the teacher is Gemma 3 270M's depth; else the first
    // six blocks (which keep any sliding-window pattern).
    let six = if n_layer == 18 {
        RunConfig::default().student_blocks
    } else {
        (0..n_layer.min(6)).collect()
    };
    let mut rows = Vec::new();
    for (name, blocks) in [("6-block", six), ("whole", (0..n_layer).collect())] {
        let steps = 3;
        let cfg = RunConfig {
            teacher: teacher.to_path_buf(),
            data: vec![data.to_path_buf()],
            out: work.join(format!("speed-{name}")),
            student_blocks: blocks,
            seq_len: s.seq,
            batch_size: s.batch,
            steps,
            eval_every: 0,
            eval_sequences: 0,
            checkpoint_every: 0,
            qat: Some("qat-q4".into()),
            token_cache: false,
            device: device.to_string(),
            ..Default::default()
        };
        let mut times = Vec::new();
        let summary = run(&cfg, false, &AtomicBool::new(false), |e| {
            if matches!(e, Event::Step { .. }) {
                times.push(Instant::now());
            }
        })?;
        // The first step warms up (allocations, kernel loading); the others are timed.
        let timed = (times[steps - 1] - times[0]).as_secs_f64();
        let tokens = ((steps - 1) * s.batch * s.seq) as f64;
        rows.push(json!({
            "student": name,
            "batch": s.batch,
            "seq_len": s.seq,
            "tokens_per_second": tokens / timed,
            "peak_rss_bytes": summary.peak_rss_bytes,
            "gpu_mem_bytes": crate::device::gpu_info(dev)?.map_or(0, |g| g.1),
        }));
    }
    Ok(Value::Array(rows))
}

/// pp and tg of `teacher` on the device (the graph path there).
fn bench(dev: &Device, device: DeviceSpec, teacher: &Path, s: &Sizes) -> anyhow::Result<Value> {
    let f = GgufFile::open(teacher)?;
    let model = crate::loaded::model_on(&f, dev)?;
    let tok = crate::loaded::tokenizer(&f)?;
    let bos = if tok.add_bos { tok.bos } else { None };
    let r = qd_eval::bench(&model, s.pp, s.tg, 3, bos, 1234, device.generic())?;
    Ok(Value::Array(
        r.iter()
            .map(|t| json!({ "test": t.test, "avg_ts": t.avg_ts(), "stddev_ts": t.stddev_ts(), "path": t.path }))
            .collect(),
    ))
}

/// Whether every parity figure is within its tolerance: ops bit-exact (learned steps equal as
/// values), the loss and its logit gradient within 1e-4 (the CPU's composed loss is within 1e-5
/// of the fused one; a GPU sums in another order), each training step within 1e-3, the export's
/// perplexity on the device within 1e-3 of the CPU's.
fn passes(r: &Value) -> bool {
    let ops = &r["ops"];
    let fq_ok = ops["fake_quant_bit_mismatches"]
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == 0));
    let ls_ok = ops["learned_step_mismatches"] == 0;
    let loss_ok = ops["loss"]["max_rel_loss"]
        .as_f64()
        .is_some_and(|v| v <= 1e-4)
        && ops["loss"]["max_rel_logit_grad"]
            .as_f64()
            .is_some_and(|v| v <= 1e-4);
    let parity_ok = r["parity"].as_array().is_some_and(|rows| {
        rows.iter().all(|p| {
            p["max_rel_loss"].as_f64().is_some_and(|v| v <= 1e-3)
                && p["export_rel_nll"].as_f64().is_some_and(|v| v <= 1e-3)
        })
    });
    fq_ok && ls_ok && loss_ok && parity_ok
}
