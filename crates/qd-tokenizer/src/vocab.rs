//! The `tokenizer.ggml.*` metadata, read once into plain vectors.

use qd_gguf::GgufFile;

use crate::error::{Result, TokenizerError};

/// llama.cpp's `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    /// The value `tokenizer.ggml.token_type` stores.
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Undefined => 0,
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
        }
    }

    fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GgufVocab {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

impl GgufVocab {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.get_str("tokenizer.ggml.model")?.to_string();
        let pre = f
            .opt("tokenizer.ggml.pre", GgufFile::get_str)?
            .map(str::to_string);
        let tokens: Vec<String> = f
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                TokenizerError::Inconsistent("tokenizer.ggml.tokens holds a non-string".into())
            })?;
        let n = tokens.len();
        let scores = match f.opt("tokenizer.ggml.scores", GgufFile::get_array)? {
            Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
            None => vec![0.0; n],
        };
        let types = match f.opt("tokenizer.ggml.token_type", GgufFile::get_array)? {
            Some(a) => a
                .iter()
                .map(|v| {
                    let raw = match v {
                        qd_gguf::Value::I32(x) => *x as i64,
                        other => other.as_u64().map(|x| x as i64).unwrap_or(0),
                    };
                    TokenType::from_i64(raw)
                })
                .collect(),
            None => vec![TokenType::Normal; n],
        };
        if scores.len() != n || types.len() != n {
            return Err(TokenizerError::Inconsistent(format!(
                "{n} tokens but {} scores and {} token types",
                scores.len(),
                types.len()
            )));
        }
        let merges = match f.opt("tokenizer.ggml.merges", GgufFile::get_array)? {
            Some(a) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    TokenizerError::Inconsistent("tokenizer.ggml.merges holds a non-string".into())
                })?,
            None => Vec::new(),
        };
        let id = |key: &str| -> Result<Option<u32>> {
            let v = f.opt(key, GgufFile::get_u64)?;
            match v {
                Some(i) if i as usize >= n => Err(TokenizerError::Inconsistent(format!(
                    "{key} = {i} is outside the vocabulary of {n} tokens"
                ))),
                Some(i) => Ok(Some(i as u32)),
                None => Ok(None),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool> {
            Ok(f.opt(key, GgufFile::get_bool)?.unwrap_or(default))
        };
        let is_spm = model == "llama";
        Ok(Self {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            // llama.cpp's defaults: SPM adds BOS and a space prefix, BPE does neither.
            add_bos: flag("tokenizer.ggml.add_bos_token", is_spm)?,
            add_eos: flag("tokenizer.ggml.add_eos_token", false)?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", is_spm)?,
            model,
            pre,
            tokens,
            scores,
            types,
            merges,
        })
    }
}
