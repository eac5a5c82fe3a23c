//! AdamW's moments in 8 bits (`optimizer = "adamw8"`): 2 bytes per parameter instead of 8, for
//! students that would not fit otherwise. Blocks of 256 values share an f32 scale (their
//! largest magnitude); codes are companded so that small values keep their precision — the
//! first moment as `sign·√(|m|/s)` in an i8, the second as `(v/s)^¼` in a u8 (a dynamic range
//! of 127² and 255⁴ below the block's largest value). Each step decodes a block, runs AdamW's
//! update on it (the same arithmetic as the f32 optimizer, [`Update::apply`]) and encodes it
//! again, in place in the parameter: no f32 moment ever exists whole.

use candle_core::{CpuStorage, Device, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use super::adamw_inplace::{slice, slice_mut, slice_mut_bf16, Update};

/// Values per scale.
pub const BLOCK: usize = 256;

/// Bytes a block takes in the state: its m codes, v codes, m scale, v scale.
pub const BLOCK_BYTES: usize = 2 * BLOCK + 8;

/// One parameter's 8-bit moments: a `u8` tensor of [`BLOCK_BYTES`] per block of 256 values
/// (the last block padded), updated in place — and saved in checkpoints as it is, with no copy.
#[derive(Debug, Clone)]
pub struct Moments8 {
    pub n: usize,
    pub state: Tensor,
}

impl Moments8 {
    /// Zero moments for `n` values.
    pub fn zeros(n: usize) -> Result<Self> {
        Ok(Self {
            n,
            state: Tensor::zeros(
                n.div_ceil(BLOCK) * BLOCK_BYTES,
                candle_core::DType::U8,
                &Device::Cpu,
            )?,
        })
    }

    /// The state a checkpoint holds for `n` values; `None` when it is not one (a damaged or
    /// foreign checkpoint: wrong type or size, or a scale that is negative or not finite).
    pub fn from_tensor(n: usize, t: &Tensor) -> Option<Self> {
        let bytes = t.flatten_all().ok()?.to_vec1::<u8>().ok()?;
        if bytes.len() != n.div_ceil(BLOCK) * BLOCK_BYTES {
            return None;
        }
        let ok = bytes.chunks(BLOCK_BYTES).all(|b| {
            let (ms, vs) = scales(b);
            ms.is_finite() && ms >= 0.0 && vs.is_finite() && vs >= 0.0
        });
        if !ok {
            return None;
        }
        let len = bytes.len();
        Some(Self {
            n,
            state: Tensor::from_vec(bytes, len, &Device::Cpu).ok()?,
        })
    }
}

fn scales(b: &[u8]) -> (f32, f32) {
    let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (f(2 * BLOCK), f(2 * BLOCK + 4))
}

fn decode_m(c: u8, s: f32) -> f32 {
    let x = c as i8 as f32 / 127.0;
    x * x.abs() * s
}

fn decode_v(c: u8, s: f32) -> f32 {
    let x = c as f32 / 255.0;
    let x2 = x * x;
    x2 * x2 * s
}

/// This step's moments of a block in f32: the stored ones decoded, moved by `g`.
fn fresh(b: &[u8], g: &[f32], b1: f32, a1: f32, b2: f32, a2: f32) -> ([f32; BLOCK], [f32; BLOCK]) {
    let (ms, vs) = scales(b);
    let mut m = [0f32; BLOCK];
    let mut v = [0f32; BLOCK];
    for i in 0..g.len() {
        m[i] = (decode_m(b[i], ms) * b1 + 0.0) + (g[i] * a1 + 0.0);
        v[i] = (decode_v(b[BLOCK + i], vs) * b2 + 0.0) + (g[i] * g[i] * a2 + 0.0);
    }
    (m, v)
}

/// Encodes a block's moments into its bytes.
fn encode(m: &[f32], v: &[f32], b: &mut [u8]) {
    let ms = m.iter().fold(0f32, |a, x| a.max(x.abs()));
    let vs = v.iter().fold(0f32, |a, &x| a.max(x));
    for i in 0..BLOCK {
        let (x, y) = (
            m.get(i).copied().unwrap_or(0.0),
            v.get(i).copied().unwrap_or(0.0),
        );
        b[i] = if ms > 0.0 {
            ((x.abs() / ms).sqrt() * 127.0).round().copysign(x) as i8 as u8
        } else {
            0
        };
        b[BLOCK + i] = if vs > 0.0 {
            ((y / vs).sqrt().sqrt() * 255.0).round() as u8
        } else {
            0
        };
    }
    b[2 * BLOCK..2 * BLOCK + 4].copy_from_slice(&ms.to_le_bytes());
    b[2 * BLOCK + 4..2 * BLOCK + 8].copy_from_slice(&vs.to_le_bytes());
}

fn bytes<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u8]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("8-bit moments must be contiguous".into()))?;
    match s {
        CpuStorage::U8(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("8-bit moments must be u8"),
    }
}

/// One AdamW step with 8-bit moments: `p.inplace_op3(&state, &g, &step)` moves the parameter
/// (from this step's moments in f32, as 8-bit Adam does), then `state.inplace_op2(&g, &step)`
/// stores those moments — recomputed from the same bytes by the same arithmetic — in 8 bits.
pub struct Step8 {
    pub beta1: f64,
    pub beta2: f64,
    pub update: Update,
    /// The stochastic rounding's key for a bf16 parameter (`stochastic_round::key`).
    pub round_key: u64,
}

impl Step8 {
    fn coefs(&self) -> (f32, f32, f32, f32) {
        (
            self.beta1 as f32,
            (1.0 - self.beta1) as f32,
            self.beta2 as f32,
            (1.0 - self.beta2) as f32,
        )
    }

    /// The whole step on parameter `p` with gradient `g` (f32 or bf16) and moments `m`.
    pub fn run(&self, p: &Tensor, g: &Tensor, m: &Moments8) -> Result<()> {
        let g = g.to_dtype(candle_core::DType::F32)?.contiguous()?;
        if p.elem_count() != m.n || g.elem_count() != m.n {
            candle_core::bail!("parameter, gradient and 8-bit moments differ in size");
        }
        p.inplace_op3(&m.state, &g, self)?;
        m.state.inplace_op2(&g, self)
    }
}

impl InplaceOp3 for Step8 {
    fn name(&self) -> &'static str {
        "adamw8-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (st, g) = (bytes(s2, l2)?, slice(s3, l3)?);
        let (b1, a1, b2, a2) = self.coefs();
        let upd = &self.update;
        // A second moment of zero with a first one from an earlier step would make m/ε
        // enormous: no step there.
        let next = |p: f32, m: f32, v: f32| {
            if v > 0.0 {
                upd.apply(p, m, v)
            } else {
                upd.apply(p, 0.0, 0.0)
            }
        };
        if let CpuStorage::BF16(_) = s1 {
            // bf16 master weights: the same f32 update, rounded stochastically.
            let p = slice_mut_bf16(s1, l1)?;
            let key = self.round_key;
            p.par_chunks_mut(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .zip(st.par_chunks(BLOCK_BYTES))
                .enumerate()
                .for_each(|(c, ((p, g), b))| {
                    let (m, v) = fresh(b, g, b1, a1, b2, a2);
                    for i in 0..p.len() {
                        let x = next(p[i].to_f32(), m[i], v[i]);
                        p[i] = super::stochastic_round::round(x, key, c * BLOCK + i);
                    }
                });
            return Ok(());
        }
        let p = slice_mut(s1, l1)?;
        p.par_chunks_mut(BLOCK)
            .zip(g.par_chunks(BLOCK))
            .zip(st.par_chunks(BLOCK_BYTES))
            .for_each(|((p, g), b)| {
                let (m, v) = fresh(b, g, b1, a1, b2, a2);
                for i in 0..p.len() {
                    p[i] = next(p[i], m[i], v[i]);
                }
            });
        Ok(())
    }
}

impl InplaceOp2 for Step8 {
    fn name(&self) -> &'static str {
        "adamw8-store"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = slice(s2, l2)?;
        let (a, b) = l1
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("8-bit moments must be contiguous".into()))?;
        let CpuStorage::U8(st) = s1 else {
            candle_core::bail!("8-bit moments must be u8");
        };
        let (b1, a1, b2, a2) = self.coefs();
        st[a..b]
            .par_chunks_mut(BLOCK_BYTES)
            .zip(g.par_chunks(BLOCK))
            .for_each(|(blk, g)| {
                let (m, v) = fresh(blk, g, b1, a1, b2, a2);
                encode(&m[..g.len()], &v[..g.len()], blk);
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
        let mut b = vec![0u8; BLOCK_BYTES];
        encode(&m, &v, &mut b);
        let (ms, vs) = scales(&b);
        for i in 0..BLOCK {
            let (dm, dv) = (decode_m(b[i], ms), decode_v(b[BLOCK + i], vs));
            // √-companded: within one code step of √(|m|/s), i.e. 2·√(|m|/s)/127 relative.
            let r = (m[i].abs() / ms).sqrt();
            assert!(
                (dm - m[i]).abs() <= ms * (2.0 * r / 127.0 + 1.0 / 16129.0),
                "{i}"
            );
            assert!(
                dv > 0.0 && (dv / v[i] - 1.0).abs() < 0.2,
                "{i}: {dv} vs {}",
                v[i]
            );
        }
        // The block's largest magnitudes are exact.
        let imax = (0..BLOCK)
            .max_by(|&a, &c| m[a].abs().total_cmp(&m[c].abs()))
            .unwrap();
        assert_eq!(decode_m(b[imax], ms), m[imax]);
        assert_eq!(decode_v(b[2 * BLOCK - 1], vs), v[BLOCK - 1]);
    }
}
