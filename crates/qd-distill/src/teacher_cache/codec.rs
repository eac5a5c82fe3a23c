//! One position of the cache in bytes: the teacher's k most likely ids in the bits the
//! vocabulary needs, their log-probabilities as IEEE fp16, and the log of the probability left
//! to the rest of the vocabulary (the tail) as f32 — `⌈k·b/8⌉ + 2k + 4` bytes, 276 for Gemma 3's
//! 262,144 ids (b = 18) at k = 64.

use half::f16;

/// The bits an id of a `vocab`-entry vocabulary needs (at least 1).
pub fn id_bits(vocab: usize) -> u32 {
    (usize::BITS - vocab.saturating_sub(1).leading_zeros()).max(1)
}

/// Bytes of one position.
pub fn record_bytes(k: usize, bits: u32) -> usize {
    (k * bits as usize).div_ceil(8) + 2 * k + 4
}

/// One position as stored (log-probabilities already rounded to fp16).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub log_tail: f32,
}

/// Appends `p` (k ids, k log-probs) to `out`.
pub fn encode(p: &Position, bits: u32, out: &mut Vec<u8>) {
    let k = p.ids.len();
    let start = out.len();
    out.resize(start + (k * bits as usize).div_ceil(8), 0);
    let packed = &mut out[start..];
    for (i, &id) in p.ids.iter().enumerate() {
        for b in 0..bits as usize {
            if (id >> b) & 1 == 1 {
                let at = i * bits as usize + b;
                packed[at / 8] |= 1 << (at % 8);
            }
        }
    }
    for &lp in &p.logprobs {
        out.extend_from_slice(&f16::from_f32(lp).to_le_bytes());
    }
    out.extend_from_slice(&p.log_tail.to_le_bytes());
}

/// The position stored in `bytes` (exactly [`record_bytes`] long).
pub fn decode(bytes: &[u8], k: usize, bits: u32) -> Position {
    let id_len = (k * bits as usize).div_ceil(8);
    let ids = (0..k)
        .map(|i| {
            (0..bits as usize).fold(0u32, |id, b| {
                let at = i * bits as usize + b;
                id | (((bytes[at / 8] >> (at % 8)) & 1) as u32) << b
            })
        })
        .collect();
    let lp = &bytes[id_len..id_len + 2 * k];
    let logprobs = lp
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let t = &bytes[id_len + 2 * k..id_len + 2 * k + 4];
    Position {
        ids,
        logprobs,
        log_tail: f32::from_le_bytes([t[0], t[1], t[2], t[3]]),
    }
}

/// The top `k` of one row of teacher logits at temperature `t`: ids (most likely first, ties to
/// the lower id), their log-probabilities over the whole vocabulary, and the log tail mass. One
/// pass for the normaliser, one for the candidates (a buffer above a rising threshold), so a
/// 262,144-entry row costs about two reads of it.
pub fn top_k_of_logits(row: &[f32], k: usize, t: f32) -> Position {
    use crate::loss::lanes;
    let inv = 1.0 / t;
    let m = lanes::max(row) * inv;
    let z = lanes::sum_map(row, |v| lanes::exp(v * inv - m));
    let lse = m + z.ln() as f32;
    let k = k.min(row.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let mut idx: Vec<u32> = Vec::with_capacity(4 * k + 1);
    let mut threshold = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v >= threshold {
            idx.push(i as u32);
            if idx.len() >= 4 * k.max(1) {
                idx.select_nth_unstable_by(k - 1, cmp);
                idx.truncate(k);
                threshold = idx
                    .iter()
                    .map(|&j| row[j as usize])
                    .fold(f32::INFINITY, f32::min);
            }
        }
    }
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    let logprobs: Vec<f32> = idx.iter().map(|&i| row[i as usize] * inv - lse).collect();
    Position {
        ids: idx,
        log_tail: log_tail(&logprobs),
        logprobs,
    }
}

/// `log(1 − Σ e^lp)`, floored at 1e-12 so that an (almost) empty tail stays finite — the same
/// rule as the online top-k loss (`loss::topk`).
pub fn log_tail(logprobs: &[f32]) -> f32 {
    let mass: f64 = logprobs.iter().map(|&l| (l as f64).exp()).sum();
    (1.0 - mass).max(1e-12).ln() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_at_every_width() {
        for vocab in [2usize, 3, 255, 256, 257, 262_144, 151_936] {
            let bits = id_bits(vocab);
            assert!(1usize << bits >= vocab && (bits == 1 || 1usize << (bits - 1) < vocab));
            for k in [1usize, 7, 64] {
                let p = Position {
                    ids: (0..k as u32)
                        .map(|i| (i * 7919 + 3) % vocab as u32)
                        .collect(),
                    logprobs: (0..k).map(|i| -(i as f32) * 0.37 - 0.01).collect(),
                    log_tail: -2.5,
                };
                let mut out = vec![0xAA];
                encode(&p, bits, &mut out);
                assert_eq!(out.len(), 1 + record_bytes(k, bits));
                let q = decode(&out[1..], k, bits);
                assert_eq!(q.ids, p.ids);
                assert_eq!(q.log_tail, p.log_tail);
                for (a, b) in q.logprobs.iter().zip(&p.logprobs) {
                    assert!((a - b).abs() <= b.abs() * 2f32.powi(-11), "{a} {b}");
                }
            }
        }
        assert_eq!(record_bytes(64, 18), 276);
    }

    #[test]
    fn top_k_is_the_softmax_head() {
        let row: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) * 0.05).collect();
        for t in [1.0f32, 2.0] {
            let p = top_k_of_logits(&row, 10, t);
            // The same ids as a full sort (ties to the lower id).
            let mut all: Vec<u32> = (0..1000).collect();
            all.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b)));
            assert_eq!(p.ids, all[..10]);
            let lse = row
                .iter()
                .map(|&v| ((v / t) as f64).exp())
                .sum::<f64>()
                .ln() as f32;
            for w in p.ids.windows(2) {
                assert!(row[w[0] as usize] >= row[w[1] as usize]);
            }
            for (&id, &lp) in p.ids.iter().zip(&p.logprobs) {
                assert!((lp - (row[id as usize] / t - lse)).abs() < 1e-5);
            }
            let kept: f64 = p.logprobs.iter().map(|&l| (l as f64).exp()).sum();
            assert!(((p.log_tail as f64).exp() - (1.0 - kept)).abs() < 1e-6);
        }
    }
}
