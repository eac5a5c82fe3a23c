//! Learned step sizes (LSQ, Esser et al. 2020; ParetoQ): the block scales of the symmetric
//! 32-value types (Q4_0, Q5_0, Q8_0) as trained variables instead of functions of the block's
//! largest value.
//!
//! Why: with the reference grid the scale of a block is fixed by one weight (its signed
//! maximum), so QAT can only move the other 31 weights around a grid it cannot change; the
//! imatrix grid is better but chosen once, before training. Here the forward pass is
//! `ŵ = d·clamp(⌊w/d + ½⌋, qmin, qmax)` with `d` the fp16 rounding of a trained scale, and the
//! backward pass is LSQ's: `∂ŵ/∂w = 1` inside the grid's range (0 outside) and
//! `∂ŵ/∂d = c − w/d` inside, `c` (the clamped code) outside.
//!
//! The exported block is exactly what the forward pass used: the fp16 `d` and the codes it
//! implies ([`quantize_with_steps`]), plain Q4_0/Q5_0/Q8_0 blocks that llama.cpp decodes
//! unchanged. The codes are rounded half up from `w/d` (a division, not ggml's multiplication
//! by the inverse), the same arithmetic on both sides.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::error::QuantError;
use crate::fp16::{fp16_to_fp32, fp32_to_fp16, write_f16};
use qd_gguf::GgmlType;

/// Values per block (every type with a learned step).
pub const BLOCK: usize = 32;

/// The code range of a type whose blocks are one scale and symmetric integer codes; `None` for
/// the others (offset types and K-quants have no single step to learn).
pub fn code_range(ty: GgmlType) -> Option<(f32, f32)> {
    match ty {
        GgmlType::Q4_0 => Some((-8.0, 7.0)),
        GgmlType::Q5_0 => Some((-16.0, 15.0)),
        GgmlType::Q8_0 => Some((-128.0, 127.0)),
        _ => None,
    }
}

fn range_of(ty: GgmlType) -> std::result::Result<(f32, f32), QuantError> {
    code_range(ty).ok_or(QuantError::Unsupported(ty.name()))
}

/// The scale a block is stored with: the fp16 rounding of the trained value.
pub fn stored_step(s: f32) -> f32 {
    fp16_to_fp32(fp32_to_fp16(s))
}

/// The code of `w` on the grid of step `d` (already fp16-rounded).
#[inline]
fn code(w: f32, d: f32, (lo, hi): (f32, f32)) -> f32 {
    if d == 0.0 {
        return 0.0;
    }
    (w / d + 0.5).floor().clamp(lo, hi)
}

fn check(
    ty: GgmlType,
    w: &[f32],
    n: usize,
    d: &[f32],
) -> std::result::Result<(f32, f32), QuantError> {
    let range = range_of(ty)?;
    if n == 0 || !n.is_multiple_of(BLOCK) {
        return Err(QuantError::RowLength {
            ty: ty.name(),
            n,
            block: BLOCK,
        });
    }
    if !w.len().is_multiple_of(n) {
        return Err(QuantError::Shape { len: w.len(), n });
    }
    if d.len() * BLOCK != w.len() {
        return Err(QuantError::Weights(format!(
            "{} step sizes for {} values (one per block of {BLOCK} wanted)",
            d.len(),
            w.len()
        )));
    }
    Ok(range)
}

/// The grid values the forward pass uses: `d·code` per value, `d` the fp16-rounded step of
/// its block.
pub fn fake_quantize_with_steps(
    ty: GgmlType,
    w: &[f32],
    n: usize,
    d: &[f32],
) -> crate::Result<Vec<f32>> {
    let range = check(ty, w, n, d)?;
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(BLOCK * 256)
        .zip(w.par_chunks(BLOCK * 256))
        .zip(d.par_chunks(256))
        .for_each(|((o, w), d)| {
            for ((o, w), &s) in o.chunks_exact_mut(BLOCK).zip(w.chunks_exact(BLOCK)).zip(d) {
                let d = stored_step(s);
                for (o, &w) in o.iter_mut().zip(w) {
                    *o = code(w, d, range) * d;
                }
            }
        });
    Ok(out)
}

/// The blocks of `w` (rows of `n`) with the given steps: what export writes, decoding to
/// exactly [`fake_quantize_with_steps`]'s values.
pub fn quantize_with_steps(ty: GgmlType, w: &[f32], n: usize, d: &[f32]) -> crate::Result<Vec<u8>> {
    let range = check(ty, w, n, d)?;
    crate::rows::check_finite(w, n)?;
    let bb = ty.type_size();
    let mut out = vec![0u8; w.len() / BLOCK * bb];
    out.par_chunks_mut(bb * 256)
        .zip(w.par_chunks(BLOCK * 256))
        .zip(d.par_chunks(256))
        .for_each(|((o, w), d)| {
            for ((o, w), &s) in o.chunks_exact_mut(bb).zip(w.chunks_exact(BLOCK)).zip(d) {
                let d = stored_step(s);
                let mut c = [0i32; BLOCK];
                for (c, &w) in c.iter_mut().zip(w) {
                    *c = code(w, d, range) as i32;
                }
                pack(ty, s, &c, o);
            }
        });
    Ok(out)
}

/// One block of `ty` from its step and codes (in `code_range`).
fn pack(ty: GgmlType, d: f32, c: &[i32; BLOCK], out: &mut [u8]) {
    write_f16(out, 0, d);
    match ty {
        GgmlType::Q4_0 => {
            for j in 0..16 {
                out[2 + j] = ((c[j] + 8) as u8) | (((c[j + 16] + 8) as u8) << 4);
            }
        }
        GgmlType::Q5_0 => {
            let mut qh = 0u32;
            for j in 0..16 {
                let (a, b) = ((c[j] + 16) as u32, (c[j + 16] + 16) as u32);
                out[6 + j] = ((a & 0x0F) | ((b & 0x0F) << 4)) as u8;
                qh |= ((a >> 4) & 1) << j;
                qh |= ((b >> 4) & 1) << (j + 16);
            }
            out[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        GgmlType::Q8_0 => {
            for j in 0..BLOCK {
                out[2 + j] = c[j] as i8 as u8;
            }
        }
        _ => unreachable!("check() admits only the types of code_range"),
    }
}

/// The step of every block of `bytes` (a tensor of `ty`), as f32: the initial value of a
/// learned step, taken from the grid the weights were snapped onto.
pub fn steps_of(ty: GgmlType, bytes: &[u8]) -> crate::Result<Vec<f32>> {
    range_of(ty)?;
    let bb = ty.type_size();
    if !bytes.len().is_multiple_of(bb) {
        return Err(QuantError::Bytes {
            ty: ty.name(),
            len: bytes.len(),
            bytes: bb,
        });
    }
    Ok(bytes
        .chunks_exact(bb)
        .map(|b| crate::fp16::read_f16(b, 0))
        .collect())
}

/// The differentiable op: `apply(w [.., n], d [.., n/32])`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedStep {
    pub ty: GgmlType,
}

impl LearnedStep {
    /// Whether `ty` can learn its step.
    pub fn supports(ty: GgmlType) -> bool {
        code_range(ty).is_some()
    }

    /// `ŵ` from the weights and the steps (one per 32 values along the last dimension).
    pub fn apply(&self, w: &Tensor, d: &Tensor) -> Result<Tensor> {
        w.contiguous()?.apply_op2(&d.contiguous()?, *self)
    }

    /// The same forward values and LSQ gradients from candle's ops alone, so the op runs on
    /// every backend (the device-generic training path; the CPU op above has no CUDA body).
    /// Forward: equal to [`Self::apply`] as f32 values (a zero may carry the other sign: the
    /// zero-valued gradient terms below add `+0`). Gradients: the same formulas, the step's
    /// summed over its block in f32 by candle (the CPU op sums in f64).
    ///
    /// How the gradients come out of plain ops: with `c` the clamped code and `u` the in-range
    /// mask (both constants), `ŵ = d̄·c + u·(w − w̄) + (c − u·w/d)‾·(d − d̄)` where `x̄` is `x`
    /// detached. The last two terms are exactly zero, and their derivatives are LSQ's:
    /// `∂ŵ/∂w = u`, `∂ŵ/∂d = c − u·w/d` (one factor, as the CPU op computes it).
    pub fn apply_portable(&self, w: &Tensor, d: &Tensor) -> Result<Tensor> {
        use candle_core::DType;
        let (lo, hi) = range_of(self.ty).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let dims = w.dims().to_vec();
        let n = dims.last().copied().unwrap_or(0);
        if n == 0 || !n.is_multiple_of(BLOCK) || d.elem_count() * BLOCK != w.elem_count() {
            candle_core::bail!(
                "learned step: {} steps for a {:?} weight (one per {BLOCK} values of each row)",
                d.elem_count(),
                dims
            );
        }
        let blocks = w.elem_count() / BLOCK;
        let w3 = w.reshape((blocks, BLOCK))?;
        // The stored step: the fp16 rounding, its gradient passed straight through in f32 (a
        // gradient through `to_dtype` would be rounded to f16 too). `d + (r − d)` is exactly `r`:
        // `r − d` is exact (within a factor of two of each other), and so is the sum.
        let d2 = d.reshape((blocks, 1))?;
        let r = d2.detach().to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let ds = (&d2 + (r - d2.detach())?)?;
        let ds_c = ds.detach();
        let nonzero = ds_c.ne(0f32)?.to_dtype(DType::F32)?;
        // A zero step gives code 0 (the CPU op's rule); divide by 1 there instead.
        let safe = (&ds_c + (1.0 - &nonzero)?)?;
        let v = w3.detach().broadcast_div(&safe)?;
        let code = v
            .affine(1.0, 0.5)?
            .floor()?
            .clamp(lo, hi)?
            .broadcast_mul(&nonzero)?;
        let inside = v
            .ge(lo)?
            .to_dtype(DType::F32)?
            .mul(&v.le(hi)?.to_dtype(DType::F32)?)?
            .broadcast_mul(&nonzero)?;
        let value = code.broadcast_mul(&ds_c)?;
        let dw = inside.mul(&(&w3 - w3.detach())?)?;
        let slope = (&code - inside.mul(&v)?)?;
        let dd = slope.broadcast_mul(&(&ds - &ds_c)?)?;
        ((value + dw)? + dd)?.reshape(dims)
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let (o1, o2) = l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg(format!("learned step: {what} is not contiguous"))
    })?;
    match s {
        CpuStorage::F32(v) => Ok(&v[o1..o2]),
        _ => candle_core::bail!("learned step: {what} must be f32"),
    }
}

fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<f32>()
}

impl CustomOp2 for LearnedStep {
    fn name(&self) -> &'static str {
        "gguf-learned-step"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = f32_slice(s1, l1, "weight")?;
        let d = f32_slice(s2, l2, "step")?;
        let n = l1.shape().dims().last().copied().unwrap_or(0);
        let y = fake_quantize_with_steps(self.ty, w, n, d)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        w: &Tensor,
        d: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let range = range_of(self.ty).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (wv, dv, gv) = (host_vec(w)?, host_vec(d)?, host_vec(grad)?);
        let mut gw = vec![0f32; wv.len()];
        let mut gd = vec![0f32; dv.len()];
        gw.par_chunks_mut(BLOCK * 256)
            .zip(gd.par_chunks_mut(256))
            .zip(wv.par_chunks(BLOCK * 256).zip(gv.par_chunks(BLOCK * 256)))
            .zip(dv.par_chunks(256))
            .for_each(|(((gw, gd), (wv, gv)), dv)| {
                for ((((gw, gd), w), g), &s) in gw
                    .chunks_exact_mut(BLOCK)
                    .zip(gd.iter_mut())
                    .zip(wv.chunks_exact(BLOCK))
                    .zip(gv.chunks_exact(BLOCK))
                    .zip(dv)
                {
                    let d = stored_step(s);
                    if d == 0.0 {
                        continue;
                    }
                    let mut acc = 0f64;
                    for ((gw, &w), &g) in gw.iter_mut().zip(w).zip(g) {
                        let v = w / d;
                        let c = code(w, d, range);
                        if v >= range.0 && v <= range.1 {
                            *gw = g;
                            acc += g as f64 * (c - v) as f64;
                        } else {
                            acc += g as f64 * c as f64;
                        }
                    }
                    *gd = acc as f32;
                }
            });
        let dev = w.device();
        Ok((
            Some(Tensor::from_vec(gw, w.shape(), &candle_core::Device::Cpu)?.to_device(dev)?),
            Some(Tensor::from_vec(gd, d.shape(), &candle_core::Device::Cpu)?.to_device(dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn weights(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let u = x as f32 / u32::MAX as f32 - 0.5;
                u * 0.05 * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    /// Every type's blocks decode (with the reference dequantizer) to exactly the forward
    /// pass's values, out-of-range weights and negative steps included.
    #[test]
    fn export_decodes_to_the_forward_values() {
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            let (rows, n) = (3, 64);
            let w = weights(rows * n, 7);
            let mut d: Vec<f32> = steps_of(ty, &crate::quantize(ty, &w, n).unwrap()).unwrap();
            // Learned steps move off the reference grid: smaller (clipping), larger, negated.
            for (i, s) in d.iter_mut().enumerate() {
                *s *= [0.61, 1.0, 1.37, -0.9, 0.8, 1.1][i % 6];
            }
            let fq = fake_quantize_with_steps(ty, &w, n, &d).unwrap();
            let bytes = quantize_with_steps(ty, &w, n, &d).unwrap();
            let back = crate::dequantize(ty, &bytes).unwrap();
            assert_eq!(
                fq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty}"
            );
            // The smaller steps clip: some weights lie outside their block's range.
            let (lo, hi) = code_range(ty).unwrap();
            let clipped = w.iter().enumerate().any(|(i, &x)| {
                let s = stored_step(d[i / BLOCK]);
                let v = x / s;
                v < lo - 0.5 || v > hi + 0.5
            });
            assert!(
                clipped || ty == GgmlType::Q8_0,
                "{ty}: no clipped value tested"
            );
        }
    }

    /// Starting from the grid a quantizer chose, the op reproduces that quantizer's values
    /// exactly when the weights sit on the grid (QAT's snapped start).
    #[test]
    fn snapped_weights_reproduce_their_grid() {
        let ty = GgmlType::Q4_0;
        let w = weights(4 * 96, 3);
        let bytes = crate::quantize(ty, &w, 96).unwrap();
        let snapped = crate::dequantize(ty, &bytes).unwrap();
        let d = steps_of(ty, &bytes).unwrap();
        let fq = fake_quantize_with_steps(ty, &snapped, 96, &d).unwrap();
        assert_eq!(fq, snapped);
        assert_eq!(quantize_with_steps(ty, &snapped, 96, &d).unwrap(), bytes);
    }

    /// The gradients are LSQ's: checked against the formula written out, value by value, and
    /// the step gradient against a central difference of a smooth loss where no code changes.
    #[test]
    fn gradients_are_lsq() {
        let ty = GgmlType::Q4_0;
        let n = 64;
        let w = weights(2 * n, 11);
        let mut d = steps_of(ty, &crate::quantize(ty, &w, n).unwrap()).unwrap();
        d[1] *= 0.7; // a clipping block
        let dev = Device::Cpu;
        let wv = Var::from_vec(w.clone(), (2, n), &dev).unwrap();
        let dv = Var::from_vec(d.clone(), (2, n / BLOCK), &dev).unwrap();
        let g: Vec<f32> = weights(2 * n, 5);
        let gt = Tensor::from_vec(g.clone(), (2, n), &dev).unwrap();
        let y = LearnedStep { ty }
            .apply(wv.as_tensor(), dv.as_tensor())
            .unwrap();
        let loss = (y * &gt).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gw = grads.get(wv.as_tensor()).unwrap().flatten_all().unwrap();
        let gw = gw.to_vec1::<f32>().unwrap();
        let gd = grads.get(dv.as_tensor()).unwrap().flatten_all().unwrap();
        let gd = gd.to_vec1::<f32>().unwrap();
        let mut outside = 0;
        for b in 0..d.len() {
            let s = stored_step(d[b]);
            let mut want = 0f64;
            for i in b * BLOCK..(b + 1) * BLOCK {
                let v = w[i] / s;
                let c = (v + 0.5).floor().clamp(-8.0, 7.0);
                if (-8.0..=7.0).contains(&v) {
                    assert_eq!(gw[i], g[i]);
                    want += (g[i] * (c - v)) as f64;
                } else {
                    outside += 1;
                    assert_eq!(gw[i], 0.0);
                    want += (g[i] * c) as f64;
                }
            }
            assert!(
                (gd[b] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{b}"
            );
        }
        assert!(outside > 0, "no clipped value tested");
        // ∂/∂d of Σ g·ŵ with codes fixed is Σ g·c; LSQ's (c − v) terms sum with the weight
        // path's Σ g·v·… — check the total derivative of the loss along (w, d) ↦ (t·w, t·d),
        // under which codes are invariant: d/dt Σ g·ŵ = Σ g·ŵ/t at t = 1.
        let total: f64 = (0..w.len())
            .map(|i| gw[i] as f64 * w[i] as f64)
            .sum::<f64>()
            + (0..d.len())
                .map(|b| gd[b] as f64 * stored_step(d[b]) as f64)
                .sum::<f64>();
        let fq = fake_quantize_with_steps(ty, &w, n, &d).unwrap();
        let direct: f64 = fq.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((total - direct).abs() <= 1e-5 * direct.abs().max(1e-3));
    }

    /// The device-generic formulation (candle ops only) gives the op's forward values and its
    /// gradients, for every type, with clipping, negative and zero steps.
    #[test]
    fn portable_form_equals_the_op() {
        let dev = Device::Cpu;
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            let (rows, n) = (3, 96);
            let w = weights(rows * n, 13);
            let mut d = steps_of(ty, &crate::quantize(ty, &w, n).unwrap()).unwrap();
            for (i, s) in d.iter_mut().enumerate() {
                *s *= [0.61, 1.0, 1.37, -0.9, 0.5, 1.1, 0.0, 0.8, 1.0][i % 9];
            }
            let g = weights(rows * n, 29);
            let gt = Tensor::from_vec(g, (rows, n), &dev).unwrap();
            let run = |portable: bool| {
                let wv = Var::from_vec(w.clone(), (rows, n), &dev).unwrap();
                let dv = Var::from_vec(d.clone(), (rows, n / BLOCK), &dev).unwrap();
                let op = LearnedStep { ty };
                let y = if portable {
                    op.apply_portable(wv.as_tensor(), dv.as_tensor())
                } else {
                    op.apply(wv.as_tensor(), dv.as_tensor())
                }
                .unwrap();
                let grads = (&y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (
                    flat(&y),
                    flat(grads.get(wv.as_tensor()).unwrap()),
                    flat(grads.get(dv.as_tensor()).unwrap()),
                )
            };
            let (y0, gw0, gd0) = run(false);
            let (y1, gw1, gd1) = run(true);
            // Equal as values (a zero may differ in sign only).
            assert_eq!(y0, y1, "{ty}: forward");
            assert_eq!(gw0, gw1, "{ty}: weight gradient");
            for (b, (a, p)) in gd0.iter().zip(&gd1).enumerate() {
                assert!(
                    (a - p).abs() <= 1e-5 * a.abs().max(1e-4),
                    "{ty}: step gradient of block {b}: {a} vs {p}"
                );
            }
            assert!(gd0.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let w = weights(64, 1);
        assert!(quantize_with_steps(GgmlType::Q4K, &w, 64, &[1.0, 1.0]).is_err());
        assert!(quantize_with_steps(GgmlType::Q4_0, &w, 64, &[1.0]).is_err());
        assert!(quantize_with_steps(GgmlType::Q4_0, &w, 48, &[1.0, 1.0]).is_err());
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        assert!(quantize_with_steps(GgmlType::Q4_0, &bad, 64, &[1.0, 1.0]).is_err());
    }
}
