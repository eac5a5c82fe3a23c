//! Importance-weighted quantization: ggml's `quantize_row_*_impl` with `quant_weights`, what
//! `llama-quantize --imatrix` runs. Each block's scale is searched to minimise the error
//! weighted by the importance matrix (the mean squared input activation of each column) times
//! `sqrt(sigma2 + x²)`, so columns that see large activations are rounded more carefully.
//!
//! Unlike the reference quantizers these depend on the whole row (Q4_0/Q4_1/Q5_0/Q5_1 take
//! `sigma2` over the row), so the unit here is a row, not a block. Q8_0 ignores the weights, as
//! ggml does.

use rayon::prelude::*;

use crate::error::{QuantError, Result};
use crate::fp16::write_f16;
use crate::helpers::make_qx_quants;
use crate::kscales::{codes_on_grid, pack_scale_codes};
use crate::weighted_search::{make_qkx3_quants, make_qp_quants, QKX3_SEARCH};
use qd_gguf::GgmlType;

/// Quantizes `data` (rows of `n_per_row`) to `ty` with importance `weights` (one per column), as
/// `ggml_quantize_chunk(ty, …, imatrix)`.
pub fn quantize_weighted(
    ty: GgmlType,
    data: &[f32],
    n_per_row: usize,
    weights: &[f32],
) -> Result<Vec<u8>> {
    let rows = crate::rows::check_rows(ty, data.len(), n_per_row)?;
    crate::rows::check_finite(data, n_per_row)?;
    check_weights(weights, n_per_row)?;
    let row_bytes = n_per_row / ty.block_size() * ty.type_size();
    let mut out = vec![0u8; rows * row_bytes];
    if rows == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(row_bytes)
        .zip(data.par_chunks(n_per_row))
        .for_each(|(o, x)| quantize_row(ty, x, weights, o));
    Ok(out)
}

/// `dequantize(quantize_weighted(x))`: the weighted grid's values, for QAT's forward pass.
pub fn fake_quantize_weighted(
    ty: GgmlType,
    data: &[f32],
    n_per_row: usize,
    weights: &[f32],
) -> Result<Vec<f32>> {
    let bytes = quantize_weighted(ty, data, n_per_row, weights)?;
    crate::rows::dequantize(ty, &bytes)
}

/// The weights must be one finite, non-negative value per column.
fn check_weights(weights: &[f32], n_per_row: usize) -> Result<()> {
    if weights.len() != n_per_row {
        return Err(QuantError::Weights(format!(
            "{} importance values for rows of {n_per_row}",
            weights.len()
        )));
    }
    match weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
        None => Ok(()),
        Some(i) => Err(QuantError::Weights(format!(
            "importance value {} at column {i} is not finite and non-negative",
            weights[i]
        ))),
    }
}

/// One row; `out` holds exactly the row's blocks.
pub(crate) fn quantize_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    let (bs, bb) = (ty.block_size(), ty.type_size());
    // Q4_0 … Q5_1: sigma2 over the whole row, then block by block.
    let mut sum_x2 = 0f32;
    if bs == 32 {
        for &v in x {
            sum_x2 += v * v;
        }
    }
    let sigma2 = sum_x2 / x.len() as f32;
    for ((xb, wb), ob) in x
        .chunks_exact(bs)
        .zip(qw.chunks_exact(bs))
        .zip(out.chunks_exact_mut(bb))
    {
        match ty {
            GgmlType::Q4_0 => symmetric(xb, wb, sigma2, 8, ob),
            GgmlType::Q5_0 => symmetric(xb, wb, sigma2, 16, ob),
            GgmlType::Q4_1 => affine(xb, wb, sigma2, 15, ob),
            GgmlType::Q5_1 => affine(xb, wb, sigma2, 31, ob),
            GgmlType::Q8_0 => crate::q8_0::quantize_block(xb, ob),
            GgmlType::Q2K => q2_k(xb, wb, ob),
            GgmlType::Q3K => q3_k(xb, wb, ob),
            GgmlType::Q4K => q45_k(xb, wb, 15, ob),
            GgmlType::Q5K => q45_k(xb, wb, 31, ob),
            GgmlType::Q6K => crate::q6_k::quantize_block_weighted(xb, Some(wb), ob),
            other => unreachable!("{other}: check_rows admits only quantizable types"),
        }
    }
}

/// `qw[j] · sqrt(sigma2 + x[j]²)`: the per-weight importance every imatrix path but Q6_K uses.
fn mix(xb: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &x), &q) in out.iter_mut().zip(xb).zip(qw) {
        *o = q * (sigma2 + x * x).sqrt();
    }
}

/// Q4_0 (`nmax` 8) and Q5_0 (16): `make_qx_quants` with weights; its codes are stored as
/// found, not recomputed against the fp16 scale.
fn symmetric(xb: &[f32], qw: &[f32], sigma2: f32, nmax: i32, out: &mut [u8]) {
    let mut w = [0f32; 32];
    let mut l = [0i8; 32];
    mix(xb, qw, sigma2, &mut w);
    let d = make_qx_quants(xb, nmax, &mut l, Some(&w));
    write_f16(out, 0, d);
    if nmax == 8 {
        for j in 0..16 {
            out[2 + j] = l[j] as u8 | ((l[j + 16] as u8) << 4);
        }
    } else {
        pack_5bit(&l.map(|v| v as u8), &mut out[2..22]);
    }
}

/// Q4_1 (`nmax` 15) and Q5_1 (31): `make_qkx3_quants`, scale and `−min` as fp16.
fn affine(xb: &[f32], qw: &[f32], sigma2: f32, nmax: i32, out: &mut [u8]) {
    let mut w = [0f32; 32];
    let mut l = [0u8; 32];
    mix(xb, qw, sigma2, &mut w);
    let (d, min) = make_qkx3_quants(xb, &w, nmax, &mut l, QKX3_SEARCH);
    write_f16(out, 0, d);
    write_f16(out, 2, -min);
    if nmax == 15 {
        for j in 0..16 {
            out[4 + j] = l[j] | (l[j + 16] << 4);
        }
    } else {
        pack_5bit(&l, &mut out[4..24]);
    }
}

/// Q5_0/Q5_1's `qh[4]` (the fifth bits) then `qs[16]`.
fn pack_5bit(l: &[u8; 32], out: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        out[4 + j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
    }
    out[..4].copy_from_slice(&qh.to_le_bytes());
}

/// `sum(x²)` over a 256-value super-block.
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// `quantize_row_q2_K_impl` for one super-block. Layout: scales[16], qs[64], d, dmin.
fn q2_k(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let sigma2 = sum_sq(x) / 256.0;
    let mut l = [0u8; 256];
    let (mut mins, mut scales, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut weight = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        mix(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        for w in &weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx3_quants(xs, &weight, 3, &mut l[16 * j..16 * j + 16], QKX3_SEARCH);
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
    let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
    for j in 0..16 {
        out[j] = ls[j] | (lm[j] << 4);
    }
    write_f16(out, 80, dm);
    write_f16(out, 82, mm);
    crate::q2_k::codes_and_pack(x, &mut l, out);
}

/// `quantize_row_q3_K_impl` for one super-block. Layout: hmask[32], qs[64], scales[12], d.
fn q3_k(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut l = [0i8; 256];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let mut weight = [0f32; 16];
    for j in 0..16 {
        mix(
            &x[16 * j..16 * j + 16],
            &qw[16 * j..16 * j + 16],
            sigma2,
            &mut weight,
        );
        let mut sumw = 0f32;
        for w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        let xs = &x[16 * j..16 * j + 16];
        scales[j] = make_qx_quants(xs, 4, &mut l[16 * j..16 * j + 16], Some(&weight));
    }
    out.iter_mut().for_each(|b| *b = 0);
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(&scales, 32, &mut ls, Some(&sw));
    crate::q3_k::pack_scale_codes(&ls.map(i32::from), &mut out[96..108]);
    write_f16(out, 108, d_block);
    crate::q3_k::codes_and_pack(x, &mut l, out);
}

/// `quantize_row_q4_K_impl` (`nmax` 15) and `quantize_row_q5_K_impl` (31) for one super-block:
/// 8 weighted affine fits, their scales and mins coded by `make_qp_quants`, codes recomputed
/// against the stored grid. Layout: d, dmin, scales[12], then Q5_K's qh[32], then qs[128].
fn q45_k(x: &[f32], qw: &[f32], nmax: i32, out: &mut [u8]) {
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut l = [0u8; 256];
    let (mut mins, mut scales, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        mix(xs, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        let mut sumw = 0f32;
        for w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(xs, &weights, nmax, &mut l[32 * j..32 * j + 32], QKX3_SEARCH);
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    if nmax == 31 {
        // Q5_K clamps the codes; Q4_K stores them as they come.
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    pack_scale_codes(&ls, &lm, &mut out[4..16]);
    write_f16(out, 0, d_block);
    write_f16(out, 2, m_block);
    codes_on_grid(x, out, &mut l, nmax);
    if nmax == 15 {
        crate::q4_k::pack_codes(&l, out);
    } else {
        crate::q5_k::pack_codes(&l, out);
    }
}
