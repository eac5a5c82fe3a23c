//! `qat-distill imatrix` against llama-imatrix on the real teacher (same text, ctx and chunks:
//! llama.cpp's file is tests/data/gemma3-270m/pydoc4.imatrix.gguf), and `export-gguf --imatrix`'s
//! bad input as one-line errors.

mod common;

use common::{one_line_error, run};
use qd_export::Imatrix;

/// Every matrix llama-imatrix measured, with the same token count, and per-token means within
/// 1e-2 relative (L2 over the columns). Measured on 100 chunks of the calibration text
/// (docs/qat-export.md): median 1.6e-4, worst 3.2e-3 (blk.17.attn_output) — the two forward
/// passes agree to rounding, which the late blocks' outputs amplify most; 1e-2 leaves 3× room
/// and still fails on any wrong input (a matrix fed another's input differs by O(1)).
#[test]
fn teacher_imatrix_agrees_with_llama_imatrix() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ours.gguf");
    let teacher = qd_fixtures::teacher_path();
    let text = qd_fixtures::data_dir().join("corpora/pydoc.txt");
    let o = run(&[
        "imatrix",
        "-m",
        teacher.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "512",
        "--chunks",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = Imatrix::open(&out).unwrap();
    let theirs =
        Imatrix::open(&qd_fixtures::data_dir().join("gemma3-270m/pydoc4.imatrix.gguf")).unwrap();
    assert_eq!((ours.chunk_count, ours.chunk_size), (4, 512));
    assert_eq!(
        ours.entries.keys().collect::<Vec<_>>(),
        theirs.entries.keys().collect::<Vec<_>>()
    );
    let mut worst = (0f64, String::new());
    for (name, e) in &ours.entries {
        let t = &theirs.entries[name];
        assert_eq!(e.counts, t.counts, "{name}");
        let (mut diff, mut norm) = (0f64, 0f64);
        for (a, b) in e.sums.iter().zip(&t.sums) {
            diff += (*a as f64 - *b as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        let rel = (diff / norm).sqrt();
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    assert!(worst.0 < 1e-2, "{worst:?}");
    // A quantizer reads it: the teacher's Q4_0 with our matrix.
    let q = d.path().join("q.gguf");
    let o = run(&[
        "export-gguf",
        "--model",
        teacher.to_str().unwrap(),
        "--recipe",
        "q4_0",
        "--imatrix",
        out.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_imatrix_input_is_one_line_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let teacher = qd_fixtures::teacher_path();
    let t = teacher.to_str().unwrap();
    let llama = qd_fixtures::data_dir().join("gemma3-270m/pydoc4.imatrix.gguf");
    let out = d.path().join("o.gguf");
    let o = out.to_str().unwrap();
    // The teacher is not an imatrix.
    let e = one_line_error(&[
        "export-gguf",
        "--model",
        t,
        "--recipe",
        "q4_0",
        "--imatrix",
        t,
        "--out",
        o,
    ]);
    assert!(e.contains("not an imatrix"), "{e}");
    // Q8_0 does not use one.
    let l = llama.to_str().unwrap();
    let e = one_line_error(&[
        "export-gguf",
        "--model",
        t,
        "--recipe",
        "q8_0",
        "--imatrix",
        l,
        "--out",
        o,
    ]);
    assert!(e.contains("does not use an importance matrix"), "{e}");
    // Q2_K_S needs one.
    let e = one_line_error(&[
        "export-gguf",
        "--model",
        t,
        "--recipe",
        "q2_k_s",
        "--out",
        o,
    ]);
    assert!(e.contains("needs an importance matrix"), "{e}");
    // A truncated file.
    let bytes = std::fs::read(&llama).unwrap();
    let cut = d.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..1000]).unwrap();
    let e = one_line_error(&[
        "export-gguf",
        "--model",
        t,
        "--recipe",
        "q4_0",
        "--imatrix",
        cut.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(e.contains("cut.gguf"), "{e}");
    // A text too short for two chunks.
    let short = d.path().join("short.txt");
    std::fs::write(&short, "def f(): pass\n").unwrap();
    let e = one_line_error(&["imatrix", "-m", t, "-f", short.to_str().unwrap(), "-o", o]);
    assert!(e.contains("2×ctx"), "{e}");
    assert!(!out.exists());
}
