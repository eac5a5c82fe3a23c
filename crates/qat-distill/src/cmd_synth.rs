//! `synth`: a model with random weights — of another file's exact shape (`--like`), of a named
//! shape (`--shape models/shapes/llama2-7b.toml`, in a recipe's mix), or just a shape's
//! skeleton of a few MB — to measure speed and memory where the real weights cannot go.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use qd_export::synthetic::{skeleton, synthetic};
use qd_export::{write_shape_model, ModelShape, Recipe};
use qd_gguf::GgufFile;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["like", "shape"])))]
pub struct Args {
    /// The model (or a skeleton of one) whose metadata, tokenizer, tensor names, shapes and
    /// block types to copy.
    #[arg(long)]
    like: Option<PathBuf>,
    /// A shape file (models/shapes/*.toml: a published config's dimensions, heads, KV groups,
    /// vocabulary, RoPE, norms, tokenizer kind) to make a model of.
    #[arg(long)]
    shape: Option<PathBuf>,
    /// With --shape: the quantization mix, any export recipe (q4_k_m for a teacher, q8_0 or
    /// f32 for a student to train from).
    #[arg(long, default_value = "q4_k_m", requires = "shape")]
    quant: String,
    /// The GGUF file to write (atomically; an existing one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Write only the skeleton: metadata and the tensor list, no weights (with --like).
    #[arg(long, conflicts_with = "shape")]
    skeleton: bool,
    /// Seed of the random weights (a shape's synthetic vocabulary is the same for every seed:
    /// a teacher and a student of one tokenizer can be made apart).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::ensure_new(&a.out, a.force)?;
    match (&a.like, &a.shape) {
        (Some(like), _) => from_model(like, &a),
        (None, Some(shape)) => from_shape(shape, &a),
        (None, None) => anyhow::bail!("give --like MODEL or --shape FILE"),
    }
}

fn from_model(like: &std::path::Path, a: &Args) -> anyhow::Result<()> {
    let f = GgufFile::open(like)?;
    let w = if a.skeleton {
        skeleton(&f)?
    } else {
        synthetic(&f, a.seed)?
    };
    let bytes = w.to_bytes();
    if !a.skeleton {
        // What is about to be written must load as a model.
        let check = GgufFile::from_bytes(a.out.clone(), bytes.clone())?;
        qd_model::load_quantized(&check, &candle_core::Device::Cpu)
            .context("the synthetic model does not load")?;
    }
    qd_gguf::write_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {}: {} ({:.1} MB, {} tensors)",
        a.out.display(),
        if a.skeleton {
            "skeleton"
        } else {
            "random weights"
        },
        bytes.len() as f64 / 1e6,
        w.tensors.len()
    );
    Ok(())
}

fn from_shape(path: &std::path::Path, a: &Args) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let shape = ModelShape::from_toml(&text, &path.display().to_string())?;
    let recipe = Recipe::parse(&a.quant)?;
    let t0 = Instant::now();
    let bar = ProgressBar::new(shape.n_params() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {percent}% of the parameters  eta {eta}")
            .expect("static template"),
    );
    let tty = std::io::stderr().is_terminal();
    if !tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_tenth = 0;
    let report = write_shape_model(&shape, &recipe, a.seed, &a.out, &mut |done, total| {
        bar.set_position(done as u64);
        let tenth = done * 10 / total.max(1);
        if !tty && tenth > last_tenth {
            last_tenth = tenth;
            eprintln!("synth: {}0 % of the parameters", tenth);
        }
    })?;
    bar.finish_and_clear();
    // What was written must load: hyper-parameters, tokenizer, every tensor's shape.
    let f = GgufFile::open(&a.out)?;
    qd_tokenizer::GgufTokenizer::from_gguf(&f).context("the synthetic tokenizer does not load")?;
    qd_model::HParams::from_gguf(&f).context("the synthetic model's hyper-parameters")?;
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    println!(
        "wrote {}: {} ({}) {:.3} B parameters, {}, {:.1} MB, {} tensors ({}), {:.0} s",
        a.out.display(),
        shape.name,
        path.display(),
        report.n_params as f64 / 1e9,
        recipe.name(),
        report.bytes as f64 / 1e6,
        report.n_tensors,
        types.join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
