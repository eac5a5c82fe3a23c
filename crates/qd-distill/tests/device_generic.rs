//! The device-generic training path (`--device cpu-generic`: what `--device cuda` runs — candle's
//! ops, the composed loss, learned steps through candle's ops, no Q8_0 panel products) against
//! the fused CPU path, on a tiny fixture of every family: the loss at every one of 10 QAT steps
//! within 1e-4 relative, the exported files equal in the tensors QAT trained (up to a bounded
//! number of codes that the two paths' roundings put on either side of a grid boundary), and a
//! checkpoint written by one path resumes on the other.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use qd_distill::export::{export_checkpoint, ExportOptions};
use qd_distill::train::run::{run, Event, RunConfig};
use qd_fixtures::tiny::{write_run_inputs, Family};
use qd_gguf::{GgmlType, GgufFile};

fn config(dir: &Path, family: Family, device: &str, learned_steps: bool) -> RunConfig {
    let text = "the thin heath in the inn at the heath, then a tent in the hen's nest ";
    let (teacher, corpus) = write_run_inputs(dir, family, text, 40);
    RunConfig {
        teacher,
        data: vec![corpus],
        out: dir.join(device),
        student_blocks: vec![0, 1],
        seq_len: 24,
        batch_size: 2,
        steps: 10,
        // At 1e-3 the two paths stay within 1.4e-5 of each other over 10 steps, no code apart.
        // At 5e-3, on these 2-block toys, Adam turns the last-bit differences of near-zero
        // gradient components into full-size updates of opposite sign, a code flips, and the
        // losses part by up to 2.6e-4 (Llama, step 9; 2026-12-06): rounding, amplified by the
        // optimizer, not a difference of the paths.
        lr: 1e-3,
        warmup: 2,
        eval_every: 5,
        eval_sequences: 2,
        checkpoint_every: 5,
        qat: Some("q4_0".into()),
        learned_steps,
        device: device.into(),
        ..Default::default()
    }
}

/// Per-step losses and the final held-out KL of a run.
fn train(cfg: &RunConfig, resume: bool) -> (Vec<f64>, f64) {
    let mut losses = Vec::new();
    let s = run(cfg, resume, &AtomicBool::new(false), |e| {
        if let Event::Step { loss, .. } = e {
            losses.push(*loss);
        }
    })
    .unwrap();
    (losses, s.final_val.kd)
}

/// The exported file's trained tensors as raw bytes, by name.
fn exported(cfg: &RunConfig, dir: &Path) -> Vec<(String, GgmlType, Vec<u8>)> {
    let e = export_checkpoint(&cfg.out, &ExportOptions::default()).unwrap();
    let path = dir.join(format!("{}.gguf", cfg.device));
    qd_export::write_new(&e.exported, &path, true).unwrap();
    let f = GgufFile::open(&path).unwrap();
    f.tensors()
        .iter()
        .filter(|t| t.name.starts_with("blk."))
        .map(|t| {
            (
                t.name.clone(),
                t.dtype,
                f.tensor_bytes(&t.name).unwrap().to_vec(),
            )
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn generic_path_trains_like_the_fused_one_on_every_family() {
    for (family, learned) in [
        (Family::Gemma3, false),
        (Family::Gemma3, true),
        (Family::Llama, false),
        (Family::Qwen2, true),
    ] {
        let d = tempfile::tempdir().unwrap();
        let fused = config(d.path(), family, "cpu", learned);
        let generic = config(d.path(), family, "cpu-generic", learned);
        let (lf, kf) = train(&fused, false);
        let (lg, kg) = train(&generic, false);
        assert_eq!(lf.len(), 10);
        let worst = lg
            .iter()
            .zip(&lf)
            .map(|(a, b)| rel(*a, *b))
            .fold(0f64, f64::max);
        eprintln!("{family:?} steps {learned}: largest relative loss difference {worst:.2e}");
        for (i, (a, b)) in lg.iter().zip(&lf).enumerate() {
            assert!(
                rel(*a, *b) <= 1e-4,
                "{family:?} steps {learned}: step {} loss {a} (generic) vs {b} (fused)",
                i + 1
            );
        }
        assert!(rel(kg, kf) <= 1e-4, "{family:?}: held-out KL {kg} vs {kf}");
        // The exported blocks: the same tensors and types. The two paths differ in the last
        // bits of the gradients (f32 sums in another order), so after 10 steps a few weights sit
        // on the other side of a rounding boundary: bounded here as codes that differ, each by at
        // most one grid step of its block (a block's fp16 scale may differ by ulps too).
        let (ef, eg) = (exported(&fused, d.path()), exported(&generic, d.path()));
        assert_eq!(ef.len(), eg.len());
        let (mut values, mut differ, mut worst) = (0usize, 0usize, 0f32);
        for ((nf, tf, bf), (ng, tg, bg)) in ef.iter().zip(&eg) {
            assert_eq!((nf, tf), (ng, tg));
            // The QAT-trained weights (the f32 norms are not quantized).
            let Ok(ty) = qd_quant::quantizable(*tf) else {
                continue;
            };
            let (vf, vg) = (
                qd_quant::dequantize(ty, bf).unwrap(),
                qd_quant::dequantize(ty, bg).unwrap(),
            );
            assert_eq!(vf.len(), vg.len(), "{nf}");
            values += vf.len();
            for (bf, bg) in vf.chunks(32).zip(vg.chunks(32)) {
                // One grid step of Q4_0: the block's largest magnitude / 8 (either file's).
                let step = bf.iter().chain(bg).fold(0f32, |m, v| m.max(v.abs())) / 7.0;
                for (a, b) in bf.iter().zip(bg) {
                    // A code that changed (not a scale's last bits).
                    if (a - b).abs() > 0.5 * step {
                        differ += 1;
                    }
                    worst = worst.max((a - b).abs() / step);
                }
            }
        }
        eprintln!(
            "{family:?} steps {learned}: {differ} of {values} exported codes differ; no value by more \
             than {worst:.3} grid steps"
        );
        assert!(
            differ * 1000 <= values,
            "{family:?} steps {learned}: {differ} of {values} exported codes differ (bound 0.1 %)"
        );
        assert!(
            worst <= 1.01,
            "{family:?}: a value moved {worst} grid steps"
        );
    }
}

/// A checkpoint is the same on every device: a fused-CPU run resumed on the generic path (and
/// the other way round) continues with the losses of an uninterrupted run, within the paths'
/// 1e-4.
#[test]
fn a_checkpoint_resumes_on_the_other_path() {
    let d = tempfile::tempdir().unwrap();
    let whole = config(d.path(), Family::Gemma3, "cpu", true);
    let (lw, _) = train(&whole, false);
    for (first, second) in [("cpu", "cpu-generic"), ("cpu-generic", "cpu")] {
        let mut a = config(d.path(), Family::Gemma3, first, true);
        a.out = d.path().join(format!("{first}-then-{second}"));
        a.steps = 5;
        // Five of ten steps: the schedule must be the ten-step run's.
        let mut half = a.clone();
        half.steps = 10;
        let stop = AtomicBool::new(false);
        let mut losses = Vec::new();
        let r = run(&half, false, &stop, |e| {
            if let Event::Step { loss, step, .. } = e {
                losses.push(*loss);
                if *step == 5 {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        assert!(r.is_err(), "the run stops at step 5");
        let mut b = half.clone();
        b.device = second.into();
        let (rest, _) = train(&b, true);
        losses.extend(rest);
        assert_eq!(losses.len(), 10);
        for (i, (x, y)) in losses.iter().zip(&lw).enumerate() {
            assert!(
                rel(*x, *y) <= 1e-4,
                "{first} then {second}: step {} loss {x} vs {y}",
                i + 1
            );
        }
    }
}
