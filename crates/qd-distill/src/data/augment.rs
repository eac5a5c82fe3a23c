//! The seed recipe's augmentations of training sequences, each off by default: random
//! truncation (a sequence cut to a random length) and token-noise injection (a fraction of the
//! *input* tokens replaced by random ids; the targets stay the clean text, so the models learn
//! to predict through noise rather than to predict noise).
//!
//! Every draw comes from an RNG seeded by `(seed, slot)` — the sequence's position in the run —
//! so a resumed run makes exactly the examples an uninterrupted one would, with no RNG state
//! in the checkpoint.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to do to each training sequence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Probability that a sequence is cut to a length drawn uniformly from
    /// `truncate_min..=len`.
    pub truncate_prob: f64,
    pub truncate_min: usize,
    /// Probability that an input token (any but the first, the BOS that Gemma attends to as a
    /// sink) is replaced by a uniformly random id.
    pub token_noise: f64,
}

/// One training example: `tokens` gives the next-token targets (`tokens[1..]`); `inputs` is
/// what both models read (`tokens[..len − 1]`, noised where drawn).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub inputs: Vec<u32>,
}

impl Example {
    /// A sequence as it is, inputs = tokens but the last.
    pub fn plain(tokens: Vec<u32>) -> Self {
        let inputs = tokens[..tokens.len().saturating_sub(1)].to_vec();
        Self { tokens, inputs }
    }
}

impl Augment {
    pub fn is_off(&self) -> bool {
        self.truncate_prob == 0.0 && self.token_noise == 0.0
    }

    /// The example made from `seq` at `slot` of a run seeded with `seed`; `vocab` bounds the
    /// noise ids.
    pub fn apply(&self, seq: &[u32], vocab: u32, seed: u64, slot: u64) -> Example {
        if self.is_off() {
            return Example::plain(seq.to_vec());
        }
        let mut rng =
            StdRng::seed_from_u64(seed ^ slot.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut len = seq.len();
        let min = self.truncate_min.clamp(2, len.max(2));
        if self.truncate_prob > 0.0 && len > min && rng.random_bool(self.truncate_prob) {
            len = rng.random_range(min..=len);
        }
        let tokens = seq[..len].to_vec();
        let mut inputs = tokens[..len - 1].to_vec();
        if self.token_noise > 0.0 && vocab > 0 {
            for t in inputs.iter_mut().skip(1) {
                if rng.random_bool(self.token_noise) {
                    *t = rng.random_range(0..vocab);
                }
            }
        }
        Example { tokens, inputs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq() -> Vec<u32> {
        (0..256).map(|i| 2 + i as u32).collect()
    }

    #[test]
    fn off_by_default_is_the_sequence_itself() {
        let e = Augment::default().apply(&seq(), 1000, 1, 0);
        assert_eq!(e, Example::plain(seq()));
        assert_eq!(e.inputs.len(), 255);
    }

    #[test]
    fn truncation_cuts_within_bounds_at_the_given_rate() {
        let a = Augment {
            truncate_prob: 0.5,
            truncate_min: 32,
            ..Default::default()
        };
        let lens: Vec<usize> = (0..2000)
            .map(|s| a.apply(&seq(), 1000, 7, s).tokens.len())
            .collect();
        let cut = lens.iter().filter(|&&l| l < 256).count() as f64 / 2000.0;
        assert!((cut - 0.5).abs() < 0.05, "cut fraction {cut}");
        assert!(lens.iter().all(|&l| (32..=256).contains(&l)));
        // Cuts are spread over the range, not stuck at one length.
        assert!(lens.iter().any(|&l| l < 64) && lens.iter().any(|&l| (200..256).contains(&l)));
        for s in 0..50 {
            let e = a.apply(&seq(), 1000, 7, s);
            assert_eq!(e.tokens[..], seq()[..e.tokens.len()]);
            assert_eq!(e.inputs[..], e.tokens[..e.tokens.len() - 1]);
        }
    }

    #[test]
    fn noise_replaces_inputs_only_at_the_given_rate() {
        let a = Augment {
            token_noise: 0.1,
            ..Default::default()
        };
        let (mut changed, mut total) = (0, 0);
        for s in 0..200 {
            let e = a.apply(&seq(), 100_000, 3, s);
            assert_eq!(e.tokens, seq(), "targets stay clean");
            assert_eq!(e.inputs[0], seq()[0], "the first token is kept");
            changed += e
                .inputs
                .iter()
                .zip(&e.tokens)
                .filter(|(a, b)| a != b)
                .count();
            total += e.inputs.len() - 1;
        }
        let rate = changed as f64 / total as f64;
        assert!((rate - 0.1).abs() < 0.01, "noise rate {rate}");
    }

    #[test]
    fn the_same_slot_gives_the_same_example_and_others_differ() {
        let a = Augment {
            truncate_prob: 0.5,
            truncate_min: 8,
            token_noise: 0.2,
        };
        assert_eq!(a.apply(&seq(), 500, 9, 42), a.apply(&seq(), 500, 9, 42));
        assert_ne!(a.apply(&seq(), 500, 9, 42), a.apply(&seq(), 500, 9, 43));
        assert_ne!(a.apply(&seq(), 500, 9, 42), a.apply(&seq(), 500, 10, 42));
    }
}
