//! QAT → export: the exported file holds exactly the weights the QAT forward pass used, and our
//! loader's logits on it match the QAT student's.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use qd_distill::checkpoint::{list, Checkpoint, CheckpointError};
use qd_distill::export::{export_checkpoint, ExportOptions};
use qd_distill::student::{student_from_teacher_with, QatPlan};
use qd_distill::train::run::{run, RunConfig};
use qd_export::imatrix::{Entry, Imatrix};
use qd_export::Recipe;
use qd_fixtures::tiny::{write_run_inputs, write_tiny, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEV: Device = Device::Cpu;

fn config(dir: &Path, qat: Option<&str>, embeddings: bool) -> RunConfig {
    let text = "the thin heath in the inn at the heath ";
    let (teacher, corpus) = write_run_inputs(dir, Family::Gemma3, text, 40);
    RunConfig {
        teacher,
        data: vec![corpus],
        out: dir.join("run"),
        student_blocks: vec![0, 1],
        seq_len: 16,
        steps: 2,
        lr: 1e-2,
        eval_every: 0,
        eval_sequences: 1,
        qat: qat.map(String::from),
        qat_embeddings: embeddings,
        ..Default::default()
    }
}

fn train(cfg: &RunConfig) {
    run(cfg, false, &AtomicBool::new(false), |_| {}).unwrap();
}

fn logits(m: &Transformer<impl qd_model::Linear, impl qd_model::Embedding>) -> Tensor {
    let ids = Tensor::new(&[[2u32, 17, 40, 99, 5, 230, 8, 61]], &DEV).unwrap();
    m.forward(&ids, None, &ForwardOpts::default())
        .unwrap()
        .logits
        .unwrap()
}

/// An importance matrix for every 2-D weight of the student of `cfg` (seeded, spread over two
/// decades so that the weighted grid differs from the reference one), written beside it.
fn write_imatrix(cfg: &RunConfig, dir: &Path) -> (PathBuf, Imatrix) {
    let tf = GgufFile::open(&cfg.teacher).unwrap();
    let (_, store) = student_from_teacher_with(&tf, &cfg.student_blocks, &[], &DEV).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut im = Imatrix {
        chunk_count: 1,
        chunk_size: 16,
        ..Default::default()
    };
    for (name, dims) in store.shapes() {
        if dims.len() == 2 && name.starts_with("blk.") {
            let sums = (0..dims[1])
                .map(|_| 10f32.powf(rng.random_range(0.0..2.0)) * 16.0)
                .collect();
            im.entries.insert(
                name,
                Entry {
                    sums,
                    counts: vec![16.0],
                },
            );
        }
    }
    let path = dir.join("tiny.imatrix.gguf");
    im.write(&path).unwrap();
    (path, im)
}

/// The QAT plan of a 2-block tiny student for `recipe`, on `imatrix`'s grid when given — as
/// training built it.
fn plan_of(
    student: &qd_distill::student::Student,
    store: &qd_distill::student::VarStore,
    recipe: &str,
    embeddings: bool,
    imatrix: Option<&Imatrix>,
) -> QatPlan {
    let plan = QatPlan::new(
        Recipe::parse(recipe).unwrap(),
        store,
        &qd_export::ModelInfo {
            n_layer: 2,
            n_gqa: student.hp.n_head / student.hp.n_head_kv,
            imatrix: imatrix.is_some(),
        },
        embeddings,
    );
    match imatrix {
        Some(im) => plan.with_imatrix(im),
        None => plan,
    }
}

fn check_recipe(recipe: &str, embeddings: bool) {
    check(recipe, embeddings, false)
}

fn check(recipe: &str, embeddings: bool, with_imatrix: bool) {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some(recipe), embeddings);
    let imatrix = with_imatrix.then(|| write_imatrix(&cfg, d.path()));
    cfg.imatrix = imatrix.as_ref().map(|(p, _)| p.clone());
    train(&cfg);
    let e = export_checkpoint(&cfg.out, &ExportOptions::default()).unwrap();
    assert!(e.matches_training);
    let path = d.path().join("student.gguf");
    qd_export::write_new(&e.exported, &path, false).unwrap();
    let out = GgufFile::open(&path).unwrap();
    assert_eq!(out.get_u64("gemma3.block_count").unwrap(), 2);
    assert_eq!(out.get_str("qat_distill.recipe").unwrap(), recipe);
    assert_eq!(out.get_u64("qat_distill.steps").unwrap(), 2);
    assert_eq!(
        out.get("quantize.imatrix.entries_count").is_some(),
        with_imatrix,
        "{recipe}: the imatrix keys"
    );

    // The QAT student exactly as training built it, from the checkpoint.
    let tf = GgufFile::open(&cfg.teacher).unwrap();
    let frozen = ["token_embd.weight", "output.weight"];
    let (student, store) = student_from_teacher_with(&tf, &[0, 1], &frozen, &DEV).unwrap();
    let ck = list(&cfg.out).pop().unwrap();
    store
        .load_weights(&Checkpoint::load_weights(&ck, &DEV).unwrap())
        .unwrap();
    let plan = plan_of(
        &student,
        &store,
        recipe,
        embeddings,
        imatrix.as_ref().map(|(_, im)| im),
    );
    let qstore = plan.apply(&store).unwrap();
    let mut checked = 0;
    let mut weighted_differs = 0;
    for info in out.tensors() {
        let n = &info.name;
        let seen = match qstore.fake_quant.get(n) {
            Some(op) => op.apply(&qstore.tensor(n).unwrap()).unwrap(),
            None => qstore.tensor(n).unwrap(),
        };
        let got = out.dequantize(n, &DEV).unwrap();
        let a: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = seen.flatten_all().unwrap().to_vec1().unwrap();
        let planned = plan.types.contains_key(n);
        if planned || info.dtype == GgmlType::F32 {
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{recipe}: {n} ({:?}) differs from the weight QAT trained with",
                info.dtype
            );
            checked += 1;
        } else {
            // Only the embedding / LM head escapes the plan, and only without qat_embeddings.
            assert!(
                !embeddings && n == "token_embd.weight",
                "{recipe}: {n} not planned"
            );
        }
        if planned {
            assert_eq!(info.dtype, plan.types[n], "{recipe}: {n}");
        }
        // The test must be able to tell the weighted grid from the reference one.
        if let Some(op) = qstore.fake_quant.get(n).filter(|op| op.weights.is_some()) {
            let plain = qd_quant::FakeQuant::new(op.ty)
                .apply(&qstore.tensor(n).unwrap())
                .unwrap();
            let p: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
            weighted_differs += usize::from(p != a);
        }
    }
    if with_imatrix {
        assert!(
            weighted_differs > 0,
            "{recipe}: no tensor's weighted grid differs from the reference one"
        );
    }
    assert_eq!(
        checked,
        out.tensors().len() - usize::from(!embeddings),
        "{recipe}"
    );
    if !embeddings {
        return;
    }
    // Logits: our f32 loader on the file = the QAT student; the quantized loader (activations
    // quantized to Q8 as llama.cpp does) stays close.
    let qat_student = Transformer::load(student.hp.clone(), &qstore, &DEV).unwrap();
    let want = logits(&qat_student);
    let scale = qd_fixtures::max_abs(&want);
    let dense = logits(&qd_model::load_dequantized(&out, &DEV).unwrap());
    let dq = qd_fixtures::max_abs(&(&dense - &want).unwrap());
    assert!(
        dq <= 1e-5 * scale,
        "{recipe}: dequantized loader differs by {dq} (scale {scale})"
    );
    let quant = logits(&qd_model::load_quantized(&out, &DEV).unwrap());
    let dq = qd_fixtures::max_abs(&(&quant - &want).unwrap());
    assert!(
        dq <= 0.02 * scale,
        "{recipe}: quantized loader differs by {dq} (scale {scale})"
    );
}

#[test]
fn exported_tensors_are_the_weights_qat_trained_with() {
    for r in [
        "q4_0", "q4_k_s", "q5_0", "q8_0", "q4_k_m", "qat-q4", "q2_k", "q3_k_m",
    ] {
        check_recipe(r, true);
    }
    check_recipe("q4_0", false);
}

#[test]
fn qat_on_an_imatrix_grid_exports_that_grid() {
    for r in ["q4_0", "q4_k_m", "q3_k_m"] {
        check(r, true, true);
    }
}

#[test]
fn an_imatrix_run_exports_only_with_its_own_imatrix() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some("q4_0"), true);
    let (path, mut im) = write_imatrix(&cfg, d.path());
    cfg.imatrix = Some(path.clone());
    train(&cfg);
    let msg = |r: Result<_, CheckpointError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("should fail"),
    };
    // Another imatrix (one value changed) is refused, naming the file.
    im.entries.values_mut().next().unwrap().sums[0] *= 2.0;
    let other = d.path().join("other.imatrix.gguf");
    im.write(&other).unwrap();
    let with_other = ExportOptions {
        imatrix: Some(other.clone()),
        ..Default::default()
    };
    let m = msg(export_checkpoint(&cfg.out, &with_other));
    assert!(m.contains("is not the importance matrix"), "{m}");
    // Moved: the same bytes elsewhere are accepted.
    let moved = d.path().join("moved.imatrix.gguf");
    std::fs::rename(&path, &moved).unwrap();
    let m = msg(export_checkpoint(&cfg.out, &ExportOptions::default()));
    assert!(m.contains("tiny.imatrix.gguf"), "{m}");
    let found = ExportOptions {
        imatrix: Some(moved),
        ..Default::default()
    };
    export_checkpoint(&cfg.out, &found).unwrap();
    // Post-training quantization of the trained weights may use any imatrix.
    let ptq = ExportOptions {
        imatrix: Some(other),
        from_f32: true,
        recipe: Some(Recipe::parse("q4_k_m").unwrap()),
        ..Default::default()
    };
    assert!(!export_checkpoint(&cfg.out, &ptq).unwrap().matches_training);
    // Resuming with another imatrix is refused; an imatrix without a recipe too.
    let mut resumed = cfg.clone();
    resumed.imatrix = ptq.imatrix.clone();
    resumed.steps = 3;
    let run_err =
        |c: &RunConfig, resume: bool| match run(c, resume, &AtomicBool::new(false), |_| {}) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("should fail"),
        };
    let m = run_err(&resumed, true);
    assert!(m.contains("another importance matrix"), "{m}");
    let mut no_recipe = cfg.clone();
    no_recipe.qat = None;
    let m = run_err(&no_recipe, false);
    assert!(m.contains("give a recipe too"), "{m}");
    let mut q8 = cfg.clone();
    q8.qat = Some("q8_0".into());
    let m = run_err(&q8, false);
    assert!(m.contains("drop --imatrix"), "{m}");
}

#[test]
fn export_refuses_what_it_cannot_honour() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), None, false);
    train(&cfg);
    let msg = |r: Result<_, CheckpointError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("should fail"),
    };
    let plain = ExportOptions::default();
    assert!(msg(export_checkpoint(&cfg.out, &plain)).contains("trained without QAT"));
    let q4 = ExportOptions {
        recipe: Some(Recipe::parse("q4_0").unwrap()),
        ..Default::default()
    };
    assert!(msg(export_checkpoint(&cfg.out, &q4)).contains("--from-f32"));
    let ptq = ExportOptions {
        from_f32: true,
        ..q4.clone()
    };
    let e = export_checkpoint(&cfg.out, &ptq).unwrap();
    assert!(!e.matches_training);
    // f32 export needs no permission: nothing is quantized.
    let f32 = ExportOptions {
        recipe: Some(Recipe::F32),
        ..Default::default()
    };
    export_checkpoint(&cfg.out, &f32).unwrap();
    // Another teacher than the one trained against.
    let other = write_tiny(
        d.path(),
        "other.gguf",
        &TinySpec::new(Family::Gemma3, GgmlType::F32),
    );
    let moved = ExportOptions {
        teacher: Some(other),
        ..ptq
    };
    assert!(msg(export_checkpoint(&cfg.out, &moved)).contains("is not the teacher"));
    // A directory that is not a checkpoint, and a checkpoint that lost its config.
    assert!(msg(export_checkpoint(d.path(), &f32)).contains("holds no checkpoint"));
    let ck = list(&cfg.out).pop().unwrap();
    std::fs::remove_file(ck.join("state.json")).unwrap();
    assert!(msg(export_checkpoint(&ck, &f32)).contains("not a checkpoint"));
}

#[test]
fn delayed_qat_switches_on_at_its_step() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some("q4_0"), false);
    cfg.qat_start = 1;
    cfg.steps = 2;
    train(&cfg);
    // Resuming with another recipe is refused.
    let mut other = cfg.clone();
    other.qat = Some("q8_0".into());
    other.steps = 3;
    let err = run(&other, true, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("QAT recipe"), "{err}");
}

#[test]
fn config_students_train_export_and_reload() {
    use qd_distill::student::StudentConfig;
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some("q8_0"), false);
    cfg.student = Some(StudentConfig {
        n_layer: 3,
        n_ff: Some(256),
        n_head: Some(2),
        n_head_kv: Some(1),
        head_dim: None,
        init_std: 0.02,
        seed: 7,
    });
    train(&cfg);
    let f32 = ExportOptions {
        recipe: Some(Recipe::F32),
        ..Default::default()
    };
    let e = export_checkpoint(&cfg.out, &f32).unwrap();
    let path = d.path().join("s.gguf");
    qd_export::write_new(&e.exported, &path, false).unwrap();
    let out = GgufFile::open(&path).unwrap();
    let hp = qd_model::HParams::from_gguf(&out).unwrap();
    assert_eq!(
        (hp.n_layer, hp.n_ff, hp.n_head, hp.n_head_kv),
        (3, 256, 2, 1)
    );
    // The file's model is the trained one.
    let tf = GgufFile::open(&cfg.teacher).unwrap();
    let frozen = ["token_embd.weight", "output.weight"];
    let (student, store) =
        qd_distill::student::build_student(&tf, &[], cfg.student.as_ref(), &frozen, &DEV).unwrap();
    let ck = list(&cfg.out).pop().unwrap();
    store
        .load_weights(&Checkpoint::load_weights(&ck, &DEV).unwrap())
        .unwrap();
    let want = logits(&student);
    let got = logits(&qd_model::load_dequantized(&out, &DEV).unwrap());
    let dq = qd_fixtures::max_abs(&(&got - &want).unwrap());
    assert!(dq <= 1e-5 * qd_fixtures::max_abs(&want), "{dq}");
    // Heads that do not divide are refused before any work.
    let mut bad = cfg.clone();
    bad.out = d.path().join("bad");
    bad.student.as_mut().unwrap().n_head_kv = Some(3);
    let err = run(&bad, false, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a multiple"), "{err}");
}

/// A checkpoint whose run state lost a key (here `step`, renamed) is refused by resume and by
/// export with the file named — not silently resumed from step 0: by its checksum, and by the
/// typed state where the checksum was rewritten to match.
#[test]
fn damaged_run_state_fails_loudly() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), Some("q4_0"), false);
    train(&cfg);
    let ck = list(&cfg.out).pop().unwrap();
    let path = ck.join("state.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"step\":"));
    let renamed = text.replace("\"step\":", "\"steps_done\":");
    std::fs::write(&path, &renamed).unwrap();
    let mut more = cfg.clone();
    more.steps = 3;
    // The checkpoint's SHA256SUMS sees the edit first.
    let err = run(&more, true, &AtomicBool::new(false), |_| {})
        .expect_err("resume from a damaged state must fail");
    assert!(err.to_string().contains("state.json: damaged"), "{err}");
    // A state whose sum matches but whose key is gone (a writer's bug, not the disk's) is
    // refused by the typed state.
    use sha2::{Digest, Sha256};
    let sums_path = ck.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path).unwrap();
    let old_sum = format!("{:x}", Sha256::digest(text.as_bytes()));
    let new_sum = format!("{:x}", Sha256::digest(renamed.as_bytes()));
    assert!(sums.contains(&old_sum));
    std::fs::write(&sums_path, sums.replace(&old_sum, &new_sum)).unwrap();
    let err = run(&more, true, &AtomicBool::new(false), |_| {})
        .expect_err("resume from a damaged state must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("damaged run state") && msg.contains("step"),
        "{msg}"
    );
    let err = export_checkpoint(&cfg.out, &ExportOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("damaged run state"), "{err}");
}

/// The `-pure` recipes quantize the embedding too, so training must see it through its grid.
#[test]
fn pure_recipe_needs_qat_embeddings() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), Some("q4_0-pure"), false);
    let err = run(&cfg, false, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("--qat-embeddings"), "{err}");
    check_recipe("q4_0-pure", true);
}

/// Learned step sizes: every exported block is the learned fp16 step and the codes it implies,
/// so the file decodes to exactly the weights the QAT forward pass used; the steps did move
/// off the quantizer's own grid; the file's logits are the QAT student's. With and without an
/// imatrix (whose weighted grid is then the start).
#[test]
fn learned_steps_export_exactly_the_trained_grid() {
    for with_imatrix in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path(), Some("q4_0"), true);
        let imatrix = with_imatrix.then(|| write_imatrix(&cfg, d.path()));
        cfg.imatrix = imatrix.as_ref().map(|(p, _)| p.clone());
        cfg.learned_steps = true;
        cfg.step_lr = 0.05;
        cfg.steps = 3;
        train(&cfg);
        let e = export_checkpoint(&cfg.out, &ExportOptions::default()).unwrap();
        let path = d.path().join("student.gguf");
        qd_export::write_new(&e.exported, &path, false).unwrap();
        let out = GgufFile::open(&path).unwrap();

        let tf = GgufFile::open(&cfg.teacher).unwrap();
        let frozen = ["token_embd.weight", "output.weight"];
        let (student, mut store) = student_from_teacher_with(&tf, &[0, 1], &frozen, &DEV).unwrap();
        let weights = Checkpoint::load_weights(&list(&cfg.out).pop().unwrap(), &DEV).unwrap();
        let n_steps = store.adopt_learned_steps(&weights).unwrap();
        store.load_weights(&weights).unwrap();
        let plan = plan_of(
            &student,
            &store,
            "q4_0",
            true,
            imatrix.as_ref().map(|(_, im)| im),
        );
        assert_eq!(n_steps, plan.learnable_steps(&store).count());
        assert!(n_steps > 0);
        let (mut checked, mut moved, mut blocks) = (0, 0, 0);
        for (name, ty) in plan.learnable_steps(&store) {
            let w = store.tensor(name).unwrap();
            let steps = store.vars[&qd_distill::student::step_name(name)].as_tensor();
            let seen = qd_quant::LearnedStep { ty }.apply(&w, steps).unwrap();
            let got = out.dequantize(name, &DEV).unwrap();
            let a: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = seen.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name} differs from the weight QAT trained with"
            );
            assert_eq!(out.tensor_info(name).unwrap().dtype, GgmlType::Q4_0);
            checked += 1;
            // The file's steps against the grid's own for the same weights.
            let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            let n = w.dims()[1];
            let own = match plan.weights.get(name) {
                Some(iw) => qd_quant::quantize_weighted(ty, &values, n, iw),
                None => qd_quant::quantize(ty, &values, n),
            }
            .unwrap();
            let own = qd_quant::learned_step::steps_of(ty, &own).unwrap();
            let file =
                qd_quant::learned_step::steps_of(ty, out.tensor_bytes(name).unwrap()).unwrap();
            moved += own.iter().zip(&file).filter(|(a, b)| a != b).count();
            blocks += own.len();
        }
        assert_eq!(checked, n_steps);
        assert!(
            moved * 4 > blocks,
            "only {moved} of {blocks} block steps moved off the grid"
        );
        // The file's logits are the QAT student's (f32 loader, activations unquantized).
        let qstore = plan.apply(&store).unwrap();
        let qat_student = Transformer::load(student.hp.clone(), &qstore, &DEV).unwrap();
        let want = logits(&qat_student);
        let scale = qd_fixtures::max_abs(&want);
        let dense = logits(&qd_model::load_dequantized(&out, &DEV).unwrap());
        let dq = qd_fixtures::max_abs(&(&dense - &want).unwrap());
        assert!(dq <= 1e-5 * scale, "logits differ by {dq} (scale {scale})");
    }
}

/// A learned-step run refuses a recipe with no single step per block, and resuming it without
/// the setting (or the other way round) is refused in one line.
#[test]
fn learned_steps_refuse_what_they_cannot_do() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some("q4_k_s"), false);
    cfg.learned_steps = true;
    let err = run(&cfg, false, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("no step to learn"), "{err}");
    cfg.qat = None;
    let err = run(&cfg, false, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("give a recipe"), "{err}");
    cfg.qat = Some("q4_0".into());
    cfg.steps = 1;
    train(&cfg);
    cfg.learned_steps = false;
    cfg.steps = 2;
    let err = run(&cfg, true, &AtomicBool::new(false), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("step-size"), "{err}");
}

/// A learned-step run stopped and resumed ends bit-identical to the uninterrupted one: the
/// steps and their moments travel in the checkpoint like the weights.
#[test]
fn learned_steps_resume_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), Some("q4_0"), false);
    cfg.learned_steps = true;
    cfg.step_lr = 0.05;
    cfg.steps = 4;
    cfg.checkpoint_every = 2;
    train(&cfg);
    let whole = Checkpoint::load_weights(&list(&cfg.out).pop().unwrap(), &DEV).unwrap();
    let mut halves = cfg.clone();
    halves.out = d.path().join("halves");
    halves.steps = 2;
    train(&halves);
    halves.steps = 4;
    run(&halves, true, &AtomicBool::new(false), |_| {}).unwrap();
    let resumed = Checkpoint::load_weights(&list(&halves.out).pop().unwrap(), &DEV).unwrap();
    assert!(whole
        .keys()
        .any(|k| k.ends_with(qd_distill::student::STEP_SUFFIX)));
    assert_eq!(whole.len(), resumed.len());
    for (k, a) in &whole {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = resumed[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k}"
        );
    }
}
