//! Tokenized corpora cached on disk, so a rerun (or a resume) does not tokenize again. The key
//! is a hash of the tokenizer's identity and every document's text; the file holds a magic
//! header, the token count, the sha256 of the ids and the ids, and is written atomically. A
//! missing, unreadable, truncated or damaged entry (its ids no longer match their sha256: a
//! flipped id would otherwise train on the wrong token without a word) just means tokenizing
//! again.

use std::path::{Path, PathBuf};

use qd_tokenizer::GgufTokenizer;
use sha2::{Digest, Sha256};

use super::corpus::DataError;
use super::pack::token_stream;

const MAGIC: &[u8; 8] = b"QDTOKS02";
/// Magic, token count, sha256 of the ids.
const HEADER: usize = 8 + 8 + 32;

/// `$QAT_DISTILL_CACHE/tokens`, else `$XDG_CACHE_HOME` or `~/.cache`, then `qat-distill/tokens`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("QAT_DISTILL_CACHE") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("qat-distill"),
    };
    Some(base.join("tokens"))
}

/// The cache key of `docs` under the tokenizer identified by `tokenizer_id`.
pub fn key(tokenizer_id: &str, docs: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(tokenizer_id.as_bytes());
    for d in docs {
        h.update((d.len() as u64).to_le_bytes());
        h.update(d.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn read(path: &Path) -> Option<Vec<u32>> {
    let b = std::fs::read(path).ok()?;
    let (head, rest) = b.split_at_checked(HEADER)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(head[8..16].try_into().ok()?) as usize;
    if rest.len() != n.checked_mul(4)? || Sha256::digest(rest).as_slice() != &head[16..] {
        return None;
    }
    Some(
        rest.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

fn write(path: &Path, ids: &[u32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let payload: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    let mut b = Vec::with_capacity(HEADER + payload.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    b.extend_from_slice(&Sha256::digest(&payload));
    b.extend_from_slice(&payload);
    qd_gguf::write_atomic(path, &b)
}

/// Whether the stream came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Tokenized,
}

/// [`token_stream`] through the cache in `dir` (none: always tokenize).
pub fn cached_token_stream(
    tok: &GgufTokenizer,
    tokenizer_id: &str,
    docs: &[String],
    dir: Option<&Path>,
) -> Result<(Vec<u32>, Source), DataError> {
    let path = dir.map(|d| d.join(format!("{}.tokens", key(tokenizer_id, docs))));
    if let Some(ids) = path.as_deref().and_then(read) {
        return Ok((ids, Source::Cache));
    }
    let ids = token_stream(tok, docs)?;
    if let Some(p) = &path {
        // A cache that cannot be written costs only time on the next run.
        let _ = write(p, &ids);
    }
    Ok((ids, Source::Tokenized))
}
