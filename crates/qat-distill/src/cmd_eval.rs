use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use qd_eval::PerplexityParams;
use serde_json::json;

use crate::loaded;

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity with llama-perplexity's method (second half of each chunk scored).
    Perplexity(PplArgs),
    /// The k most likely next tokens at every position of a text.
    TopK(TopKArgs),
}

#[derive(clap::Args)]
pub struct PplArgs {
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[arg(long, short = 'f')]
    file: PathBuf,
    #[arg(long, short = 'c', default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TopKArgs {
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[arg(long)]
    text: String,
    #[arg(long, default_value_t = 32)]
    k: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(c: EvalCommand) -> anyhow::Result<()> {
    match c {
        EvalCommand::Perplexity(a) => perplexity(a),
        EvalCommand::TopK(a) => top_k(a),
    }
}

fn perplexity(a: PplArgs) -> anyhow::Result<()> {
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model(&f)?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let tokens = tok.encode(&text, true)?;
    let bos = tok
        .bos
        .context("the model has no BOS token, which llama-perplexity's method needs")?;
    let params = PerplexityParams {
        ctx: a.ctx,
        chunks: a.chunks,
        bos,
    };
    let n_chunks = qd_eval::perplexity::plan_chunks(tokens.len(), &params)?;
    if !a.json {
        println!(
            "perplexity: tokenized {} tokens; {} chunks of {} tokens, scoring {} per chunk",
            tokens.len(),
            n_chunks,
            a.ctx,
            a.ctx - 1 - a.ctx / 2
        );
    }
    let bar = ProgressBar::new(n_chunks as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} chunks  ppl {msg}  eta {eta}")
            .expect("static template"),
    );
    let mut line = String::new();
    let report = qd_eval::perplexity(&model, &tokens, &params, |i, _, acc| {
        bar.set_position(i as u64);
        bar.set_message(format!("{:.4}", acc.ppl()));
        line.push_str(&format!("[{i}]{:.4},", acc.ppl()));
    })?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{line}");
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            report.ppl, report.ppl_stderr
        );
        println!(
            "{} tokens scored; {:.1} tokens/s ({} × {} tokens in {:.2} s)",
            report.n_scored, report.tokens_per_second, report.n_chunks, report.ctx, report.seconds
        );
    }
    Ok(())
}

fn top_k(a: TopKArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.k > 0, "--k must be at least 1");
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model(&f)?;
    let tokens = tok.encode(&a.text, true)?;
    anyhow::ensure!(!tokens.is_empty(), "the text gives no tokens");
    let positions = qd_eval::top_k(&model, &tokens, a.k)?;
    if a.json {
        println!("{}", json!({ "tokens": tokens, "positions": positions }));
        return Ok(());
    }
    for (i, p) in positions.iter().enumerate() {
        let cur = tok.token_text(tokens[i]).unwrap_or_default();
        let cands: Vec<String> = p
            .ids
            .iter()
            .zip(&p.logprobs)
            .map(|(&id, lp)| format!("{:?} {:.3}", tok.token_text(id).unwrap_or_default(), lp))
            .collect();
        println!(
            "{i:>4} {cur:?} (lse {:.3}) -> {}",
            p.logsumexp,
            cands.join(", ")
        );
    }
    Ok(())
}
