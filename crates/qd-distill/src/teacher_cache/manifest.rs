//! `manifest.json`: what a cache was built from — the teacher, its tokenizer, the packed data
//! and how it was packed, k, the temperature — and its shards with their sha256. A run checks
//! it against its own configuration before reading a position.

use std::path::{Path, PathBuf};

use super::shard::SeqRef;
use super::CacheError;

pub const FORMAT: &str = "qat-distill teacher cache 1";
pub const FILE: &str = "manifest.json";

/// What identifies the cached signal: two caches with equal identities hold the same bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub teacher_sha256: String,
    /// sha256 of the tokenizer's vocabulary (its tokens in order).
    pub tokenizer_sha256: String,
    /// The packed data's hash (the run's `data_hash`: the token streams of the corpus files,
    /// packed at `seq_len`, with the mixture weights).
    pub data_hash: String,
    pub seq_len: usize,
    pub seed: u64,
    pub val_fraction: f64,
    pub k: usize,
    /// The temperature the log-probabilities are at (the run's must equal it).
    pub temperature: f64,
    pub vocab_size: usize,
    /// How the teacher ran: `fused` (the prefill) or `graph` (candle's graph, as online training).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub file: String,
    pub sha256: String,
    pub sequences: Vec<SeqRef>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub teacher: PathBuf,
    pub data: Vec<PathBuf>,
    #[serde(flatten)]
    pub identity: Identity,
    pub id_bits: u32,
    pub bytes_per_token: usize,
    pub positions: usize,
    /// False until every shard is written (a build interrupted before then resumes).
    pub complete: bool,
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, CacheError> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|err| CacheError::Io {
            path: path.clone(),
            err,
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| CacheError::Damaged {
            path: path.clone(),
            why: format!("not a teacher-cache manifest ({e})"),
        })?;
        if m.format != FORMAT {
            return Err(CacheError::Damaged {
                path,
                why: format!("format {:?}, this build reads {FORMAT:?}", m.format),
            });
        }
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> Result<(), CacheError> {
        let path = dir.join(FILE);
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        qd_gguf::write_atomic(&path, text.as_bytes()).map_err(|err| CacheError::Io { path, err })
    }
}
