//! SentencePiece-BPE (`tokenizer.ggml.model = "llama"`) as a tokenizers BPE model.
//!
//! llama.cpp merges the adjacent pair whose concatenation is the highest-scoring vocabulary
//! entry, repeatedly. A BPE model whose merges are every split `(l, r)` of every token `l+r`
//! (both halves in the vocabulary), ranked by the score of `l+r`, performs the same merges.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use crate::error::{Result, TokenizerError};
use crate::vocab::{GgufVocab, TokenType};

/// Merges derived from the vocabulary, best first.
fn derive_merges(v: &GgufVocab, ids: &HashMap<&str, u32>) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (i, tok) in v.tokens.iter().enumerate() {
        if v.types[i] == TokenType::Byte || ids.get(tok.as_str()) != Some(&(i as u32)) {
            continue;
        }
        for (k, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(k);
            if ids.contains_key(l) && ids.contains_key(r) {
                merges.push((v.scores[i], i as u32, l.to_string(), r.to_string()));
            }
        }
    }
    // Highest score first; equal scores keep vocabulary order (stable, deterministic).
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    merges.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}

pub fn build(v: &GgufVocab) -> Result<Tokenizer> {
    // llama.cpp keeps the last id of a duplicated piece; so do we.
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(v.tokens.len());
    for (i, t) in v.tokens.iter().enumerate() {
        ids.insert(t.as_str(), i as u32);
    }
    if ids.len() != v.tokens.len() {
        return Err(TokenizerError::Inconsistent(format!(
            "{} duplicated pieces in tokenizer.ggml.tokens",
            v.tokens.len() - ids.len()
        )));
    }
    let merges = derive_merges(v, &ids);
    let vocab: tokenizers::models::bpe::Vocab =
        ids.iter().map(|(k, &i)| (k.to_string(), i)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(false);
    if let Some(unk) = v.unk {
        builder = builder.unk_token(v.tokens[unk as usize].clone());
    }
    let bpe = builder.build()?;
    let mut tok = Tokenizer::new(bpe);

    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if v.add_space_prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(Replace::new(" ", "▁")?.into());
    tok.with_normalizer(Some(NormSequence::new(norms)));

    let mut decs: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(Replace::new("▁", " ")?),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if v.add_space_prefix {
        decs.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decs)));
    Ok(tok)
}
