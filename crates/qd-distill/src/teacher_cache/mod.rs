//! The teacher's output stored once: per position of every training (and held-out) sequence its
//! top-k ids and log-probabilities and the log of the mass left to the rest of the vocabulary —
//! what the top-k + tail loss needs — so that runs train without the teacher in memory and
//! without running it. `build` writes a cache, [`TeacherCache`] reads one.

pub mod build;
pub mod codec;
pub mod kl;
pub mod manifest;
pub mod shard;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use build::{build, BuildOptions};
pub use manifest::{Identity, Manifest};
pub use shard::{CachedSeq, SeqRef, Split};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("teacher cache {dir}: {why}")]
    Mismatch { dir: PathBuf, why: String },
    #[error("teacher cache {dir} does not hold {seq:?}; {why}")]
    Missing {
        dir: PathBuf,
        seq: SeqRef,
        why: &'static str,
    },
    #[error("{0}")]
    Build(String),
    #[error("interrupted; {done} of {total} sequences are in {dir} (run the same command again to go on)")]
    Interrupted {
        dir: PathBuf,
        done: usize,
        total: usize,
    },
}

/// A cache opened for reading: its manifest, where each sequence lies, and the last shard read.
pub struct TeacherCache {
    pub dir: PathBuf,
    pub manifest: Manifest,
    index: HashMap<SeqRef, usize>,
    loaded: Mutex<Option<(usize, Vec<CachedSeq>)>>,
}

impl TeacherCache {
    /// Opens the cache in `dir`; an unfinished build is refused (its command goes on).
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let manifest = Manifest::read(dir)?;
        if !manifest.complete {
            return Err(CacheError::Mismatch {
                dir: dir.to_path_buf(),
                why:
                    "its build did not finish; run `qat-distill teacher-cache` again to complete it"
                        .into(),
            });
        }
        let mut index = HashMap::new();
        for (i, s) in manifest.shards.iter().enumerate() {
            for r in &s.sequences {
                index.insert(*r, i);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            index,
            loaded: Mutex::new(None),
        })
    }

    /// Refuses a cache built from other inputs than `want` (naming the first difference).
    pub fn check(&self, want: &Identity) -> Result<(), CacheError> {
        let have = &self.manifest.identity;
        let diff = [
            (
                have.teacher_sha256 != want.teacher_sha256,
                "another teacher",
            ),
            (
                have.tokenizer_sha256 != want.tokenizer_sha256,
                "another tokenizer",
            ),
            (
                have.data_hash != want.data_hash,
                "other data (or another packing of it)",
            ),
            (have.seq_len != want.seq_len, "another sequence length"),
            (
                have.seed != want.seed,
                "another seed (another split and order)",
            ),
            (
                have.val_fraction != want.val_fraction,
                "another held-out fraction",
            ),
            (have.temperature != want.temperature, "another temperature"),
            (
                have.vocab_size != want.vocab_size,
                "another vocabulary size",
            ),
        ];
        match diff.iter().find(|(d, _)| *d) {
            Some((_, what)) => Err(CacheError::Mismatch {
                dir: self.dir.clone(),
                why: format!("it was built with {what} than this run's"),
            }),
            None => Ok(()),
        }
    }

    pub fn k(&self) -> usize {
        self.manifest.identity.k
    }

    /// The cached positions of `seq`, its shard checked against the manifest's sha256.
    pub fn get(&self, seq: SeqRef) -> Result<CachedSeq, CacheError> {
        let &shard = self.index.get(&seq).ok_or(CacheError::Missing {
            dir: self.dir.clone(),
            seq,
            why: "it was built with --max-tokens below what this run reads; build it again \
                  without the limit",
        })?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.as_ref().map(|(i, _)| *i) != Some(shard) {
            let entry = &self.manifest.shards[shard];
            let path = self.dir.join(&entry.file);
            let bytes = std::fs::read(&path).map_err(|err| CacheError::Io {
                path: path.clone(),
                err,
            })?;
            if shard::checksum_of(&bytes).as_deref() != Some(entry.sha256.as_str()) {
                return Err(CacheError::Damaged {
                    path,
                    why: "truncated or damaged (its sha256 is not the manifest's)".into(),
                });
            }
            let seqs = shard::parse(&path, &bytes, self.k(), self.manifest.id_bits)?;
            *loaded = Some((shard, seqs));
        }
        let (_, seqs) = loaded.as_ref().expect("loaded above");
        seqs.iter()
            .find(|s| s.seq == seq)
            .cloned()
            .ok_or_else(|| CacheError::Damaged {
                path: self.dir.join(&self.manifest.shards[shard].file),
                why: format!("does not hold {seq:?}, which the manifest lists in it"),
            })
    }
}

/// A cached sequence's first `n` positions as the top-k loss reads them.
#[derive(Debug, Clone)]
pub struct CachedRows {
    pub k: usize,
    /// `n · k` ids, row-major.
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub log_tail: Vec<f32>,
}

impl CachedRows {
    /// The positions of `seq` for an example reading `inputs` — a prefix of the cached text (a
    /// truncated example reads a prefix: the model is causal). Any other text is refused: the
    /// cache would be read out of order or shifted.
    pub fn of(seq: &CachedSeq, inputs: &[u32], k: usize) -> Result<Self, String> {
        let n = inputs.len();
        if n > seq.positions.len() || seq.tokens[..n] != *inputs {
            return Err(format!(
                "the teacher cache's {:?} is not the text this example reads (the cache was \
                 built for other data, order or packing)",
                seq.seq
            ));
        }
        let p = &seq.positions[..n];
        Ok(Self {
            k,
            ids: p.iter().flat_map(|x| x.ids.iter().copied()).collect(),
            logprobs: p.iter().flat_map(|x| x.logprobs.iter().copied()).collect(),
            log_tail: p.iter().map(|x| x.log_tail).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.log_tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log_tail.is_empty()
    }

    /// Rows `start..start + len` as the loss's teacher.
    pub fn chunk(
        &self,
        start: usize,
        len: usize,
        dev: &candle_core::Device,
    ) -> candle_core::Result<crate::loss::TeacherTopK> {
        use candle_core::Tensor;
        let (a, b) = (start * self.k, (start + len) * self.k);
        Ok(crate::loss::TeacherTopK {
            ids: Tensor::from_slice(&self.ids[a..b], (len, self.k), dev)?,
            logprobs: Tensor::from_slice(&self.logprobs[a..b], (len, self.k), dev)?,
            log_tail: Some(Tensor::from_slice(
                &self.log_tail[start..start + len],
                (len, 1),
                dev,
            )?),
        })
    }
}
