//! A file's vocabulary cut to what a corpus uses ([`qd_tokenizer::trim`]): the tokenizer arrays
//! and special-token ids rewritten, and the rows of the token embedding (and of an untied LM
//! head) gathered for the kept ids, their bytes copied as they are (rows are whole blocks).

use qd_gguf::{GgufFile, GgufWriter, Value, ValueType};
use qd_tokenizer::{GgufTokenizer, GgufVocab, Trimmed};

use crate::assemble::Exported;
use crate::error::{ExportError, Result};

/// Tensors with one row per token.
const PER_TOKEN: [&str; 2] = ["token_embd.weight", "output.weight"];

/// Ids the template's metadata names (`tokenizer.ggml.*_token_id`): a trimmed file keeps them.
pub fn named_ids(template: &GgufFile) -> Vec<u32> {
    template
        .metadata()
        .iter()
        .filter(|(k, _)| is_id_key(k))
        .filter_map(|(_, v)| v.as_u64().map(|i| i as u32))
        .collect()
}

fn is_id_key(k: &str) -> bool {
    k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id")
}

/// Trims the template's vocabulary on `corpus`, which checks that the trimmed tokenizer gives
/// the corpus the same pieces ([`qd_tokenizer::trim`]); errors are one line.
pub fn trim_on(template: &GgufFile, corpus: &str) -> Result<Trimmed> {
    let invalid = |e: qd_tokenizer::TokenizerError| ExportError::Invalid(e.to_string());
    let v = GgufVocab::from_gguf(template).map_err(invalid)?;
    let tok = GgufTokenizer::from_gguf(template).map_err(invalid)?;
    qd_tokenizer::trim(&v, &tok, corpus, &named_ids(template)).map_err(invalid)
}

/// Rewrites `e` (assembled from a template with the untrimmed vocabulary) for `t`.
pub fn apply(e: &mut Exported, t: &Trimmed) -> Result<()> {
    apply_to_writer(&mut e.writer, t)?;
    for (td, report) in e.writer.tensors.iter().zip(e.tensors.iter_mut()) {
        report.dims = td.shape.clone();
    }
    Ok(())
}

/// Rewrites a file being written (metadata and tensors of the untrimmed vocabulary) for `t`.
pub fn apply_to_writer(w: &mut GgufWriter, t: &Trimmed) -> Result<()> {
    let new = t.new_ids();
    let n_old = w
        .metadata
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| match v {
            Value::Array(_, a) => Some(a.len()),
            _ => None,
        })
        .ok_or_else(|| ExportError::Invalid("the template has no tokenizer.ggml.tokens".into()))?;
    let n_new = t.kept.len();
    let arch_vocab = w
        .metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str().map(|a| format!("{a}.vocab_size")));
    for (k, v) in w.metadata.iter_mut() {
        if is_id_key(k) {
            let old = v.as_u64().unwrap_or(u64::MAX);
            let id = u32::try_from(old).ok().and_then(|o| new.get(&o));
            let Some(&id) = id else {
                return Err(ExportError::Invalid(format!(
                    "{k} = {old} is not in the trimmed vocabulary"
                )));
            };
            *v = Value::U32(id);
        } else if Some(k.as_str()) == arch_vocab.as_deref() {
            *v = Value::U32(n_new as u32);
        }
    }
    let vocab = &t.vocab;
    w.set(
        "tokenizer.ggml.tokens",
        qd_gguf::string_array(vocab.tokens.iter().cloned()),
    );
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(
            ValueType::F32,
            vocab.scores.iter().map(|&s| Value::F32(s)).collect(),
        ),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(
            ValueType::I32,
            vocab.types.iter().map(|t| Value::I32(t.to_i32())).collect(),
        ),
    );
    if w.metadata.iter().any(|(k, _)| k == "tokenizer.ggml.merges") {
        w.set(
            "tokenizer.ggml.merges",
            qd_gguf::string_array(vocab.merges.iter().cloned()),
        );
    }
    for td in w.tensors.iter_mut() {
        if !PER_TOKEN.contains(&td.name.as_str()) {
            continue;
        }
        if td.shape.first() != Some(&n_old) || !td.data.len().is_multiple_of(n_old) {
            return Err(ExportError::Invalid(format!(
                "{} has shape {:?}, not one row per token of {n_old}",
                td.name, td.shape
            )));
        }
        let row = td.data.len() / n_old;
        let mut data = Vec::with_capacity(row * n_new);
        for &o in &t.kept {
            data.extend_from_slice(&td.data[o as usize * row..(o as usize + 1) * row]);
        }
        td.data = data;
        td.shape[0] = n_new;
    }
    Ok(())
}
