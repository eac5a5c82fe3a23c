//! The product of a quantized weight read in the blocks it is stored in — no repacked copy.
//!
//! candle's CPU matmul repacks a K-quant (and, with VNNI, a Q8_0) weight into tiles on its first
//! use and keeps them beside the stored blocks; our packed kernels keep their own tiles too.
//! Tiles are faster for a batch of rows, but they double a teacher's memory (a LLaMA-2-7B
//! Q4_K_M teacher: +5.3 GB at its first forward on AMD Zen 4; AMX tiles are 2.2× the Q4_K
//! bytes). Where memory is the limit, `QLinear::read_stored_blocks` sends a layer here:
//! candle's unpacked kernel (`k_quants::matmul`, the same integer dot products of ggml's block
//! and Q8 activation codes, parallel over rows), reading the blocks in place.

use candle_core::quantized::k_quants::{self, GgmlType as Block};
use candle_core::quantized::QTensor;
use candle_core::{Result, Tensor};
use qd_gguf::GgmlType;

/// `x [.., k] · Wᵀ` for `W [n, k]` read in its stored blocks, or `None` for a weight that is
/// not quantized on the CPU (f32/f16 weights, a GPU's).
pub fn matmul(w: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    if !w.device().is_cpu() || !x.device().is_cpu() {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!(
            "input {:?} does not end in the weight's {k} columns",
            x.dims()
        );
    }
    let xs = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let m = xs.len() / k;
    let mut y = vec![0f32; m * n];
    let bytes = w.data()?;
    let mkn = (m, k, n);
    let ran = match GgmlType::from_candle(w.dtype()) {
        GgmlType::Q4_0 => run::<k_quants::BlockQ4_0>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q4_1 => run::<k_quants::BlockQ4_1>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q5_0 => run::<k_quants::BlockQ5_0>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q5_1 => run::<k_quants::BlockQ5_1>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q8_0 => run::<k_quants::BlockQ8_0>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q2K => run::<k_quants::BlockQ2K>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q3K => run::<k_quants::BlockQ3K>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q4K => run::<k_quants::BlockQ4K>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q5K => run::<k_quants::BlockQ5K>(&bytes, mkn, &xs, &mut y),
        GgmlType::Q6K => run::<k_quants::BlockQ6K>(&bytes, mkn, &xs, &mut y),
        _ => return Ok(None),
    };
    ran?;
    *dims.last_mut().expect("x has an inner dimension") = n;
    Ok(Some(Tensor::from_vec(y, dims, x.device())?))
}

/// The blocks of type `T` in `bytes` times `xs`, into `y`.
fn run<T: Block>(
    bytes: &[u8],
    mkn: (usize, usize, usize),
    xs: &[f32],
    y: &mut [f32],
) -> Result<()> {
    candle_kernels_run_here()?;
    let size = std::mem::size_of::<T>();
    let (_, k, n) = mkn;
    if bytes.len() != n * (k / T::BLCK_SIZE) * size || !k.is_multiple_of(T::BLCK_SIZE) {
        candle_core::bail!(
            "{} bytes are not a [{n}, {k}] {:?} weight",
            bytes.len(),
            T::DTYPE
        );
    }
    if !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        candle_core::bail!(
            "a {:?} weight's bytes are not aligned for its blocks",
            T::DTYPE
        );
    }
    // SAFETY: `bytes` holds exactly `len` blocks (checked above) at an address aligned for `T`
    // (checked above), and candle's block types are `repr(C)` structs of f16 and byte arrays,
    // for which every bit pattern is a value. The slice borrows `bytes` and lives no longer.
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
    k_quants::matmul(mkn, xs, blocks, y)
}

/// candle 0.11's quantized CPU kernels for aarch64 use `sdot` unconditionally, so on Arm cores
/// without the dot-product extension (Cortex-A72/A53: Raspberry Pi 4 and 3) they die with
/// SIGILL. Refuse them there with a one-line error instead; the fused path (`bench`,
/// `generate`, `eval` without `--graph`) runs on such CPUs at the `neon` level. Every use of
/// candle's quantized kernels asks here (the graph path's matmul in linear.rs, the stored blocks' here).
pub(crate) fn candle_kernels_run_here() -> Result<()> {
    #[cfg(target_arch = "aarch64")]
    if !crate::kernels::isa::Isa::NeonDot.runs_here() {
        return Err(candle_core::Error::Msg(
            "candle's quantized CPU kernels need the Arm dot-product extension, which this CPU \
             lacks; bench, generate and eval run here without --graph (the fused path)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use qd_gguf::GgmlType;

    fn weights(n: usize, k: usize, ty: GgmlType) -> QTensor {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * (1.0 + (i % 13) as f32 / 7.0))
            .collect();
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, ty.to_candle()).unwrap()
    }

    fn input(m: usize, k: usize) -> Tensor {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 17.0)
            .collect();
        Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap()
    }

    /// With 17 rows candle cannot tile the weight, so its own product is the unpacked kernel:
    /// reading the blocks in place gives its bits exactly, for every block type used here.
    #[test]
    fn the_unpacked_kernel_bit_for_bit() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let w = weights(17, 512, ty);
            let x = input(5, 512);
            if super::candle_kernels_run_here().is_err() {
                assert!(super::matmul(&w, &x).is_err(), "refused without dotprod");
                continue;
            }
            let ours = super::matmul(&w, &x)
                .unwrap()
                .expect("a quantized CPU weight");
            let candle = QMatMul::from_qtensor(w).unwrap().forward(&x).unwrap();
            let (a, b) = (
                ours.to_vec2::<f32>().unwrap(),
                candle.to_vec2::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{ty:?}");
        }
    }

    /// With rows candle tiles, its tiled K-quant product sums the same integers in another
    /// order. (Its tiled Q8_0 product quantizes the input per 256 values, not per 32 as ggml:
    /// not comparable, and not what `QLinear` runs — Q8_0 goes to our packed kernel.)
    #[test]
    fn the_tiled_kernel_up_to_the_order_of_f32_sums() {
        for ty in [GgmlType::Q4K, GgmlType::Q6K] {
            let w = weights(64, 512, ty);
            let x = input(40, 512);
            if super::candle_kernels_run_here().is_err() {
                assert!(super::matmul(&w, &x).is_err(), "refused without dotprod");
                continue;
            }
            let ours = super::matmul(&w, &x).unwrap().unwrap();
            let candle = QMatMul::from_qtensor(w).unwrap().forward(&x).unwrap();
            let diff = (ours - &candle).unwrap().abs().unwrap().max_all().unwrap();
            let scale = candle.abs().unwrap().max_all().unwrap();
            let (d, s) = (
                diff.to_scalar::<f32>().unwrap(),
                scale.to_scalar::<f32>().unwrap(),
            );
            assert!(s > 1.0 && d <= 1e-5 * s, "{ty:?}: {d} of {s}");
        }
    }

    #[test]
    fn a_float_weight_is_left_to_candle() {
        let w = weights(16, 256, GgmlType::F32);
        assert!(super::matmul(&w, &input(2, 256)).unwrap().is_none());
    }
}
