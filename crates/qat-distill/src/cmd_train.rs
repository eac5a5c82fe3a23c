use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use qd_distill::train::run::{run, RunConfig};

use crate::train_progress::Progress;

#[derive(clap::Args)]
pub struct Args {
    /// A TOML run configuration (see models/example-run.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The teacher GGUF (e.g. the path tools/fetch-teacher.sh prints).
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
    /// Optimizer steps of the whole run (a resumed run continues up to it).
    #[arg(long)]
    steps: Option<usize>,
    /// Tokens per training sequence.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate (AdamW).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the soft loss (constant); 0 trains on hard labels only.
    #[arg(long)]
    alpha: Option<f64>,
    /// Distillation temperature (constant).
    #[arg(long)]
    temperature: Option<f64>,
    /// The soft loss: forward KL(teacher‖student), reverse KL, or generalized JSD (--jsd-beta).
    #[arg(long, value_enum)]
    divergence: Option<DivergenceArg>,
    /// Seed of the data order, the split and the augmentations.
    #[arg(long)]
    seed: Option<u64>,
    /// Held-out evaluation every N steps (0 = never).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Checkpoint every N steps (and always at the end or on Ctrl-C).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// A student preset (TOML, see models/student-6l.toml) instead of teacher blocks.
    #[arg(long, conflicts_with = "student_file")]
    student_config: Option<PathBuf>,
    /// A student GGUF written by `qat-distill student` (pruned, vocabulary trimmed) instead of
    /// teacher blocks.
    #[arg(long)]
    student_file: Option<PathBuf>,
    /// QAT recipe: q4_0, q4_k, q5_0, q8_0, q4_k_m, qat-q4, <type>-pure (or any single GGUF
    /// block type); `none` turns off a recipe set in --config.
    #[arg(long, value_parser = parse_recipe)]
    qat: Option<String>,
    /// QAT against this importance matrix's weighted grid (`qat-distill imatrix`,
    /// `llama-imatrix`): the grid `export-gguf` and `llama-quantize --imatrix` write with it.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Step at which QAT switches on (delayed QAT).
    #[arg(long)]
    qat_start: Option<usize>,
    /// Learn the block scales (LSQ) of the Q4_0/Q5_0/Q8_0 weights QAT trains; export writes the
    /// learned scales (plain blocks llama.cpp decodes unchanged).
    #[arg(long)]
    learned_steps: bool,
    /// The optimizer's moments: adamw (f32) or adamw8 (8-bit block-wise: 6 fewer bytes per
    /// trained parameter; CPU only).
    #[arg(long)]
    optimizer: Option<String>,
    /// Recompute each block in backward instead of keeping its activations (activation
    /// checkpointing): less memory for long sequences and big students, one more forward pass.
    #[arg(long)]
    checkpoint_blocks: bool,
    /// The teacher multiplies by its weights' blocks as stored, without the repacked tiles
    /// kept beside them: its file's memory (about 4–5 GB less for a 7B Q4_K_M teacher), slower.
    #[arg(long)]
    teacher_stored_blocks: bool,
    /// Update each block as soon as backward has made its gradients (a first backward measures
    /// the norm clipping needs): no gradient of the whole student held, the same bits, one more
    /// backward's time. With --checkpoint-blocks, one sequence a step.
    #[arg(long)]
    update_in_backward: bool,
    /// end-to-end (the whole student each step) or block-ap (each block of a whole-model QAT
    /// student trained in turn against the teacher block's output, --steps steps each; memory of
    /// one block; writes OUT/model.gguf).
    #[arg(long)]
    schedule: Option<String>,
    /// The trained block matrices' master copy: f32, or bf16 (2 bytes each, stochastic rounding;
    /// with --optimizer adamw8; its 200-step curve trains worse than f32's: docs/scale.md).
    #[arg(long)]
    master_weights: Option<String>,
    /// Block-AP: training sequences whose hidden states are cached for every block (default 16).
    #[arg(long)]
    block_sequences: Option<usize>,
    /// Peak relative learning rate of the learned scales (default 2e-3).
    #[arg(long)]
    step_lr: Option<f64>,
    /// Also fake-quantize the token embedding and LM head under QAT.
    #[arg(long, conflicts_with = "no_qat_embeddings")]
    qat_embeddings: bool,
    /// Do not fake-quantize the embedding and LM head (overrides the config).
    #[arg(long)]
    no_qat_embeddings: bool,
    /// Keep the token embedding and tied LM head as the teacher's, untrained (the default).
    #[arg(long, conflicts_with = "no_freeze_embeddings")]
    freeze_embeddings: bool,
    /// Train the token embedding and LM head too (a full [vocab, d] gradient per chunk).
    #[arg(long)]
    no_freeze_embeddings: bool,
    /// Do not move the weights onto their grid values when QAT starts (see models/README.md).
    #[arg(long)]
    no_snap_to_grid: bool,
    /// Do not cache the tokenized corpus in ~/.cache/qat-distill/tokens.
    #[arg(long)]
    no_token_cache: bool,
    /// Warm-up steps of the learning rate.
    #[arg(long)]
    warmup: Option<usize>,
    /// Learning-rate decay after warm-up: constant | linear | cosine.
    #[arg(long)]
    lr_decay: Option<String>,
    /// The decayed learning rate's floor, as a fraction of --lr.
    #[arg(long)]
    min_lr_ratio: Option<f64>,
    /// AdamW's decoupled weight decay (norms and biases excluded).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Global gradient-norm clipping threshold (0 = off).
    #[arg(long)]
    clip: Option<f64>,
    /// β of the generalized JSD (--divergence jsd).
    #[arg(long)]
    jsd_beta: Option<f64>,
    /// Positions per chunk of the LM head and loss (memory vs speed).
    #[arg(long)]
    chunk: Option<usize>,
    /// Fraction of the packed sequences held out for validation.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Validation sequences scored at each evaluation.
    #[arg(long)]
    eval_sequences: Option<usize>,
    /// Checkpoints kept in --out (the newest).
    #[arg(long)]
    keep: Option<usize>,
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
    /// Where to compute: cpu (the fused CPU kernels), cpu-generic (the path a GPU runs, on the
    /// CPU) or cuda[:N] (a build with --features cuda). A checkpoint resumes on any device.
    #[arg(long, value_parser = parse_device)]
    device: Option<String>,
    /// Distil from a stored teacher (`qat-distill teacher-cache`): the KD term over its top-k
    /// ids and tail; the teacher is not loaded.
    #[arg(long)]
    teacher_cache: Option<PathBuf>,
    /// The online KD term over the teacher's top K ids and the tail (a cache of that k's loss).
    #[arg(long)]
    kd_top_k: Option<usize>,
}

/// A `--device` value `qd_model::DeviceSpec` knows, in the config's spelling.
fn parse_device(s: &str) -> Result<String, String> {
    crate::device::parse(s).map(|d| d.to_string())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DivergenceArg {
    Forward,
    Reverse,
    Jsd,
}

impl DivergenceArg {
    /// The config's name for it.
    fn name(self) -> String {
        match self {
            Self::Forward => "forward",
            Self::Reverse => "reverse",
            Self::Jsd => "jsd",
        }
        .into()
    }
}

/// A recipe name that `qd_export::Recipe` knows, or `none`.
fn parse_recipe(s: &str) -> Result<String, String> {
    if s == "none" {
        return Ok(s.into());
    }
    qd_export::Recipe::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The run configuration in `path` (TOML), or the defaults.
pub fn read_config(path: Option<&std::path::Path>) -> anyhow::Result<RunConfig> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<RunConfig>(&text)
                .with_context(|| format!("{}: invalid run configuration", p.display()))
        }
        None => Ok(RunConfig::default()),
    }
}

fn config(a: &Args) -> anyhow::Result<RunConfig> {
    let mut c = read_config(a.config.as_deref())?;
    macro_rules! set {
        ($($f:ident => $g:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$g = v; } )* };
    }
    set!(teacher => teacher, out => out, blocks => student_blocks, steps => steps, seq_len => seq_len,
         batch_size => batch_size, grad_accum => grad_accum, lr => lr,
         seed => seed, eval_every => eval_every, checkpoint_every => checkpoint_every,
         truncate_prob => truncate_prob, truncate_min => truncate_min, token_noise => token_noise,
         data_weights => data_weights, warmup => warmup, min_lr_ratio => min_lr_ratio,
         weight_decay => weight_decay, clip => clip, jsd_beta => jsd_beta, chunk => chunk,
         val_fraction => val_fraction, eval_sequences => eval_sequences, keep => keep,
         device => device);
    if let Some(v) = &a.lr_decay {
        c.lr_decay =
            serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| {
                anyhow::anyhow!("--lr-decay must be constant, linear or cosine, got {v:?}")
            })?;
    }
    if a.freeze_embeddings {
        c.freeze_embeddings = true;
    }
    if a.no_freeze_embeddings {
        c.freeze_embeddings = false;
    }
    if a.no_qat_embeddings {
        c.qat_embeddings = false;
    }
    if a.no_snap_to_grid {
        c.snap_to_grid = false;
    }
    if a.learned_steps {
        c.learned_steps = true;
    }
    if a.checkpoint_blocks {
        c.checkpoint_blocks = true;
    }
    if a.teacher_stored_blocks {
        c.teacher_stored_blocks = true;
    }
    if a.update_in_backward {
        c.update_in_backward = true;
    }
    if let Some(o) = &a.optimizer {
        c.optimizer = o.clone();
    }
    if let Some(v) = &a.schedule {
        c.schedule = v.clone();
    }
    if let Some(v) = &a.master_weights {
        c.master_weights = v.clone();
    }
    if let Some(n) = a.block_sequences {
        c.block_sequences = n;
    }
    if let Some(v) = a.step_lr {
        c.step_lr = v;
    }
    if a.no_token_cache {
        c.token_cache = false;
    }
    if !a.data.is_empty() {
        c.data = a.data.clone();
    }
    if let Some(d) = a.divergence {
        c.divergence = d.name();
    }
    if let Some(p) = &a.student_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        c.student = Some(
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid student config", p.display()))?,
        );
    }
    if let Some(p) = &a.student_file {
        c.student_file = Some(p.clone());
    }
    if let Some(p) = &a.imatrix {
        c.imatrix = Some(p.clone());
    }
    if let Some(v) = &a.qat {
        c.qat = (v != "none").then(|| v.clone());
    }
    if let Some(p) = &a.teacher_cache {
        c.teacher_cache = Some(p.clone());
    }
    if let Some(k) = a.kd_top_k {
        c.kd_top_k = Some(k);
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
    c.student_file = c.student_file.as_deref().map(expand_home);
    c.imatrix = c.imatrix.as_deref().map(expand_home);
    c.teacher_cache = c.teacher_cache.as_deref().map(expand_home);
    Ok(c)
}

/// `~/x` as the shell would expand it (config files are not seen by a shell).
pub fn expand_home(p: &std::path::Path) -> PathBuf {
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
    let progress = Progress::new(&cfg)?;
    let summary = run(&cfg, a.resume, &stop, |ev| progress.on(ev));
    progress.finish();
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
