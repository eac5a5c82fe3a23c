//! Packing documents into fixed-length sequences: `BOS doc EOS BOS doc EOS …` (each document
//! as the model saw text in pre-training: BOS first where the tokenizer adds one — Gemma's and
//! Llama's do, Qwen2's gpt2 tokenizer does not — and EOS at its end as the separator), cut into
//! windows of `seq_len` tokens; the last partial window is dropped.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::corpus::DataError;
use qd_tokenizer::GgufTokenizer;

#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub seq_len: usize,
    /// Sequences of exactly `seq_len` tokens.
    pub train: Vec<Vec<u32>>,
    pub val: Vec<Vec<u32>>,
    /// sha256 of the packed token stream: identifies the data in checkpoints and exports.
    pub hash: String,
}

/// Tokenizes and concatenates the documents.
pub fn token_stream(tok: &GgufTokenizer, docs: &[String]) -> Result<Vec<u32>, DataError> {
    let mut stream = Vec::new();
    for d in docs {
        if tok.add_bos {
            stream.extend(tok.bos);
        }
        stream.extend(
            tok.encode(d, false)
                .map_err(|e| DataError::Tokenizer(e.to_string()))?,
        );
        stream.extend(tok.eos);
    }
    Ok(stream)
}

/// Cuts `stream` into `seq_len` windows.
pub fn pack(stream: &[u32], seq_len: usize) -> Result<Vec<Vec<u32>>, DataError> {
    if seq_len < 2 || stream.len() < seq_len {
        return Err(DataError::TooShort {
            tokens: stream.len(),
            needed: seq_len.max(2),
        });
    }
    Ok(stream.chunks_exact(seq_len).map(<[u32]>::to_vec).collect())
}

/// A deterministic split (every sequence goes to validation with probability `val_fraction`,
/// decided by a hash of its index and the seed, so adding data does not reshuffle the split)
/// and a seeded shuffle of the training part.
pub fn split_and_shuffle(seqs: Vec<Vec<u32>>, val_fraction: f64, seed: u64) -> Packed {
    let seq_len = seqs.first().map_or(0, Vec::len);
    let mut h = Sha256::new();
    for s in &seqs {
        for t in s {
            h.update(t.to_le_bytes());
        }
    }
    let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, s) in seqs.into_iter().enumerate() {
        let mut hh = Sha256::new();
        hh.update(seed.to_le_bytes());
        hh.update((i as u64).to_le_bytes());
        let d = hh.finalize();
        let u = u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
        if u < val_fraction {
            val.push(s);
        } else {
            train.push(s);
        }
    }
    train.shuffle(&mut StdRng::seed_from_u64(seed));
    Packed {
        seq_len,
        train,
        val,
        hash,
    }
}
