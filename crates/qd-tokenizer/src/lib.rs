//! A `tokenizers::Tokenizer` built from a GGUF file, behaving as llama.cpp's `llama_tokenize`
//! with `parse_special = false`: user-defined tokens are split out of the text, control tokens
//! are not parsed, and BOS/EOS are added as the model's metadata says.

mod bpe;
pub mod error;
mod spm;
pub mod trim;
pub mod vocab;

use std::path::Path;

use qd_gguf::GgufFile;
use tokenizers::{AddedToken, Tokenizer};

pub use bpe::pre_regex;
pub use error::{Result, TokenizerError};
pub use trim::{trim, verify, Trimmed};
pub use vocab::{GgufVocab, TokenType};

pub struct GgufTokenizer {
    pub inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub vocab_size: usize,
    pub model: String,
    /// How many bytes of text each token stands for (see [`piece_bytes`]).
    piece_len: Vec<u32>,
}

impl GgufTokenizer {
    /// Builds the tokenizer of `f`; a `tokenizer.json` beside the model file takes precedence.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let v = GgufVocab::from_gguf(f)?;
        let sidecar = f.path().parent().map(|d| d.join("tokenizer.json"));
        let inner = match sidecar.filter(|p| p.is_file()) {
            Some(p) => Self::load_json(&p)?,
            None => build_from_vocab(&v)?,
        };
        Ok(Self::assemble(v, inner))
    }

    /// The tokenizer a vocabulary describes (as [`GgufTokenizer::from_gguf`] builds it for a
    /// file without a `tokenizer.json`): e.g. a trimmed one ([`trim`]).
    pub fn from_vocab(v: GgufVocab) -> Result<Self> {
        let inner = build_from_vocab(&v)?;
        Ok(Self::assemble(v, inner))
    }

    fn assemble(v: GgufVocab, inner: Tokenizer) -> Self {
        Self {
            inner,
            bos: v.bos,
            eos: v.eos,
            pad: v.pad,
            add_bos: v.add_bos,
            add_eos: v.add_eos,
            vocab_size: v.tokens.len(),
            piece_len: v
                .tokens
                .iter()
                .zip(&v.types)
                .map(|(t, &ty)| piece_bytes(&v.model, t, ty) as u32)
                .collect(),
            model: v.model,
        }
    }

    fn load_json(p: &Path) -> Result<Tokenizer> {
        let mut t = Tokenizer::from_file(p)
            .map_err(|e| TokenizerError::Tokenizers(format!("{}: {e}", p.display())))?;
        t.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        t.set_encode_special_tokens(true);
        Ok(t)
    }

    /// Token ids as `llama_tokenize(text, add_special, parse_special = false)` gives them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        if !text.is_empty() {
            ids.extend_from_slice(self.inner.encode_fast(text, false)?.get_ids());
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        Ok(self.inner.decode(ids, skip_special)?)
    }

    /// The UTF-8 bytes of text the tokens stand for (control tokens none): the denominator of
    /// bits per byte, which compares models across tokenizers where perplexity cannot.
    pub fn text_bytes(&self, ids: &[u32]) -> u64 {
        ids.iter()
            .map(|&i| self.piece_len.get(i as usize).copied().unwrap_or(0) as u64)
            .sum()
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

fn build_from_vocab(v: &GgufVocab) -> Result<Tokenizer> {
    let mut tok = match v.model.as_str() {
        "llama" => spm::build(v)?,
        "gpt2" => bpe::build(v)?,
        other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    };
    // User-defined tokens are always split out of raw text; control tokens are registered
    // (so decoding can skip them) but never parsed, as with llama.cpp's parse_special = false.
    let mut user = Vec::new();
    let mut special = Vec::new();
    for (i, t) in v.tokens.iter().enumerate() {
        match v.types[i] {
            TokenType::UserDefined => {
                user.push(AddedToken::from(t.clone(), false).normalized(false))
            }
            TokenType::Control => special.push(AddedToken::from(t.clone(), true).normalized(false)),
            _ => {}
        }
    }
    tok.add_tokens(&user);
    tok.add_special_tokens(&special);
    tok.set_encode_special_tokens(true);
    Ok(tok)
}

/// Bytes of text one vocabulary entry stands for, as llama.cpp's `token_to_piece` renders it
/// without special tokens: SentencePiece byte tokens `<0xNN>` one byte, `▁` a space (one byte
/// instead of three); gpt2 byte-level pieces one byte per character (each character stands
/// for one byte); user-defined tokens their own text; control, unknown and unused tokens none.
fn piece_bytes(model: &str, token: &str, ty: TokenType) -> usize {
    match ty {
        TokenType::Control | TokenType::Unknown | TokenType::Unused => 0,
        TokenType::Byte => 1,
        TokenType::UserDefined => token.len(),
        TokenType::Normal | TokenType::Undefined => match model {
            "gpt2" => token.chars().count(),
            _ => token.len() - 2 * token.matches('\u{2581}').count(),
        },
    }
}
