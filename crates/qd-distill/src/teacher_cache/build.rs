//! Building a cache from a run's configuration: the data packed, split and ordered exactly as
//! `train` packs it (the same code, `train::batches`), the teacher run once per sequence through
//! the fused prefill (or candle's graph, as online training runs it), every position's top-k
//! kept. Shards of [`SHARD_SEQUENCES`] sequences are written atomically as they are done; a
//! build run again after a crash keeps the whole shards and writes the same bytes for the rest.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::codec::{self, Position};
use super::manifest::{Identity, Manifest, ShardEntry, FORMAT};
use super::shard::{self, CachedSeq, SeqRef, Split};
use super::CacheError;
use crate::train::batches::Data;
use crate::train::config::RunConfig;

/// Sequences per shard: the unit a crashed build loses at most.
pub const SHARD_SEQUENCES: usize = 16;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Ids kept per position.
    pub k: usize,
    /// Cache only the training sequences of the run's first steps, up to this many tokens (its
    /// held-out sequences always); `None`: every training sequence (any run of this data,
    /// sequence length and seed can read it, for any number of steps and batch size).
    pub max_tokens: Option<usize>,
    /// Run the teacher through candle's graph (as online training does) instead of the prefill.
    pub graph: bool,
}

/// sha256 of a tokenizer's vocabulary (its tokens in order).
pub fn tokenizer_sha256(f: &qd_gguf::GgufFile) -> String {
    let mut h = Sha256::new();
    if let Some(tokens) = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        for t in tokens {
            h.update(t.as_str().unwrap_or("").as_bytes());
            h.update([0]);
        }
    }
    shard::hex(&h.finalize())
}

/// The one temperature of a run, or why it has none (a cache stores log-probabilities at one).
pub fn run_temperature(cfg: &RunConfig) -> Result<f64, String> {
    let t = cfg.temperature;
    match t.shape {
        crate::train::schedule::Shape::Constant => Ok(t.start),
        _ if t.start == t.end && t.shape != crate::train::schedule::Shape::SeedEpoch => Ok(t.start),
        _ => Err(
            "a teacher cache stores log-probabilities at one temperature; this run's temperature \
             changes (give it a constant schedule)"
                .into(),
        ),
    }
}

/// The sequences to cache, in the order the run first reads them: the held-out ones it
/// evaluates, then the training ones (all, or those of its first steps up to `max_tokens`).
pub fn plan(cfg: &RunConfig, data: &Data, max_tokens: Option<usize>) -> Vec<SeqRef> {
    let val = data.packed.val.len().min(cfg.eval_sequences);
    let mut out: Vec<SeqRef> = (0..val)
        .map(|index| SeqRef {
            split: Split::Val,
            index,
        })
        .collect();
    let n = data.packed.train.len();
    match max_tokens {
        None => out.extend((0..n).map(|index| SeqRef {
            split: Split::Train,
            index,
        })),
        Some(limit) => {
            let mut seen = std::collections::HashSet::new();
            let mut tokens = 0usize;
            let mut step = 0;
            // Every sequence is read within an epoch; stop there at the latest.
            while tokens < limit && seen.len() < n {
                for index in data.batch_refs(cfg, step) {
                    if tokens < limit && seen.insert(index) {
                        out.push(SeqRef {
                            split: Split::Train,
                            index,
                        });
                        tokens += cfg.seq_len;
                    }
                }
                step += 1;
            }
        }
    }
    out
}

/// The teacher's positions for one sequence (its inputs: all tokens but the last).
fn positions<F>(
    logits_of: &mut F,
    seq: &[u32],
    k: usize,
    t: f32,
) -> Result<Vec<Position>, CacheError>
where
    F: FnMut(&[u32]) -> Result<Vec<f32>, CacheError>,
{
    let inputs = &seq[..seq.len() - 1];
    let logits = logits_of(inputs)?;
    let v = logits.len() / inputs.len();
    Ok(logits
        .par_chunks(v)
        .map(|row| codec::top_k_of_logits(row, k, t))
        .collect())
}

/// Creates `dir`, or checks that the cache it already holds is of the same inputs and options
/// (so that building resumes it rather than mixing two caches).
fn claim_dir(dir: &Path, manifest: &Manifest) -> Result<(), CacheError> {
    std::fs::create_dir_all(dir).map_err(|e| CacheError::Io {
        path: dir.to_path_buf(),
        err: e,
    })?;
    if dir.join(super::manifest::FILE).exists() {
        let old = Manifest::read(dir)?;
        if old.identity != manifest.identity || old.positions != manifest.positions {
            return Err(CacheError::Mismatch {
                dir: dir.to_path_buf(),
                why: "it holds a cache of other inputs or options; remove it or choose another \
                      --out"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The checksum of the shard at `path` if an earlier build left it whole and holding exactly
/// `group`'s sequences; `None` means it is (re)computed.
fn reusable_shard(path: &Path, group: &[SeqRef], k: usize, bits: u32) -> Option<String> {
    let b = std::fs::read(path).ok()?;
    let seqs = shard::parse(path, &b, k, bits).ok()?;
    let same = seqs.iter().map(|s| s.seq).eq(group.iter().copied());
    same.then(|| shard::checksum_of(&b)).flatten()
}

/// Builds (or resumes building) the cache of `cfg`'s data and teacher in `dir`; `progress` sees
/// (sequences done, total).
pub fn build(
    cfg: &RunConfig,
    dir: &Path,
    opt: &BuildOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Manifest, CacheError> {
    let err = |e: &dyn std::fmt::Display| CacheError::Build(e.to_string());
    let temperature = run_temperature(cfg).map_err(|e| err(&e))?;
    if opt.k == 0 {
        return Err(err(&"--k must be at least 1"));
    }
    let tf = qd_gguf::GgufFile::open(&cfg.teacher).map_err(|e| err(&e))?;
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(&tf).map_err(|e| err(&e))?;
    let teacher_sha256 = crate::checkpoint::sha256_of(&cfg.teacher).map_err(|e| err(&e))?;
    let data = Data::load(cfg, &tok, &teacher_sha256).map_err(|e| err(&e))?;
    let teacher = qd_model::load_quantized(&tf, &candle_core::Device::Cpu).map_err(|e| err(&e))?;
    let vocab = teacher.hp.vocab_size;
    let decoder = if opt.graph {
        None
    } else {
        qd_model::Decoder::new(&teacher, cfg.seq_len).map_err(|e| err(&e))?
    };
    let identity = Identity {
        teacher_sha256,
        tokenizer_sha256: tokenizer_sha256(&tf),
        data_hash: data.packed.hash.clone(),
        seq_len: cfg.seq_len,
        seed: cfg.seed,
        val_fraction: cfg.val_fraction,
        k: opt.k,
        temperature,
        vocab_size: vocab,
        path: if decoder.is_some() { "fused" } else { "graph" }.into(),
    };
    let plan = plan(cfg, &data, opt.max_tokens);
    let bits = codec::id_bits(vocab);
    let mut manifest = Manifest {
        format: FORMAT.into(),
        teacher: cfg.teacher.clone(),
        data: cfg.data.clone(),
        identity,
        id_bits: bits,
        // A record per position, and the token it read.
        bytes_per_token: codec::record_bytes(opt.k, bits) + 4,
        positions: plan.len() * (cfg.seq_len - 1),
        complete: false,
        shards: Vec::new(),
    };
    claim_dir(dir, &manifest)?;
    manifest.write(dir)?;
    let mut decoder = decoder;
    let mut logits_of = |inputs: &[u32]| -> Result<Vec<f32>, CacheError> {
        match decoder.as_mut() {
            Some(d) => d.prefill(inputs, 0..inputs.len()).map_err(|e| err(&e)),
            None => graph_logits(&teacher, inputs).map_err(|e| err(&e)),
        }
    };
    let mut done = 0;
    for (i, group) in plan.chunks(SHARD_SEQUENCES).enumerate() {
        let file = format!("shard-{i:05}.bin");
        let path = dir.join(&file);
        let reuse = reusable_shard(&path, group, opt.k, bits);
        let sha256 = match reuse {
            Some(sum) => sum,
            None => {
                let mut seqs = Vec::with_capacity(group.len());
                for r in group {
                    let seq = match r.split {
                        Split::Train => &data.packed.train[r.index],
                        Split::Val => &data.packed.val[r.index],
                    };
                    seqs.push(CachedSeq {
                        seq: *r,
                        tokens: seq.clone(),
                        positions: positions(&mut logits_of, seq, opt.k, temperature as f32)?,
                    });
                    progress(done + seqs.len(), plan.len());
                }
                let bytes = shard::to_bytes(&seqs, opt.k, bits);
                qd_gguf::write_atomic(&path, &bytes).map_err(|e| CacheError::Io {
                    path: path.clone(),
                    err: e,
                })?;
                shard::checksum_of(&bytes).expect("just written whole")
            }
        };
        done += group.len();
        progress(done, plan.len());
        manifest.shards.push(ShardEntry {
            file,
            sha256,
            sequences: group.to_vec(),
        });
        if stop.load(Ordering::SeqCst) && done < plan.len() {
            return Err(CacheError::Interrupted {
                dir: dir.to_path_buf(),
                done,
                total: plan.len(),
            });
        }
    }
    manifest.complete = true;
    manifest.write(dir)?;
    Ok(manifest)
}

/// All rows' logits through candle's graph (the path online training's teacher takes).
fn graph_logits(teacher: &qd_model::QModel, inputs: &[u32]) -> candle_core::Result<Vec<f32>> {
    let x = candle_core::Tensor::new(inputs, &teacher.device)?.unsqueeze(0)?;
    let opts = qd_model::ForwardOpts {
        logits: qd_model::Logits::All,
        hidden_states: false,
    };
    let out = teacher
        .forward(&x, None, &opts)
        .map_err(candle_core::Error::wrap)?;
    out.logits
        .expect("asked for logits")
        .flatten_all()?
        .to_vec1::<f32>()
}
