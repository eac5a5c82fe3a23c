//! Whole tensors, row by row as GGUF lays weights out, in parallel.

use qd_kernels::fake::{self, SymmetricGrid};
use qd_kernels::Isa;
use rayon::prelude::*;

use crate::error::{QuantError, Result};
use crate::format::kernels;
use qd_gguf::GgmlType;

/// Rows per parallel task: enough work to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 4;

/// Rows of `n` in `len` values of a type this crate quantizes (else `Unsupported`).
pub(crate) fn check_rows(ty: GgmlType, len: usize, n: usize) -> Result<usize> {
    crate::format::quantizable(ty)?;
    if n == 0 {
        return if len == 0 {
            Ok(0)
        } else {
            Err(QuantError::Shape { len, n })
        };
    }
    if !n.is_multiple_of(ty.block_size()) {
        return Err(QuantError::RowLength {
            ty: ty.name(),
            n,
            block: ty.block_size(),
        });
    }
    if !len.is_multiple_of(n) {
        return Err(QuantError::Shape { len, n });
    }
    Ok(len / n)
}

/// Rejects NaN and ±Inf, naming the first offending row.
pub fn check_finite(data: &[f32], n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(QuantError::NonFinite {
            row: i / n,
            col: i % n,
            value: data[i],
        }),
    }
}

/// Quantizes `data` (rows of `n_per_row`) to `ty`, exactly as `ggml_quantize_chunk` without an
/// importance matrix.
pub fn quantize(ty: GgmlType, data: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    let rows = check_rows(ty, data.len(), n_per_row)?;
    check_finite(data, n_per_row)?;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let (bs, bb) = (ty.block_size(), ty.type_size());
    let row_bytes = n_per_row / bs * bb;
    let mut out = vec![0u8; rows * row_bytes];
    let (q, _) = kernels(ty)?;
    out.par_chunks_mut(row_bytes * ROWS_PER_TASK)
        .zip(data.par_chunks(n_per_row * ROWS_PER_TASK))
        .for_each(|(o, x)| {
            for (ob, xb) in o.chunks_exact_mut(bb).zip(x.chunks_exact(bs)) {
                q(xb, ob);
            }
        });
    Ok(out)
}

/// Dequantizes whole blocks to f32, as ggml's `dequantize_row_*`.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    let (_, dq) = kernels(ty)?;
    let (bs, bb) = (ty.block_size(), ty.type_size());
    if !bytes.len().is_multiple_of(bb) {
        return Err(QuantError::Bytes {
            ty: ty.name(),
            len: bytes.len(),
            bytes: bb,
        });
    }
    let mut out = vec![0f32; bytes.len() / bb * bs];
    out.par_chunks_mut(bs * 64)
        .zip(bytes.par_chunks(bb * 64))
        .for_each(|(y, b)| {
            for (yb, bl) in y.chunks_exact_mut(bs).zip(b.chunks_exact(bb)) {
                dq(bl, yb);
            }
        });
    Ok(out)
}

/// `dequantize(quantize(x))` fused per block, without materialising the bytes: the forward of
/// the fake-quant op.
pub fn fake_quantize(ty: GgmlType, data: &[f32], n_per_row: usize) -> Result<Vec<f32>> {
    let rows = check_rows(ty, data.len(), n_per_row)?;
    check_finite(data, n_per_row)?;
    let mut out = vec![0f32; rows * n_per_row];
    fake_quantize_into(ty, data, &mut out);
    Ok(out)
}

/// The unchecked core of [`fake_quantize`]; `data.len()` must be whole blocks.
///
/// # Panics
/// When `ty` is not one this crate quantizes ([`crate::quantizable`]): callers check first.
pub fn fake_quantize_into(ty: GgmlType, data: &[f32], out: &mut [f32]) {
    fake_quantize_into_at(Isa::active(), ty, data, out)
}

/// `ty`'s numbers for the kernels' symmetric fake-quant, where it is one of those formats.
fn symmetric_grid(ty: GgmlType) -> Option<SymmetricGrid> {
    match ty {
        GgmlType::Q4_0 => Some(crate::q4_0::FAKE),
        GgmlType::Q5_0 => Some(crate::q5_0::FAKE),
        GgmlType::Q8_0 => Some(crate::q8_0::FAKE),
        _ => None,
    }
}

/// As [`fake_quantize_into`] with the kernels at level `isa` (or the best below it this CPU
/// runs): Q4_0/Q5_0/Q8_0 and Q4_K/Q5_K on [`qd_kernels::fake`], every other type as
/// quantize-then-dequantize block by block. Tests and benchmarks compare the levels with it.
///
/// # Panics
/// As [`fake_quantize_into`].
pub fn fake_quantize_into_at(isa: Isa, ty: GgmlType, data: &[f32], out: &mut [f32]) {
    let bs = ty.block_size();
    let Ok((q, dq)) = kernels(ty) else {
        panic!("fake-quant to {ty}: not a type this crate quantizes (callers check first)")
    };
    let symmetric = symmetric_grid(ty);
    // Q4_K/Q5_K: 16 sub-block fits at once, one per SIMD lane.
    let affine = match ty {
        GgmlType::Q4K => Some(crate::kscales::Q4_K_SEARCH),
        GgmlType::Q5K => Some(crate::kscales::Q5_K_SEARCH),
        _ => None,
    };
    let grid = crate::kscales::stored_grid;
    let chunk = bs * (16384 / bs).max(1);
    out.par_chunks_mut(chunk)
        .zip(data.par_chunks(chunk))
        .for_each(|(y, x)| {
            if let Some(g) = symmetric {
                return fake::symmetric_at(isa, g, x, y);
            }
            let mut done = 0;
            if let Some(search) = affine {
                // Two pairs at a time: their searches interleave, hiding each other's latency.
                let quads = x.len() / 1024 * 1024;
                for (xp, yp) in x[..quads]
                    .chunks_exact(1024)
                    .zip(y[..quads].chunks_exact_mut(1024))
                {
                    fake::affine_sets_at::<2>(isa, xp, yp, search, &grid);
                }
                done = x.len() / 512 * 512;
                if done > quads {
                    let (xp, yp) = (&x[quads..done], &mut y[quads..done]);
                    fake::affine_sets_at::<1>(isa, xp, yp, search, &grid);
                }
            }
            // Everything else, and an odd last Q4_K/Q5_K super-block, block by block.
            let mut buf = [0u8; 256];
            let block = &mut buf[..ty.type_size()];
            for (yb, xb) in y[done..]
                .chunks_exact_mut(bs)
                .zip(x[done..].chunks_exact(bs))
            {
                q(xb, block);
                dq(block, yb);
            }
        });
}
