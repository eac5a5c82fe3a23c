//! A tokenizer of a given kind and size for a synthetic model: SentencePiece with byte
//! fallback (`llama`: LLaMA-2's and Gemma's kind) or byte-level BPE (`gpt2`: Llama 3's and
//! Qwen's), its specials where those models keep theirs, and pieces made by merging earlier
//! ones at random. Any text tokenizes (byte fallback / byte-level), the embedding and LM head
//! have the published vocabulary's rows, and the merges are valid BPE — the numbers a shape
//! needs, not a real tokenizer's compression (text takes more tokens than with the real one).

use std::collections::HashSet;

use qd_gguf::{string_array, GgufWriter, Value, ValueType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ExportError, Result};

/// The vocabulary and its metadata, as `tokenizer.ggml.*` stores them.
#[derive(Debug, Clone)]
pub struct SynthVocab {
    pub model: &'static str,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: u32,
    pub eos: u32,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
}

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// Longest piece, in characters.
const MAX_PIECE: usize = 12;

/// Characters the pieces are built from: a word-start marker, letters, digits, a little
/// punctuation.
fn alphabet(space: char) -> Vec<String> {
    std::iter::once(space)
        .chain('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(".,:;()_-'\"=".chars())
        .map(String::from)
        .collect()
}

/// `n` new pieces, each the concatenation of two earlier ones (of `pool`, grown as it goes),
/// with the merge that made it. Short pieces are drawn more often, as in a real vocabulary.
fn grow(
    pool: &mut Vec<String>,
    taken: &mut HashSet<String>,
    n: usize,
    seed: u64,
) -> Vec<(String, String)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut merges = Vec::with_capacity(n);
    let mut misses = 0usize;
    while merges.len() < n {
        let pick = |rng: &mut StdRng, len: usize| {
            let u: f64 = rng.random();
            ((u * u * u) * len as f64) as usize % len
        };
        let a = pool[pick(&mut rng, pool.len())].clone();
        let b = pool[pick(&mut rng, pool.len())].clone();
        let piece = format!("{a}{b}");
        if piece.chars().count() > MAX_PIECE || !taken.insert(piece.clone()) {
            misses += 1;
            // A pool this dense in short pieces has run out of new ones: give up (the caller
            // reports the shortfall).
            if misses > 64 * n.max(1000) {
                break;
            }
            continue;
        }
        pool.push(piece);
        merges.push((a, b));
    }
    merges
}

/// A vocabulary of exactly `size` tokens of kind `model` (`llama` or `gpt2`; `pre` the gpt2
/// pre-tokenizer, which also picks the specials' names).
pub fn synthetic_vocab(
    model: &str,
    pre: Option<&str>,
    size: usize,
    seed: u64,
) -> Result<SynthVocab> {
    match model {
        "llama" => spm(size, seed),
        "gpt2" => bpe(pre, size, seed),
        other => Err(ExportError::Invalid(format!(
            "unknown tokenizer kind {other:?}"
        ))),
    }
}

fn spm(size: usize, seed: u64) -> Result<SynthVocab> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    for b in 0u8..=255 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(BYTE);
    }
    let mut pool = alphabet('▁');
    let mut taken: HashSet<String> = tokens.iter().chain(&pool).cloned().collect();
    let base = pool.clone();
    let want = size
        .checked_sub(tokens.len() + base.len())
        .ok_or_else(|| ExportError::Invalid(format!("vocabulary of {size} is too small")))?;
    let merges = grow(&mut pool, &mut taken, want, seed);
    if merges.len() < want {
        return Err(ExportError::Invalid(format!(
            "could not make {want} distinct pieces"
        )));
    }
    // Pieces score by creation order (earlier merges first), the single characters lowest.
    let n_pieces = pool.len() - base.len();
    let mut scores = vec![0.0f32; tokens.len()];
    for (i, p) in pool[base.len()..].iter().enumerate() {
        tokens.push(p.clone());
        types.push(NORMAL);
        scores.push(-(i as f32));
    }
    for (i, c) in base.into_iter().enumerate() {
        tokens.push(c);
        types.push(NORMAL);
        scores.push(-((n_pieces + i) as f32));
    }
    Ok(SynthVocab {
        model: "llama",
        pre: None,
        tokens,
        scores,
        types,
        merges: Vec::new(),
        bos: 1,
        eos: 2,
        unk: Some(0),
        pad: None,
        add_bos: true,
        add_space_prefix: true,
    })
}

/// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest from U+0100.
fn byte_char(b: u8) -> char {
    let printable = |c: u8| {
        (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c)
    };
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

fn bpe(pre: Option<&str>, size: usize, seed: u64) -> Result<SynthVocab> {
    let qwen = pre == Some("qwen2");
    // Llama 3 keeps 256 specials after its pieces; Qwen 2.5 three named ones and padding rows.
    let n_special = if qwen { 3 } else { 256.min(size / 4) };
    let mut tokens: Vec<String> = (0u8..=255).map(|b| byte_char(b).to_string()).collect();
    let mut taken: HashSet<String> = tokens.iter().cloned().collect();
    let mut pool = alphabet('Ġ');
    let want = size
        .checked_sub(256 + n_special)
        .ok_or_else(|| ExportError::Invalid(format!("vocabulary of {size} is too small")))?;
    let merges = grow(&mut pool, &mut taken, want, seed);
    if merges.len() < want {
        return Err(ExportError::Invalid(format!(
            "could not make {want} distinct pieces"
        )));
    }
    let first_new = pool.len() - merges.len();
    tokens.extend(pool.drain(first_new..));
    let mut types = vec![NORMAL; tokens.len()];
    let specials: Vec<String> = if qwen {
        vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ]
    } else {
        std::iter::once("<|begin_of_text|>".to_string())
            .chain(std::iter::once("<|end_of_text|>".to_string()))
            .chain((2..n_special).map(|i| format!("<|reserved_special_token_{}|>", i - 2)))
            .collect()
    };
    let first_special = tokens.len() as u32;
    tokens.extend(specials);
    types.resize(tokens.len(), CONTROL);
    let (bos, eos, pad) = if qwen {
        (first_special, first_special, Some(first_special))
    } else {
        (first_special, first_special + 1, None)
    };
    let scores = vec![0.0; tokens.len()];
    Ok(SynthVocab {
        model: "gpt2",
        pre: pre.map(str::to_string),
        tokens,
        scores,
        types,
        merges: merges
            .into_iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect(),
        bos,
        eos,
        unk: None,
        pad,
        add_bos: !qwen,
        add_space_prefix: false,
    })
}

impl SynthVocab {
    /// Sets the `tokenizer.ggml.*` keys on `w`.
    pub fn write_metadata(&self, w: &mut GgufWriter) {
        w.set("tokenizer.ggml.model", Value::String(self.model.into()));
        if let Some(p) = &self.pre {
            w.set("tokenizer.ggml.pre", Value::String(p.clone()));
        }
        w.set("tokenizer.ggml.tokens", string_array(self.tokens.clone()));
        w.set(
            "tokenizer.ggml.scores",
            Value::Array(
                ValueType::F32,
                self.scores.iter().map(|&s| Value::F32(s)).collect(),
            ),
        );
        w.set(
            "tokenizer.ggml.token_type",
            Value::Array(
                ValueType::I32,
                self.types.iter().map(|&t| Value::I32(t)).collect(),
            ),
        );
        if !self.merges.is_empty() {
            w.set("tokenizer.ggml.merges", string_array(self.merges.clone()));
        }
        w.set("tokenizer.ggml.bos_token_id", Value::U32(self.bos));
        w.set("tokenizer.ggml.eos_token_id", Value::U32(self.eos));
        if let Some(u) = self.unk {
            w.set("tokenizer.ggml.unknown_token_id", Value::U32(u));
        }
        if let Some(p) = self.pad {
            w.set("tokenizer.ggml.padding_token_id", Value::U32(p));
        }
        w.set("tokenizer.ggml.add_bos_token", Value::Bool(self.add_bos));
        w.set(
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(self.add_space_prefix),
        );
    }
}
