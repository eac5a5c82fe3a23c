//! `synth`: a model of another file's exact shape with random weights (or just that shape, a
//! skeleton of a few MB), to measure speed and memory where the real weights cannot go.

use std::path::PathBuf;

use anyhow::Context;
use qd_export::synthetic::{skeleton, synthetic};
use qd_gguf::GgufFile;

#[derive(clap::Args)]
pub struct Args {
    /// The model (or a skeleton of one) whose metadata, tokenizer, tensor names, shapes and
    /// block types to copy.
    #[arg(long)]
    like: PathBuf,
    /// The GGUF file to write (atomically; an existing one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Write only the skeleton: metadata and the tensor list, no weights.
    #[arg(long)]
    skeleton: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::ensure_new(&a.out, a.force)?;
    let f = GgufFile::open(&a.like)?;
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
