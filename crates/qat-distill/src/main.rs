//! The `qat-distill` command: a thin layer over the library crates.

mod cmd_bench;
mod cmd_device_check;
mod cmd_eval;
mod cmd_export;
mod cmd_generate;
mod cmd_imatrix;
mod cmd_inspect;
mod cmd_plot;
mod cmd_student;
mod cmd_synth;
mod cmd_teacher_cache;
mod cmd_tokenize;
mod cmd_train;
mod device;
mod loaded;
mod plot;
mod train_progress;

use clap::{Parser, Subcommand};

/// Training allocates and frees many [positions, 262144] f32 buffers per step; glibc serves
/// each from a fresh mmap (page faults and zeroing every time), mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "qat-distill",
    version,
    about = "Distil a 4-bit GGUF teacher into a small 4-bit student"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', global = true, env = "QAT_DISTILL_THREADS")]
    threads: Option<usize>,
    /// Instruction-set level of the packed kernels: `scalar`, `avx2`, `avxvnni`, `avx512`, or
    /// on Arm `neon`, `neondot` (default: the best this CPU has). Lowers it only, for
    /// comparisons; bench's JSON rows say which ran.
    #[arg(long, global = true, env = "QAT_DISTILL_ISA", value_name = "LEVEL", value_parser = parse_isa)]
    isa: Option<qd_model::Isa>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture, hyper-parameters, sizes and tokenizer of a GGUF model.
    Inspect(cmd_inspect::Args),
    /// Token ids of a text, as llama-tokenize gives them.
    Tokenize(cmd_tokenize::Args),
    /// Generate text from a prompt (fused prefill, then the single-token decoder).
    Generate(cmd_generate::Args),
    /// Cut a smaller student from the teacher: blocks by influence, MLP channels and heads by
    /// activation importance, the vocabulary trimmed to a corpus.
    Student(cmd_student::Args),
    /// Distil the teacher into a student (knowledge distillation, resumable).
    Train(Box<cmd_train::Args>),
    /// The importance matrix llama-imatrix computes (squared activations per input column of
    /// every weight matrix), in its GGUF format, for `export-gguf --imatrix`.
    Imatrix(cmd_imatrix::Args),
    /// Write a checkpoint (or requantize a GGUF) as a GGUF file of a quantization recipe.
    ExportGguf(cmd_export::Args),
    /// A model of another's exact shape with random weights (or its skeleton), for measuring
    /// speed where the real weights cannot go.
    Synth(cmd_synth::Args),
    /// Several training runs' loss and perplexity curves on one picture, with a summary line
    /// per run.
    Plot(cmd_plot::Args),
    /// Benchmarks: tokens/s as llama-bench measures them.
    #[command(subcommand)]
    Bench(cmd_bench::BenchCommand),
    /// Evaluate a model: perplexity and bits per byte, KL against a reference, per-position top-k.
    #[command(subcommand)]
    Eval(cmd_eval::EvalCommand),
    /// Store the teacher's top-k distribution over a run's data once, for `train
    /// --teacher-cache` (no teacher in memory) and `eval kl --teacher-cache`.
    TeacherCache(cmd_teacher_cache::Args),
    /// Check a device against the CPU (ops bit for bit, training parity, speed, memory, bench)
    /// and write one JSON report: tools/gpu-check.sh runs it on a GPU.
    DeviceCheck(cmd_device_check::Args),
}

/// mimalloc's `mi_option_purge_delay`: -1 keeps freed pages instead of returning them to the OS,
/// which otherwise clears them again on every reuse (measured: half of a training step's
/// system time).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // SAFETY: a plain option setter of the allocator, called before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // Training decides per phase (`memory::keep_freed_pages`): mimalloc's default delay while
    // it loads or near the memory limit, kept pages otherwise.
    qd_distill::train::memory::set_page_policy(|keep| {
        // SAFETY: the same option setter; mimalloc reads the option on each purge decision.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, if keep { -1 } else { 10 })
        };
    });
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    if let Err(e) = run(cli) {
        // One line, whatever the source error looks like (TOML errors draw a caret diagram).
        let msg = format!("{e:#}");
        let one: Vec<&str> = msg.split_whitespace().collect();
        eprintln!("error: {}", one.join(" "));
        std::process::exit(1);
    }
}

/// clap's usage errors in the CLI's one-line form (their usage block and hint dropped; `--help`
/// and `--version` print as usual).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || matches!(
            e.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        e.exit();
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    // "the following required arguments were not provided:" lists them on the next line.
    let msg = match (first.ends_with(':'), lines.next()) {
        (true, Some(next)) if !next.starts_with("Usage:") => format!("{first} {next}"),
        _ => first.to_string(),
    };
    eprintln!("{msg} (see --help)");
    std::process::exit(2);
}

/// Commands that write a file refuse an existing one unless `--force`, before any work.
fn ensure_new(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        force || !out.exists(),
        "{} already exists; pass --force to overwrite it",
        out.display()
    );
    Ok(())
}

fn parse_isa(s: &str) -> Result<qd_model::Isa, String> {
    qd_model::Isa::parse(s).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(level) = cli.isa {
        anyhow::ensure!(
            level.runs_here(),
            "--isa {}: this CPU does not run it (it runs {})",
            level.name(),
            qd_model::Isa::supported()
                .map(qd_model::Isa::name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        qd_model::Isa::limit_to(level);
    }
    if let Some(t) = cli.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        // candle's CPU kernels read RAYON_NUM_THREADS as well as using the global pool.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {t} threads: {e}"))?;
    }
    match cli.command {
        Command::Inspect(a) => cmd_inspect::run(a),
        Command::Tokenize(a) => cmd_tokenize::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Eval(c) => cmd_eval::run(c),
        Command::Student(a) => cmd_student::run(a),
        Command::Train(a) => cmd_train::run_cmd(*a),
        Command::ExportGguf(a) => cmd_export::run(a),
        Command::Imatrix(a) => cmd_imatrix::run(a),
        Command::Bench(c) => cmd_bench::run(c),
        Command::Synth(a) => cmd_synth::run(a),
        Command::Plot(a) => cmd_plot::run(a),
        Command::DeviceCheck(a) => cmd_device_check::run_cmd(a),
        Command::TeacherCache(a) => cmd_teacher_cache::run(a),
    }
}
