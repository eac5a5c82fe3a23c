//! The command line on tiny generated models: output shapes, JSON schemas, one-line errors.

use std::path::{Path, PathBuf};
mod common;

use common::{one_line_error, run};

use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
use qd_gguf::GgmlType;

fn ok_json(args: &[&str]) -> serde_json::Value {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn model(dir: &Path, fam: Family) -> PathBuf {
    write_tiny(
        dir,
        &format!("{fam:?}.gguf"),
        &TinySpec::new(fam, GgmlType::Q4_0),
    )
}

#[test]
fn inspect_reports_architecture_and_sizes() {
    let d = tempfile::tempdir().unwrap();
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let m = model(d.path(), fam);
        let v = ok_json(&["inspect", m.to_str().unwrap(), "--json"]);
        assert_eq!(v["architecture"], fam.arch());
        assert_eq!(v["hparams"]["n_embd"], 256);
        assert!(v["params"].as_u64().unwrap() > 0);
        assert!(v["tensors_per_type"]["Q4_0"]["count"].as_u64().unwrap() > 0);
        let swa = if fam == Family::Gemma3 { 6 } else { 0 };
        assert_eq!(v["hparams"]["swa_layers"], swa);
        let text = run(&["inspect", m.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&text.stdout).contains(fam.arch()));
    }
}

#[test]
fn tokenize_eval_and_generate() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path(), Family::Gemma3);
    let m = m.to_str().unwrap();
    let v = ok_json(&["tokenize", "--model", m, "--text", " the hat", "--json"]);
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids[0], 2, "BOS first");
    assert_eq!(v["n_tokens"].as_u64().unwrap() as usize, ids.len());

    let v = ok_json(&[
        "eval", "top-k", "--model", m, "--text", "the hat", "--k", "4", "--json",
    ]);
    let n = v["tokens"].as_array().unwrap().len();
    let pos = v["positions"].as_array().unwrap();
    assert_eq!(pos.len(), n);
    for p in pos {
        assert_eq!(p["ids"].as_array().unwrap().len(), 4);
        assert_eq!(p["logprobs"].as_array().unwrap().len(), 4);
        assert!(p["logsumexp"].is_number());
    }

    let corpus = d.path().join("c.txt");
    std::fs::write(&corpus, "the thin hat in the inn at the heath. ".repeat(20)).unwrap();
    let v = ok_json(&[
        "-t",
        "1",
        "eval",
        "perplexity",
        "--model",
        m,
        "--file",
        corpus.to_str().unwrap(),
        "--ctx",
        "32",
        "--chunks",
        "3",
        "--json",
    ]);
    assert!(v["ppl"].as_f64().unwrap() > 1.0);
    assert!(v["ppl_stderr"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["n_scored"], 3 * 15);
    assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0);
    let text = run(&[
        "eval",
        "perplexity",
        "--model",
        m,
        "--file",
        corpus.to_str().unwrap(),
        "--ctx",
        "32",
        "--chunks",
        "2",
    ]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("Final estimate: PPL = "));

    let o = run(&[
        "generate", "--model", m, "--prompt", "the", "-n", "5", "--seed", "1", "--temp", "0.8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("the"));
}

#[test]
fn bad_input_is_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let e = one_line_error(&["inspect", "/nonexistent/x.gguf"]);
    assert!(e.contains("/nonexistent/x.gguf"), "{e}");
    let junk = d.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf at all").unwrap();
    let e = one_line_error(&["inspect", junk.to_str().unwrap()]);
    assert!(e.contains("not a GGUF file"), "{e}");
    let m = model(d.path(), Family::Llama);
    let e = one_line_error(&["tokenize", "--model", m.to_str().unwrap()]);
    assert!(e.contains("--text <TEXT>|--file <FILE>"), "{e}");
    let short = d.path().join("short.txt");
    std::fs::write(&short, "the").unwrap();
    let e = one_line_error(&[
        "eval",
        "perplexity",
        "--model",
        m.to_str().unwrap(),
        "--file",
        short.to_str().unwrap(),
    ]);
    assert!(e.contains("at least 2×ctx"), "{e}");
    let e = one_line_error(&[
        "eval",
        "perplexity",
        "--model",
        m.to_str().unwrap(),
        "--file",
        "/nonexistent.txt",
    ]);
    assert!(e.contains("/nonexistent.txt"), "{e}");
    // Vocabulary trimming: a missing or empty corpus, or a checkpoint source, is one line and
    // writes nothing.
    let out = d.path().join("trimmed.gguf");
    let trim = |corpus: &str| {
        one_line_error(&[
            "export-gguf",
            "--model",
            m.to_str().unwrap(),
            "--recipe",
            "q8_0",
            "--trim-vocab",
            corpus,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let e = trim("/nonexistent-corpus.txt");
    assert!(e.contains("/nonexistent-corpus.txt"), "{e}");
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, " \n").unwrap();
    let e = trim(empty.to_str().unwrap());
    assert!(e.contains("empty"), "{e}");
    let e = one_line_error(&[
        "export-gguf",
        "--checkpoint",
        d.path().to_str().unwrap(),
        "--trim-vocab",
        short.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("--trim-vocab works with --model only"), "{e}");
    assert!(!out.exists(), "nothing written");
}

/// `student`: a pruned, trimmed student is written and runs in `eval` and `bench`; bad targets
/// and corpora are one line each and write nothing.
#[test]
fn student_is_written_or_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path(), Family::Gemma3);
    let m = m.to_str().unwrap();
    let calib = d.path().join("calib.txt");
    std::fs::write(&calib, "the thin hat in the inn at the heath. ".repeat(30)).unwrap();
    let calib = calib.to_str().unwrap();
    let out = d.path().join("student.gguf");
    let o = out.to_str().unwrap();
    let student = |extra: &[&str]| {
        let mut args = vec!["student", "--model", m, "--out", o];
        args.extend_from_slice(extra);
        one_line_error(&args)
    };
    let cases: [(&[&str], &str); 9] = [
        (&[], "nothing to make smaller"),
        (&["--ffn", "64"], "give --calibration"),
        (
            &["--ffn", "64", "--calibration", "/nonexistent-calib.txt"],
            "/nonexistent-calib.txt",
        ),
        (
            &["--ffn", "100000", "--calibration", calib],
            "choose 1 to 512",
        ),
        (&["--layers", "99", "--calibration", calib], "choose 1 to 7"),
        (
            &["--heads", "1", "--calibration", calib],
            "every head of a KV group",
        ),
        (
            &["--heads", "8", "--calibration", calib],
            "more than the teacher's 4 heads",
        ),
        (&["--blocks", "0,9"], "teacher block 9 does not exist"),
        (
            &["--trim-vocab", "/nonexistent-corpus.txt"],
            "/nonexistent-corpus.txt",
        ),
    ];
    for (args, want) in cases {
        let e = student(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let e = student(&["--ffn", "64", "--calibration", empty.to_str().unwrap()]);
    assert!(e.contains("is empty"), "{e}");
    assert!(!out.exists(), "nothing written");

    let r = run(&[
        "student",
        "--model",
        m,
        "--out",
        o,
        "--calibration",
        calib,
        "--layers",
        "6",
        "--ffn",
        "256",
        "--heads",
        "2",
        "--trim-vocab",
        calib,
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v = ok_json(&["inspect", o, "--json"]);
    let hp = &v["hparams"];
    assert_eq!(
        (
            hp["n_layer"].as_u64(),
            hp["n_ff"].as_u64(),
            hp["n_head"].as_u64()
        ),
        (Some(6), Some(256), Some(2)),
        "{v}"
    );
    assert!(hp["vocab_size"].as_u64().unwrap() < 275, "{v}");
    let v = ok_json(&[
        "-t",
        "1",
        "eval",
        "perplexity",
        "--model",
        o,
        "--file",
        calib,
        "--ctx",
        "32",
        "--chunks",
        "2",
        "--json",
    ]);
    assert!(v["bpb"].as_f64().unwrap() > 0.0, "{v}");
    let b = run(&[
        "-t",
        "1",
        "bench",
        "tokens-per-second",
        "-m",
        o,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let e = student(&["--layers", "2", "--calibration", calib]);
    assert!(e.contains("already exists"), "{e}");

    // train: a student file whose vocabulary is another tokenizer's is refused before training.
    let qwen = model(d.path(), Family::Qwen2);
    let e = one_line_error(&[
        "train",
        "--teacher",
        m,
        "--student-file",
        qwen.to_str().unwrap(),
        "--data",
        calib,
        "--out",
        d.path().join("run").to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(
        e.contains("is not a trimmed vocabulary of the teacher"),
        "{e}"
    );
}

/// `synth --shape`: a small shape file makes a model `inspect` reads back with the shape's
/// numbers; a shape whose KV heads do not divide its heads fails in one line naming the key.
#[test]
fn synth_from_a_shape_file() {
    let d = tempfile::tempdir().unwrap();
    let shape = d.path().join("small.toml");
    let text = "name = \"small\"\narch = \"llama\"\nhidden_size = 128\n\
        intermediate_size = 256\nnum_hidden_layers = 2\nnum_attention_heads = 4\n\
        num_key_value_heads = 2\nvocab_size = 800\nmax_position_embeddings = 256\n\
        rope_theta = 10000.0\nrms_norm_eps = 1e-5\ntie_word_embeddings = false\n\
        tokenizer = \"llama\"\n";
    std::fs::write(&shape, text).unwrap();
    let out = d.path().join("small.gguf");
    let o = run(&[
        "synth",
        "--shape",
        shape.to_str().unwrap(),
        "--quant",
        "q8_0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = ok_json(&["inspect", out.to_str().unwrap(), "--json"]);
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["hparams"]["n_embd"], 128);
    assert_eq!(v["hparams"]["n_head_kv"], 2);
    assert!(v["tensors_per_type"]["Q8_0"]["count"].as_u64().unwrap() > 0);

    std::fs::write(
        &shape,
        text.replace("num_key_value_heads = 2", "num_key_value_heads = 3"),
    )
    .unwrap();
    let e = one_line_error(&[
        "synth",
        "--shape",
        shape.to_str().unwrap(),
        "--out",
        d.path().join("bad.gguf").to_str().unwrap(),
    ]);
    assert!(
        e.contains("num_key_value_heads") && e.contains("small.toml"),
        "{e}"
    );
    assert!(!d.path().join("bad.gguf").exists());
}

/// `synth`: a skeleton (metadata and tensor list only) and a random model made from it have the
/// original's tensor names, block types and shapes, and the model runs.
#[test]
fn synth_copies_the_shape() {
    let d = tempfile::tempdir().unwrap();
    for fam in [Family::Gemma3, Family::Qwen2] {
        let m = write_tiny(
            d.path(),
            &format!("{fam:?}-k.gguf"),
            &TinySpec::new(fam, GgmlType::Q4K),
        );
        let skel = d.path().join(format!("{fam:?}-skel.gguf"));
        let syn = d.path().join(format!("{fam:?}-syn.gguf"));
        let ok = |args: &[&str]| {
            let o = run(args);
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(&[
            "synth",
            "--like",
            m.to_str().unwrap(),
            "--skeleton",
            "--out",
            skel.to_str().unwrap(),
        ]);
        ok(&[
            "synth",
            "--like",
            skel.to_str().unwrap(),
            "--seed",
            "3",
            "--out",
            syn.to_str().unwrap(),
        ]);
        let (a, b) = (
            qd_gguf::GgufFile::open(&m).unwrap(),
            qd_gguf::GgufFile::open(&syn).unwrap(),
        );
        assert!(qd_gguf::GgufFile::open(&skel).unwrap().tensors().is_empty());
        let shapes = |f: &qd_gguf::GgufFile| {
            f.tensors()
                .iter()
                .map(|t| (t.name.clone(), t.dtype, t.shape()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shapes(&a), shapes(&b));
        let bytes = |f: &qd_gguf::GgufFile| f.tensors().iter().map(|t| t.n_bytes()).sum::<u64>();
        assert_eq!(bytes(&a), bytes(&b));
        assert_ne!(
            a.tensor_bytes("blk.0.ffn_up.weight").unwrap(),
            b.tensor_bytes("blk.0.ffn_up.weight").unwrap()
        );
        for (k, v) in a.metadata() {
            if k != "general.name" {
                assert_eq!(Some(v), b.get(k), "{k}");
            }
        }
        let o = run(&[
            "-t",
            "1",
            "bench",
            "tokens-per-second",
            "-m",
            syn.to_str().unwrap(),
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A write that runs out of room (a file-size limit stands in for a full disk: the same failed
/// `write`, EFBIG instead of ENOSPC) is one error line and leaves neither the target nor a
/// temporary file behind.
#[test]
fn export_that_runs_out_of_room_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path(), Family::Gemma3);
    let full = d.path().join("full.gguf");
    let args = |out: &Path| {
        [
            "export-gguf",
            "--model",
            m.to_str().unwrap(),
            "--recipe",
            "f32",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
    };
    let o = run(&args(&full).each_ref().map(|s| s.as_str()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let size = std::fs::metadata(&full).unwrap().len();
    assert!(
        size > 64 * 1024,
        "the export must outgrow the limit: {size} bytes"
    );
    std::fs::remove_file(&full).unwrap();
    let before = std::fs::read_dir(d.path()).unwrap().count();
    // 32 blocks of 512 bytes (POSIX sh) or 1 KiB (bash): far below the file's size.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 32; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_qat-distill"))
        .args(args(&full))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the export must fail under the limit");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains("too large"),
        "{err}"
    );
    assert!(!full.exists(), "no file at the target path");
    let after: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(after.len(), before, "left behind: {after:?}");
}

/// A candle error inside a library error reads once in the CLI's one-line report (`{:#}`
/// prints the source chain; a wrapped error that is also its source would print twice).
#[test]
fn wrapped_candle_errors_print_once() {
    let boom = || candle_core::Error::Msg("boom-7f3".into());
    let reports = [
        format!(
            "{:#}",
            anyhow::Error::from(qd_model::ModelError::from(boom()))
        ),
        format!(
            "{:#}",
            anyhow::Error::from(qd_eval::EvalError::from(boom()))
        ),
        format!(
            "{:#}",
            anyhow::Error::from(qd_distill::train::run::TrainError::from(boom()))
        ),
    ];
    for r in reports {
        assert_eq!(r.matches("boom-7f3").count(), 1, "{r}");
    }
}

/// Every command that computes takes `--device`: `cpu-generic` runs the path a GPU runs (greedy
/// generation gives the fused decoder's tokens, perplexity and bench go through the graph), and
/// `cuda` on a build without it (or a machine without a GPU) fails in one line naming the fix.
#[test]
fn every_command_takes_a_device() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path(), Family::Qwen2);
    let m = m.to_str().unwrap();
    let greedy = |device: &str| {
        let o = run(&[
            "generate", "--model", m, "--prompt", "the hat", "-n", "8", "--device", device,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(greedy("cpu"), greedy("cpu-generic"));
    let v = ok_json(&[
        "bench",
        "tokens-per-second",
        "-m",
        m,
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "1",
        "-o",
        "json",
        "--device",
        "cpu-generic",
    ]);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["path"], "graph");
        assert_eq!(r["backend"], "CPU (generic)");
        assert_eq!(r["gpu_info"], "");
        assert_eq!(r["gpu_mem_bytes"], 0);
    }
    let corpus = d.path().join("c.txt");
    std::fs::write(&corpus, "the thin hat in the inn at the heath. ".repeat(20)).unwrap();
    let c = corpus.to_str().unwrap();
    let ppl = |device: &str| {
        ok_json(&[
            "eval",
            "perplexity",
            "-m",
            m,
            "-f",
            c,
            "-c",
            "32",
            "--chunks",
            "2",
            "--json",
            "--device",
            device,
        ])["ppl"]
            .as_f64()
            .unwrap()
    };
    let (a, b) = (ppl("cpu").ln(), ppl("cpu-generic").ln());
    assert!((a - b).abs() <= 1e-4 * a.abs(), "mean NLL {a} vs {b}");
    if !candle_core::utils::cuda_is_available() {
        for args in [
            &["eval", "perplexity", "-m", m, "-f", c, "--device", "cuda"][..],
            &[
                "eval",
                "kl",
                "-m",
                m,
                "--reference",
                m,
                "-f",
                c,
                "--device",
                "cuda:1",
            ],
            &[
                "eval", "top-k", "-m", m, "--text", "the", "--device", "cuda",
            ],
            &["generate", "-m", m, "-p", "the", "--device", "cuda"],
            &["bench", "tokens-per-second", "-m", m, "--device", "cuda"],
            &["train", "--teacher", m, "--data", c, "--device", "cuda"],
        ] {
            let e = one_line_error(args);
            assert!(e.contains("--features cuda"), "{args:?}: {e}");
        }
    }
    let e = one_line_error(&["generate", "-m", m, "-p", "the", "--device", "tpu"]);
    assert!(e.contains("cpu-generic"), "{e}");
}

/// `plot`: two runs' logs on one picture with a summary row each; a run without steps or
/// labels that do not match the runs are one line and write nothing.
#[test]
fn plot_compares_runs() {
    let d = tempfile::tempdir().unwrap();
    let log = |name: &str, losses: &[f64], ppl: f64| {
        let dir = d.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for (i, l) in losses.iter().enumerate() {
            text += &format!(
                "{{\"event\":\"step\",\"step\":{},\"loss\":{l},\"kd\":{l},\"ce\":1.0}}\n",
                i + 1
            );
        }
        text += &format!(
            "{{\"event\":\"eval\",\"step\":{},\"val\":{{\"ppl\":{ppl},\"kd\":0.5}}}}\n",
            losses.len()
        );
        std::fs::write(dir.join("log.jsonl"), text).unwrap();
        dir
    };
    let a = log("adamw", &[3.0, 2.0, 1.0, 0.5], 9.5);
    let b = log("adamw8", &[3.0, 2.5, 1.5, 1.0], 10.25);
    let png = d.path().join("curves.png");
    let (a, b, p) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        png.to_str().unwrap(),
    );
    let o = run(&["plot", a, b, "--window", "2", "--out", p]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| adamw | 4 | 0.7500 | 0.5000 (step 4) | 9.5000 (step 4) |"),
        "{table}"
    );
    assert!(
        table.contains("| adamw8 | 4 | 1.2500 | 0.5000 (step 4) | 10.2500 (step 4) |"),
        "{table}"
    );
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let e = one_line_error(&["plot", a, b, "--out", p]);
    assert!(e.contains("already exists"), "{e}");
    let e = one_line_error(&["plot", a, b, "--labels", "one", "--out", p, "--force"]);
    assert!(e.contains("--labels names 1 runs but 2 were given"), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("log.jsonl"), "").unwrap();
    let e = one_line_error(&["plot", a, empty.to_str().unwrap(), "--out", p, "--force"]);
    assert!(e.contains("no training steps logged"), "{e}");
}
