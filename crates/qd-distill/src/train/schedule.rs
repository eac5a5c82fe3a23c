//! Learning-rate, temperature and α schedules.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    Constant,
    Linear,
    Cosine,
    /// The seed article's temperature: `max(3 − 0.5·epoch, 1)` (start/end ignored).
    SeedEpoch,
}

/// A value moving from `start` to `end` over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub shape: Shape,
    pub start: f64,
    pub end: f64,
}

impl Schedule {
    pub fn constant(v: f64) -> Self {
        Self {
            shape: Shape::Constant,
            start: v,
            end: v,
        }
    }

    /// The value at `progress` ∈ [0, 1] of the run, in `epoch` (for the seed's shape).
    pub fn at(&self, progress: f64, epoch: usize) -> f64 {
        let p = progress.clamp(0.0, 1.0);
        match self.shape {
            Shape::Constant => self.start,
            Shape::Linear => self.start + (self.end - self.start) * p,
            Shape::Cosine => {
                self.end + (self.start - self.end) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
            Shape::SeedEpoch => (3.0 - 0.5 * epoch as f64).max(1.0),
        }
    }
}

/// Linear warm-up over `warmup` steps, then `decay` from `lr` to `lr·min_ratio`.
pub fn learning_rate(
    step: usize,
    total: usize,
    lr: f64,
    warmup: usize,
    decay: Shape,
    min_ratio: f64,
) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let p = (step - warmup) as f64 / span as f64;
    Schedule {
        shape: decay,
        start: lr,
        end: lr * min_ratio,
    }
    .at(p, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = Schedule {
            shape: Shape::Linear,
            start: 4.0,
            end: 1.0,
        };
        assert_eq!(s.at(0.0, 0), 4.0);
        assert_eq!(s.at(0.5, 0), 2.5);
        assert_eq!(s.at(1.0, 0), 1.0);
        let c = Schedule {
            shape: Shape::Cosine,
            start: 4.0,
            end: 1.0,
        };
        assert!((c.at(0.5, 0) - 2.5).abs() < 1e-12);
        assert_eq!(c.at(0.0, 0), 4.0);
        let seed = Schedule {
            shape: Shape::SeedEpoch,
            start: 0.0,
            end: 0.0,
        };
        assert_eq!(
            [0, 1, 2, 3, 4, 5].map(|e| seed.at(0.0, e)),
            [3.0, 2.5, 2.0, 1.5, 1.0, 1.0]
        );
        assert_eq!(learning_rate(0, 100, 1.0, 10, Shape::Cosine, 0.1), 0.1);
        assert_eq!(learning_rate(9, 100, 1.0, 10, Shape::Cosine, 0.1), 1.0);
        assert!((learning_rate(100, 100, 1.0, 10, Shape::Cosine, 0.1) - 0.1).abs() < 1e-12);
    }
}
