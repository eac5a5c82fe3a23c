//! f32 products with a Q8_0 matrix dequantized panel by panel into cache-sized f32 buffers.
//!
//! A student made from the teacher keeps the teacher's 262 144-row tied embedding frozen; as f32
//! it is 671 MB of the trainer's memory, as the teacher's Q8_0 blocks 178 MB. Dequantizing Q8_0
//! is exact in f32 (`d·q`: an 11-bit by 8-bit product), so these products see the very values
//! of the dense matrix and differ from a dense matmul only in the order of the f32 sums. Every
//! output element is summed in an order fixed by the shapes alone (not by thread scheduling), so
//! training stays bit-reproducible.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Result, Tensor};
use qd_gguf::GgmlType;
use rayon::prelude::*;

use crate::gemm_f32::{matmul, View};
use crate::kernels::tasks::SharedOut;

/// Rows dequantized at a time: 256 × 640 f32 is 640 KiB, within one core's L2.
const PANEL: usize = 256;
/// `xᵀ·W` is summed in this many fixed slices of rows, then the slices in order.
const SLICES: usize = 16;
const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 34;

/// A `[rows, cols]` Q8_0 matrix used as f32.
#[derive(Clone)]
pub struct Q8_0Matrix {
    q: Arc<QTensor>,
    rows: usize,
    cols: usize,
}

impl Q8_0Matrix {
    /// `None` unless `q` is a 2-D Q8_0 tensor on the CPU.
    pub fn new(q: Arc<QTensor>) -> Option<Self> {
        let (rows, cols) = q.shape().dims2().ok()?;
        let cpu = matches!(q.device(), Device::Cpu);
        (GgmlType::from_candle(q.dtype()) == GgmlType::Q8_0 && cols % BLOCK == 0 && cpu)
            .then_some(Self { q, rows, cols })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn qtensor(&self) -> &Arc<QTensor> {
        &self.q
    }

    /// Rows `r0..r0 + n` as f32 into `out` (`n · cols` values).
    fn dequantize_rows(&self, data: &[u8], r0: usize, n: usize, out: &mut [f32]) {
        let row_bytes = self.cols / BLOCK * BLOCK_BYTES;
        let src = &data[r0 * row_bytes..(r0 + n) * row_bytes];
        for (block, dst) in src
            .chunks_exact(BLOCK_BYTES)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (o, &q) in dst.iter_mut().zip(&block[2..]) {
                *o = d * (q as i8) as f32;
            }
        }
    }

    /// `x [n, cols] · Wᵀ → [n, rows]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (n, k) = x.dims2()?;
        if k != self.cols {
            candle_core::bail!(
                "q8_0 matmul: input width {k}, matrix has {} columns",
                self.cols
            );
        }
        let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let data = self.q.data()?;
        let v = self.rows;
        let mut y = vec![0f32; n * v];
        let out = SharedOut(y.as_mut_ptr());
        (0..v.div_ceil(PANEL)).into_par_iter().for_each_init(
            || vec![0f32; PANEL * k],
            |buf, p| {
                let r0 = p * PANEL;
                let r = PANEL.min(v - r0);
                self.dequantize_rows(&data, r0, r, buf);
                let out = &out;
                // SAFETY: y[:, r0..r0 + r] (row stride v) is this panel's alone; x is n×k
                // (row stride k), the panel r×k read as its transpose k×r.
                unsafe {
                    matmul(
                        (n, r, k),
                        View::rows(out.0.add(r0), v),
                        false,
                        View::rows(xs.as_ptr(), k),
                        // The panel's transpose: row i of the panel is column i.
                        View {
                            ptr: buf.as_ptr(),
                            row_stride: 1,
                            col_stride: k,
                        },
                    );
                }
            },
        );
        Tensor::from_vec(y, (n, v), x.device())
    }

    /// `g [n, rows] · W → [n, cols]`: the gradient of `x·Wᵀ` with respect to `x`.
    pub fn matmul(&self, g: &Tensor) -> Result<Tensor> {
        let (n, v) = g.dims2()?;
        if v != self.rows {
            candle_core::bail!(
                "q8_0 matmul: input width {v}, matrix has {} rows",
                self.rows
            );
        }
        let gs = g.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let data = self.q.data()?;
        let k = self.cols;
        let panels = v.div_ceil(PANEL);
        let per_slice = panels.div_ceil(SLICES);
        let partials: Vec<Vec<f32>> = (0..panels.div_ceil(per_slice))
            .into_par_iter()
            .map(|s| {
                let mut acc = vec![0f32; n * k];
                let mut buf = vec![0f32; PANEL * k];
                for p in s * per_slice..((s + 1) * per_slice).min(panels) {
                    let r0 = p * PANEL;
                    let r = PANEL.min(v - r0);
                    self.dequantize_rows(&data, r0, r, &mut buf);
                    // SAFETY: acc is n×k (row stride k), g[:, r0..r0 + r] is n×r (row stride
                    // v), the panel r×k (row stride k); all in bounds.
                    unsafe {
                        matmul(
                            (n, k, r),
                            View::rows(acc.as_mut_ptr(), k),
                            p != s * per_slice,
                            View::rows(gs.as_ptr().add(r0), v),
                            View::rows(buf.as_ptr(), k),
                        );
                    }
                }
                acc
            })
            .collect();
        let mut total = vec![0f32; n * k];
        for part in &partials {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        Tensor::from_vec(total, (n, k), g.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    fn matrix(rows: usize, cols: usize) -> (Q8_0Matrix, Tensor) {
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        let q = Arc::new(QTensor::quantize(&w, GgmlType::Q8_0.to_candle()).unwrap());
        let dense = q.dequantize(&Device::Cpu).unwrap();
        (Q8_0Matrix::new(q).unwrap(), dense)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Against candle's dense matmul of the dequantized matrix (the same values; only the
    /// summation order differs), at sizes that leave partial panels and partial slices.
    #[test]
    fn products_equal_the_dense_ones() {
        for (rows, cols, n) in [(1000, 64, 3), (4133, 96, 7), (256, 32, 1), (17, 64, 5)] {
            let (m, dense) = matrix(rows, cols);
            let x = Tensor::randn(0f32, 1.0, (n, cols), &Device::Cpu).unwrap();
            let want = x.matmul(&dense.t().unwrap()).unwrap();
            let got = m.matmul_t(&x).unwrap();
            assert!(max_rel(&got, &want) < 1e-5, "x·Wᵀ {rows}×{cols}");
            let g = Tensor::randn(0f32, 1.0, (n, rows), &Device::Cpu).unwrap();
            let want = g.matmul(&dense).unwrap();
            let got = m.matmul(&g).unwrap();
            assert!(max_rel(&got, &want) < 1e-5, "g·W {rows}×{cols}");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (m, _) = matrix(5000, 64);
        let g = Tensor::randn(0f32, 1.0, (4, 5000), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let a = m
                    .matmul(&g)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b = m
                    .matmul_t(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                (a, b)
            })
        };
        assert!(run(1) == run(3));
    }

    #[test]
    fn wrong_shapes_are_errors_and_other_types_are_refused() {
        let (m, _) = matrix(40, 64);
        let x = Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(m.matmul_t(&x).is_err());
        assert!(m.matmul(&x).is_err());
        let w = Tensor::zeros((8, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q4 = Arc::new(QTensor::quantize(&w, GgmlType::Q4K.to_candle()).unwrap());
        assert!(Q8_0Matrix::new(q4).is_none());
    }
}
