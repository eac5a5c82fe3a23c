//! Opening a model file with everything a command needs, each failure in one line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use qd_gguf::GgufFile;
use qd_model::QModel;
use qd_tokenizer::GgufTokenizer;

pub fn open(path: &Path) -> anyhow::Result<GgufFile> {
    Ok(GgufFile::open(path)?)
}

pub fn tokenizer(f: &GgufFile) -> anyhow::Result<GgufTokenizer> {
    GgufTokenizer::from_gguf(f)
        .with_context(|| format!("{}: building the tokenizer", f.path().display()))
}

/// The model, after checking every tensor's values and block scales (a damaged or overflowed
/// file stops here in one line instead of computing NaN).
pub fn model(f: &GgufFile) -> anyhow::Result<QModel> {
    model_on(f, &Device::Cpu)
}

/// As [`model`], its weights on `dev`.
pub fn model_on(f: &GgufFile, dev: &Device) -> anyhow::Result<QModel> {
    f.check_tensors()?;
    qd_model::load_quantized(f, dev)
        .with_context(|| format!("{}: loading the model", f.path().display()))
}

/// `--text` or `--file`, exactly one.
pub fn text_arg(text: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    match (text, file) {
        (Some(t), None) => Ok(t),
        (None, Some(p)) => {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        }
        _ => anyhow::bail!("give exactly one of --text or --file"),
    }
}

/// A text file tokenized as llama-perplexity does (BOS first where the model adds one) with
/// its chunking parameters; `who` names the model whose tokenizer it is, for errors.
pub fn chunked_text(
    tok: &GgufTokenizer,
    file: &Path,
    ctx: usize,
    chunks: Option<usize>,
    who: &str,
) -> anyhow::Result<(Vec<u32>, qd_eval::PerplexityParams)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let tokens = tok.encode(&text, true)?;
    let bos = qd_eval::chunk_bos(tok.add_bos, tok.bos, tok.add_eos)
        .with_context(|| format!("the {who}'s tokenizer"))?;
    Ok((
        tokens,
        qd_eval::PerplexityParams {
            ctx,
            chunks,
            bos,
            graph: false,
        },
    ))
}
