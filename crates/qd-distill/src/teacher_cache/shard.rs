//! A shard: the cached positions of a few sequences in one file, written atomically and ending in
//! the sha256 of everything before it, so that a truncated or damaged shard is refused by name
//! and a resumed build keeps only shards that are whole.
//!
//! Layout (little-endian): `QDTC` magic, format version (u32), k, id bits, sequence count (u32);
//! per sequence its split (u8: 0 train, 1 held-out), index (u32), token count (u32) and its tokens
//! (u32 each: the text the teacher read, so a reader checks it is reading the sequence it means
//! and `eval kl` can score a student on it), then one [`codec`] record per position but the
//! last; then the 32-byte sha256.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::codec::{self, Position};
use super::CacheError;

const MAGIC: &[u8; 4] = b"QDTC";
const VERSION: u32 = 1;

/// Which split of the packed data a sequence comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
}

/// A sequence of the packed data: its split and index there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeqRef {
    pub split: Split,
    pub index: usize,
}

/// One sequence's tokens and cached positions (position `i` predicts token `i + 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSeq {
    pub seq: SeqRef,
    pub tokens: Vec<u32>,
    pub positions: Vec<Position>,
}

/// The bytes of a shard holding `seqs`.
pub fn to_bytes(seqs: &[CachedSeq], k: usize, bits: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for v in [VERSION, k as u32, bits, seqs.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for s in seqs {
        out.push(match s.seq.split {
            Split::Train => 0,
            Split::Val => 1,
        });
        out.extend_from_slice(&(s.seq.index as u32).to_le_bytes());
        out.extend_from_slice(&(s.tokens.len() as u32).to_le_bytes());
        for t in &s.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for p in &s.positions {
            codec::encode(p, bits, &mut out);
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The sha256 (hex) a shard's bytes end with, when they are whole.
pub fn checksum_of(bytes: &[u8]) -> Option<String> {
    let (body, sum) = bytes.split_at(bytes.len().checked_sub(32)?);
    (Sha256::digest(body).as_slice() == sum).then(|| hex(sum))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A little-endian reader that fails (instead of panicking) past the end.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// The sequences of the shard at `path` (whose bytes are `bytes`), checked: its own sha256,
/// its k and id width against the manifest's.
pub fn parse(path: &Path, bytes: &[u8], k: usize, bits: u32) -> Result<Vec<CachedSeq>, CacheError> {
    let damaged = |why: &str| CacheError::Damaged {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    if checksum_of(bytes).is_none() {
        return Err(damaged(
            "truncated or damaged (its sha256 does not match its bytes)",
        ));
    }
    let body = &bytes[..bytes.len() - 32];
    let mut c = Cursor { b: body, at: 0 };
    if c.take(4) != Some(MAGIC.as_slice()) || c.u32() != Some(VERSION) {
        return Err(damaged("not a teacher-cache shard of this version"));
    }
    if c.u32() != Some(k as u32) || c.u32() != Some(bits) {
        return Err(damaged("its k or id width differs from the manifest's"));
    }
    let n = c.u32().ok_or_else(|| damaged("no sequence count"))?;
    let rec = codec::record_bytes(k, bits);
    let mut seqs = Vec::new();
    for _ in 0..n {
        let split = match c.take(1).map(|s| s[0]) {
            Some(0) => Split::Train,
            Some(1) => Split::Val,
            _ => return Err(damaged("a sequence of unknown split")),
        };
        let index = c.u32().ok_or_else(|| damaged("cut short"))? as usize;
        let n_tokens = c.u32().ok_or_else(|| damaged("cut short"))? as usize;
        if n_tokens < 2 {
            return Err(damaged("a sequence of fewer than 2 tokens"));
        }
        let tokens = n_tokens
            .checked_mul(4)
            .and_then(|n| c.take(n))
            .ok_or_else(|| damaged("cut short"))?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let data = (n_tokens - 1)
            .checked_mul(rec)
            .and_then(|n| c.take(n))
            .ok_or_else(|| damaged("cut short"))?;
        seqs.push(CachedSeq {
            seq: SeqRef { split, index },
            tokens,
            positions: data
                .chunks_exact(rec)
                .map(|r| codec::decode(r, k, bits))
                .collect(),
        });
    }
    if c.at != body.len() {
        return Err(damaged("trailing bytes after its sequences"));
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CachedSeq> {
        (0..3)
            .map(|s| CachedSeq {
                seq: SeqRef {
                    split: if s == 2 { Split::Val } else { Split::Train },
                    index: s * 10,
                },
                tokens: (0..6).map(|t| t * 3 + s as u32).collect(),
                positions: (0..5)
                    .map(|i| Position {
                        ids: vec![i, 1000 + s as u32, 7],
                        logprobs: vec![-0.5, -1.25, -3.0],
                        log_tail: -1.5,
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn shards_round_trip_and_damage_is_named() {
        let p = Path::new("shard-00000.bin");
        let b = to_bytes(&sample(), 3, 18);
        assert_eq!(parse(p, &b, 3, 18).unwrap(), sample());
        assert!(checksum_of(&b).is_some());
        // Truncated, flipped, another k: refused, naming the shard.
        for bad in [b[..b.len() - 1].to_vec(), b[..40].to_vec(), {
            let mut x = b.clone();
            x[30] ^= 1;
            x
        }] {
            let e = parse(p, &bad, 3, 18).unwrap_err().to_string();
            assert!(
                e.contains("shard-00000.bin") && e.contains("damaged"),
                "{e}"
            );
        }
        assert!(parse(p, &b, 4, 18).is_err());
        assert!(parse(p, &[], 3, 18).is_err());
    }
}
