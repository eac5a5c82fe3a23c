//! bf16 master weights (`master_weights = "bf16"`, with 8-bit moments): updates far below one
//! bf16 step still move a weight (stochastic rounding), a QAT run with them trains, keeps its
//! block matrices in bf16, resumes bit for bit and exports a file whose blocks are its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor, Var};
use qd_distill::checkpoint::{list, Checkpoint};
use qd_distill::export::{export_checkpoint, ExportOptions};
use qd_distill::train::adamw::{AdamW, AdamWConfig, MomentFormat};
use qd_distill::train::run::{run, RunConfig};
use qd_fixtures::tiny::{write_run_inputs, Family};

const DEV: Device = Device::Cpu;

/// A tensor's values in f32, flattened.
fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// 400 steps of 1e-3 from 1.0 towards 0.5: each update is an eighth of a bf16 step at 1.0
/// (2⁻⁷), which round-to-nearest would drop every time; stochastically rounded, the weights
/// travel as far as the f32 ones (about 0.32), to within a few per cent.
#[test]
fn updates_below_one_bf16_step_still_move_the_weights() {
    let run = |dtype: DType| {
        let w = Var::from_tensor(&Tensor::ones((4, 256), dtype, &DEV).unwrap()).unwrap();
        let params = BTreeMap::from([("w".to_string(), w.clone())]);
        let mut opt =
            AdamW::with_format(params, AdamWConfig::default(), MomentFormat::Adamw8).unwrap();
        for _ in 0..400 {
            let loss = (w.as_tensor().to_dtype(DType::F32).unwrap() - 0.5)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
        }
        assert_eq!(w.dtype(), dtype);
        let v = values(w.as_tensor());
        v.iter().map(|&x| 1.0 - x as f64).sum::<f64>() / v.len() as f64
    };
    let (f32_moved, bf16_moved) = (run(DType::F32), run(DType::BF16));
    assert!(f32_moved > 0.25, "f32 moved {f32_moved}");
    assert!(
        (bf16_moved - f32_moved).abs() < 0.03 * f32_moved,
        "bf16 moved {bf16_moved}, f32 {f32_moved}"
    );
}

fn config(dir: &Path) -> RunConfig {
    let text = "the thin heath in the inn at the heath ";
    let (teacher, corpus) = write_run_inputs(dir, Family::Llama, text, 40);
    RunConfig {
        teacher,
        data: vec![corpus],
        out: dir.join("run"),
        student_blocks: vec![0, 1],
        seq_len: 16,
        steps: 4,
        lr: 1e-2,
        eval_every: 0,
        eval_sequences: 1,
        checkpoint_every: 2,
        qat: Some("q4_0".into()),
        optimizer: "adamw8".into(),
        master_weights: "bf16".into(),
        ..Default::default()
    }
}

#[test]
fn a_bf16_master_run_trains_resumes_bit_identically_and_exports() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let mut losses = Vec::new();
    run(&cfg, false, &AtomicBool::new(false), |ev| {
        if let qd_distill::train::run::Event::Step { loss, .. } = ev {
            losses.push(*loss);
        }
    })
    .unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let whole = Checkpoint::load_weights(&list(&cfg.out).pop().unwrap(), &DEV).unwrap();
    let matrix = &whole["blk.0.ffn_up.weight"];
    assert_eq!(matrix.dtype(), DType::BF16);
    assert_eq!(whole["blk.0.ffn_norm.weight"].dtype(), DType::F32);

    let mut halves = cfg.clone();
    halves.out = d.path().join("halves");
    halves.steps = 2;
    run(&halves, false, &AtomicBool::new(false), |_| {}).unwrap();
    halves.steps = 4;
    run(&halves, true, &AtomicBool::new(false), |_| {}).unwrap();
    let resumed = Checkpoint::load_weights(&list(&halves.out).pop().unwrap(), &DEV).unwrap();
    assert_eq!(whole.len(), resumed.len());
    for (k, a) in &whole {
        let bits = |t: &Tensor| -> Vec<u32> { values(t).iter().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(a), bits(&resumed[k]), "{k}");
    }

    // The export quantizes the bf16 weights' own values.
    let e = export_checkpoint(&cfg.out, &ExportOptions::default()).unwrap();
    let path = d.path().join("s.gguf");
    qd_export::write_new(&e.exported, &path, false).unwrap();
    let f = qd_gguf::GgufFile::open(&path).unwrap();
    let w = values(matrix);
    let want = qd_quant::quantize(qd_gguf::GgmlType::Q4_0, &w, matrix.dims()[1]).unwrap();
    assert_eq!(
        f.tensor_bytes("blk.0.ffn_up.weight").unwrap(),
        want.as_slice()
    );

    // bf16 master weights need the 8-bit optimizer; an unknown kind is named.
    let mut bad = cfg.clone();
    bad.optimizer = "adamw".into();
    let e = run(&bad, false, &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(e.to_string().contains("adamw8"), "{e}");
    bad.master_weights = "fp8".into();
    let e = run(&bad, false, &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(e.to_string().contains("fp8"), "{e}");
}

/// A Q5_0 teacher's weights requantized to Q4_0 sit on the grid's rounding boundaries (every odd
/// Q5_0 code halfway between two Q4_0 codes): bf16 master weights are snapped in f32 before they
/// are rounded, so their QAT starts where the f32 weights' does — the same first-step loss to
/// within the bf16 rounding of the grid values (rounded first, the ties break elsewhere).
#[test]
fn bf16_master_weights_start_where_f32_ones_do() {
    use qd_fixtures::tiny::{write_tiny, TinySpec};
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path());
    cfg.teacher = write_tiny(
        d.path(),
        "q5.gguf",
        &TinySpec::new(Family::Llama, qd_gguf::GgmlType::Q5_0),
    );
    cfg.steps = 1;
    let first = |master: &str| {
        let mut c = cfg.clone();
        c.master_weights = master.into();
        c.out = d.path().join(master);
        let mut loss = f64::NAN;
        run(&c, false, &AtomicBool::new(false), |ev| {
            if let qd_distill::train::run::Event::Step { loss: l, .. } = ev {
                loss = *l;
            }
        })
        .unwrap();
        loss
    };
    let (f32_loss, bf16_loss) = (first("f32"), first("bf16"));
    assert!(
        ((bf16_loss - f32_loss) / f32_loss).abs() < 1e-3,
        "f32 {f32_loss}, bf16 {bf16_loss}"
    );
}
