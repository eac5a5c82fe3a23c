use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use qd_distill::train::run::{run, Event, RunConfig};

#[derive(clap::Args)]
pub struct Args {
    /// A TOML run configuration (see models/example-run.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Training text: .txt / .jsonl files or folders (repeatable).
    #[arg(long)]
    data: Vec<PathBuf>,
    /// Run directory: checkpoints, log.jsonl, summary.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Teacher blocks the student starts from, e.g. 0,3,6,9,12,17.
    #[arg(long, value_delimiter = ',')]
    blocks: Option<Vec<usize>>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the soft loss (constant); 0 trains on hard labels only.
    #[arg(long)]
    alpha: Option<f64>,
    /// Distillation temperature (constant).
    #[arg(long)]
    temperature: Option<f64>,
    /// forward | reverse | jsd
    #[arg(long)]
    divergence: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// A student preset (TOML, see models/student-6l.toml) instead of teacher blocks.
    #[arg(long)]
    student_config: Option<PathBuf>,
    /// QAT recipe: q4_0, q4_k, q5_0, q8_0, q4_k_m, qat-q4 (or any single GGUF block type);
    /// `none` turns off a recipe set in --config.
    #[arg(long)]
    qat: Option<String>,
    /// Step at which QAT switches on (delayed QAT).
    #[arg(long)]
    qat_start: Option<usize>,
    /// Also fake-quantize the token embedding and LM head under QAT.
    #[arg(long)]
    qat_embeddings: bool,
    /// Random truncation: probability that a training sequence is cut to a random length.
    #[arg(long)]
    truncate_prob: Option<f64>,
    /// Shortest length a truncated sequence keeps (tokens).
    #[arg(long)]
    truncate_min: Option<usize>,
    /// Token-noise injection: probability that an input token is replaced by a random id
    /// (targets stay clean).
    #[arg(long)]
    token_noise: Option<f64>,
    /// Weighted mixing: one weight per --data entry (e.g. 3,1), each entry packed alone and
    /// drawn with these probabilities.
    #[arg(long, value_delimiter = ',')]
    data_weights: Option<Vec<f64>>,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
}

fn config(a: &Args) -> anyhow::Result<RunConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<RunConfig>(&text)
                .with_context(|| format!("{}: invalid run configuration", p.display()))?
        }
        None => RunConfig::default(),
    };
    macro_rules! set {
        ($($f:ident => $g:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$g = v; } )* };
    }
    set!(teacher => teacher, out => out, blocks => student_blocks, steps => steps, seq_len => seq_len,
         batch_size => batch_size, grad_accum => grad_accum, lr => lr, divergence => divergence,
         seed => seed, eval_every => eval_every, checkpoint_every => checkpoint_every,
         truncate_prob => truncate_prob, truncate_min => truncate_min, token_noise => token_noise,
         data_weights => data_weights);
    if !a.data.is_empty() {
        c.data = a.data.clone();
    }
    if let Some(p) = &a.student_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        c.student = Some(
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid student config", p.display()))?,
        );
    }
    if let Some(v) = &a.qat {
        c.qat = (v != "none").then(|| v.clone());
    }
    if let Some(v) = a.qat_start {
        c.qat_start = v;
    }
    if a.qat_embeddings {
        c.qat_embeddings = true;
    }
    if let Some(v) = a.alpha {
        c.alpha = qd_distill::train::schedule::Schedule::constant(v);
    }
    if let Some(v) = a.temperature {
        c.temperature = qd_distill::train::schedule::Schedule::constant(v);
    }
    anyhow::ensure!(
        !c.teacher.as_os_str().is_empty(),
        "no teacher given (--teacher or teacher = … in --config)"
    );
    c.teacher = expand_home(&c.teacher);
    c.out = expand_home(&c.out);
    c.data = c.data.iter().map(|p| expand_home(p)).collect();
    Ok(c)
}

/// `~/x` as the shell would expand it (config files are not seen by a shell).
fn expand_home(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

pub fn run_cmd(a: Args) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while the checkpoint is written kills the process as usual.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .expect("static template"),
    );
    // Without a terminal the bar is hidden (and so is its println): log plain lines instead.
    let tty = std::io::stderr().is_terminal();
    let say = |line: String| {
        if tty {
            bar.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    let every = (cfg.steps / 20).max(1);
    let summary = run(&cfg, a.resume, &stop, |ev| match ev {
        Event::Start {
            step,
            train_sequences,
            val_sequences,
            student_params,
            ..
        } => {
            bar.set_position(*step as u64);
            say(format!(
                "student {:.1} M params; {train_sequences} training and {val_sequences} validation sequences of {} tokens",
                *student_params as f64 / 1e6,
                cfg.seq_len
            ));
        }
        Event::Step {
            step,
            loss,
            kd,
            ce,
            tokens_per_second,
            ..
        } => {
            let msg =
                format!("loss {loss:.4} (kd {kd:.4} ce {ce:.4})  {tokens_per_second:.0} tok/s");
            bar.set_position(*step as u64);
            if !tty && (step % every == 0 || *step == cfg.steps) {
                eprintln!("step {step}/{}: {msg}", cfg.steps);
            }
            bar.set_message(msg);
        }
        Event::Eval { step, val } => say(format!(
            "step {step}: held-out ppl {:.3}, KL to teacher {:.4}",
            val.ppl, val.kd
        )),
        Event::Checkpoint { path, .. } => {
            say(format!("checkpoint {}", path.display()));
            // The curve is a convenience: failing to draw it never stops training.
            if let Err(e) =
                crate::plot::plot_log(&cfg.out.join("log.jsonl"), &cfg.out.join("loss.png"))
            {
                say(format!("note: could not draw loss.png: {e:#}"));
            }
        }
    });
    bar.finish_and_clear();
    match summary {
        Ok(s) => {
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Err(e @ qd_distill::train::run::TrainError::Interrupted { .. }) => {
            eprintln!("{e}");
            std::process::exit(130);
        }
        Err(e) => Err(e.into()),
    }
}
