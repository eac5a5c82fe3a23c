//! Block-wise QAT (`schedule = "block-ap"`) on tiny models: with no steps it is round-to-nearest
//! (the file llama-quantize would write, tensor for tensor), training lowers every block's
//! held-out error, and a run stopped between blocks resumes to the same file byte for byte —
//! refusing a damaged block or one trained with another configuration.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use qd_distill::blockwise::MODEL_FILE;
use qd_distill::train::run::{run, Event, RunConfig, TrainError};
use qd_export::Recipe;
use qd_fixtures::tiny::{write_run_inputs, Family};
use qd_gguf::{GgmlType, GgufFile};

fn config(dir: &Path, family: Family) -> RunConfig {
    let text = "the thin heath in the inn at the heath; a tree, then three. ";
    let (teacher, corpus) = write_run_inputs(dir, family, text, 60);
    RunConfig {
        teacher,
        data: vec![corpus],
        out: dir.join("run"),
        seq_len: 16,
        steps: 6,
        // 64 training tokens: a larger rate overfits them (2e-3 raised block 0's held-out
        // error 18-fold); at 2e-4 every block's falls by 4-11 %.
        lr: 2e-4,
        warmup: 1,
        weight_decay: 0.0,
        val_fraction: 0.2,
        eval_every: 0,
        eval_sequences: 2,
        qat: Some("q4_0".into()),
        schedule: "block-ap".into(),
        block_sequences: 4,
        ..Default::default()
    }
}

/// Runs `cfg`; the block reports it emitted, in order.
fn blocks_of(cfg: &RunConfig, resume: bool) -> Result<Vec<(f64, f64)>, TrainError> {
    let mut reports = Vec::new();
    run(cfg, resume, &AtomicBool::new(false), |ev| {
        if let Event::Block { report, .. } = ev {
            reports.push((report.val_mse_before, report.val_mse_after));
        }
    })?;
    Ok(reports)
}

#[test]
fn no_steps_is_round_to_nearest() {
    for family in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path(), family);
        cfg.steps = 0;
        let reports = blocks_of(&cfg, false).unwrap();
        assert!(
            reports.iter().all(|(b, a)| b == a),
            "{family:?}: {reports:?}"
        );
        let teacher = GgufFile::open(&cfg.teacher).unwrap();
        let rtn =
            qd_export::requantize(&teacher, Recipe::parse("q4_0").unwrap(), None, vec![]).unwrap();
        let rtn_path = d.path().join("rtn.gguf");
        qd_export::write_new(&rtn, &rtn_path, false).unwrap();
        let (a, b) = (
            GgufFile::open(&rtn_path).unwrap(),
            GgufFile::open(cfg.out.join(MODEL_FILE)).unwrap(),
        );
        assert_eq!(a.tensors().len(), b.tensors().len());
        for t in a.tensors() {
            let other = b.tensor_info(&t.name).unwrap();
            assert_eq!(t.dtype, other.dtype, "{family:?} {}", t.name);
            assert_eq!(
                a.tensor_bytes(&t.name).unwrap(),
                b.tensor_bytes(&t.name).unwrap(),
                "{family:?} {}",
                t.name
            );
        }
    }
}

#[test]
fn training_lowers_every_blocks_held_out_error_and_the_file_runs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), Family::Gemma3);
    let mut reports = Vec::new();
    let s = run(&cfg, false, &AtomicBool::new(false), |ev| {
        if let Event::Block { report, .. } = ev {
            reports.push(*report);
        }
    })
    .unwrap();
    assert_eq!(reports.len(), 7);
    for (il, r) in reports.iter().enumerate() {
        assert!(
            r.val_mse_after < r.val_mse_before,
            "block {il}: {} -> {}",
            r.val_mse_before,
            r.val_mse_after
        );
    }
    assert!(s.final_val.kd.is_finite() && s.final_val.kd >= 0.0);
    assert!(s.final_val.ppl.is_finite());
    let f = GgufFile::open(cfg.out.join(MODEL_FILE)).unwrap();
    let m = qd_model::load_quantized(&f, &candle_core::Device::Cpu).unwrap();
    assert_eq!(m.blocks.len(), 7);
    assert_eq!(
        f.tensor_info("blk.3.ffn_down.weight").unwrap().dtype,
        GgmlType::Q4_0
    );
}

#[test]
fn a_stopped_run_resumes_to_the_same_file_and_refuses_damage() {
    let d = tempfile::tempdir().unwrap();
    let whole = config(d.path(), Family::Llama);
    blocks_of(&whole, false).unwrap();
    let want = std::fs::read(whole.out.join(MODEL_FILE)).unwrap();

    let mut halves = whole.clone();
    halves.out = d.path().join("halves");
    let stop = AtomicBool::new(false);
    let err = run(&halves, false, &stop, |ev| {
        if let Event::Block { .. } = ev {
            stop.store(true, Ordering::SeqCst);
        }
    })
    .expect_err("stopped after its first block");
    assert!(matches!(err, TrainError::Interrupted { .. }), "{err}");
    assert!(!halves.out.join(MODEL_FILE).exists());
    let blk0 = halves.out.join("blocks/blk-000.safetensors");
    let good = std::fs::read(&blk0).unwrap();

    // Another configuration's block is refused, naming it.
    let mut other = halves.clone();
    other.lr *= 2.0;
    let e = blocks_of(&other, true).unwrap_err().to_string();
    assert!(e.contains("blk-000.json") && e.contains("another"), "{e}");
    // So is a damaged one.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&blk0, &bad).unwrap();
    let e = blocks_of(&halves, true).unwrap_err().to_string();
    assert!(e.contains("damaged"), "{e}");
    std::fs::write(&blk0, &good).unwrap();

    blocks_of(&halves, true).unwrap();
    assert_eq!(std::fs::read(halves.out.join(MODEL_FILE)).unwrap(), want);
}

/// The compact state (8-bit moments, bf16 master weights) trains block by block too.
#[test]
fn the_compact_state_trains_blocks() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Family::Qwen2);
    cfg.optimizer = "adamw8".into();
    cfg.master_weights = "bf16".into();
    let reports = blocks_of(&cfg, false).unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|(b, a)| a < b), "{reports:?}");
    assert!(cfg.out.join(MODEL_FILE).is_file());
}

#[test]
fn bad_schedules_fail_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Family::Llama);
    cfg.schedule = "layerwise".into();
    let e = blocks_of(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("unknown schedule") && !e.contains('\n'), "{e}");
    cfg.schedule = "block-ap".into();
    cfg.qat = None;
    let e = blocks_of(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("recipe"), "{e}");
    cfg.qat = Some("q4_0".into());
    cfg.block_sequences = 0;
    let e = blocks_of(&cfg, false).unwrap_err().to_string();
    assert!(e.contains("block_sequences"), "{e}");
}
