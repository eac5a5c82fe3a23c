//! `qat-distill train` end to end on a tiny generated teacher: train → checkpoints → resume,
//! the log and summary, and one clear line for each kind of bad input.

use std::path::Path;
mod common;

use common::{log_steps, one_line_error, run, setup};

#[test]
fn train_checkpoint_resume() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let out = d.path().join("run");
    let o = out.to_str().unwrap();
    let common = [
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0,1",
        "--seq-len",
        "16",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "2",
        "--temperature",
        "10",
        "-t",
        "1",
    ];
    let first = run(&[&common[..], &["--steps", "4"]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(summary["steps"], 4);
    assert!(summary["final_val"]["ppl"].as_f64().unwrap() > 1.0);
    assert_eq!(log_steps(&out), vec![1, 2, 3, 4]);
    assert!(out.join("step-00000004/model.safetensors").is_file());
    // The loss curve is drawn next to the checkpoints.
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 1000);
    assert!(out.join("step-00000002/state.json").is_file());
    assert!(out.join("summary.json").is_file());

    // The seconds the run had trained when its step-4 checkpoint was written: a resumed run
    // adds its own to these (the first run's summary also counts its final evaluation, which
    // on a loaded machine can outlast two tiny steps).
    let state4: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("step-00000004/state.json")).unwrap())
            .unwrap();
    let seconds4 = state4["train_seconds"].as_f64().unwrap();
    assert!(seconds4 > 0.0 && seconds4 <= summary["seconds"].as_f64().unwrap());
    let second = run(&[&common[..], &["--steps", "6", "--resume"]].concat());
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        log_steps(&out),
        vec![1, 2, 3, 4, 5, 6],
        "resumed after step 4"
    );
    assert!(out.join("step-00000006").is_dir());
    // The summary covers the whole run: the 4 steps before the resume and the 2 after.
    let resumed: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let per_step = summary["tokens"].as_f64().unwrap() / 4.0;
    assert!(per_step > 0.0);
    assert_eq!(resumed["tokens"].as_f64().unwrap(), 6.0 * per_step);
    assert!(resumed["seconds"].as_f64().unwrap() > seconds4);
    // Resuming a finished run trains nothing and keeps the run's totals.
    let again = run(&[&common[..], &["--steps", "6", "--resume"]].concat());
    assert!(again.status.success());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["tokens"], resumed["tokens"]);
    assert!(again["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(
        !out.join("step-00000002").exists(),
        "only the last 2 checkpoints are kept"
    );

    // Resuming with another student is refused.
    let other = run(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0",
        "--seq-len",
        "16",
        "--steps",
        "8",
        "--resume",
    ]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("another student"));
}

#[test]
fn bad_inputs() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let out = d.path().join("run");
    let o = out.to_str().unwrap();
    let e = one_line_error(&[
        "train",
        "--teacher",
        "/nonexistent.gguf",
        "--data",
        &data,
        "--out",
        o,
    ]);
    assert!(e.contains("/nonexistent.gguf"), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        empty.to_str().unwrap(),
        "--out",
        o,
        "--blocks",
        "0",
    ]);
    assert!(e.contains("corpus is empty"), "{e}");
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0",
        "--seq-len",
        "100000",
    ]);
    assert!(e.contains("fewer than one sequence"), "{e}");
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0,1,2,3,4,6",
    ]);
    assert!(e.contains("pick a teacher block of the same kind"), "{e}");
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0",
        "--divergence",
        "sideways",
    ]);
    assert!(e.contains("invalid value 'sideways'"), "{e}");
    let e = one_line_error(&["train", "--data", &data]);
    assert!(e.contains("no teacher"), "{e}");
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--blocks",
        "0",
        "--optimizer",
        "adam9",
    ]);
    assert!(e.contains("adam9"), "{e}");
    // A run that would not fit says so before its first step, with its estimate (a 20 MB
    // budget, as QAT_DISTILL_MEM_LIMIT sets one, is less than the loaded models).
    let o2 = std::process::Command::new(env!("CARGO_BIN_EXE_qat-distill"))
        .args([
            "train",
            "--teacher",
            &teacher,
            "--data",
            &data,
            "--out",
            o,
            "--blocks",
            "0",
        ])
        .env("QAT_DISTILL_MEM_LIMIT", "20000000")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o2.stderr);
    assert!(!o2.status.success());
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("needs about") && e.contains("--checkpoint-blocks"),
        "{e}"
    );
    assert!(!out.join("log.jsonl").exists() || common::log_steps(&out).is_empty());
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "steps = \"many\"\n").unwrap();
    let e = one_line_error(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("invalid run configuration"), "{e}");
}

/// With random truncation, token noise and weighted mixing of two datasets on, an interrupted
/// and resumed run ends with the same weights as one that never stopped (the draws are seeded
/// by position, not carried as state), and the augmentations do change what is trained.
#[test]
fn augmented_mixed_run_resumes_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let other = d.path().join("other.txt");
    std::fs::write(&other, "a tiny tin ant ate ten nuts at noon ".repeat(12)).unwrap();
    let other = other.to_string_lossy().into_owned();
    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let o = out.to_str().unwrap().to_string();
        let mut args = vec![
            "train",
            "--teacher",
            &teacher,
            "--data",
            &data,
            "--data",
            &other,
            "--out",
            &o,
            "--blocks",
            "0,1",
            "--seq-len",
            "16",
            "--checkpoint-every",
            "2",
            "--eval-every",
            "0",
            "--steps",
            steps,
            "-t",
            "1",
        ];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    let aug = [
        "--truncate-prob",
        "0.5",
        "--truncate-min",
        "4",
        "--token-noise",
        "0.2",
        "--data-weights",
        "1,3",
    ];
    let weights = |out: &Path| std::fs::read(out.join("step-00000004/model.safetensors")).unwrap();
    let whole = d.path().join("whole");
    train(&whole, "4", &aug);
    let parts = d.path().join("parts");
    train(&parts, "2", &aug);
    train(&parts, "4", &[&aug[..], &["--resume"]].concat());
    assert!(weights(&whole) == weights(&parts), "resumed run differs");
    let plain = d.path().join("plain");
    train(&plain, "4", &[]);
    assert!(
        weights(&whole) != weights(&plain),
        "augmentation had no effect"
    );

    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--token-noise",
        "1.5",
    ]);
    assert!(e.contains("token_noise must be in [0, 1)"), "{e}");
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--data-weights",
        "1,2",
    ]);
    assert!(
        e.contains("data_weights has 2 entries for 1 data paths"),
        "{e}"
    );
}

/// Delayed QAT snaps the weights onto the grid at `--qat-start`; a run interrupted exactly
/// there (checkpoint at step 2, snap at the start of step 3) and resumed ends with the weights
/// of one that never stopped, and the snap does change what is trained.
#[test]
fn qat_snap_run_resumes_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let o = out.to_str().unwrap().to_string();
        let mut args = vec![
            "train",
            "--teacher",
            &teacher,
            "--data",
            &data,
            "--out",
            &o,
            "--blocks",
            "0,1",
            "--seq-len",
            "16",
            "--checkpoint-every",
            "2",
            "--eval-every",
            "0",
            "--steps",
            steps,
            "--qat",
            "q4_0",
            "--qat-start",
            "2",
            "-t",
            "1",
        ];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    let weights = |out: &Path| std::fs::read(out.join("step-00000004/model.safetensors")).unwrap();
    let whole = d.path().join("whole");
    train(&whole, "4", &[]);
    let parts = d.path().join("parts");
    train(&parts, "2", &[]);
    train(&parts, "4", &["--resume"]);
    assert!(weights(&whole) == weights(&parts), "resumed run differs");
    let unsnapped = d.path().join("unsnapped");
    train(&unsnapped, "4", &["--no-snap-to-grid"]);
    assert!(
        weights(&whole) != weights(&unsnapped),
        "snapping had no effect"
    );
    // The memory options: blocks recomputed in backward give the same weights bit for bit;
    // 8-bit moments (with bf16 gradients) resume bit-identically from their u8 checkpoint.
    let recomputed = d.path().join("recomputed");
    train(&recomputed, "4", &["--checkpoint-blocks"]);
    assert!(
        weights(&whole) == weights(&recomputed),
        "recomputed blocks changed the weights"
    );
    let compact = ["--checkpoint-blocks", "--optimizer", "adamw8"];
    let c_whole = d.path().join("c-whole");
    train(&c_whole, "4", &compact);
    let c_parts = d.path().join("c-parts");
    train(&c_parts, "2", &compact);
    train(&c_parts, "4", &[&compact[..], &["--resume"]].concat());
    assert!(
        weights(&c_whole) == weights(&c_parts),
        "resumed adamw8 run differs"
    );
    assert!(
        weights(&c_whole) != weights(&whole),
        "adamw8 changed nothing"
    );
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        c_parts.to_str().unwrap(),
        "--blocks",
        "0,1",
        "--seq-len",
        "16",
        "--steps",
        "6",
        "--qat",
        "q4_0",
        "--qat-start",
        "2",
        "--resume",
    ]);
    assert!(e.contains("optimizer"), "{e}");
}

/// The stored-teacher workflow on the command line: `teacher-cache` (a progress line, then the
/// summary with the bytes per token), `train --teacher-cache`, and `eval kl --teacher-cache` —
/// the teacher against its own cache is ~0 KL with the same top token everywhere, the student
/// is not; mismatched flags fail in one line.
#[test]
fn teacher_cache_train_and_eval() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let cache = d.path().join("cache");
    let c = cache.to_str().unwrap();
    let base = ["--data", &data, "--seq-len", "16", "--seed", "3"];
    let o = run(&[
        &["teacher-cache", "--model", &teacher, "--out", c, "--k", "6"][..],
        &base,
    ]
    .concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("bytes per token"), "{text}");
    // 6 ids of 9 bits (the tiny vocabulary), 6 fp16 log-probs, the tail and the token.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["bytes_per_token"], 7 + 12 + 4 + 4);
    assert_eq!(manifest["complete"], true);
    let out = d.path().join("run");
    let o = run(&[
        &[
            "train",
            "--teacher",
            &teacher,
            "--out",
            out.to_str().unwrap(),
            "--blocks",
            "0,1",
            "--steps",
            "2",
            "--temperature",
            "2",
            "--teacher-cache",
            c,
        ][..],
        &base[..2],
        &base[2..],
    ]
    .concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kl = |m: &str| {
        let o = run(&["eval", "kl", "-m", m, "--teacher-cache", c, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let own = kl(&teacher);
    assert!(own["mean_kl"].as_f64().unwrap() < 1e-3, "{own}");
    assert!(own["same_top"].as_f64().unwrap() > 0.99, "{own}");
    assert_eq!(own["temperature"], 2.0);
    let student = d.path().join("s.gguf");
    let o = run(&[
        "export-gguf",
        "--checkpoint",
        out.to_str().unwrap(),
        "--out",
        student.to_str().unwrap(),
        "--recipe",
        "q8_0",
        "--from-f32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = kl(student.to_str().unwrap());
    assert!(theirs["mean_kl"].as_f64().unwrap() > 10.0 * own["mean_kl"].as_f64().unwrap());
    // One line each: another seed than the cache's; a cache and a reference together.
    let e = one_line_error(&[
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--seq-len",
        "16",
        "--seed",
        "4",
        "--temperature",
        "2",
        "--teacher-cache",
        c,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("another seed"), "{e}");
    let e = one_line_error(&[
        "eval",
        "kl",
        "-m",
        &teacher,
        "--reference",
        &teacher,
        "--teacher-cache",
        c,
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
}

/// `train --schedule block-ap`: a line per finished block, the file written and loaded, a
/// stopped-then-resumed run's blocks reused; an unknown schedule in one line.
#[test]
fn block_ap_trains_blocks_and_writes_the_file() {
    let d = tempfile::tempdir().unwrap();
    let (teacher, data) = setup(d.path());
    let out = d.path().join("bap");
    let o = out.to_str().unwrap();
    let args = [
        "train",
        "--teacher",
        &teacher,
        "--data",
        &data,
        "--out",
        o,
        "--schedule",
        "block-ap",
        "--qat",
        "q4_0",
        "--steps",
        "2",
        "--block-sequences",
        "2",
        "--seq-len",
        "16",
        "--lr",
        "1e-4",
        "-t",
        "1",
    ];
    let r = run(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("block 1/7: held-out MSE"), "{err}");
    assert!(err.contains("block 7/7"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(summary["steps"], 14);
    assert!(summary["final_val"]["kd"].as_f64().unwrap().is_finite());
    assert_eq!(log_steps(&out), (1..=14).collect::<Vec<_>>());
    let model = out.join("model.gguf");
    let i = run(&["inspect", model.to_str().unwrap()]);
    assert!(i.status.success());
    // Resumed with every block finished: nothing is trained again, the same file is written.
    let before = std::fs::read(&model).unwrap();
    let again = run(&[&args[..], &["--resume"]].concat());
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("block MSE"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let e = one_line_error(&[&args[..7], &["--schedule", "layerwise", "--qat", "q4_0"]].concat());
    assert!(e.contains("unknown schedule"), "{e}");
}
