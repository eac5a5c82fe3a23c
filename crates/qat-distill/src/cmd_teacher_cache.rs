//! `teacher-cache`: the teacher's top-k distribution over a run's data, stored once, for
//! `train --teacher-cache` and `eval kl --teacher-cache`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use qd_distill::teacher_cache::{build, BuildOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The run configuration whose data, packing (sequence length, seed, held-out fraction,
    /// mixture weights) and temperature the cache follows (as `train --config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The teacher GGUF (overrides the config).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training text: files or folders (repeatable; overrides the config).
    #[arg(long)]
    data: Vec<PathBuf>,
    /// Tokens per sequence (overrides the config).
    #[arg(long)]
    seq_len: Option<usize>,
    /// The packing seed (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// The folder the cache goes to (resumed when it holds an unfinished build of the same
    /// inputs).
    #[arg(long)]
    out: PathBuf,
    /// Teacher ids kept per position (with their log-probabilities and the tail's mass).
    #[arg(long, default_value_t = 64)]
    k: usize,
    /// Only the training sequences of the run's first steps, up to this many tokens (default:
    /// every training sequence).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Run the teacher through candle's graph (as online training does) instead of the fused
    /// prefill.
    #[arg(long)]
    graph: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = crate::cmd_train::read_config(a.config.as_deref())?;
    if let Some(m) = a.model {
        cfg.teacher = m;
    }
    if !a.data.is_empty() {
        cfg.data = a.data;
    }
    if let Some(n) = a.seq_len {
        cfg.seq_len = n;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    anyhow::ensure!(
        !cfg.teacher.as_os_str().is_empty(),
        "no teacher given (--model or the config's teacher)"
    );
    cfg.teacher = crate::cmd_train::expand_home(&cfg.teacher);
    cfg.data = cfg
        .data
        .iter()
        .map(|p| crate::cmd_train::expand_home(p))
        .collect();
    cfg.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} sequences  {msg}  eta {eta}")
            .expect("static template"),
    );
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut last_line = 0;
    let opt = BuildOptions {
        k: a.k,
        max_tokens: a.max_tokens,
        graph: a.graph,
    };
    let m = build(&cfg, &a.out, &opt, &stop, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        let rate = (done * (cfg.seq_len - 1)) as f64 / t0.elapsed().as_secs_f64();
        bar.set_message(format!("{rate:.0} tokens/s"));
        if !tty && (done == total || done >= last_line + total.div_ceil(20)) {
            last_line = done;
            eprintln!("teacher-cache: {done}/{total} sequences, {rate:.0} tokens/s");
        }
    })?;
    bar.finish_and_clear();
    let bytes: u64 = m
        .shards
        .iter()
        .filter_map(|s| std::fs::metadata(a.out.join(&s.file)).ok())
        .map(|md| md.len())
        .sum();
    println!(
        "wrote {}: {} sequences, {} positions, k = {}, {} bytes per token, {:.1} MB in {} shards \
         ({} teacher, {:.1} s)",
        a.out.display(),
        m.shards.iter().map(|s| s.sequences.len()).sum::<usize>(),
        m.positions,
        m.identity.k,
        m.bytes_per_token,
        bytes as f64 / 1e6,
        m.shards.len(),
        m.identity.path,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
