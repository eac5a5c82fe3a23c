//! Next-token sampling: greedy, or temperature with top-k and top-p, seeded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::topk::top_k_of_row;

#[derive(Debug, Clone, Copy)]
pub struct SamplerParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

pub struct Sampler {
    p: SamplerParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(p: SamplerParams) -> Self {
        Self {
            p,
            rng: StdRng::seed_from_u64(p.seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.p.temperature <= 0.0 {
            return top_k_of_row(logits, 1)[0].0;
        }
        let k = if self.p.top_k == 0 {
            logits.len()
        } else {
            self.p.top_k
        };
        let cands = top_k_of_row(logits, k);
        let t = self.p.temperature;
        let m = cands[0].1;
        let mut probs: Vec<f64> = cands
            .iter()
            .map(|&(_, l)| (((l - m) / t) as f64).exp())
            .collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
        // Top-p: the smallest prefix whose mass reaches p.
        let mut keep = probs.len();
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= self.p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        let z: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f64>() * z;
        for i in 0..keep {
            r -= probs[i];
            if r <= 0.0 {
                return cands[i].0;
            }
        }
        cands[keep - 1].0
    }
}
