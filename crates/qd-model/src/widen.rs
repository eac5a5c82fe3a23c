//! Lossless re-encoding of weights into a block type with faster kernels.
//!
//! A Q5_0 block holds `d · (q − 16)` with `q ∈ 0..32`; the same values are exactly
//! `d · q'` with `q' = q − 16 ∈ −16..16` in a Q8_0 block with the same fp16 scale. Both types
//! are multiplied against Q8_0-quantized activations by llama.cpp, so the integer dot products
//! — and therefore the results — are unchanged, while candle's Q8_0 kernels are SIMD and its
//! Q5_0 ones are not.

/// Bytes of one Q5_0 block: fp16 d, 32 high bits, 16 bytes of nibbles.
const Q5_0_BLOCK: usize = 22;
const Q8_0_BLOCK: usize = 34;

pub fn q5_0_to_q8_0(src: &[u8]) -> Vec<u8> {
    let n = src.len() / Q5_0_BLOCK;
    let mut out = Vec::with_capacity(n * Q8_0_BLOCK);
    for b in src.chunks_exact(Q5_0_BLOCK) {
        out.extend_from_slice(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let mut vals = [0u8; 32];
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
            let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            vals[j] = (lo as i8 - 16) as u8;
            vals[j + 16] = (hi as i8 - 16) as u8;
        }
        out.extend_from_slice(&vals);
    }
    out
}

/// Bytes of one Q4_0 block: fp16 d, 16 bytes of nibbles (`d · (q − 8)`, `q ∈ 0..16`).
const Q4_0_BLOCK: usize = 18;

/// Q4_0 as Q8_0 with the same scale (codes −8..8): for the VNNI kernel, which only reads Q8_0.
pub fn q4_0_to_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / Q4_0_BLOCK * Q8_0_BLOCK);
    for b in src.chunks_exact(Q4_0_BLOCK) {
        out.extend_from_slice(&b[0..2]);
        let mut vals = [0u8; 32];
        for (j, &q) in b[2..].iter().enumerate() {
            vals[j] = ((q & 0x0f) as i8 - 8) as u8;
            vals[j + 16] = ((q >> 4) as i8 - 8) as u8;
        }
        out.extend_from_slice(&vals);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::{Device, Tensor};

    #[test]
    fn q5_0_widens_to_identical_values() {
        widens_to_identical_values(GgmlDType::Q5_0, q5_0_to_q8_0);
    }

    #[test]
    fn q4_0_widens_to_identical_values() {
        widens_to_identical_values(GgmlDType::Q4_0, q4_0_to_q8_0);
    }

    fn widens_to_identical_values(ty: GgmlDType, widen: fn(&[u8]) -> Vec<u8>) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (8, 128), &dev).unwrap();
        let q5 = QTensor::quantize(&w, ty).unwrap();
        let bytes = widen(&q5.data().unwrap());
        let st =
            QStorage::from_data(std::borrow::Cow::Owned(bytes), &dev, GgmlDType::Q8_0).unwrap();
        let q8 = QTensor::new(st, (8, 128)).unwrap();
        let a = q5
            .dequantize(&dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = q8
            .dequantize(&dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
    }
}
