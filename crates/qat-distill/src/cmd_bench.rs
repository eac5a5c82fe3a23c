//! `bench tokens-per-second`: llama-bench's tests and columns for one or more models, each
//! measured in a fresh child process so its peak RSS is its own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use qd_eval::{BenchResult, PerplexityParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::loaded;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Prompt processing (-p) and generation (-n) tokens/s, llama-bench style, models side by side.
    TokensPerSecond(Args),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Md,
    Json,
    Jsonl,
    Csv,
}

#[derive(clap::Args)]
pub struct Args {
    /// GGUF models (repeatable); the first is the baseline of the speed-up column.
    #[arg(long, short = 'm', required = true)]
    model: Vec<PathBuf>,
    /// Prompt tokens processed in one batch (0 skips the test).
    #[arg(long = "n-prompt", short = 'p', default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0 skips the test).
    #[arg(long = "n-gen", short = 'n', default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions per test (after one warm-up run), in each round.
    #[arg(long = "repetitions", short = 'r', default_value_t = 5)]
    reps: usize,
    /// Rounds: each runs every model once, each in its own process, in alternating order
    /// (A B, then B A, …), so that a machine drifting during the run weighs on every model
    /// alike; the speed-up is the median of the per-round ratios, with their range.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where the model runs: cpu (the fused prefill and decoder), cpu-generic (candle's graph,
    /// the path a GPU runs) or cuda[:N] (a build with `--features cuda`).
    #[arg(long, value_parser = crate::device::parse, default_value = "cpu")]
    device: qd_model::DeviceSpec,
    /// Output format: md (a table), json, csv or jsonl, with llama-bench's field names.
    #[arg(long, short = 'o', value_enum, default_value = "md")]
    output: Output,
    /// Also measure perplexity on this text (llama-perplexity's method).
    #[arg(long)]
    ppl_file: Option<PathBuf>,
    /// Tokens per perplexity chunk.
    #[arg(long, default_value_t = 512)]
    ppl_ctx: usize,
    /// At most this many perplexity chunks (default: all).
    #[arg(long)]
    ppl_chunks: Option<usize>,
    /// Seed of the random prompt and generation tokens.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Run both tests (and --ppl-file) through candle's graph (the path training takes)
    /// instead of the fused prefill and decoder, to compare the two.
    #[arg(long)]
    graph: bool,
    /// Internal: measure the single --model in this process and print its record.
    #[arg(long, hide = true)]
    child: bool,
}

/// One model's measurements (what a child process reports).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelRecord {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    backend: String,
    n_threads: usize,
    peak_rss_bytes: u64,
    load_seconds: f64,
    results: Vec<BenchResult>,
    perplexity: Option<serde_json::Value>,
    /// The GPU's name, as llama-bench's `gpu_info` (empty off a GPU).
    #[serde(default)]
    gpu_info: String,
    /// Device memory in use after the tests (the pool's high-water mark; 0 off a GPU).
    #[serde(default)]
    gpu_mem_bytes: u64,
}

pub fn run(c: BenchCommand) -> anyhow::Result<()> {
    match c {
        BenchCommand::TokensPerSecond(a) => tokens_per_second(a),
    }
}

fn ftype_name(ft: u64) -> String {
    match ft {
        0 => "all F32".into(),
        1 => "F16".into(),
        2 => "Q4_0".into(),
        3 => "Q4_1".into(),
        7 => "Q8_0".into(),
        8 => "Q5_0".into(),
        9 => "Q5_1".into(),
        10 => "Q2_K - Medium".into(),
        11 => "Q3_K - Small".into(),
        12 => "Q3_K - Medium".into(),
        13 => "Q3_K - Large".into(),
        14 => "Q4_K - Small".into(),
        15 => "Q4_K - Medium".into(),
        16 => "Q5_K - Small".into(),
        17 => "Q5_K - Medium".into(),
        18 => "Q6_K".into(),
        other => format!("file type {other}"),
    }
}

fn measure(a: &Args, path: &Path) -> anyhow::Result<ModelRecord> {
    let dev = crate::device::open(a.device)?;
    // The graph is the device-generic path (and the only one on a GPU).
    let graph = a.graph || a.device.generic();
    let f = loaded::open(path)?;
    // A damaged or overflowed file stops here in one line, not in a NaN perplexity.
    f.check_tensors()?;
    let t0 = std::time::Instant::now();
    let model = qd_model::load_quantized(&f, &dev)
        .with_context(|| format!("{}: loading the model", path.display()))?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let tok = loaded::tokenizer(&f)?;
    // llama-bench's prompts start with BOS only where the tokenizer adds one.
    let bos = if tok.add_bos { tok.bos } else { None };
    let results = qd_eval::bench(&model, a.n_prompt, a.n_gen, a.reps, bos, a.seed, graph)?;
    let perplexity = match &a.ppl_file {
        None => None,
        Some(p) => {
            let (tokens, params) = loaded::chunked_text(&tok, p, a.ppl_ctx, a.ppl_chunks, "model")?;
            let params = PerplexityParams { graph, ..params };
            let r = qd_eval::perplexity(&model, &tokens, &params, |_, _, _| {})?;
            let bytes = tok.text_bytes(&qd_eval::scored_targets(&tokens, &params)?);
            let bpb = qd_eval::bits_per_byte(r.ppl, r.n_scored, bytes);
            Some(
                json!({"ppl": r.ppl, "ppl_stderr": r.ppl_stderr, "bpb": bpb, "ctx": r.ctx, "n_chunks": r.n_chunks}),
            )
        }
    };
    let gpu = crate::device::gpu_info(&dev)?;
    let n_params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    let size: u64 = f.tensors().iter().map(|t| t.n_bytes()).sum();
    let ft = f.opt("general.file_type", qd_gguf::GgufFile::get_u64)?;
    Ok(ModelRecord {
        model_filename: path.display().to_string(),
        model_type: format!(
            "{} {:.0}M {}",
            f.architecture()?,
            n_params as f64 / 1e6,
            ft.map_or_else(|| "?".into(), ftype_name)
        ),
        model_size: size,
        model_n_params: n_params,
        backend: crate::device::backend(a.device).into(),
        n_threads: rayon::current_num_threads(),
        peak_rss_bytes: qd_distill::train::run::peak_rss_bytes(),
        load_seconds,
        results,
        perplexity,
        gpu_info: gpu.as_ref().map(|g| g.0.clone()).unwrap_or_default(),
        gpu_mem_bytes: gpu.map_or(0, |g| g.1),
    })
}

/// Runs this binary on one model and reads its record; `perplexity`: also `--ppl-file` (once
/// per model: perplexity does not drift, and it is the slow part).
fn in_child(a: &Args, path: &Path, perplexity: bool) -> anyhow::Result<ModelRecord> {
    let exe = std::env::current_exe().context("locating the qat-distill binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["-t", &rayon::current_num_threads().to_string()])
        .args(["--isa", qd_model::Isa::active().name()])
        .args(["bench", "tokens-per-second", "--child", "-m"])
        .arg(path)
        .args(["-p", &a.n_prompt.to_string(), "-n", &a.n_gen.to_string()])
        .args(["-r", &a.reps.to_string(), "--seed", &a.seed.to_string()])
        .args(["--ppl-ctx", &a.ppl_ctx.to_string()])
        .args(["--device", &a.device.to_string()]);
    if let (Some(p), true) = (&a.ppl_file, perplexity) {
        cmd.arg("--ppl-file").arg(p);
    }
    if let Some(c) = a.ppl_chunks {
        cmd.args(["--ppl-chunks", &c.to_string()]);
    }
    if a.graph {
        cmd.arg("--graph");
    }
    let out = cmd.output().context("starting the benchmark process")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("{}", err.trim().trim_start_matches("error: "));
    }
    serde_json::from_slice(&out.stdout).context("reading the benchmark process's report")
}

fn rows(records: &[ModelRecord], ratios: &Ratios) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for (i, r) in records.iter().enumerate() {
        for t in &r.results {
            let s = speedup_of(ratios, i, &t.test);
            let speedup = s.map(|s| s.0);
            let ns = t.samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>();
            let mean = t.avg_ns();
            let sd = if ns.len() > 1 {
                (ns.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (ns.len() - 1) as f64).sqrt()
            } else {
                0.0
            };
            rows.push(json!({
                "model_filename": r.model_filename, "model_type": r.model_type,
                "model_size": r.model_size, "model_n_params": r.model_n_params,
                "backend": r.backend, "n_threads": r.n_threads,
                "n_prompt": t.n_prompt, "n_gen": t.n_gen, "test": t.test,
                "avg_ns": mean.round() as u64, "stddev_ns": sd.round() as u64,
                "avg_ts": t.avg_ts(), "stddev_ts": t.stddev_ts(),
                "samples_ns": t.samples_ns, "samples_ts": t.samples_ts(),
                "peak_rss_bytes": r.peak_rss_bytes, "speedup": speedup,
                "speedup_min": s.map(|s| s.1), "speedup_max": s.map(|s| s.2),
                "rounds": ratios.get(i).and_then(|m| m.get(&t.test)).map_or(0, Vec::len),
                "path": t.path, "isa": t.isa,
                "gpu_info": r.gpu_info, "gpu_mem_bytes": r.gpu_mem_bytes,
                "ppl": r.perplexity.as_ref().map(|p| p["ppl"].clone()),
                "bpb": r.perplexity.as_ref().map(|p| p["bpb"].clone()),
            }));
        }
    }
    rows
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

fn markdown(records: &[ModelRecord], ratios: &Ratios) -> String {
    let mut s = String::from(
        "| model | size | params | backend | threads | test | t/s | bytes | peak RSS | speed-up |\n\
         | ----- | ---: | -----: | ------- | ------: | ---: | --: | ----: | -------: | -------: |\n",
    );
    for row in rows(records, ratios) {
        let file = Path::new(row["model_filename"].as_str().unwrap_or(""))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        s.push_str(&format!(
            "| {} ({}) | {} | {:.2} M | {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} |\n",
            row["model_type"].as_str().unwrap_or(""),
            file,
            mib(row["model_size"].as_u64().unwrap_or(0)),
            row["model_n_params"].as_u64().unwrap_or(0) as f64 / 1e6,
            match row["gpu_info"].as_str().unwrap_or("") {
                "" => row["backend"].as_str().unwrap_or("").to_string(),
                gpu => format!("{} ({gpu})", row["backend"].as_str().unwrap_or("")),
            },
            row["n_threads"],
            row["test"].as_str().unwrap_or(""),
            row["avg_ts"].as_f64().unwrap_or(0.0),
            row["stddev_ts"].as_f64().unwrap_or(0.0),
            row["model_size"],
            match row["gpu_mem_bytes"].as_u64().unwrap_or(0) {
                0 => mib(row["peak_rss_bytes"].as_u64().unwrap_or(0)),
                g => format!(
                    "{} + {} GPU",
                    mib(row["peak_rss_bytes"].as_u64().unwrap_or(0)),
                    mib(g)
                ),
            },
            match (
                row["speedup"].as_f64(),
                row["speedup_min"].as_f64(),
                row["speedup_max"].as_f64(),
            ) {
                (Some(v), Some(lo), Some(hi)) if hi > lo => {
                    format!("{v:.2}× ({lo:.2}–{hi:.2})")
                }
                (Some(v), _, _) => format!("{v:.2}×"),
                _ => String::new(),
            },
        ));
    }
    if records.iter().any(|r| r.perplexity.is_some()) {
        s.push_str(
            "\n| model | perplexity | bits/byte | ctx | chunks |\n| ----- | ---------: | --------: | --: | -----: |\n",
        );
        for r in records {
            if let Some(p) = &r.perplexity {
                s.push_str(&format!(
                    "| {} | {:.4} ± {:.4} | {:.4} | {} | {} |\n",
                    r.model_filename,
                    p["ppl"].as_f64().unwrap_or(f64::NAN),
                    p["ppl_stderr"].as_f64().unwrap_or(f64::NAN),
                    p["bpb"].as_f64().unwrap_or(f64::NAN),
                    p["ctx"],
                    p["n_chunks"]
                ));
            }
        }
    }
    s
}

fn csv(records: &[ModelRecord], ratios: &Ratios) -> String {
    let cols = [
        "model_filename",
        "model_type",
        "model_size",
        "model_n_params",
        "backend",
        "n_threads",
        "n_prompt",
        "n_gen",
        "test",
        "avg_ns",
        "stddev_ns",
        "avg_ts",
        "stddev_ts",
        "peak_rss_bytes",
        "speedup",
        "speedup_min",
        "speedup_max",
        "ppl",
        "bpb",
    ];
    let mut s = cols.join(",") + "\n";
    for row in rows(records, ratios) {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &row[*c] {
                serde_json::Value::String(v) => format!("\"{}\"", v.replace('"', "\"\"")),
                serde_json::Value::Null => String::new(),
                v => v.to_string(),
            })
            .collect();
        s.push_str(&(cells.join(",") + "\n"));
    }
    s
}

fn tokens_per_second(a: Args) -> anyhow::Result<()> {
    if a.child {
        anyhow::ensure!(a.model.len() == 1, "--child takes one model");
        let r = measure(&a, &a.model[0])?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    anyhow::ensure!(a.reps > 0, "--repetitions must be at least 1");
    anyhow::ensure!(
        a.n_prompt + a.n_gen > 0,
        "nothing to measure: -p and -n are both 0"
    );
    anyhow::ensure!(a.rounds > 0, "--rounds must be at least 1");
    for m in &a.model {
        anyhow::ensure!(m.is_file(), "{}: no such model file", m.display());
    }
    // rounds[r][i]: model i's record in round r.
    let n = a.model.len();
    let mut rounds: Vec<Vec<Option<ModelRecord>>> = Vec::with_capacity(a.rounds);
    for r in 0..a.rounds {
        let mut this: Vec<Option<ModelRecord>> = vec![None; n];
        let order: Vec<usize> = if r % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for i in order {
            let m = &a.model[i];
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "round {}/{}: benchmarking {} ...",
                    r + 1,
                    a.rounds,
                    m.display()
                );
            }
            this[i] = Some(
                in_child(&a, m, r == 0).with_context(|| format!("benchmarking {}", m.display()))?,
            );
        }
        rounds.push(this);
    }
    let rounds: Vec<Vec<ModelRecord>> = rounds
        .into_iter()
        .map(|r| r.into_iter().map(|m| m.expect("every model ran")).collect())
        .collect();
    let records = merged(&rounds);
    let ratios = round_ratios(&rounds);
    match a.output {
        Output::Md => print!("{}", markdown(&records, &ratios)),
        Output::Csv => print!("{}", csv(&records, &ratios)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows(&records, &ratios))?
        ),
        Output::Jsonl => {
            for r in rows(&records, &ratios) {
                println!("{r}");
            }
        }
    }
    Ok(())
}

/// Each model's rounds as one record: every round's timed samples together, the largest peak
/// RSS and GPU memory.
fn merged(rounds: &[Vec<ModelRecord>]) -> Vec<ModelRecord> {
    let mut out = rounds[0].clone();
    for later in &rounds[1..] {
        for (m, r) in out.iter_mut().zip(later) {
            m.peak_rss_bytes = m.peak_rss_bytes.max(r.peak_rss_bytes);
            m.gpu_mem_bytes = m.gpu_mem_bytes.max(r.gpu_mem_bytes);
            for (t, u) in m.results.iter_mut().zip(&r.results) {
                t.samples_ns.extend_from_slice(&u.samples_ns);
            }
        }
    }
    out
}

/// Per model and test, each round's t/s over the first model's in the same round.
type Ratios = Vec<std::collections::BTreeMap<String, Vec<f64>>>;

fn round_ratios(rounds: &[Vec<ModelRecord>]) -> Ratios {
    let n = rounds[0].len();
    (0..n)
        .map(|i| {
            let mut by_test = std::collections::BTreeMap::new();
            for round in rounds {
                for t in &round[i].results {
                    if let Some(b) = round[0].results.iter().find(|b| b.test == t.test) {
                        by_test
                            .entry(t.test.clone())
                            .or_insert_with(Vec::new)
                            .push(t.avg_ts() / b.avg_ts());
                    }
                }
            }
            by_test
        })
        .collect()
}

/// (median, min, max) of a model's per-round ratios for `test`.
fn speedup_of(ratios: &Ratios, model: usize, test: &str) -> Option<(f64, f64, f64)> {
    let mut v = ratios.get(model)?.get(test)?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len();
    let median = if m % 2 == 1 {
        v[m / 2]
    } else {
        0.5 * (v[m / 2 - 1] + v[m / 2])
    };
    Some((median, v[0], v[m - 1]))
}
