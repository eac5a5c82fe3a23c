//! `QLinear` on every weight type the teacher and the students ship in, at odd row counts and
//! token counts, against dequantize-then-matmul in f64: whichever kernel runs (our VNNI ones
//! where the CPU has them, candle's otherwise), a layout or scale error shows as an O(1)
//! relative difference, while the activation quantization the products do (8-bit, like
//! llama.cpp's) stays within a percent of the sum of magnitudes.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use qd_model::linear::{Linear, QLinear};

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) % 20_001) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

#[test]
fn every_type_equals_dequantize_then_matmul() {
    let dev = Device::Cpu;
    for ty in [
        GgmlDType::Q4_0,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        for (n, k, t) in [(37, 512, 1), (21, 256, 3), (130, 1024, 7)] {
            let w = Tensor::from_vec(values(n * k, (n + k) as u32), (n, k), &dev).unwrap();
            let qw = Arc::new(QTensor::quantize(&w, ty).unwrap());
            let dense = qw.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
            let x = values(t * k, 7 + t as u32);
            let lin = QLinear::new(qw, None).unwrap();
            let y = lin
                .forward(&Tensor::from_vec(x.clone(), (t, k), &dev).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for j in 0..t {
                for r in 0..n {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for i in 0..k {
                        let p = dense[r][i] as f64 * x[j * k + i] as f64;
                        want += p;
                        mag += p.abs();
                    }
                    let got = y[j][r] as f64;
                    assert!(
                        (got - want).abs() <= 0.01 * mag,
                        "{ty:?} n {n} k {k} t {t} row {r} token {j}: {got} vs {want} (mag {mag})"
                    );
                }
            }
        }
    }
}
