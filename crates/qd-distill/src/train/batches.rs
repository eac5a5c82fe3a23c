//! The run's data plan: the corpus packed and split as every run of the same configuration packs
//! it, and the sequences each step reads — a function of (seed, step) alone, so a resumed run
//! and a teacher cache see exactly the sequences the uninterrupted run would.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::RunConfig;
use super::error::TrainError;
use crate::data::{
    pack, read_documents, split_and_shuffle, Augment, DataError, Example, Mixture, Packed,
};

/// Sequence indices for `step`: consecutive slots of per-epoch seeded permutations.
fn batch_indices(step: usize, per_step: usize, n: usize, seed: u64) -> Vec<usize> {
    (0..per_step)
        .map(|j| {
            let slot = step * per_step + j;
            let epoch = slot / n;
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(epoch as u64)));
            perm[slot % n]
        })
        .collect()
}

/// The training sequences: packed and split into train/val, and (with `data_weights`) the
/// mixture that picks each step's sequences from the per-entry datasets.
pub struct Data {
    pub packed: Packed,
    pub mixture: Option<Mixture>,
}

impl Data {
    /// One dataset of everything under `cfg.data`, or one per entry, mixed.
    pub fn load(
        cfg: &RunConfig,
        tok: &qd_tokenizer::GgufTokenizer,
        teacher_sha256: &str,
    ) -> Result<Self, TrainError> {
        let cache_dir = if cfg.token_cache {
            crate::data::default_cache_dir()
        } else {
            None
        };
        let packs = |paths: &[PathBuf]| -> Result<Packed, TrainError> {
            let docs = read_documents(paths)?;
            let (stream, _) =
                crate::data::cached_token_stream(tok, teacher_sha256, &docs, cache_dir.as_deref())?;
            Ok(split_and_shuffle(
                pack(&stream, cfg.seq_len)?,
                cfg.val_fraction,
                cfg.seed,
            ))
        };
        let (packed, mixture) = if cfg.data_weights.is_empty() {
            (packs(&cfg.data)?, None)
        } else {
            let parts = cfg
                .data
                .iter()
                .map(|p| packs(std::slice::from_ref(p)))
                .collect::<Result<Vec<_>, _>>()?;
            let (m, union) = Mixture::new(parts, &cfg.data_weights).map_err(TrainError::Config)?;
            (union, Some(m))
        };
        if packed.train.is_empty() {
            return Err(TrainError::Data(DataError::TooShort {
                tokens: packed.val.len() * cfg.seq_len,
                needed: cfg.seq_len,
            }));
        }
        Ok(Self { packed, mixture })
    }

    /// The held-out sequences evaluations read: the first `eval_sequences`, in order.
    pub fn held_out(&self, cfg: &RunConfig) -> Vec<Vec<u32>> {
        self.packed
            .val
            .iter()
            .take(cfg.eval_sequences)
            .cloned()
            .collect()
    }

    /// Step `step`'s training sequences, as indices into `packed.train` (the union of the parts
    /// when mixed): what a teacher cache is keyed by.
    pub fn batch_refs(&self, cfg: &RunConfig, step: usize) -> Vec<usize> {
        let per_step = cfg.batch_size * cfg.grad_accum;
        batch_indices(step, per_step, self.packed.train.len(), cfg.seed)
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let slot = (step * per_step + j) as u64;
                match &self.mixture {
                    Some(m) => m.pick_index(cfg.seed, slot),
                    None => i,
                }
            })
            .collect()
    }

    /// Step `step`'s examples: its sequences (`refs`, from [`Data::batch_refs`]), augmented.
    pub fn batch(
        &self,
        cfg: &RunConfig,
        step: usize,
        refs: &[usize],
        augment: &Augment,
        vocab: u32,
    ) -> Vec<Example> {
        let per_step = cfg.batch_size * cfg.grad_accum;
        refs.iter()
            .enumerate()
            .map(|(j, &i)| {
                let slot = (step * per_step + j) as u64;
                augment.apply(&self.packed.train[i], vocab, cfg.seed, slot)
            })
            .collect()
    }
}
