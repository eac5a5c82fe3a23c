use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::loaded;

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity with llama-perplexity's method (second half of each chunk scored).
    Perplexity(PplArgs),
    /// The k most likely next tokens at every position of a text.
    TopK(TopKArgs),
    /// KL divergence to a reference model (llama-perplexity --kl-divergence's figures).
    Kl(KlArgs),
}

/// The text and chunking both `eval perplexity` and `eval kl` take (llama-perplexity's flags).
#[derive(clap::Args)]
pub struct ChunkArgs {
    /// The text to score (UTF-8), e.g. tests/data/corpora/pydoc.txt.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, short = 'c', default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Through candle's graph instead of the fused prefill.
    #[arg(long)]
    graph: bool,
    /// Where to compute: cpu, cpu-generic (the graph path a GPU runs) or cuda[:N].
    #[arg(long, value_parser = crate::device::parse, default_value = "cpu")]
    device: qd_model::DeviceSpec,
}

#[derive(clap::Args)]
pub struct KlArgs {
    /// The model under test (e.g. a student or a requantized teacher).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// The reference (e.g. the teacher).
    #[arg(
        long,
        required_unless_present = "teacher_cache",
        conflicts_with = "teacher_cache"
    )]
    reference: Option<PathBuf>,
    /// Against a stored teacher (`qat-distill teacher-cache`) on its stored text instead: KL
    /// over the teacher's top-k ids and the tail, at every position of its sequences.
    #[arg(long)]
    teacher_cache: Option<PathBuf>,
    /// With --teacher-cache: which of its sequences (held-out or training).
    #[arg(long, value_enum, default_value = "val", requires = "teacher_cache")]
    split: SplitArg,
    /// With --teacher-cache: at most this many sequences.
    #[arg(long, requires = "teacher_cache")]
    sequences: Option<usize>,
    /// The text to score (UTF-8), e.g. tests/data/corpora/pydoc.txt.
    #[arg(long, short = 'f', required_unless_present = "teacher_cache")]
    file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, short = 'c', default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Through candle's graph instead of the fused prefill.
    #[arg(long)]
    graph: bool,
    /// Where to compute: cpu, cpu-generic (the graph path a GPU runs) or cuda[:N].
    #[arg(long, value_parser = crate::device::parse, default_value = "cpu")]
    device: qd_model::DeviceSpec,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Val,
    Train,
}

#[derive(clap::Args)]
pub struct PplArgs {
    /// The GGUF model to evaluate.
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[command(flatten)]
    chunking: ChunkArgs,
}

#[derive(clap::Args)]
pub struct TopKArgs {
    /// The GGUF model to evaluate.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// The text whose positions are scored (BOS added when the model says so).
    #[arg(long)]
    text: String,
    /// Candidates kept per position.
    #[arg(long, default_value_t = 32)]
    k: usize,
    /// Print one JSON object with the tokens and every position's candidates.
    #[arg(long)]
    json: bool,
    /// Where to compute: cpu, cpu-generic or cuda[:N].
    #[arg(long, value_parser = crate::device::parse, default_value = "cpu")]
    device: qd_model::DeviceSpec,
}

pub fn run(c: EvalCommand) -> anyhow::Result<()> {
    match c {
        EvalCommand::Perplexity(a) => perplexity(a),
        EvalCommand::TopK(a) => top_k(a),
        EvalCommand::Kl(a) => kl(a),
    }
}

fn perplexity(a: PplArgs) -> anyhow::Result<()> {
    let (a, model_path) = (a.chunking, a.model);
    let dev = crate::device::open(a.device)?;
    let f = loaded::open(&model_path)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model_on(&f, &dev)?;
    let (tokens, mut params) = loaded::chunked_text(&tok, &a.file, a.ctx, a.chunks, "model")?;
    params.graph = a.graph || a.device.generic();
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
    // Finite weights can still overflow in the activations: a NaN is an error, never a result.
    anyhow::ensure!(
        report.ppl.is_finite(),
        "{}: the perplexity is {} (the model's activations overflowed); no result",
        model_path.display(),
        report.ppl
    );
    let bytes = tok.text_bytes(&qd_eval::scored_targets(&tokens, &params)?);
    let bpb = qd_eval::bits_per_byte(report.ppl, report.n_scored, bytes);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["bpb"] = json!(bpb);
        v["scored_bytes"] = json!(bytes);
        println!("{v}");
    } else {
        println!("{line}");
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            report.ppl, report.ppl_stderr
        );
        println!("Bits per byte: {bpb:.5} ({bytes} bytes scored)");
        println!(
            "{} tokens scored; {:.1} tokens/s ({} × {} tokens in {:.2} s)",
            report.n_scored, report.tokens_per_second, report.n_chunks, report.ctx, report.seconds
        );
    }
    Ok(())
}

fn top_k(a: TopKArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.k > 0, "--k must be at least 1");
    let dev = crate::device::open(a.device)?;
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model_on(&f, &dev)?;
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

/// `eval kl --teacher-cache`: the model against the stored teacher on the stored text.
fn kl_cached(args: &KlArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    use qd_distill::teacher_cache::{kl, Split, TeacherCache};
    let cache = TeacherCache::open(dir)?;
    let dev = crate::device::open(args.device)?;
    let mf = loaded::open(&args.model)?;
    anyhow::ensure!(
        qd_distill::teacher_cache::build::tokenizer_sha256(&mf)
            == cache.manifest.identity.tokenizer_sha256,
        "{} has another vocabulary than the teacher cache {}; KL needs the same tokens",
        args.model.display(),
        dir.display()
    );
    let model = loaded::model_on(&mf, &dev)?;
    let split = match args.split {
        SplitArg::Val => Split::Val,
        SplitArg::Train => Split::Train,
    };
    let seqs = kl::sequences_of(&cache, split, args.sequences);
    let bar = ProgressBar::new(seqs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} sequences  mean KL {msg}  eta {eta}")
            .expect("static template"),
    );
    let r = kl::kl_to_cache(&model, &cache, &seqs, |i, _, m| {
        bar.set_position(i as u64);
        bar.set_message(format!("{m:.6}"));
    })?;
    bar.finish_and_clear();
    anyhow::ensure!(
        r.mean_kl.is_finite(),
        "{}: the KL to the cached teacher is {} (the model's activations overflowed); no result",
        args.model.display(),
        r.mean_kl
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} sequences, {} positions, teacher top-{} + tail at T = {}",
        r.sequences, r.positions, r.k, r.temperature
    );
    println!("Mean PPL(Q)              : {:10.6}", r.ppl_model);
    println!("Mean    KLD: {:10.6} ± {:.6}", r.mean_kl, r.kl_stderr);
    println!("Same top p: {:6.3} %", 100.0 * r.same_top);
    Ok(())
}

fn kl(args: KlArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.teacher_cache {
        return kl_cached(&args, dir);
    }
    let reference = args
        .reference
        .clone()
        .expect("clap requires it without a cache");
    let rf = loaded::open(&reference)?;
    let mf = loaded::open(&args.model)?;
    anyhow::ensure!(
        rf.get("tokenizer.ggml.tokens") == mf.get("tokenizer.ggml.tokens"),
        "{} and {} have different vocabularies; KL needs the same tokens",
        args.model.display(),
        reference.display()
    );
    let a = ChunkArgs {
        file: args.file.clone().expect("clap requires it without a cache"),
        ctx: args.ctx,
        chunks: args.chunks,
        json: args.json,
        graph: args.graph,
        device: args.device,
    };
    let dev = crate::device::open(a.device)?;
    let tok = loaded::tokenizer(&rf)?;
    let reference = loaded::model_on(&rf, &dev)?;
    let model = loaded::model_on(&mf, &dev)?;
    let (tokens, mut params) = loaded::chunked_text(&tok, &a.file, a.ctx, a.chunks, "reference")?;
    params.graph = a.graph || a.device.generic();
    let n = qd_eval::perplexity::plan_chunks(tokens.len(), &params)?;
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} chunks  mean KL {msg}  eta {eta}")
            .expect("static template"),
    );
    let r = qd_eval::kl_divergence(&model, &reference, &tokens, &params, |i, _, kl| {
        bar.set_position(i as u64);
        bar.set_message(format!("{kl:.6}"));
    })?;
    bar.finish_and_clear();
    anyhow::ensure!(
        r.mean_kl.is_finite() && r.ppl_model.is_finite(),
        "{}: the KL to the reference is {} (the model's activations overflowed); no result",
        args.model.display(),
        r.mean_kl
    );
    let bytes = tok.text_bytes(&qd_eval::scored_targets(&tokens, &params)?);
    let bpb = |ppl| qd_eval::bits_per_byte(ppl, r.n_scored, bytes);
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["bpb_model"] = json!(bpb(r.ppl_model));
        v["bpb_reference"] = json!(bpb(r.ppl_reference));
        v["scored_bytes"] = json!(bytes);
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} chunks of {} tokens, {} positions scored, in {:.1} s",
        r.n_chunks, r.ctx, r.n_scored, r.seconds
    );
    println!("Mean PPL(Q)              : {:10.6}", r.ppl_model);
    println!("Mean PPL(base)           : {:10.6}", r.ppl_reference);
    println!("Mean PPL(Q)/PPL(base)    : {:10.6}", r.ppl_ratio);
    println!("Bits per byte (Q)        : {:10.6}", bpb(r.ppl_model));
    println!("Bits per byte (base)     : {:10.6}", bpb(r.ppl_reference));
    println!("Mean    KLD: {:10.6} ± {:.6}", r.mean_kl, r.kl_stderr);
    println!("Maximum KLD: {:10.6}", r.kl_max);
    println!("99.0%   KLD: {:10.6}", r.kl_p99);
    println!("Median  KLD: {:10.6}", r.kl_median);
    println!(
        "Same top p: {:6.3} ± {:.3} %",
        100.0 * r.same_top,
        100.0 * r.same_top_stderr
    );
    Ok(())
}
