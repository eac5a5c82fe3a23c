//! `bench tokens-per-second` and `eval kl` on tiny generated models: output shapes and schemas,
//! the speed-up column, self-KL of zero, and one-line errors. No timing assertions.

mod common;

use common::{one_line_error, run};
use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
use qd_gguf::GgmlType;
use serde_json::Value;

fn models(dir: &std::path::Path) -> (String, String) {
    let a = write_tiny(dir, "a.gguf", &TinySpec::new(Family::Llama, GgmlType::Q8_0));
    let b = dir.join("b.gguf");
    let o = run(&[
        "export-gguf",
        "--model",
        a.to_str().unwrap(),
        "--recipe",
        "q4_0",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (a.to_string_lossy().into(), b.to_string_lossy().into())
}

#[test]
fn bench_reports_llama_bench_rows_in_every_format() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = models(d.path());
    let args = [
        "bench",
        "tokens-per-second",
        "-m",
        &a,
        "-m",
        &b,
        "-p",
        "16",
        "-n",
        "4",
        "-t",
        "1",
    ];
    let o = run(&[&args[..], &["-o", "json", "-r", "2"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp16", "tg4", "pp16", "tg4"]);
    for r in &rows {
        for k in ["model_filename", "model_type", "backend"] {
            assert!(r[k].is_string(), "{k}");
        }
        for k in [
            "model_size",
            "model_n_params",
            "n_threads",
            "avg_ns",
            "peak_rss_bytes",
        ] {
            assert!(r[k].as_u64().unwrap() > 0, "{k} in {r}");
        }
        assert_eq!(r["n_threads"], 1);
        // Two repetitions in each of the default two rounds (A B, then B A).
        let ns = r["samples_ns"].as_array().unwrap();
        assert_eq!(ns.len(), 4);
        assert_eq!(r["rounds"], 2);
        assert!(ns.iter().all(|v| v.as_u64().unwrap() > 0));
        let ts = r["samples_ts"].as_array().unwrap();
        let avg = ts.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 4.0;
        assert!((avg - r["avg_ts"].as_f64().unwrap()).abs() <= 1e-9 * avg);
        assert!(r["stddev_ts"].as_f64().unwrap() >= 0.0);
    }
    // Both tests run through the fused decoder where the CPU has a SIMD level (on others the
    // graph is faster than the scalar level, unless `--isa scalar` asks for it: below).
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    let gen = if qd_model::Isa::detected() > qd_model::Isa::Scalar {
        "fused"
    } else {
        "graph"
    };
    assert_eq!(paths, [gen; 4]);
    let o = run(&[&args[..], &["-o", "json", "-r", "1", "--graph"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let graph: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(graph.len(), 4);
    assert!(graph.iter().all(|r| r["path"] == "graph"), "--graph");
    // Every row says which kernel level ran; `--isa scalar` lowers it (in the child processes
    // too), on every CPU.
    let best = qd_model::Isa::detected().name();
    assert!(rows.iter().all(|r| r["isa"] == best), "{rows:?}");
    let o = run(&[&args[..], &["-o", "json", "-r", "1", "--isa", "scalar"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scalar: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        scalar
            .iter()
            .all(|r| r["isa"] == "scalar" && r["path"] == "fused"),
        "{scalar:?}"
    );
    let e = one_line_error(&[&args[..], &["--isa", "avx3"]].concat());
    assert!(
        e.contains("avx3") && e.contains("scalar, neon, neondot, avx2"),
        "{e}"
    );
    // The first model is the baseline of the speed-up column (the median of the per-round
    // ratios, with their range); Q4_0 is smaller than Q8_0.
    assert_eq!(rows[0]["speedup"], 1.0);
    assert_eq!(rows[1]["speedup"], 1.0);
    for r in &rows[2..] {
        let (s, lo, hi) = (
            r["speedup"].as_f64().unwrap(),
            r["speedup_min"].as_f64().unwrap(),
            r["speedup_max"].as_f64().unwrap(),
        );
        assert!(lo <= s && s <= hi && lo > 0.0, "{r}");
    }
    let e = one_line_error(&[&args[..], &["--rounds", "0"]].concat());
    assert!(e.contains("--rounds"), "{e}");
    assert!(rows[2]["model_size"].as_u64() < rows[0]["model_size"].as_u64());

    let md = run(&[&args[..], &["-o", "md", "-r", "1"]].concat());
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(
        md.starts_with("| model | size | params | backend | threads | test | t/s |"),
        "{md}"
    );
    assert_eq!(md.lines().count(), 2 + 4);
    let csv = run(&[&args[..], &["-o", "csv", "-r", "1"]].concat());
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("model_filename,model_type,model_size"));
    assert_eq!(csv.lines().count(), 5);
    let jsonl = run(&[&args[..], &["-o", "jsonl", "-r", "1"]].concat());
    let jsonl = String::from_utf8(jsonl.stdout).unwrap();
    assert_eq!(jsonl.lines().count(), 4);
    assert!(jsonl
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
}

#[test]
fn bench_errors_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    let (a, _) = models(d.path());
    let e = one_line_error(&["bench", "tokens-per-second", "-m", "/nonexistent.gguf"]);
    assert!(e.contains("no such model file"), "{e}");
    let e = one_line_error(&["bench", "tokens-per-second", "-m", &a, "-p", "0", "-n", "0"]);
    assert!(e.contains("nothing to measure"), "{e}");
    let e = one_line_error(&["bench", "tokens-per-second", "-m", &a, "-p", "100000"]);
    assert!(e.contains("context"), "{e}");
}

#[test]
fn eval_kl_of_a_model_against_itself_is_zero() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = models(d.path());
    let text = d.path().join("t.txt");
    std::fs::write(&text, "the thin heath in the inn at the heath. ".repeat(20)).unwrap();
    let t = text.to_str().unwrap();
    let kl = |m: &str| -> Value {
        let o = run(&[
            "eval",
            "kl",
            "-m",
            m,
            "--reference",
            &a,
            "-f",
            t,
            "--ctx",
            "16",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let same = kl(&a);
    assert_eq!(same["mean_kl"], 0.0);
    assert_eq!(same["kl_max"], 0.0);
    assert_eq!(same["same_top"], 1.0);
    assert_eq!(same["ppl_ratio"], 1.0);
    assert_eq!(same["ppl_model"], same["ppl_reference"]);
    let n = same["n_scored"].as_u64().unwrap();
    assert_eq!(
        n,
        same["n_chunks"].as_u64().unwrap() * 7,
        "ctx 16 scores positions 8..14"
    );
    let q = kl(&b);
    assert!(q["mean_kl"].as_f64().unwrap() > 0.0);
    assert!(q["kl_median"].as_f64().unwrap() <= q["kl_p99"].as_f64().unwrap());
    assert!(q["kl_p99"].as_f64().unwrap() <= q["kl_max"].as_f64().unwrap());
    assert_eq!(q["n_scored"].as_u64().unwrap(), n);
    // A model with another vocabulary is refused before any work.
    let other = write_tiny(
        d.path(),
        "q.gguf",
        &TinySpec::new(Family::Qwen2, GgmlType::Q8_0),
    );
    let e = one_line_error(&[
        "eval",
        "kl",
        "-m",
        other.to_str().unwrap(),
        "--reference",
        &a,
        "-f",
        t,
        "--ctx",
        "16",
    ]);
    assert!(e.contains("different vocabularies"), "{e}");
}
