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

pub fn model(f: &GgufFile) -> anyhow::Result<QModel> {
    qd_model::load_quantized(f, &Device::Cpu)
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
