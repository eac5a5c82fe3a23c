//! AdamW with decoupled weight decay, kept here (not candle-nn's) because a resumable run must
//! save and restore the moment estimates, and norms and biases must be excluded from decay.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adamw_inplace::{Ema, Update};
use super::moments8::{Moments8, Step8};

/// How the optimizer keeps its moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MomentFormat {
    /// f32 moments: 8 bytes per parameter.
    #[default]
    Adamw,
    /// 8-bit block-wise moments (`moments8`): 2 bytes per parameter, CPU only.
    Adamw8,
}

impl MomentFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "adamw" => Some(Self::Adamw),
            "adamw8" => Some(Self::Adamw8),
            _ => None,
        }
    }

    /// Bytes of optimizer state per trained parameter.
    pub fn bytes_per_param(self) -> f64 {
        match self {
            Self::Adamw => 8.0,
            Self::Adamw8 => 2.0 + 8.0 / super::moments8::BLOCK as f64,
        }
    }
}

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
    /// The 8-bit moments, per parameter, when the format is [`MomentFormat::Adamw8`] (`m` and
    /// `v` are then empty).
    pub m8: BTreeMap<String, Moments8>,
    pub format: MomentFormat,
}

impl AdamW {
    pub fn new(params: BTreeMap<String, Var>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_format(params, cfg, MomentFormat::Adamw)
    }

    pub fn with_format(
        params: BTreeMap<String, Var>,
        cfg: AdamWConfig,
        format: MomentFormat,
    ) -> Result<Self> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        let mut m8 = BTreeMap::new();
        for (k, p) in &params {
            match format {
                MomentFormat::Adamw => {
                    m.insert(k.clone(), p.as_tensor().zeros_like()?);
                    v.insert(k.clone(), p.as_tensor().zeros_like()?);
                }
                MomentFormat::Adamw8 => {
                    if !p.device().is_cpu() {
                        candle_core::bail!("8-bit moments (adamw8) run on the CPU only for now");
                    }
                    m8.insert(k.clone(), Moments8::zeros(p.elem_count())?);
                }
            }
        }
        Ok(Self {
            cfg,
            params,
            m,
            v,
            step: 0,
            relative: BTreeMap::new(),
            m8,
            format,
        })
    }

    /// The moments as named tensors for a checkpoint, sharing their buffers (`m.NAME`,
    /// `v.NAME`; 8-bit moments `m8.NAME`: codes and scales as one u8 tensor).
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, m) in &self.m {
            out.insert(format!("m.{k}"), m.clone());
            out.insert(format!("v.{k}"), self.v[k].clone());
        }
        for (k, s) in &self.m8 {
            out.insert(format!("m8.{k}"), s.state.clone());
        }
        Ok(out)
    }

    /// Restores parameter `name`'s moments from a checkpoint's tensors (`get` by full name);
    /// the error says what is missing or damaged.
    pub fn restore(
        &mut self,
        name: &str,
        mut get: impl FnMut(&str) -> Option<Tensor>,
    ) -> std::result::Result<(), String> {
        let mut fetch = |p: &str| {
            get(&format!("{p}.{name}")).ok_or_else(|| format!("no optimizer state {p}.{name}"))
        };
        match self.format {
            MomentFormat::Adamw => {
                self.m.insert(name.to_string(), fetch("m")?);
                self.v.insert(name.to_string(), fetch("v")?);
            }
            MomentFormat::Adamw8 => {
                let n = self.params.get(name).map_or(0, |p| p.elem_count());
                let s = Moments8::from_tensor(n, &fetch("m8")?)
                    .ok_or_else(|| format!("damaged 8-bit optimizer state for {name}"))?;
                self.m8.insert(name.to_string(), s);
            }
        }
        Ok(())
    }

    pub fn decays(&self, name: &str) -> bool {
        self.params.get(name).is_some_and(|p| p.rank() >= 2) && !self.relative.contains_key(name)
    }

    /// One update with learning rate `lr` from `grads` (parameters without a gradient are
    /// left untouched and their moments kept).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_impl(grads, lr, true)
    }

    /// [`Self::step`] through candle's tensor ops only (the path of devices without the
    /// in-place CPU loops), for checking the in-place update against it.
    #[doc(hidden)]
    pub fn step_with_tensors(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_impl(grads, lr, false)
    }

    fn step_impl(&mut self, grads: &GradStore, lr: f64, in_place: bool) -> Result<()> {
        self.begin_step();
        self.apply(grads, lr, in_place)
    }

    /// Opens an update: the step count its bias corrections (and stochastic rounding) use. A
    /// step given in parts — each block's gradients applied as backward makes them
    /// (`update_in_backward`) — opens once, then [`Self::apply`]s each part.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// The update of the open step for the parameters `grads` holds (the others untouched):
    /// each parameter's arithmetic depends only on its own gradient and state, so a step
    /// applied in parts is the whole step's bits.
    pub fn apply(&mut self, grads: &GradStore, lr: f64, in_place: bool) -> Result<()> {
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let decay = if self.decays(name) {
                self.cfg.weight_decay
            } else {
                0.0
            };
            let update = Update {
                c1: 1.0 / bc1,
                c2: 1.0 / bc2,
                eps: self.cfg.eps,
                lr,
                relative: self.relative.get(name).copied(),
                decay,
            };
            if let Some(state) = self.m8.get(name) {
                Step8 {
                    beta1: b1,
                    beta2: b2,
                    update,
                    round_key: super::stochastic_round::key(self.step, name),
                }
                .run(p.as_tensor(), g, state)?;
                continue;
            }
            if in_place && p.device().is_cpu() && p.as_tensor().is_contiguous() {
                // In place: the same arithmetic as below, without its seven fresh tensors.
                let g = g.contiguous()?;
                let (m, v) = (&self.m[name], &self.v[name]);
                m.inplace_op2(
                    &g,
                    &Ema {
                        a: b1,
                        b: 1.0 - b1,
                        square: false,
                    },
                )?;
                v.inplace_op2(
                    &g,
                    &Ema {
                        a: b2,
                        b: 1.0 - b2,
                        square: true,
                    },
                )?;
                p.as_tensor().inplace_op3(m, v, &update)?;
                continue;
            }
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
                None => (p.as_tensor().affine(1.0 - lr * decay, 0.0)? - update.affine(lr, 0.0)?)?,
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
    clip(grads, params, max_norm, false)
}

/// [`clip_grad_norm`], rescaling CPU f32 gradients in place instead of copying every one at
/// once (the same bits). Only for gradients that own their buffers — those
/// [`super::step::batch_loss_and_grads`] returns do (each is a fresh sum from candle's
/// backward, or a scaled copy); a gradient that were a view into another would be scaled
/// twice.
pub fn clip_owned_grads(
    grads: &mut GradStore,
    params: &BTreeMap<String, Var>,
    max_norm: f64,
) -> Result<f64> {
    clip(grads, params, max_norm, true)
}

fn clip(
    grads: &mut GradStore,
    params: &BTreeMap<String, Var>,
    max_norm: f64,
    in_place: bool,
) -> Result<f64> {
    let mut sq = 0f64;
    for p in params.values() {
        if let Some(g) = grads.get(p.as_tensor()) {
            sq += squared_norm(g)?;
        }
    }
    let norm = sq.sqrt();
    if let Some(s) = clip_scale(norm, max_norm) {
        scale_grads(grads, params, s, in_place)?;
    }
    Ok(norm)
}

/// One gradient's squared norm as clipping sums it: a bf16 gradient (the compact state's) is
/// squared and summed in f32, the sum widened to f64.
pub fn squared_norm(g: &Tensor) -> Result<f64> {
    g.to_dtype(candle_core::DType::F32)?
        .sqr()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

/// The factor clipping multiplies every gradient by, when the global `norm` exceeds `max_norm`
/// (`max_norm` 0: no clipping).
pub fn clip_scale(norm: f64, max_norm: f64) -> Option<f64> {
    (max_norm > 0.0 && norm > max_norm).then(|| max_norm / norm)
}

/// Every gradient of `params` in `grads` multiplied by `s`: in place for CPU f32 gradients
/// that own their buffers (`in_place`), else by a scaled copy — the same arithmetic either way.
pub fn scale_grads(
    grads: &mut GradStore,
    params: &BTreeMap<String, Var>,
    s: f64,
    in_place: bool,
) -> Result<()> {
    for p in params.values() {
        let Some(g) = grads.get(p.as_tensor()) else {
            continue;
        };
        if in_place
            && g.device().is_cpu()
            && g.dtype() == candle_core::DType::F32
            && g.is_contiguous()
        {
            g.inplace_op1(&super::adamw_inplace::Scale(s))?;
        } else if let Some(g) = grads.remove(p.as_tensor()) {
            grads.insert(p.as_tensor(), g.affine(s, 0.0)?);
        }
    }
    Ok(())
}
