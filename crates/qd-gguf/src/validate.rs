//! Tensor data validation, as llama.cpp's `ggml_validate_row_data` (`--check-tensors`): every
//! value of a float tensor and every block scale of a quantized one must be finite. A block
//! whose fp16 scale is infinite or NaN decodes to ±inf/NaN weights, and one such weight turns
//! every logit after it into NaN — a file that loads, runs and prints `PPL = nan`. The codes
//! themselves are small integers and cannot be wrong in that way, so the scales are all there
//! is to check; the K-quants' 6-bit and int8 sub-block scales are bounded likewise.

use crate::GgmlType;

/// The first non-finite number found in a tensor's data.
#[derive(Debug, Clone, PartialEq)]
pub struct BadValue {
    /// Row (a run of the tensor's first dimension) and block within it; for float tensors the
    /// "block" is the element's column.
    pub row: usize,
    pub block: usize,
    /// Which field: `d`, `m`, `dmin` for the scales, `value` for float tensors.
    pub field: &'static str,
    pub value: f32,
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field == "value" {
            write!(
                f,
                "row {} column {}: value {}",
                self.row, self.block, self.value
            )
        } else {
            write!(
                f,
                "row {} block {}: scale {} is {}",
                self.row, self.block, self.field, self.value
            )
        }
    }
}

fn f16_at(b: &[u8], at: usize) -> (bool, f32) {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    // Exponent all ones: ±inf or NaN.
    let finite = bits & 0x7c00 != 0x7c00;
    (finite, half::f16::from_bits(bits).to_f32())
}

/// The fp16 fields each block of `ty` carries (name, byte offset), ggml's block layouts.
fn f16_fields(ty: GgmlType) -> &'static [(&'static str, usize)] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[("d", 0)],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[("d", 0), ("m", 2)],
        GgmlType::Q8_1 => &[("d", 0), ("s", 2)],
        GgmlType::Q2K => &[("d", 80), ("dmin", 82)],
        GgmlType::Q3K => &[("d", 108)],
        GgmlType::Q4K | GgmlType::Q5K => &[("d", 0), ("dmin", 2)],
        GgmlType::Q6K => &[("d", 208)],
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8K => &[],
    }
}

/// Checks `data`, whole blocks of `ty` in rows of `row_len` elements (`row_len` 0 or not a
/// multiple of the block size counts the blocks without rows). Returns the first bad number.
pub fn check_data(ty: GgmlType, data: &[u8], row_len: usize) -> Result<(), BadValue> {
    let bs = ty.block_size();
    let blocks_per_row = if row_len > 0 && row_len.is_multiple_of(bs) {
        row_len / bs
    } else {
        usize::MAX
    };
    let at = |i: usize, field: &'static str, value: f32| BadValue {
        row: i.checked_div(blocks_per_row).unwrap_or(0),
        block: i % blocks_per_row,
        field,
        value,
    };
    let size = ty.type_size();
    match ty {
        GgmlType::F32 => {
            for (i, c) in data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    return Err(at(i, "value", v));
                }
            }
        }
        GgmlType::F16 => {
            for (i, _) in data.chunks_exact(2).enumerate() {
                let (ok, v) = f16_at(data, 2 * i);
                if !ok {
                    return Err(at(i, "value", v));
                }
            }
        }
        GgmlType::BF16 => {
            for (i, c) in data.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                if bits & 0x7f80 == 0x7f80 {
                    return Err(at(i, "value", f32::from_bits((bits as u32) << 16)));
                }
            }
        }
        GgmlType::Q8K => {
            for (i, c) in data.chunks_exact(size).enumerate() {
                let d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !d.is_finite() {
                    return Err(at(i, "d", d));
                }
            }
        }
        _ => {
            let fields = f16_fields(ty);
            for (i, c) in data.chunks_exact(size).enumerate() {
                for &(name, off) in fields {
                    let (ok, v) = f16_at(c, off);
                    if !ok {
                        return Err(at(i, name, v));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_bad_scale_or_value() {
        // Two rows of 64 Q4_0 elements: 2 blocks each; block 3 (row 1, block 1) gets +inf.
        let mut q = vec![0u8; 4 * 18];
        assert_eq!(check_data(GgmlType::Q4_0, &q, 64), Ok(()));
        q[3 * 18..3 * 18 + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
        let bad = check_data(GgmlType::Q4_0, &q, 64).unwrap_err();
        assert_eq!((bad.row, bad.block, bad.field), (1, 1, "d"));
        assert_eq!(bad.value, f32::INFINITY);
        // Q4_K's dmin (offset 2) as NaN.
        let mut k = vec![0u8; 2 * 144];
        k[144 + 2..144 + 4].copy_from_slice(&0x7e00u16.to_le_bytes());
        let bad = check_data(GgmlType::Q4K, &k, 256).unwrap_err();
        assert_eq!((bad.row, bad.block, bad.field), (1, 0, "dmin"));
        // Q6_K's d sits at the end of its block; Q2_K's d after its codes.
        let mut k = vec![0u8; 210];
        k[208..210].copy_from_slice(&0xfc00u16.to_le_bytes());
        assert_eq!(
            check_data(GgmlType::Q6K, &k, 256).unwrap_err().value,
            f32::NEG_INFINITY
        );
        let mut k = vec![0u8; 84];
        assert_eq!(check_data(GgmlType::Q2K, &k, 256), Ok(()));
        k[80..82].copy_from_slice(&0x7c00u16.to_le_bytes());
        assert_eq!(check_data(GgmlType::Q2K, &k, 256).unwrap_err().field, "d");
        // Float tensors: every value, named by row and column.
        let f: Vec<u8> = [1.0f32, 2.0, 3.0, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bad = check_data(GgmlType::F32, &f, 2).unwrap_err();
        assert_eq!((bad.row, bad.block, bad.field), (1, 1, "value"));
        let h: Vec<u8> = [0x3c00u16, 0x7c01]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(check_data(GgmlType::F16, &h, 2).unwrap_err().block, 1);
        let b: Vec<u8> = [0x3f80u16, 0xff80]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(check_data(GgmlType::BF16, &b, 2).unwrap_err().block, 1);
        // Largest finite fp16 passes.
        let h: Vec<u8> = 0x7bffu16.to_le_bytes().to_vec();
        assert_eq!(check_data(GgmlType::F16, &h, 1), Ok(()));
    }
}
