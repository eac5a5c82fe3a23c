//! Shared by the CLI tests: running the built binary and checking one-line errors.

use std::path::Path;
use std::process::{Command, Output};

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qat-distill"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must fail and returns its single `error: …` line.
#[allow(dead_code)] // not every test file uses it
pub fn one_line_error(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A tiny Gemma 3 teacher (Q8_0) and a six-file corpus under `dir`: (teacher, corpus) paths.
#[allow(dead_code)] // not every test file uses it
pub fn setup(dir: &Path) -> (String, String) {
    use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
    let t = write_tiny(
        dir,
        "teacher.gguf",
        &TinySpec::new(Family::Gemma3, qd_gguf::GgmlType::Q8_0),
    );
    let data = dir.join("corpus");
    std::fs::create_dir(&data).unwrap();
    for i in 0..6 {
        std::fs::write(
            data.join(format!("{i}.txt")),
            "the thin heath in the inn at ".repeat(8 + i),
        )
        .unwrap();
    }
    (
        t.to_string_lossy().into_owned(),
        data.to_string_lossy().into_owned(),
    )
}

/// The steps a run's `log.jsonl` records, in order (a resumed run appends).
#[allow(dead_code)] // not every test file uses it
pub fn log_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}
