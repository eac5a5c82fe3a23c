//! Updating each block in backward (`update_in_backward`) gives the stored-gradient step's bits:
//! the same gradient norm, the same weights after every step (f32 AdamW and 8-bit moments with
//! bf16 gradients, clipping on and off, learned steps, a trained embedding), the weights
//! untouched by the measuring backward; a run with it logs the same losses and ends with the
//! same weights as one that keeps the whole graph (8-bit moments and bf16 master weights, f32
//! gradients both); the combinations it cannot do are refused in one line.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor, Var};
use qd_distill::checkpoint::{list, Checkpoint};
use qd_distill::loss::Divergence;
use qd_distill::train::adamw::{clip_owned_grads, AdamW, AdamWConfig, MomentFormat};
use qd_distill::train::chunked::LossConfig;
use qd_distill::train::run::{run, Event, RunConfig};
use qd_distill::train::step::{batch_loss_and_grads, TeacherSource};
use qd_distill::train::update_in_backward::measure;
use qd_fixtures::tiny::{write_run_inputs, Family};

mod common;

const DEV: Device = Device::Cpu;

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn snapshot(vars: &BTreeMap<String, Var>) -> BTreeMap<String, Vec<u32>> {
    vars.iter()
        .map(|(k, v)| (k.clone(), bits(v.as_tensor())))
        .collect()
}

/// Three steps of the same student, once with stored gradients (clipped, then one update) and
/// once measured and updated in backward, compared bit for bit after each.
fn check(fam: Family, format: MomentFormat, max_norm: f64, learned: bool) {
    // Two students from the same file: one per way of stepping.
    let build = || {
        let (_, qat, store) = common::tiny_qat(fam, learned);
        let mut opt = AdamW::with_format(
            store.vars.clone(),
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
            format,
        )
        .unwrap();
        opt.relative = store
            .vars
            .keys()
            .filter(|k| k.ends_with(qd_distill::student::STEP_SUFFIX))
            .map(|k| (k.clone(), 0.5))
            .collect();
        (qat, store, opt)
    };
    let (teacher, _, _) = common::tiny_qat(fam, learned);
    let (qa, sa, mut oa) = build();
    let (qb, sb, mut ob) = build();
    assert!(
        sa.vars.contains_key("token_embd.weight"),
        "the embedding is trained here"
    );
    let (pa, pb) = (sa.all_vars(), sb.all_vars());
    let cfg = LossConfig {
        alpha: 0.7,
        temperature: 2.0,
        divergence: Divergence::Forward,
        chunk: 5,
        fused: true,
        checkpoint_blocks: true,
        bf16_grads: format == MomentFormat::Adamw8,
    };
    let source = TeacherSource::Model {
        model: &teacher,
        top_k: None,
    };
    let mut clipped = 0;
    for step in 0..3u32 {
        let ex = qd_distill::data::Example::plain(
            (0..14u32).map(|i| (i * 31 + step * 11 + 5) % 260).collect(),
        );
        let lr = 2e-2;
        let (parts, mut grads) = batch_loss_and_grads(
            &qa,
            &pa,
            &source,
            std::slice::from_ref(&ex),
            &[],
            None,
            &cfg,
            None,
        )
        .unwrap();
        let norm = clip_owned_grads(&mut grads, &sa.vars, max_norm).unwrap();
        oa.step(&grads, lr).unwrap();
        clipped += usize::from(max_norm > 0.0 && norm > max_norm);

        let before = snapshot(&sb.vars);
        let m = measure(&qb, &pb, &sb.vars, &source, &ex, None, &cfg, None).unwrap();
        assert_eq!(
            before,
            snapshot(&sb.vars),
            "{fam:?}: measuring changed a weight"
        );
        assert_eq!(
            m.parts.total.to_bits(),
            parts.total.to_bits(),
            "{fam:?}: loss"
        );
        assert_eq!(
            m.grad_norm.to_bits(),
            norm.to_bits(),
            "{fam:?}: gradient norm"
        );
        m.update(&qb, &pb, &sb.vars, &mut ob, lr, max_norm).unwrap();
        let (a, b) = (snapshot(&sa.vars), snapshot(&sb.vars));
        for (k, wa) in &a {
            assert!(
                *wa == b[k],
                "{fam:?} {format:?} clip {max_norm}: {k} differs after step {step}"
            );
        }
        assert_ne!(before, b, "{fam:?}: the update moved nothing");
    }
    assert_eq!(
        clipped > 0,
        max_norm > 0.0,
        "{fam:?}: clipping should act exactly when asked"
    );
}

#[test]
fn updating_in_backward_gives_the_stored_steps_bits() {
    check(Family::Llama, MomentFormat::Adamw, 0.0, false);
    check(Family::Llama, MomentFormat::Adamw, 1e-3, false);
    check(Family::Gemma3, MomentFormat::Adamw8, 1e-3, false);
    check(Family::Qwen2, MomentFormat::Adamw8, 0.0, true);
    check(Family::Qwen2, MomentFormat::Adamw, 1e-3, true);
}

fn config(dir: &std::path::Path) -> RunConfig {
    let text = "the thin heath in the inn at the heath ";
    let (teacher, corpus) = write_run_inputs(dir, Family::Llama, text, 40);
    RunConfig {
        teacher,
        data: vec![corpus],
        out: dir.join("stored"),
        student_blocks: vec![0, 1],
        seq_len: 16,
        steps: 4,
        lr: 1e-2,
        clip: 0.05,
        eval_every: 0,
        eval_sequences: 1,
        checkpoint_every: 4,
        qat: Some("q4_0".into()),
        optimizer: "adamw8".into(),
        master_weights: "bf16".into(),
        checkpoint_blocks: true,
        ..Default::default()
    }
}

/// Each step's loss and gradient norm, as bits.
type Steps = Vec<(u64, u64)>;

/// Losses and gradient norms of a run's steps, and its last checkpoint's weights.
fn trained(cfg: &RunConfig) -> (Steps, BTreeMap<String, Vec<u32>>) {
    let mut steps = Vec::new();
    run(cfg, false, &AtomicBool::new(false), |ev| {
        if let Event::Step {
            loss, grad_norm, ..
        } = ev
        {
            steps.push((loss.to_bits(), grad_norm.to_bits()));
        }
    })
    .unwrap();
    let w = Checkpoint::load_weights(&list(&cfg.out).pop().unwrap(), &DEV).unwrap();
    (steps, w.iter().map(|(k, t)| (k.clone(), bits(t))).collect())
}

#[test]
fn a_run_updating_in_backward_trains_to_the_same_bits() {
    let d = tempfile::tempdir().unwrap();
    // The whole graph kept (f32 gradients, also with 8-bit moments), against blocks
    // recomputed and updated in backward (one block's f32 gradients at a time).
    let stored = RunConfig {
        checkpoint_blocks: false,
        ..config(d.path())
    };
    let mut fused = stored.clone();
    fused.out = d.path().join("fused");
    fused.checkpoint_blocks = true;
    fused.update_in_backward = true;
    let (a, b) = (trained(&stored), trained(&fused));
    assert_eq!(a.0.len(), 4);
    assert!(
        a.0.iter().any(|(_, g)| f64::from_bits(*g) > stored.clip),
        "clipping never acted"
    );
    assert_eq!(a.0, b.0, "losses and gradient norms");
    assert_eq!(a.1, b.1, "weights");
}

#[test]
fn what_updating_in_backward_cannot_do_is_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let base = RunConfig {
        update_in_backward: true,
        ..config(d.path())
    };
    let refused = |c: RunConfig, want: &str| {
        let e = run(&c, false, &AtomicBool::new(false), |_| {})
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{e}");
    };
    refused(
        RunConfig {
            checkpoint_blocks: false,
            ..base.clone()
        },
        "--checkpoint-blocks",
    );
    refused(
        RunConfig {
            batch_size: 2,
            ..base.clone()
        },
        "batch_size and grad_accum 1",
    );
    refused(
        RunConfig {
            grad_accum: 3,
            ..base.clone()
        },
        "batch_size and grad_accum 1",
    );
    refused(
        RunConfig {
            schedule: "block-ap".into(),
            master_weights: "f32".into(),
            ..base
        },
        "block-ap already holds",
    );
}
