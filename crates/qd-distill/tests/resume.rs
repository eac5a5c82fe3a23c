//! AdamW against a hand-computed step, checkpoints written atomically and pruned, and a run
//! interrupted by a checkpoint that resumes bit-identically to one that never stopped.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use qd_distill::checkpoint::{checkpoint_dir, list, prune, Checkpoint};
use qd_distill::loss::Divergence;
use qd_distill::student::{student_from_teacher, VarStore};
use qd_distill::train::adamw::{clip_grad_norm, AdamW, AdamWConfig};
use qd_distill::train::chunked::LossConfig;
use qd_distill::train::step::batch_loss_and_grads;
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};

const DEV: Device = Device::Cpu;

#[test]
fn adamw_first_step_and_decay_rules() {
    let w = Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0]], &DEV).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.5f32], &DEV).unwrap()).unwrap();
    let params = BTreeMap::from([("w".to_string(), w.clone()), ("b".to_string(), b.clone())]);
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = AdamW::new(params.clone(), cfg).unwrap();
    let loss = ((w.as_tensor().sum_all().unwrap() * 3.0).unwrap()
        + b.as_tensor().sum_all().unwrap())
    .unwrap();
    let mut g = loss.backward().unwrap();
    let norm = clip_grad_norm(&mut g, &params, 100.0).unwrap();
    assert!((norm - (9.0f64 + 9.0 + 1.0).sqrt()).abs() < 1e-6);
    opt.step(&g, 0.01).unwrap();
    // First Adam step: m̂/√v̂ = sign(g) (up to eps); decay only on the 2-D weight.
    let w1 = w.as_tensor().to_vec2::<f32>().unwrap();
    assert!((w1[0][0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6);
    assert!((w1[0][1] - (-2.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6);
    assert!((b.as_tensor().to_vec1::<f32>().unwrap()[0] - (0.5 - 0.01)).abs() < 1e-6);
    assert!(opt.decays("w") && !opt.decays("b"));
    // Clipping scales all gradients by max/norm.
    let mut g = loss.backward().unwrap();
    clip_grad_norm(&mut g, &params, 1.0).unwrap();
    let gw = g.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!((gw[0][0] - 3.0 / 19f32.sqrt()).abs() < 1e-6);
}

fn teacher() -> GgufFile {
    GgufFile::from_bytes(
        "tiny.gguf",
        tiny_gguf(&TinySpec::new(Family::Llama, GgmlType::Q8_0)),
    )
    .unwrap()
}

fn opt_for(store: &VarStore) -> AdamW {
    AdamW::new(store.vars.clone(), AdamWConfig::default()).unwrap()
}

fn data() -> Vec<Vec<u32>> {
    (0..6)
        .map(|k| (0..12u32).map(|i| (i * 29 + k * 7 + 3) % 260).collect())
        .collect()
}

fn run(
    student: &qd_distill::student::Student,
    store: &VarStore,
    opt: &mut AdamW,
    teacher: &qd_model::QModel,
    steps: std::ops::Range<usize>,
) {
    let cfg = LossConfig {
        alpha: 0.5,
        temperature: 4.0,
        divergence: Divergence::Forward,
        chunk: 4,
        fused: true,
        checkpoint_blocks: false,
        bf16_grads: false,
    };
    let d = data();
    for s in steps {
        let (_, mut g) = batch_loss_and_grads(
            student,
            &store.all_vars(),
            &qd_distill::train::step::TeacherSource::Model {
                model: teacher,
                top_k: None,
            },
            &[qd_distill::data::Example::plain(d[s].clone())],
            &[],
            None,
            &cfg,
            None,
        )
        .unwrap();
        clip_grad_norm(&mut g, &store.vars, 1.0).unwrap();
        opt.step(&g, 1e-3).unwrap();
    }
}

fn save(store: &VarStore, opt: &AdamW, dir: &std::path::Path) {
    let mut moments = BTreeMap::new();
    for (k, m) in &opt.m {
        moments.insert(format!("m.{k}"), m.clone());
        moments.insert(format!("v.{k}"), opt.v[k].clone());
    }
    Checkpoint {
        weights: store.snapshot(),
        optimizer: moments,
        state: serde_json::json!({ "step": opt.step }),
    }
    .save(dir)
    .unwrap();
}

#[test]
fn resume_is_bit_identical() {
    let f = teacher();
    let t = qd_model::load_quantized(&f, &DEV).unwrap();
    let (sa, store_a) = student_from_teacher(&f, &[1], &DEV).unwrap();
    let mut oa = opt_for(&store_a);
    run(&sa, &store_a, &mut oa, &t, 0..6);

    let root = tempfile::tempdir().unwrap();
    let (sb, store_b) = student_from_teacher(&f, &[1], &DEV).unwrap();
    let mut ob = opt_for(&store_b);
    run(&sb, &store_b, &mut ob, &t, 0..3);
    let dir = checkpoint_dir(root.path(), 3);
    save(&store_b, &ob, &dir);
    drop((sb, store_b, ob));

    let ck = Checkpoint::load(&dir, &DEV).unwrap();
    let (sc, store_c) = student_from_teacher(&f, &[1], &DEV).unwrap();
    store_c.load_weights(&ck.weights).unwrap();
    let mut oc = opt_for(&store_c);
    for k in store_c.vars.keys() {
        oc.m.insert(k.clone(), ck.optimizer[&format!("m.{k}")].clone());
        oc.v.insert(k.clone(), ck.optimizer[&format!("v.{k}")].clone());
    }
    oc.step = ck.state["step"].as_u64().unwrap();
    run(&sc, &store_c, &mut oc, &t, 3..6);

    for (k, a) in store_a.snapshot() {
        let c = &store_c.snapshot()[&k];
        let (a, c) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs after resume"
        );
    }
}

#[test]
fn checkpoints_are_atomic_pruned_and_checked() {
    let f = teacher();
    let (_, store) = student_from_teacher(&f, &[0], &DEV).unwrap();
    let opt = opt_for(&store);
    let root = tempfile::tempdir().unwrap();
    for step in [10, 20, 30] {
        save(&store, &opt, &checkpoint_dir(root.path(), step));
    }
    prune(root.path(), 2).unwrap();
    let left: Vec<String> = list(root.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["step-00000020", "step-00000030"]);
    // No temp directories left behind.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);

    // A write that fails (here: its temp directory cannot be created) leaves the previous
    // checkpoint at the target untouched and nothing else behind.
    let target = checkpoint_dir(root.path(), 30);
    let before = std::fs::read(target.join("model.safetensors")).unwrap();
    let blocker = root
        .path()
        .join(format!(".step-00000030.tmp.{}", std::process::id()));
    std::fs::write(&blocker, b"in the way").unwrap();
    let (_, changed) = student_from_teacher(&f, &[1], &DEV).unwrap();
    let r = Checkpoint {
        weights: changed.snapshot(),
        optimizer: BTreeMap::new(),
        state: serde_json::json!({}),
    }
    .save(&target);
    assert!(r.is_err());
    assert_eq!(
        std::fs::read(target.join("model.safetensors")).unwrap(),
        before
    );
    std::fs::remove_file(&blocker).unwrap();
    assert!(Checkpoint::load(&target, &DEV).is_ok());

    // Weights of another shape are refused before anything changes.
    let (_, other) = student_from_teacher(&f, &[0, 1], &DEV).unwrap();
    let ck = Checkpoint::load(&target, &DEV).unwrap();
    assert!(other.load_weights(&ck.weights).is_err());
    let missing = root.path().join("nope");
    assert!(Checkpoint::load(&missing, &DEV)
        .err()
        .unwrap()
        .to_string()
        .contains("nope"));
}

/// The in-place AdamW update (CPU) gives the tensor path's bits, step after step, for decayed,
/// undecayed and relative (learned-step) parameters.
#[test]
fn in_place_adamw_equals_the_tensor_path() {
    let make = || {
        let w = Var::from_tensor(
            &Tensor::new(&[[0.3f32, -1.2, 0.0, 2.5], [1e-3, -0.0, 7.0, -3.0]], &DEV).unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32, -0.25], &DEV).unwrap()).unwrap();
        let s = Var::from_tensor(&Tensor::new(&[0.01f32, 0.02], &DEV).unwrap()).unwrap();
        BTreeMap::from([
            ("w".to_string(), w),
            ("b".to_string(), b),
            ("s.step".to_string(), s),
        ])
    };
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let (pa, pb) = (make(), make());
    let mut a = AdamW::new(pa.clone(), cfg).unwrap();
    let mut b = AdamW::new(pb.clone(), cfg).unwrap();
    a.relative.insert("s.step".into(), 3.0);
    b.relative.insert("s.step".into(), 3.0);
    for step in 0..5 {
        let loss = |p: &BTreeMap<String, Var>| {
            let w = p["w"].as_tensor();
            let x = (w.sqr().unwrap().sum_all().unwrap() * (1.0 + step as f64)).unwrap();
            let y = (p["b"].as_tensor().sum_all().unwrap()
                * p["s.step"].as_tensor().sum_all().unwrap())
            .unwrap();
            (x + y).unwrap()
        };
        let ga = loss(&pa).backward().unwrap();
        let gb = loss(&pb).backward().unwrap();
        a.step(&ga, 1e-2).unwrap();
        b.step_with_tensors(&gb, 1e-2).unwrap();
        for k in pa.keys() {
            let x: Vec<f32> = pa[k].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = pb[k].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()),
                "step {step} {k}: {x:?} vs {y:?}"
            );
            let (ma, mb) = (a.m[k].flatten_all().unwrap(), b.m[k].flatten_all().unwrap());
            assert_eq!(ma.to_vec1::<f32>().unwrap(), mb.to_vec1::<f32>().unwrap());
        }
    }
}

/// 8-bit moments: on a least-squares problem they reach the f32 optimizer's loss within a few
/// per cent, their checkpoint tensors restore the state exactly, and a damaged one is refused.
#[test]
fn adamw8_tracks_adamw_and_restores_exactly() {
    use qd_distill::train::adamw::MomentFormat;
    let target: Vec<f32> = (0..1000)
        .map(|i| ((i as f32) * 0.7).sin() * (1.0 + (i % 7) as f32))
        .collect();
    let t = Tensor::from_vec(target, (10, 100), &DEV).unwrap();
    let run = |format: MomentFormat| {
        let w = Var::from_tensor(&Tensor::zeros((10, 100), candle_core::DType::F32, &DEV).unwrap())
            .unwrap();
        let params = BTreeMap::from([("w".to_string(), w.clone())]);
        let mut opt = AdamW::with_format(params, AdamWConfig::default(), format).unwrap();
        let mut last = 0.0;
        for _ in 0..300 {
            let loss = (w.as_tensor() - &t)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            opt.step(&loss.backward().unwrap(), 0.05).unwrap();
        }
        (last, opt)
    };
    let (l32, _) = run(MomentFormat::Adamw);
    let (l8, opt8) = run(MomentFormat::Adamw8);
    assert!(l32 < 0.05, "f32 AdamW should converge: {l32}");
    assert!(l8 < l32 * 1.5 + 1e-3, "8-bit moments {l8} vs f32 {l32}");
    let saved = opt8.state_tensors().unwrap();
    assert!(saved.contains_key("m8.w"));
    let mut again = AdamW::with_format(
        opt8.params.clone(),
        AdamWConfig::default(),
        MomentFormat::Adamw8,
    )
    .unwrap();
    again.restore("w", |n| saved.get(n).cloned()).unwrap();
    let bytes = |o: &AdamW| o.m8["w"].state.to_vec1::<u8>().unwrap();
    assert_eq!(bytes(&again), bytes(&opt8));
    // Saved and loaded through a checkpoint file (a u8 tensor among the f32 ones).
    let d = tempfile::tempdir().unwrap();
    Checkpoint {
        weights: BTreeMap::from([("w".to_string(), opt8.params["w"].as_tensor().clone())]),
        optimizer: saved.clone(),
        state: serde_json::json!({ "step": 300 }),
    }
    .save(&d.path().join("ck"))
    .unwrap();
    let ck = Checkpoint::load(&d.path().join("ck"), &DEV).unwrap();
    again
        .restore("w", |n| ck.optimizer.get(n).cloned())
        .unwrap();
    assert_eq!(bytes(&again), bytes(&opt8));
    let mut damaged = saved.clone();
    damaged.insert("m8.w".into(), Tensor::new(&[0.5f32; 1000], &DEV).unwrap());
    let e = again.restore("w", |n| damaged.get(n).cloned()).unwrap_err();
    assert!(e.contains("damaged"), "{e}");
}
