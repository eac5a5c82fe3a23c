//! ggml's software fp32 ↔ fp16 conversions (`ggml_compute_fp32_to_fp16` and back), ported
//! bit for bit: round to nearest even, overflow to ±inf, subnormals kept.

#[inline]
pub fn fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

#[inline]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let cutoff = 1u32 << 27;
    f32::from_bits(
        sign | if two_w < cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        },
    )
}

#[inline]
pub fn read_f16(b: &[u8], at: usize) -> f32 {
    fp16_to_fp32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline]
pub fn write_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&fp32_to_fp16(v).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_half_on_every_f16_and_on_rounding() {
        for h in 0..=u16::MAX {
            let f = fp16_to_fp32(h);
            let want = half::f16::from_bits(h).to_f32();
            assert!(
                f.to_bits() == want.to_bits() || (f.is_nan() && want.is_nan()),
                "{h:#x}"
            );
        }
        let mut x = 1e-9f32;
        while x < 1e6 {
            for v in [x, -x, x * 1.000_3] {
                assert_eq!(fp32_to_fp16(v), half::f16::from_f32(v).to_bits(), "{v}");
            }
            x *= 1.37;
        }
        assert_eq!(fp32_to_fp16(1e6), 0x7C00, "overflow saturates to +inf");
    }
}
