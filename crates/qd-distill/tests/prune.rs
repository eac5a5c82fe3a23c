//! Smaller students on tiny fixtures: a pruned file computes exactly what the teacher does with
//! the dropped channels and heads masked; blocks chosen by influence keep the attention pattern
//! and the best total; a trimmed student trains against the restricted teacher and exports with
//! its own vocabulary.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use qd_distill::export::{export_checkpoint, ExportOptions};
use qd_distill::student::selection::{blocks_by_influence, heads_by_importance, top_k};
use qd_distill::student::{
    calibration_sequences, measure, pruned_file, student_from_file, vocab_map, PrunePlan,
};
use qd_distill::train::run::{run, RunConfig};
use qd_fixtures::tiny::{tiny_gguf, write_tiny, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, HParams, Linear};

const DEV: Device = Device::Cpu;
const TEXT: &str = "the thin heath in the inn at the heath, then a tea in the hat ";

fn teacher(dir: &Path, fam: Family) -> GgufFile {
    let p = write_tiny(
        dir,
        &format!("{fam:?}.gguf"),
        &TinySpec::new(fam, GgmlType::Q8_0),
    );
    GgufFile::open(p).unwrap()
}

fn calibration(t: &GgufFile) -> Vec<Vec<u32>> {
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(t).unwrap();
    let ids = tok.encode(&TEXT.repeat(8), false).unwrap();
    calibration_sequences(&ids, 32, 256).unwrap()
}

fn logits(m: &qd_distill::student::Student) -> Tensor {
    let ids = Tensor::new(&[[2u32, 17, 40, 99, 5, 230, 8, 61, 259, 3]], &DEV).unwrap();
    m.forward(&ids, None, &ForwardOpts::default())
        .unwrap()
        .logits
        .unwrap()
}

/// Zeroes the listed columns of a student's tensor (a dropped channel's or head's inputs).
fn zero_columns(store: &qd_distill::student::VarStore, name: &str, keep: &[usize]) {
    let v = store.get(name).unwrap();
    let (rows, cols) = v.dims2().unwrap();
    let mask: Vec<f32> = (0..cols)
        .map(|c| if keep.contains(&c) { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (1, cols), &DEV).unwrap();
    v.set(
        &v.as_tensor()
            .broadcast_mul(&mask)
            .unwrap()
            .reshape((rows, cols))
            .unwrap(),
    )
    .unwrap();
}

#[test]
fn a_pruned_file_computes_what_the_masked_teacher_does() {
    for fam in [Family::Gemma3, Family::Qwen2] {
        let d = tempfile::tempdir().unwrap();
        let t = teacher(d.path(), fam);
        let hp = HParams::from_gguf(&t).unwrap();
        let imp = measure(&t, &calibration(&t), &DEV, |_, _| {}).unwrap();
        assert_eq!(imp.block_influence.len(), hp.n_layer);
        assert!(
            imp.block_influence.iter().all(|b| (0.0..=2.0).contains(b)),
            "{imp:?}"
        );
        assert!(imp.ffn.iter().all(|c| c.len() == hp.n_ff));
        assert!(imp.heads.iter().all(|h| h.len() == hp.n_head));
        let blocks: Vec<usize> = (0..hp.n_layer).collect();
        let ffn: Vec<Vec<usize>> = blocks
            .iter()
            .map(|&b| top_k(&imp.ffn[b], hp.n_ff / 2))
            .collect();
        let heads: Vec<Vec<usize>> = blocks
            .iter()
            .map(|&b| heads_by_importance(&imp.heads[b], hp.n_head_kv, hp.n_head_kv).unwrap())
            .collect();
        let plan = PrunePlan {
            blocks,
            ffn: Some(ffn.clone()),
            heads: Some(heads.clone()),
        };
        let w = pruned_file(&t, &plan).unwrap();
        let pruned = GgufFile::from_bytes("pruned.gguf", w.to_bytes()).unwrap();
        let php = HParams::from_gguf(&pruned).unwrap();
        assert_eq!((php.n_ff, php.n_head), (hp.n_ff / 2, hp.n_head_kv));
        let (small, _) = student_from_file(&pruned, &[], &DEV).unwrap();
        // The teacher in f32 with the dropped channels' and heads' contributions zeroed.
        let (masked, store) = student_from_file(&t, &[], &DEV).unwrap();
        for (l, (f, h)) in ffn.iter().zip(&heads).enumerate() {
            zero_columns(&store, &format!("blk.{l}.ffn_down.weight"), f);
            let cols: Vec<usize> = h
                .iter()
                .flat_map(|&h| h * hp.value_dim..(h + 1) * hp.value_dim)
                .collect();
            zero_columns(&store, &format!("blk.{l}.attn_output.weight"), &cols);
        }
        let (a, b) = (logits(&small), logits(&masked));
        let diff = qd_fixtures::max_abs(&(&a - &b).unwrap());
        let scale = qd_fixtures::max_abs(&b);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{fam:?}: {diff} (logits up to {scale})"
        );
        // And the cut changed something: the unmasked teacher differs.
        let (full, _) = student_from_file(&t, &[], &DEV).unwrap();
        assert!(qd_fixtures::max_abs(&(&logits(&full) - &a).unwrap()) > 1e-3);
    }
}

#[test]
fn blocks_by_influence_keep_the_attention_pattern_and_the_best_total() {
    let d = tempfile::tempdir().unwrap();
    let t = teacher(d.path(), Family::Gemma3);
    let hp = HParams::from_gguf(&t).unwrap();
    // Tiny gemma3: 7 blocks, block 5 global, the others sliding-window.
    let influence = [0.9, 0.1, 0.5, 0.05, 0.3, 0.2, 0.8];
    for n in 1..=hp.n_layer {
        let got = blocks_by_influence(&influence, &hp, n);
        // Brute force over every increasing choice of n blocks.
        let mut best: Option<(f64, Vec<usize>)> = None;
        for mask in 0u32..(1 << hp.n_layer) {
            let pick: Vec<usize> = (0..hp.n_layer).filter(|b| mask >> b & 1 == 1).collect();
            if pick.len() != n
                || pick
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| hp.is_swa(i) != hp.is_swa(b))
            {
                continue;
            }
            let total: f64 = pick.iter().map(|&b| influence[b]).sum();
            if best.as_ref().is_none_or(|(s, _)| total > *s) {
                best = Some((total, pick));
            }
        }
        match (got, best) {
            (Ok(g), Some((s, _))) => {
                let total: f64 = g.iter().map(|&b| influence[b]).sum();
                assert!((total - s).abs() < 1e-12, "n={n}: {g:?} {total} vs {s}");
                assert!(g.windows(2).all(|w| w[0] < w[1]));
            }
            (Err(_), None) => {}
            (g, b) => panic!("n={n}: {g:?} vs {b:?}"),
        }
    }
    assert!(blocks_by_influence(&influence, &hp, 0).is_err());
    assert!(blocks_by_influence(&influence, &hp, 8).is_err());
}

#[test]
fn heads_keep_every_kv_group() {
    let s = [0.5, 0.9, 0.1, 0.3, 0.7, 0.2];
    assert_eq!(heads_by_importance(&s, 2, 2).unwrap(), vec![1, 4]);
    assert_eq!(heads_by_importance(&s, 2, 4).unwrap(), vec![0, 1, 3, 4]);
    assert_eq!(heads_by_importance(&s, 1, 2).unwrap(), vec![1, 4]);
    for bad in [0, 1, 3, 7] {
        let e = heads_by_importance(&s, 2, bad).unwrap_err().to_string();
        assert!(e.contains(&format!("--heads {bad}")), "{e}");
    }
    assert!(heads_by_importance(&s, 2, 1)
        .unwrap_err()
        .to_string()
        .contains("every head of a KV group"));
    assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2), vec![1, 2]);
}

#[test]
fn calibration_needs_text() {
    assert!(calibration_sequences(&[], 32, 100).is_err());
    assert!(calibration_sequences(&[5], 32, 100).is_err());
    assert_eq!(
        calibration_sequences(&[1, 2, 3, 4, 5], 2, 4).unwrap(),
        vec![vec![1, 2], vec![3, 4]]
    );
}

/// The tiny gemma3 teacher with its final norm scaled down, so that its next-token
/// distribution is spread over many tokens (the random fixture's is one-hot in f32).
fn soft_teacher(dir: &Path) -> std::path::PathBuf {
    let src = GgufFile::from_bytes(
        "tiny.gguf",
        tiny_gguf(&TinySpec::new(Family::Gemma3, GgmlType::Q8_0)),
    )
    .unwrap();
    let mut w = qd_gguf::GgufWriter::new();
    for (k, v) in src.metadata() {
        w.set(k, v.clone());
    }
    for t in src.tensors() {
        let mut data = src.tensor_bytes(&t.name).unwrap().to_vec();
        if t.name == "output_norm.weight" {
            data = data
                .chunks(4)
                .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 0.002).to_le_bytes())
                .collect();
        }
        w.add_tensor(qd_gguf::TensorData {
            name: t.name.clone(),
            shape: t.shape(),
            dtype: t.dtype,
            data,
        });
    }
    let p = dir.join("teacher.gguf");
    w.write_atomic(&p).unwrap();
    p
}

/// A trimmed student: the kept-id table from the two token lists, the teacher's head restricted
/// to it computes the same logits as the full head's kept columns, and a run trains it against
/// that distribution, reports the mass left out, and exports with the student's vocabulary.
#[test]
fn a_trimmed_student_trains_against_the_restricted_teacher() {
    let d = tempfile::tempdir().unwrap();
    let tpath = soft_teacher(d.path());
    let t = GgufFile::open(&tpath).unwrap();
    // Trimmed on other text than the training text: the student reads that in its own pieces,
    // and the teacher's top tokens include ids the student does not have.
    let trimmed = qd_export::trim_vocab::trim_on(&t, "a tea at a hat").unwrap();
    let plan = PrunePlan {
        blocks: vec![0, 1],
        ffn: None,
        heads: None,
    };
    let mut w = pruned_file(&t, &plan).unwrap();
    qd_export::trim_vocab::apply_to_writer(&mut w, &trimmed).unwrap();
    let spath = d.path().join("student.gguf");
    w.write_atomic(&spath).unwrap();
    let s = GgufFile::open(&spath).unwrap();
    let map = vocab_map(&t, &s).unwrap().expect("a trimmed vocabulary");
    assert_eq!(map.kept, trimmed.kept);
    let n_teacher = HParams::from_gguf(&t).unwrap().vocab_size;
    assert!(map.kept.len() < n_teacher);

    let tm = qd_model::load_quantized(&t, &DEV).unwrap();
    let h = Tensor::randn(0f32, 1.0, (3, 256), &DEV).unwrap();
    let full = tm.lm_head.forward(&h).unwrap();
    let ids = Tensor::new(map.kept.as_slice(), &DEV).unwrap();
    let restricted = tm
        .lm_head
        .gather_rows(&map.kept)
        .unwrap()
        .forward(&h)
        .unwrap();
    let want = full.index_select(&ids, 1).unwrap();
    assert_eq!(
        restricted.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    // The mass the restricted teacher leaves out, as evaluation reports it, against the full
    // distribution's dropped ids summed directly.
    let stok = qd_tokenizer::GgufTokenizer::from_gguf(&s).unwrap();
    let seq = stok.encode(TEXT, false).unwrap();
    let mut rt = qd_model::load_quantized(&t, &DEV).unwrap();
    let full_head = std::mem::replace(&mut rt.lm_head, tm.lm_head.gather_rows(&map.kept).unwrap());
    let (student, _) = student_from_file(&s, &[], &DEV).unwrap();
    let rep = qd_distill::train::eval::evaluate(
        &student,
        &qd_distill::train::step::TeacherSource::Model {
            model: &rt,
            top_k: None,
        },
        std::slice::from_ref(&seq),
        1.0,
        4,
        Some((&map, &full_head)),
    )
    .unwrap();
    let tx = Tensor::new(map.to_teacher(&seq[..seq.len() - 1]), &DEV)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let p = candle_nn::ops::softmax_last_dim(
        &tm.forward(&tx, None, &ForwardOpts::default())
            .unwrap()
            .logits
            .unwrap()
            .squeeze(0)
            .unwrap(),
    )
    .unwrap()
    .to_vec2::<f32>()
    .unwrap();
    let dropped: Vec<usize> = (0..n_teacher)
        .filter(|i| !map.kept.contains(&(*i as u32)))
        .collect();
    let want: f64 = p
        .iter()
        .map(|row| dropped.iter().map(|&i| row[i] as f64).sum::<f64>())
        .sum::<f64>()
        / p.len() as f64;
    assert!(
        want > 1e-3,
        "the fixture's teacher gives the dropped ids mass: {want}"
    );
    assert!(
        (rep.teacher_mass_dropped - want).abs() < 1e-4 * want.max(1e-2),
        "{} vs {want}",
        rep.teacher_mass_dropped
    );

    let corpus = d.path().join("corpus.txt");
    std::fs::write(&corpus, TEXT.repeat(40)).unwrap();
    let cfg = RunConfig {
        teacher: tpath.clone(),
        student_file: Some(spath.clone()),
        data: vec![corpus],
        out: d.path().join("run"),
        seq_len: 16,
        steps: 2,
        lr: 1e-2,
        eval_every: 0,
        eval_sequences: 2,
        val_fraction: 0.2,
        qat: Some("qat-q4".into()),
        ..Default::default()
    };
    let summary = run(&cfg, false, &AtomicBool::new(false), |_| {}).unwrap();
    assert!(summary.final_val.tokens > 0.0);
    let dropped = summary.final_val.teacher_mass_dropped;
    assert!(
        dropped > 0.0 && dropped < 1.0,
        "{dropped} {} of {n_teacher} kept {:?}",
        map.kept.len(),
        summary.final_val
    );
    assert!(summary.final_val.kd.is_finite() && summary.final_val.kd >= 0.0);
    let e = export_checkpoint(&cfg.out, &ExportOptions::default()).unwrap();
    let out = d.path().join("exported.gguf");
    qd_export::write_new(&e.exported, &out, false).unwrap();
    let o = GgufFile::open(&out).unwrap();
    assert_eq!(
        o.get_array("tokenizer.ggml.tokens").unwrap().len(),
        trimmed.kept.len()
    );
    assert_eq!(o.get_u64("gemma3.block_count").unwrap(), 2);
    qd_model::load_quantized(&o, &DEV).unwrap();

    // The student file changed since training: export refuses it in one line.
    let mut w = pruned_file(
        &t,
        &PrunePlan {
            blocks: vec![0, 2],
            ffn: None,
            heads: None,
        },
    )
    .unwrap();
    qd_export::trim_vocab::apply_to_writer(&mut w, &trimmed).unwrap();
    w.write_atomic(&spath).unwrap();
    let e = export_checkpoint(&cfg.out, &ExportOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not the student file"), "{e}");
}

#[test]
fn a_student_of_another_tokenizer_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let t = teacher(d.path(), Family::Gemma3);
    let other = GgufFile::from_bytes(
        "qwen.gguf",
        tiny_gguf(&TinySpec::new(Family::Qwen2, GgmlType::Q8_0)),
    )
    .unwrap();
    let e = vocab_map(&t, &other).unwrap_err().to_string();
    assert!(
        e.contains("is not a trimmed vocabulary of the teacher"),
        "{e}"
    );
    assert!(vocab_map(&t, &t).unwrap().is_none());
}
