//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizer regex that
//! `tokenizer.ggml.pre` names, as llama.cpp's `llama-vocab.cpp` maps them.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Result, TokenizerError};
use crate::vocab::GgufVocab;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex for a `tokenizer.ggml.pre` value.
pub fn pre_regex(pre: Option<&str>) -> Result<&'static str> {
    Ok(match pre.unwrap_or("default") {
        "default" | "gpt-2" | "gpt2" | "smollm" | "starcoder" | "refact" | "olmo" => GPT2,
        "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" | "falcon3" | "pixtral" => LLAMA3,
        "qwen2" | "deepseek-r1-qwen" | "qwen35" => QWEN2,
        other => {
            return Err(TokenizerError::Inconsistent(format!(
            "unsupported tokenizer.ggml.pre {other:?}; supply a tokenizer.json next to the model"
        )))
        }
    })
}

pub fn build(v: &GgufVocab) -> Result<Tokenizer> {
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, t) in v.tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let merges = v
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Inconsistent(format!("merge {m:?} has no space")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(false)
        .build()?;
    let mut tok = Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(pre_regex(v.pre.as_deref())?.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )?;
    let pre: Vec<PreTokenizerWrapper> =
        vec![split.into(), ByteLevel::new(false, false, false).into()];
    tok.with_pre_tokenizer(Some(PreSequence::new(pre)));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    Ok(tok)
}
