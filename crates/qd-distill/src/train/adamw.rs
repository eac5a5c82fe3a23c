//! AdamW with decoupled weight decay, kept here (not candle-nn's) because a resumable run must
//! save and restore the moment estimates, and norms and biases must be excluded from decay.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Named parameters; 1-D ones (norm weights, biases) get no weight decay.
    pub params: BTreeMap<String, Var>,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    pub step: u64,
    /// Parameters updated relative to their own magnitude, with this multiple of the learning
    /// rate: `p ← p − lr·k·|p|·m̂/(√v̂ + ε)`, no weight decay (learned quantization steps,
    /// whose sizes differ by orders of magnitude between tensors).
    pub relative: BTreeMap<String, f64>,
}

impl AdamW {
    pub fn new(params: BTreeMap<String, Var>, cfg: AdamWConfig) -> Result<Self> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (k, p) in &params {
            m.insert(k.clone(), p.as_tensor().zeros_like()?);
            v.insert(k.clone(), p.as_tensor().zeros_like()?);
        }
        Ok(Self {
            cfg,
            params,
            m,
            v,
            step: 0,
            relative: BTreeMap::new(),
        })
    }

    pub fn decays(&self, name: &str) -> bool {
        self.params.get(name).is_some_and(|p| p.rank() >= 2) && !self.relative.contains_key(name)
    }

    /// One update with learning rate `lr` from `grads` (parameters without a gradient are
    /// left untouched and their moments kept).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let m = (self.m[name].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            let v = (self.v[name].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let m_hat = m.affine(1.0 / bc1, 0.0)?;
            let v_hat = v.affine(1.0 / bc2, 0.0)?;
            let update = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            let next = match self.relative.get(name) {
                Some(&k) => {
                    let update = (update * p.as_tensor().abs()?)?;
                    (p.as_tensor() - update.affine(lr * k, 0.0)?)?
                }
                None => {
                    let decay = if self.decays(name) {
                        self.cfg.weight_decay
                    } else {
                        0.0
                    };
                    (p.as_tensor().affine(1.0 - lr * decay, 0.0)? - update.affine(lr, 0.0)?)?
                }
            };
            p.set(&next)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// Global gradient-norm clipping: scales every gradient by `max_norm / norm` when the norm of
/// all of them exceeds `max_norm`. Returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &BTreeMap<String, Var>,
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for p in params.values() {
        if let Some(g) = grads.get(p.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / norm;
        for p in params.values() {
            if let Some(g) = grads.remove(p.as_tensor()) {
                grads.insert(p.as_tensor(), g.affine(s, 0.0)?);
            }
        }
    }
    Ok(norm)
}
