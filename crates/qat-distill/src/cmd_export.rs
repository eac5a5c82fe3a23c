//! `export-gguf`: a checkpoint (or any GGUF, like llama-quantize) as a GGUF file of a recipe.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use qd_distill::export::{export_checkpoint, ExportOptions};
use qd_export::{requantize, write_new, Exported, Recipe};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["checkpoint", "model"])))]
pub struct Args {
    /// A checkpoint directory, or a run directory (its newest checkpoint is used).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Requantize this GGUF file instead (like llama-quantize).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A llama-quantize file type (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q2_k_s, q3_k_s/m/l,
    /// q4_k_s/m, q5_k_s/m, q6_k; q3_k and q5_k are q3_k_s and q5_k_s), f32, qat-q4, or
    /// <type>-pure (every 2-D tensor that type, as llama-quantize --pure). Default for a
    /// checkpoint: the recipe it trained with.
    #[arg(long)]
    recipe: Option<String>,
    /// An importance matrix (`qat-distill imatrix` or `llama-imatrix`): ggml's weighted
    /// quantizers and llama.cpp's imatrix rules, byte for byte as `llama-quantize --imatrix`.
    /// A checkpoint that trained against one exports with it by itself (this names it if it
    /// moved); any other needs --from-f32.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Quantize a checkpoint with a recipe it did not train against (post-training
    /// quantization, the baseline QAT must beat).
    #[arg(long)]
    from_f32: bool,
    /// The teacher file, if it moved since training.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// With --model: keep only the vocabulary this UTF-8 text uses (its tokens, the pieces
    /// their merges form, control, byte and special tokens), checked by re-tokenizing it.
    #[arg(long, value_name = "CORPUS")]
    trim_vocab: Option<PathBuf>,
    /// The GGUF file to write (atomically; an existing one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Refuse early, before minutes of quantization.
    crate::ensure_new(&a.out, a.force)?;
    let recipe = a.recipe.as_deref().map(Recipe::parse).transpose()?;
    anyhow::ensure!(
        a.trim_vocab.is_none() || a.model.is_some(),
        "--trim-vocab works with --model only for now (a checkpoint keeps the vocabulary it \
         trained with)"
    );
    let t0 = Instant::now();
    let (exported, recipe, what) = match (&a.checkpoint, &a.model) {
        (Some(dir), _) => {
            let opts = ExportOptions {
                recipe,
                from_f32: a.from_f32,
                teacher: a.teacher.clone(),
                imatrix: a.imatrix.clone(),
            };
            let e = export_checkpoint(dir, &opts)
                .with_context(|| format!("exporting {}", dir.display()))?;
            let what = format!(
                "{} (step {}, {})",
                e.checkpoint.display(),
                e.step,
                if e.matches_training {
                    "trained with this recipe (QAT)"
                } else {
                    "post-training quantization"
                }
            );
            (e.exported, e.recipe, what)
        }
        (None, Some(model)) => {
            let recipe = recipe.context("--model needs --recipe")?;
            let src = qd_gguf::GgufFile::open(model)?;
            // Trim first: a bad corpus should fail before minutes of quantization.
            let trimmed = match &a.trim_vocab {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading the corpus {}", p.display()))?;
                    Some(qd_export::trim_vocab::trim_on(&src, &text)?)
                }
                None => None,
            };
            let imatrix = a
                .imatrix
                .as_deref()
                .map(qd_export::Imatrix::open)
                .transpose()?;
            let with = imatrix
                .as_ref()
                .zip(a.imatrix.as_deref())
                .map(|(imatrix, path)| qd_export::WithImatrix { imatrix, path });
            let mut e = requantize(&src, recipe, with, vec![])
                .with_context(|| format!("requantizing {}", model.display()))?;
            let mut what = model.display().to_string();
            if let Some(t) = &trimmed {
                qd_export::trim_vocab::apply(&mut e, t)?;
                what += &format!(
                    ", vocabulary trimmed to {} of {} tokens",
                    t.kept.len(),
                    src.get_array("tokenizer.ggml.tokens")?.len()
                );
            }
            (e, recipe, what)
        }
        (None, None) => unreachable!("clap requires one source"),
    };
    let quantized = t0.elapsed().as_secs_f64();
    write_new(&exported, &a.out, a.force)?;
    report(
        &exported,
        recipe,
        &what,
        &a.out,
        quantized,
        t0.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn report(e: &Exported, recipe: Recipe, what: &str, out: &std::path::Path, q: f64, total: f64) {
    for line in e.fallbacks() {
        eprintln!("note: {line}");
    }
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (t, d) in e.tensors.iter().zip(&e.writer.tensors) {
        let slot = by_type.entry(t.type_name()).or_default();
        slot.0 += 1;
        slot.1 += d.data.len();
    }
    let n_params: usize = e
        .tensors
        .iter()
        .map(|t| t.dims.iter().product::<usize>())
        .sum();
    println!("{what} -> {} ({})", out.display(), recipe.name());
    for (ty, (n, bytes)) in by_type {
        println!(
            "  {ty:>5}: {n:4} tensors, {:8.2} MiB",
            bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "  {:.2} M params, {:.2} MiB of tensors ({:.2} bits/weight); quantized in {q:.2} s, written in {:.2} s",
        n_params as f64 / 1e6,
        e.tensor_bytes() as f64 / (1 << 20) as f64,
        e.tensor_bytes() as f64 * 8.0 / n_params.max(1) as f64,
        total - q
    );
}
