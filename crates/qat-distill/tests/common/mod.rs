//! Shared by the CLI tests: running the built binary and checking one-line errors.

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
