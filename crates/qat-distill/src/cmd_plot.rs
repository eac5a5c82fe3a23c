//! `plot`: several training runs' curves on one picture — loss per step, held-out KL to the
//! teacher and perplexity — and a row per run with its last steps' mean loss and its last
//! evaluation, for
//! comparing two settings of one recipe (e.g. `--optimizer adamw` against `adamw8`).

use std::path::PathBuf;

use anyhow::Context;

use crate::plot::{plot_runs, RunCurves};

#[derive(clap::Args)]
pub struct Args {
    /// Run directories (each with its `log.jsonl`, as `train --out` writes it) or log files.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The PNG to write (atomically; an existing one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Names in the legend, comma-separated, one per run (default: the directories' names).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Steps averaged in the bold loss curves and in the printed mean.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.labels.is_empty() || a.labels.len() == a.runs.len(),
        "--labels names {} runs but {} were given",
        a.labels.len(),
        a.runs.len()
    );
    crate::ensure_new(&a.out, a.force)?;
    let window = a.window as usize;
    let mut runs = Vec::with_capacity(a.runs.len());
    for (i, path) in a.runs.iter().enumerate() {
        let log = if path.is_dir() {
            path.join("log.jsonl")
        } else {
            path.clone()
        };
        let label = a.labels.get(i).cloned().unwrap_or_else(|| {
            let named = if path.is_dir() {
                path.as_path()
            } else {
                path.parent().unwrap_or(path)
            };
            named.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        runs.push(RunCurves::read(&log, label).with_context(|| format!("run {}", path.display()))?);
    }
    println!(
        "| run | steps | mean loss, last {window} steps | last held-out KL to the teacher | \
         last held-out perplexity |"
    );
    println!("|---|---:|---:|---:|---:|");
    let at = |v: Option<(f64, f64)>| {
        v.map_or("—".to_string(), |(step, v)| {
            format!("{v:.4} (step {step})")
        })
    };
    for r in &runs {
        let s = r.summary(window);
        println!(
            "| {} | {} | {:.4} | {} | {} |",
            r.label,
            s.steps,
            s.mean_loss,
            at(s.val_kd),
            at(s.ppl)
        );
    }
    plot_runs(&runs, window, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
