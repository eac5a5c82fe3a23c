//! llama.cpp runs what we export. Exported students (tiny ones — a 3-of-7-block student and a
//! whole-model QAT of all 7 blocks — and a 6-block Gemma-derived one) are loaded by llama.cpp itself (llama-cpp-python built from PyPI by
//! `tools/llama-tools.sh --python`, cached per machine) and compared with our loader on the same file: same tokens, same top-1, log-probs
//! over llama.cpp's top-8, perplexity.
//!
//! f32 exports must agree outright: top-1 ≥ 99 % (where the top-2 margin is above op-order
//! noise), mean |Δ log p| ≤ 0.02 nats, perplexity within 0.5 %.
//!
//! Quantized exports are held to the bound the quantized teacher itself is held to
//! (`qd-model/tests/gemma_reference.rs`): identical tokenization, perplexity within 0.5 %, top-1
//! ≥ 99 % where llama.cpp's top-2 margin is ≥ 0.5 nats, mean |Δ log p| over llama.cpp's top-8
//! ≤ 0.15 and its 99th percentile ≤ 0.6. A fixed bound, independent of the student a test
//! trains and of the CPU: with 8-bit activation quantization in every matmul, llama.cpp's own
//! token-by-token and batch evaluations of one file differ by 0.03–0.07 nats on these students,
//! and by more on some CPUs (a Zen 4 measured 0.034 for llama.cpp against itself and 0.085 for
//! us against it), so a bound tied to 0.02 nats or to llama.cpp's spread fails on some machines
//! for no defect of ours.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::run;
use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python that imports llama_cpp, bound to the llama.cpp build every script uses (built on
/// first use; the test fails, never skips, when it cannot be had).
fn llama_python() -> String {
    let out = Command::new("bash")
        .arg(repo().join("tools/llama-tools.sh"))
        .arg("--python")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tools/llama-tools.sh --python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

struct Case<'a> {
    model: &'a Path,
    text: &'a Path,
    ctx: usize,
    chunks: usize,
    positions: usize,
}

fn llama_ref(c: &Case, extra: &[&str]) -> Value {
    let out = Command::new(llama_python())
        .arg(repo().join("tools/llama_ref.py"))
        .args([
            "--model",
            c.model.to_str().unwrap(),
            "--file",
            c.text.to_str().unwrap(),
        ])
        .args([
            "--ctx",
            &c.ctx.to_string(),
            "--chunks",
            &c.chunks.to_string(),
        ])
        .args(["--positions", &c.positions.to_string(), "--threads", "2"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "llama_ref.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[derive(Debug)]
struct Agreement {
    top1: f64,
    /// Top-1 agreement where llama.cpp is decisive (its top-2 margin ≥ 0.5 nats, five times the
    /// run-to-run noise of a quantized Gemma forward).
    top1_decisive: f64,
    /// Top-1 agreement where llama.cpp's top-2 margin is ≥ 0.05 nats: below that an f32 top-1
    /// is a tie at the level of op-order noise (our mean |Δ log p| on f32 files is ~0.008; the
    /// Gemma-derived student's two flips in 128 positions came at margins of 0.005 and 0.014).
    top1_clear: f64,
    mean_abs_dlogp: f64,
    p99_abs_dlogp: f64,
    ppl_rel: f64,
}

/// `others[p]` = log-probs, at position p, of the ids in `reference["top"][p]` (same order).
fn agreement(
    reference: &Value,
    others: &[Vec<f64>],
    other_top1: &[usize],
    other_ppl: f64,
) -> Agreement {
    let top = reference["top"].as_array().unwrap();
    let mut same = 0usize;
    let mut diffs = Vec::new();
    let (mut decisive, mut same_decisive) = (0usize, 0usize);
    let (mut clear, mut same_clear) = (0usize, 0usize);
    for ((t, o), &o1) in top.iter().zip(others).zip(other_top1) {
        let t = t.as_array().unwrap();
        let agree = usize::from(t[0][0].as_u64().unwrap() as usize == o1);
        same += agree;
        let margin = t[0][1].as_f64().unwrap() - t[1][1].as_f64().unwrap();
        if margin >= 0.5 {
            decisive += 1;
            same_decisive += agree;
        }
        if margin >= 0.05 {
            clear += 1;
            same_clear += agree;
        }
        for (pair, lp) in t.iter().zip(o) {
            diffs.push((pair[1].as_f64().unwrap() - lp).abs());
        }
    }
    diffs.sort_by(f64::total_cmp);
    // The teacher test's percentile (`qd-model/tests/gemma_reference.rs`), so both bounds mean
    // the same.
    let p99 = diffs[((diffs.len() as f64 * 0.99) as usize).clamp(1, diffs.len()) - 1];
    eprintln!(
        "largest |Δ log p|: {:?}",
        &diffs[diffs.len().saturating_sub(16)..]
    );
    let ppl = reference["perplexity"]["ppl"].as_f64().unwrap();
    Agreement {
        top1: same as f64 / top.len() as f64,
        top1_decisive: same_decisive as f64 / decisive.max(1) as f64,
        top1_clear: same_clear as f64 / clear.max(1) as f64,
        mean_abs_dlogp: diffs.iter().sum::<f64>() / diffs.len() as f64,
        p99_abs_dlogp: p99,
        ppl_rel: (other_ppl / ppl - 1.0).abs(),
    }
}

/// Our loader on the file, against llama.cpp's batch evaluation of it.
fn ours_vs_llama(c: &Case, reference: &Value) -> Agreement {
    let f = GgufFile::open(c.model).unwrap();
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(&f).unwrap();
    let m = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let ids = tok
        .encode(&std::fs::read_to_string(c.text).unwrap(), true)
        .unwrap();
    let want: Vec<u32> = serde_json::from_value(reference["tokens"].clone()).unwrap();
    assert_eq!(
        ids,
        want,
        "{}: tokenization differs from llama.cpp's",
        c.model.display()
    );
    let input = Tensor::new(&ids[..c.positions], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = m
        .forward(&input, None, &Default::default())
        .unwrap()
        .logits
        .unwrap();
    let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
    let mut lps = Vec::new();
    let mut top1 = Vec::new();
    for (row, t) in rows.iter().zip(reference["top"].as_array().unwrap()) {
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
        lps.push(
            t.as_array()
                .unwrap()
                .iter()
                .map(|p| row[p[0].as_u64().unwrap() as usize] as f64 - lse)
                .collect(),
        );
        top1.push(
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0,
        );
    }
    let params = qd_eval::PerplexityParams {
        ctx: c.ctx,
        chunks: Some(c.chunks),
        bos: qd_eval::chunk_bos(tok.add_bos, tok.bos, tok.add_eos).unwrap(),
        graph: false,
    };
    let ppl = qd_eval::perplexity(&m, &ids, &params, |_, _, _| {}).unwrap();
    assert_eq!(
        ppl.n_scored as u64,
        reference["perplexity"]["n_scored"].as_u64().unwrap()
    );
    agreement(reference, &lps, &top1, ppl.ppl)
}

/// The quantized bound: mean |Δ log p| over llama.cpp's top-8 and its 99th percentile.
#[derive(Debug, Clone, Copy)]
struct QuantBound {
    mean: f64,
    p99: f64,
}

/// The quantized teacher's bound (`qd-model/tests/gemma_reference.rs`).
const TEACHER_BOUND: QuantBound = QuantBound {
    mean: 0.15,
    p99: 0.6,
};

impl QuantBound {
    /// The teacher's bound, or the teacher's own agreement on the same text, positions and
    /// machine where that is looser: how far apart two runtimes' 8-bit activation roundings
    /// drift depends on the text (on the first 6,000 characters of pydoc.txt the teacher
    /// itself measures about 0.15 / 0.88, against 0.114 / 0.459 on its reference prompts).
    fn at_least_the_teachers(teacher: &Agreement) -> Self {
        QuantBound {
            mean: TEACHER_BOUND.mean.max(teacher.mean_abs_dlogp),
            p99: TEACHER_BOUND.p99.max(teacher.p99_abs_dlogp),
        }
    }
}

/// `ppl_bound`: 0.5 %, except for the tiny random students whose perplexity is huge (≈140 nats
/// per token), where 1 % is still a relative NLL difference under 1e-4.
fn check(c: &Case, what: &str, quantized: Option<QuantBound>, ppl_bound: f64) -> Agreement {
    let reference = llama_ref(c, &[]);
    let ours = ours_vs_llama(c, &reference);
    eprintln!("{what}: ours vs llama.cpp {ours:?}");
    if let Some(bound) = quantized {
        // Top-1 where llama.cpp's own choice is stable under op-order noise.
        assert!(
            ours.top1_decisive >= 0.99,
            "{what}: top-1 agreement where the margin is >= 0.5 nats {:.3}",
            ours.top1_decisive
        );
        assert!(
            ours.mean_abs_dlogp <= bound.mean,
            "{what}: mean |Δ log p| {:.4} (bound {:.4})",
            ours.mean_abs_dlogp,
            bound.mean
        );
        assert!(
            ours.p99_abs_dlogp <= bound.p99,
            "{what}: 99th percentile |Δ log p| {:.4} (bound {:.4})",
            ours.p99_abs_dlogp,
            bound.p99
        );
    } else {
        // f32: wherever the top-1 is not a tie below op-order noise, and flips stay rare
        // overall (at most 1 position in 20).
        assert!(
            ours.top1_clear >= 0.99,
            "{what}: top-1 agreement {:.3}",
            ours.top1_clear
        );
        assert!(
            ours.top1 >= 0.95,
            "{what}: top-1 agreement over all positions {:.3}",
            ours.top1
        );
        assert!(
            ours.mean_abs_dlogp <= 0.02,
            "{what}: mean |Δ log p| {:.4}",
            ours.mean_abs_dlogp
        );
    }
    assert!(
        ours.ppl_rel <= ppl_bound,
        "{what}: perplexity off by {:.4}",
        ours.ppl_rel
    );
    ours
}

fn train_and_export(
    teacher: &str,
    data: &Path,
    out: &Path,
    extra: &[&str],
    recipe: &str,
) -> (PathBuf, PathBuf) {
    let run_dir = out.join("run");
    let o = run(&[
        &[
            "train",
            "--teacher",
            teacher,
            "--data",
            data.to_str().unwrap(),
        ],
        &[
            "--out",
            run_dir.to_str().unwrap(),
            "--qat",
            recipe,
            "--qat-embeddings",
        ][..],
        extra,
    ]
    .concat());
    assert!(
        o.status.success(),
        "train: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let export = |recipe: &str, name: &str| {
        let gguf = out.join(name);
        let o = run(&[
            "export-gguf",
            "--checkpoint",
            run_dir.to_str().unwrap(),
            "--recipe",
            recipe,
            "--out",
            gguf.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "export: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        gguf
    };
    (
        export(recipe, "student.gguf"),
        export("f32", "student-f32.gguf"),
    )
}

/// A tiny Gemma-family teacher with block weights of type `ty`, and a text to train and score.
fn tiny_teacher_and_text(dir: &Path, ty: GgmlType) -> (PathBuf, PathBuf) {
    let teacher = write_tiny(dir, "teacher.gguf", &TinySpec::new(Family::Gemma3, ty));
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the thin heath in the inn at the heath, a thin inn. ".repeat(30),
    )
    .unwrap();
    (teacher, text)
}

#[test]
fn exported_tiny_student_runs_in_llama_cpp() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, text) = tiny_teacher_and_text(d.path(), GgmlType::Q8_0);
    let extra = [
        "--blocks",
        "0,1,2",
        "--steps",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "0",
        "-t",
        "2",
    ];
    let (q, f) = train_and_export(teacher.to_str().unwrap(), &text, d.path(), &extra, "q4_0");
    for (model, what, quantized) in [
        (&f, "tiny f32 student", None),
        (&q, "tiny q4_0 student", Some(TEACHER_BOUND)),
    ] {
        let c = Case {
            model,
            text: &text,
            ctx: 32,
            chunks: 4,
            positions: 32,
        };
        check(&c, what, quantized, 0.01);
    }
}

/// Whole-model QAT (every block of the teacher, snapped onto the Q4_0 grid, a few steps) on a
/// tiny fixture: the exported file runs in llama.cpp within the quantized bound.
#[test]
fn exported_whole_model_qat_runs_in_llama_cpp() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, text) = tiny_teacher_and_text(d.path(), GgmlType::Q5_0);
    let extra = [
        "--blocks",
        "0,1,2,3,4,5,6",
        "--steps",
        "4",
        "--lr",
        "1e-3",
        "--seq-len",
        "16",
        "--eval-every",
        "0",
        "-t",
        "2",
    ];
    let (q, _) = train_and_export(teacher.to_str().unwrap(), &text, d.path(), &extra, "q4_0");
    let c = Case {
        model: &q,
        text: &text,
        ctx: 32,
        chunks: 4,
        positions: 32,
    };
    check(
        &c,
        "tiny whole-model q4_0 QAT student",
        Some(TEACHER_BOUND),
        0.01,
    );
}

/// Whole-model QAT of the real teacher (all 18 blocks from the dequantized teacher, snapped
/// onto the qat-q4 grid, one step): the f32 file within the strict bounds, the qat-q4 file
/// within the teacher's bound — the teacher measured on the same text in the same run.
#[test]
fn exported_gemma_student_runs_in_llama_cpp() {
    let d = tempfile::tempdir().unwrap();
    let teacher = qd_fixtures::teacher_path();
    let corpus =
        std::fs::read_to_string(qd_fixtures::data_dir().join("corpora/pydoc.txt")).unwrap();
    let cut = corpus
        .char_indices()
        .nth(6000)
        .map_or(corpus.len(), |(i, _)| i);
    let text = d.path().join("pydoc-head.txt");
    std::fs::write(&text, &corpus[..cut]).unwrap();
    let extra = [
        "--blocks",
        "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
        "--steps",
        "1",
        "--lr",
        "1e-4",
        "--seq-len",
        "32",
        "--eval-every",
        "0",
        "-t",
        "2",
    ];
    let (q, f) = train_and_export(teacher.to_str().unwrap(), &text, d.path(), &extra, "qat-q4");
    let case = |model| Case {
        model,
        text: &text,
        ctx: 128,
        chunks: 4,
        positions: 128,
    };
    // The teacher here only sets the floor (its own bound is checked on its reference prompts
    // and 40 chunks of 512 in qd-model's and qd-eval's tests): on 4 chunks of 128 tokens of
    // this text it measures ~0.15 / 0.88 and a perplexity 1.7 % off.
    let anything = QuantBound {
        mean: f64::INFINITY,
        p99: f64::INFINITY,
    };
    let t = check(
        &case(&teacher),
        "teacher (Q4_K_M)",
        Some(anything),
        f64::INFINITY,
    );
    check(&case(&f), "Gemma whole-model f32 student", None, 0.005);
    check(
        &case(&q),
        "Gemma whole-model qat-q4 student",
        Some(QuantBound::at_least_the_teachers(&t)),
        t.ppl_rel.max(0.005),
    );
}

/// A qwen2-family model whose tokenizer adds no BOS (`tokenizer.ggml.add_bos_token = false`,
/// as Qwen2.5's): llama-perplexity leaves each chunk's first token alone there, and so must we.
/// The same evaluation with the first token replaced by BOS must miss llama.cpp's perplexity,
/// or this test could not see the bug it guards against.
#[test]
fn qwen2_without_bos_matches_llama_cpp_perplexity() {
    let d = tempfile::tempdir().unwrap();
    let model = write_tiny(
        d.path(),
        "qwen2.gguf",
        &TinySpec::new(Family::Qwen2, GgmlType::Q4_0),
    );
    let text = d.path().join("text.txt");
    std::fs::write(
        &text,
        "the thin heath in the inn at the heath, a thin inn. ".repeat(30),
    )
    .unwrap();
    let c = Case {
        model: &model,
        text: &text,
        ctx: 32,
        chunks: 8,
        positions: 32,
    };
    let reference = llama_ref(&c, &[]);
    assert_eq!(reference["add_bos"], Value::Bool(false));
    let f = GgufFile::open(&model).unwrap();
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(&f).unwrap();
    let ids = tok
        .encode(&std::fs::read_to_string(&text).unwrap(), true)
        .unwrap();
    assert_ne!(Some(ids[0]), tok.bos, "no BOS added");
    check(&c, "tiny qwen2 (no BOS)", Some(TEACHER_BOUND), 0.005);

    let m = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let params = qd_eval::PerplexityParams {
        ctx: c.ctx,
        chunks: Some(c.chunks),
        bos: tok.bos,
        graph: false,
    };
    let forced = qd_eval::perplexity(&m, &ids, &params, |_, _, _| {}).unwrap();
    let want = reference["perplexity"]["ppl"].as_f64().unwrap();
    eprintln!("with BOS forced in: {} vs llama.cpp {want}", forced.ppl);
    assert!(
        (forced.ppl / want - 1.0).abs() > 0.005,
        "forcing BOS into every chunk does not move the perplexity: the test cannot tell"
    );
}

/// `export-gguf --trim-vocab`: llama.cpp loads the trimmed file and tokenizes held-out text
/// exactly as our tokenizer does on it, and our trimmed ids on the training text are the
/// untrimmed ones mapped through the kept table — for the teacher's SentencePiece vocabulary
/// (trimmed on the first 200 kB of pydoc.txt, checked on the last 100 kB) and for byte-level BPE
/// with merges (the tiny qwen2 fixture).
#[test]
fn trimmed_vocabulary_tokenizes_as_llama_cpp() {
    let d = tempfile::tempdir().unwrap();
    let pydoc = std::fs::read_to_string(repo().join("tests/data/corpora/pydoc.txt")).unwrap();
    let cut = |at: usize| pydoc[..at].rfind('\n').unwrap() + 1;
    let teacher = qd_fixtures::teacher_path();
    let qwen2 = write_tiny(
        d.path(),
        "qwen2.gguf",
        &TinySpec::new(Family::Qwen2, GgmlType::Q8_0),
    );
    let cases = [
        (
            teacher,
            "q4_k_m",
            pydoc[..cut(200_000)].to_string(),
            pydoc[cut(pydoc.len() - 100_000)..].to_string(),
        ),
        (
            qwen2,
            "q8_0",
            "the thin heath in the inn at the heath, a thin inn. ".repeat(20),
            "the heath at the inn, then a thin tea. ".repeat(5),
        ),
    ];
    for (i, (model, recipe, train, held_out)) in cases.iter().enumerate() {
        let (train_p, held_p) = (
            d.path().join(format!("train{i}.txt")),
            d.path().join(format!("held{i}.txt")),
        );
        std::fs::write(&train_p, train).unwrap();
        std::fs::write(&held_p, held_out).unwrap();
        let out = d.path().join(format!("trimmed{i}.gguf"));
        let o = run(&[
            "export-gguf",
            "--model",
            model.to_str().unwrap(),
            "--recipe",
            recipe,
            "--trim-vocab",
            train_p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let full = GgufFile::open(model).unwrap();
        let small = GgufFile::open(&out).unwrap();
        let full_tok = qd_tokenizer::GgufTokenizer::from_gguf(&full).unwrap();
        let small_tok = qd_tokenizer::GgufTokenizer::from_gguf(&small).unwrap();
        assert!(
            small_tok.vocab_size < full_tok.vocab_size,
            "{model:?}: nothing trimmed"
        );
        // llama.cpp on held-out text.
        let c = Case {
            model: &out,
            text: &held_p,
            ctx: 0,
            chunks: 0,
            positions: 0,
        };
        let reference = llama_ref(&c, &[]);
        let theirs: Vec<u32> = reference["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = small_tok.encode(held_out, true).unwrap();
        assert!(
            theirs == ours,
            "{model:?}: llama.cpp tokenizes the trimmed file differently"
        );
        // The training text: the untrimmed ids, renumbered.
        let words: Vec<String> = (0..small_tok.vocab_size as u32)
            .map(|id| small_tok.token_text(id).unwrap())
            .collect();
        let full_ids = full_tok.encode(train, false).unwrap();
        let small_ids = small_tok.encode(train, false).unwrap();
        let renamed: Vec<String> = full_ids
            .iter()
            .map(|&id| full_tok.token_text(id).unwrap())
            .collect();
        let small_words: Vec<&String> = small_ids.iter().map(|&id| &words[id as usize]).collect();
        assert!(
            renamed.iter().eq(small_words.iter().copied()),
            "{model:?}: the training text's pieces changed"
        );
        eprintln!(
            "{}: {} of {} tokens kept; held-out text {} bytes: {} tokens trimmed, {} untrimmed",
            model.display(),
            small_tok.vocab_size,
            full_tok.vocab_size,
            held_out.len(),
            ours.len(),
            full_tok.encode(held_out, true).unwrap().len()
        );
    }
}
