//! ggml's activation scales, shared by the packed kernels' activation quantizers (every level)
//! and qd-model's `ggml_numerics` (the same rounding on candle's graph path).

use half::f16;

/// ggml-cpu's x86 `quantize_row_q8_0` scale for one 32-value block: `d` as stored (fp16) and
/// the multiplier `127/amax` the codes `rne(x·id)` are taken with (from amax, not from `d`).
pub fn q8_0_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = f16::from_f32(amax / 127.0).to_f32();
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// ggml's Q8_K activation scale of a 256-value block: `(iscale, d)` with codes
/// `min(nearest(iscale·x), 127)` and values `code·d`; `None` for an all-zero block. The largest
/// magnitude's value (first on ties) maps to −127, as `quantize_row_q8_K_ref` does.
pub fn q8_k_scale(x: &[f32]) -> Option<(f32, f32)> {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return None;
    }
    let iscale = -127.0 / max;
    Some((iscale, 1.0 / iscale))
}
