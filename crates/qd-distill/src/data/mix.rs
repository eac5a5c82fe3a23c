//! Weighted mixing of several datasets (the seed's `interleave_datasets` with probabilities):
//! each `--data` entry is packed and split on its own, and every training slot draws its
//! dataset with the given weights, then a sequence of it uniformly. The draws are seeded by the
//! slot, so a resumed run picks exactly what an uninterrupted one would.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::pack::Packed;

/// Training sets sampled by weight.
#[derive(Debug, Clone)]
pub struct Mixture {
    sets: Vec<Vec<Vec<u32>>>,
    /// Running sums of the normalized weights.
    cumulative: Vec<f64>,
}

impl Mixture {
    /// `parts[i]` packed and split alone, drawn with weight `weights[i]`; returns the mixture
    /// and the union of the parts (all sequences, the validation sets, one hash over the parts'
    /// hashes and the weights). `Err` names what is wrong with the weights.
    pub fn new(parts: Vec<Packed>, weights: &[f64]) -> Result<(Self, Packed), String> {
        if weights.len() != parts.len() {
            return Err(format!(
                "data_weights has {} entries for {} data paths",
                weights.len(),
                parts.len()
            ));
        }
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return Err("data_weights must be finite, ≥ 0, and not all 0".into());
        }
        if let Some(i) = (0..parts.len()).find(|&i| weights[i] > 0.0 && parts[i].train.is_empty()) {
            return Err(format!(
                "data path {} has weight {} but no training sequence",
                i + 1,
                weights[i]
            ));
        }
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let mut h = Sha256::new();
        for (p, w) in parts.iter().zip(weights) {
            h.update(p.hash.as_bytes());
            h.update(w.to_le_bytes());
        }
        let union = Packed {
            seq_len: parts.first().map_or(0, |p| p.seq_len),
            train: parts.iter().flat_map(|p| p.train.iter().cloned()).collect(),
            val: parts.iter().flat_map(|p| p.val.iter().cloned()).collect(),
            hash: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        };
        let sets = parts.into_iter().map(|p| p.train).collect();
        Ok((Self { sets, cumulative }, union))
    }

    /// The sequence for training slot `slot` of a run seeded with `seed`.
    pub fn pick(&self, seed: u64, slot: u64) -> &[u32] {
        let (d, i) = self.draw(seed, slot);
        &self.sets[d][i]
    }

    /// The index of [`Mixture::pick`]'s sequence in the union's training sequences (the
    /// parts' in order), by which a teacher cache finds it.
    pub fn pick_index(&self, seed: u64, slot: u64) -> usize {
        let (d, i) = self.draw(seed, slot);
        self.sets[..d].iter().map(Vec::len).sum::<usize>() + i
    }

    /// (set, sequence in the set) for a slot.
    fn draw(&self, seed: u64, slot: u64) -> (usize, usize) {
        let mut rng = StdRng::seed_from_u64(
            (seed ^ 0x6D1F_A3B5_27C4_E809)
                ^ slot.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let u: f64 = rng.random();
        let d = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.sets.len() - 1);
        // A set of weight 0 is never chosen: its cumulative sum equals the previous one's.
        (d, rng.random_range(0..self.sets[d].len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: u32, n: usize) -> Packed {
        Packed {
            seq_len: 4,
            train: (0..n).map(|i| vec![id, i as u32, 0, 0]).collect(),
            val: vec![vec![id, 99, 0, 0]],
            hash: format!("h{id}"),
        }
    }

    #[test]
    fn draws_follow_the_weights_and_are_reproducible() {
        let (m, union) =
            Mixture::new(vec![part(1, 10), part(2, 50), part(3, 5)], &[3.0, 1.0, 0.0]).unwrap();
        assert_eq!(union.train.len(), 65);
        assert_eq!(union.val.len(), 3);
        let mut counts = [0usize; 4];
        for s in 0..8000 {
            counts[m.pick(7, s)[0] as usize] += 1;
        }
        let share = counts[1] as f64 / 8000.0;
        assert!((share - 0.75).abs() < 0.02, "dataset 1 drawn {share}");
        assert_eq!(counts[3], 0, "weight 0 is never drawn");
        assert_eq!(m.pick(7, 123), m.pick(7, 123));
        for s in 0..200 {
            assert_eq!(m.pick(7, s), union.train[m.pick_index(7, s)].as_slice());
        }
        // Within a set, sequences are drawn across the whole set.
        let seen: std::collections::HashSet<u32> = (0..8000)
            .map(|s| m.pick(7, s))
            .filter(|q| q[0] == 2)
            .map(|q| q[1])
            .collect();
        assert_eq!(seen.len(), 50);
    }

    #[test]
    fn bad_weights_are_named() {
        let e = Mixture::new(vec![part(1, 3), part(2, 3)], &[1.0]).unwrap_err();
        assert!(e.contains("1 entries for 2 data paths"), "{e}");
        let e = Mixture::new(vec![part(1, 3)], &[0.0]).unwrap_err();
        assert!(e.contains("not all 0"), "{e}");
        let e = Mixture::new(vec![part(1, 3)], &[-1.0]).unwrap_err();
        assert!(e.contains("≥ 0"), "{e}");
        let e = Mixture::new(vec![part(1, 3), part(2, 0)], &[1.0, 2.0]).unwrap_err();
        assert!(e.contains("data path 2"), "{e}");
        // The union's hash depends on the weights.
        let a = Mixture::new(vec![part(1, 3), part(2, 3)], &[1.0, 2.0])
            .unwrap()
            .1
            .hash;
        let b = Mixture::new(vec![part(1, 3), part(2, 3)], &[2.0, 1.0])
            .unwrap()
            .1
            .hash;
        assert_ne!(a, b);
    }
}
