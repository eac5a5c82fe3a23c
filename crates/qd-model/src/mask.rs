//! Causal and sliding-window attention masks, built once per forward call and shared by every
//! layer of the same kind.

use candle_core::{Device, Result, Tensor};

/// Additive mask `[seq, offset + seq]` (0 or -inf) for queries at positions
/// `offset..offset+seq`. A key at position `j` is visible to the query at `p` when `j <= p`
/// and, with a window `w`, `p - j < w` — exactly `w` keys including the query's own, as
/// llama.cpp's LLAMA_SWA_TYPE_STANDARD. `None` when nothing is masked.
pub fn attention_mask(
    seq: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    attention_mask_from(seq, offset, 0, window, device)
}

/// As [`attention_mask`] over the keys at positions `key_start..offset + seq` only (a
/// sliding-window cache holds no older ones): `[seq, offset + seq − key_start]`.
pub fn attention_mask_from(
    seq: usize,
    offset: usize,
    key_start: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let total = offset + seq;
    let mut any = false;
    let mut data = Vec::with_capacity(seq * (total - key_start));
    for i in 0..seq {
        let p = offset + i;
        for j in key_start..total {
            let visible = j <= p && window.is_none_or(|w| p - j < w);
            any |= !visible;
            data.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
        }
    }
    if !any {
        return Ok(None);
    }
    Tensor::from_vec(data, (seq, total - key_start), device).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_keys(m: &Tensor, row: usize) -> usize {
        m.get(row)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|v| v.is_finite())
            .count()
    }

    #[test]
    fn window_sees_exactly_window_keys() {
        let m = attention_mask(600, 0, Some(512), &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(visible_keys(&m, 0), 1);
        assert_eq!(visible_keys(&m, 511), 512);
        assert_eq!(visible_keys(&m, 512), 512);
        assert_eq!(visible_keys(&m, 599), 512);
        // The oldest visible key of the last query is 599 - 511 = 88.
        let last = m.get(599).unwrap().to_vec1::<f32>().unwrap();
        assert!(last[87].is_infinite() && last[88].is_finite());
    }

    #[test]
    fn decoding_one_token_respects_the_window() {
        let m = attention_mask(1, 700, Some(512), &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(visible_keys(&m, 0), 512);
        assert!(attention_mask(1, 700, None, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn chunked_prefill_after_cache_is_causal() {
        let m = attention_mask(3, 5, None, &Device::Cpu).unwrap().unwrap();
        assert_eq!(visible_keys(&m, 0), 6);
        assert_eq!(visible_keys(&m, 2), 8);
    }
}
