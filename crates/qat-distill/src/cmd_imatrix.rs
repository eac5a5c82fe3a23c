//! `imatrix`: llama-imatrix's importance matrix from our fused prefill, in its GGUF format, for
//! `export-gguf --imatrix` (ours or llama-quantize's).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use qd_export::imatrix::{Entry, Imatrix};

use crate::loaded;

#[derive(clap::Args)]
pub struct Args {
    /// The model whose activations are measured (the teacher, or the f32 model to quantize).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Calibration text (UTF-8). Use text like the model's use, never the evaluation text.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// Tokens per chunk (llama-imatrix's -c).
    #[arg(long, short = 'c', default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: all the text holds).
    #[arg(long)]
    chunks: Option<usize>,
    /// The imatrix GGUF to write (atomically; an existing one needs --force).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::ensure_new(&a.out, a.force)?;
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model(&f)?;
    let (tokens, params) = loaded::chunked_text(&tok, &a.file, a.ctx, a.chunks, "model")?;
    let n_chunks = qd_eval::perplexity::plan_chunks(tokens.len(), &params)?;
    eprintln!(
        "imatrix: {} tokens; {n_chunks} chunks of {} tokens",
        tokens.len(),
        a.ctx
    );
    let bar = ProgressBar::new(n_chunks as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} chunks  {per_sec}  eta {eta}")
            .expect("static template"),
    );
    let c = qd_eval::collect_imatrix(&model, &tokens, &params, |i, _| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    let imatrix = Imatrix {
        entries: c
            .sums
            .into_iter()
            .map(|(name, sums)| {
                let entry = Entry {
                    sums: sums.into_iter().map(|s| s as f32).collect(),
                    counts: vec![c.tokens as f32],
                };
                (name, entry)
            })
            .collect(),
        datasets: vec![a.file.display().to_string()],
        chunk_count: c.chunks as u32,
        chunk_size: a.ctx as u32,
    };
    imatrix.write(&a.out)?;
    eprintln!(
        "imatrix: {} matrices from {} chunks ({} tokens) in {:.1} s ({:.0} tokens/s) -> {}",
        imatrix.entries.len(),
        c.chunks,
        c.tokens,
        c.seconds,
        c.tokens as f64 / c.seconds.max(1e-9),
        a.out.display()
    );
    Ok(())
}
