//! AdamW's moments in 8 bits (`optimizer = "adamw8"`): 2 bytes per parameter instead of 8, for
//! students that would not fit otherwise. Blocks of 256 values share an f32 scale (their
//! largest magnitude); codes are companded so that small values keep their precision — the
//! first moment as `sign·√(|m|/s)` in an i8, the second as `(v/s)^¼` in a u8 (a dynamic range
//! of 127² and 255⁴ below the block's largest value). Each step decodes a block, runs AdamW's
//! update on it (the same arithmetic as the f32 optimizer, [`Update::apply`]) and encodes it
//! again, in place in the parameter: no f32 moment ever exists whole.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

use super::adamw_inplace::{slice, slice_mut, Update};

/// Values per scale.
pub const BLOCK: usize = 256;

/// One parameter's moments, 8-bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments8 {
    pub m: Vec<i8>,
    pub m_scale: Vec<f32>,
    pub v: Vec<u8>,
    pub v_scale: Vec<f32>,
}

impl Moments8 {
    /// Zero moments for `n` values.
    pub fn zeros(n: usize) -> Self {
        let blocks = n.div_ceil(BLOCK);
        Self {
            m: vec![0; n],
            m_scale: vec![0.0; blocks],
            v: vec![0; n],
            v_scale: vec![0.0; blocks],
        }
    }

    pub fn len(&self) -> usize {
        self.m.len()
    }

    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// The state as f32 tensors (codes are small integers, exact in f32) for a checkpoint:
    /// `(suffix, values)` pairs.
    pub fn to_tensors(&self, dev: &candle_core::Device) -> Result<Vec<(&'static str, Tensor)>> {
        let f = |v: Vec<f32>| Tensor::from_vec(v.clone(), v.len(), dev);
        Ok(vec![
            ("m8", f(self.m.iter().map(|&c| c as f32).collect())?),
            ("m8s", f(self.m_scale.clone())?),
            ("v8", f(self.v.iter().map(|&c| c as f32).collect())?),
            ("v8s", f(self.v_scale.clone())?),
        ])
    }

    /// The state back from [`Self::to_tensors`]' tensors; `None` when they do not describe
    /// `n` values (a damaged or foreign checkpoint).
    pub fn from_tensors(
        n: usize,
        m: &Tensor,
        ms: &Tensor,
        v: &Tensor,
        vs: &Tensor,
    ) -> Option<Self> {
        let get = |t: &Tensor| t.flatten_all().ok()?.to_vec1::<f32>().ok();
        let (m, ms, v, vs) = (get(m)?, get(ms)?, get(v)?, get(vs)?);
        let blocks = n.div_ceil(BLOCK);
        if m.len() != n || v.len() != n || ms.len() != blocks || vs.len() != blocks {
            return None;
        }
        let int = |x: f32, lo: f32, hi: f32| (x.fract() == 0.0 && x >= lo && x <= hi).then_some(x);
        Some(Self {
            m: m.iter()
                .map(|&x| int(x, -127.0, 127.0).map(|x| x as i8))
                .collect::<Option<_>>()?,
            m_scale: ms,
            v: v.iter()
                .map(|&x| int(x, 0.0, 255.0).map(|x| x as u8))
                .collect::<Option<_>>()?,
            v_scale: vs,
        })
    }
}

fn decode_m(c: i8, s: f32) -> f32 {
    let x = c as f32 / 127.0;
    x * x.abs() * s
}

fn decode_v(c: u8, s: f32) -> f32 {
    let x = c as f32 / 255.0;
    let x2 = x * x;
    x2 * x2 * s
}

/// Encodes `m` and `v` into a block's codes and returns the scales.
fn encode(m: &[f32], v: &[f32], mc: &mut [i8], vc: &mut [u8]) -> (f32, f32) {
    let ms = m.iter().fold(0f32, |a, x| a.max(x.abs()));
    let vs = v.iter().fold(0f32, |a, &x| a.max(x));
    for (c, &x) in mc.iter_mut().zip(m) {
        *c = if ms > 0.0 {
            ((x.abs() / ms).sqrt() * 127.0).round().copysign(x) as i8
        } else {
            0
        };
    }
    for (c, &x) in vc.iter_mut().zip(v) {
        *c = if vs > 0.0 {
            ((x / vs).sqrt().sqrt() * 255.0).round() as u8
        } else {
            0
        };
    }
    (ms, vs)
}

/// One AdamW step on a parameter with 8-bit moments, in place (`p.inplace_op2(&g, &op)`).
pub struct Step8<'a> {
    pub state: RefCell<&'a mut Moments8>,
    pub beta1: f64,
    pub beta2: f64,
    pub update: Update,
}

impl InplaceOp2 for Step8<'_> {
    fn name(&self) -> &'static str {
        "adamw8-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = slice(s2, l2)?;
        let p = slice_mut(s1, l1)?;
        let mut st = self.state.borrow_mut();
        if p.len() != g.len() || p.len() != st.len() {
            candle_core::bail!("parameter, gradient and 8-bit moments differ in size");
        }
        let (b1, a1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (b2, a2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let upd = &self.update;
        let Moments8 {
            m,
            m_scale,
            v,
            v_scale,
        } = &mut **st;
        p.par_chunks_mut(BLOCK)
            .zip(g.par_chunks(BLOCK))
            .zip(m.par_chunks_mut(BLOCK))
            .zip(v.par_chunks_mut(BLOCK))
            .zip(m_scale.par_iter_mut())
            .zip(v_scale.par_iter_mut())
            .for_each(|(((((p, g), mc), vc), ms), vs)| {
                let mut mf = [0f32; BLOCK];
                let mut vf = [0f32; BLOCK];
                let n = p.len();
                for i in 0..n {
                    let m = decode_m(mc[i], *ms);
                    let v = decode_v(vc[i], *vs);
                    mf[i] = (m * b1 + 0.0) + (g[i] * a1 + 0.0);
                    vf[i] = (v * b2 + 0.0) + (g[i] * g[i] * a2 + 0.0);
                }
                // The update from this step's moments in f32 (as 8-bit Adam does); only what
                // is carried to the next step is rounded to 8 bits.
                for i in 0..n {
                    // A second moment of zero with a first one decoded from an earlier step
                    // would make m/ε enormous: no step there.
                    p[i] = if vf[i] > 0.0 {
                        upd.apply(p[i], mf[i], vf[i])
                    } else {
                        upd.apply(p[i], 0.0, 0.0)
                    };
                }
                let (new_ms, new_vs) = encode(&mf[..n], &vf[..n], mc, vc);
                *ms = new_ms;
                *vs = new_vs;
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_within_their_resolution() {
        let m: Vec<f32> = (0..BLOCK)
            .map(|i| ((i as f32) * 0.37).sin() * 1e-3)
            .collect();
        let v: Vec<f32> = (0..BLOCK).map(|i| 1e-8 * (1.0 + i as f32)).collect();
        let (mut mc, mut vc) = (vec![0i8; BLOCK], vec![0u8; BLOCK]);
        let (ms, vs) = encode(&m, &v, &mut mc, &mut vc);
        for i in 0..BLOCK {
            let (dm, dv) = (decode_m(mc[i], ms), decode_v(vc[i], vs));
            // √-companded: the error is at most half a code step of √(|m|/s).
            let step = (m[i].abs() / ms).sqrt() / 127.0 + 1.0 / 254.0;
            assert!((dm - m[i]).abs() <= 2.0 * step * ms * (m[i].abs() / ms).sqrt() + ms / 64516.0);
            assert!(
                dv > 0.0 && (dv / v[i] - 1.0).abs() < 0.2,
                "{i}: {dv} vs {}",
                v[i]
            );
            assert_eq!(
                dm.signum(),
                if mc[i] == 0 {
                    dm.signum()
                } else {
                    m[i].signum()
                }
            );
        }
        // The block's largest magnitude is exact.
        let imax = (0..BLOCK)
            .max_by(|&a, &b| m[a].abs().total_cmp(&m[b].abs()))
            .unwrap();
        assert_eq!(decode_m(mc[imax], ms), m[imax]);
        assert_eq!(decode_v(vc[BLOCK - 1], vs), v[BLOCK - 1]);
    }
}
