//! A safetensors file written and hashed in one pass. The checkpoint's `SHA256SUMS` needs the
//! sha256 of each tensor file; hashing after writing read 1.2 GB back for the main job's
//! checkpoint and added 19–33 % to its save (docs/faults.md). Here each tensor's bytes go to the
//! file and, through a bounded channel, to a hashing thread at the same time, so the hash is
//! done when the write is, at the cost of at most two tensors' bytes in flight.
//!
//! The format is safetensors' own: an 8-byte little-endian header length, the JSON header
//! (name → dtype, shape, data offsets; padded with spaces to 8 bytes), then the tensors' bytes
//! in the header's order, back to back. Any safetensors reader (candle's included) loads it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

/// safetensors' name of a dtype this writer streams (checkpoints hold f32, and u8 for 8-bit
/// optimizer moments; anything else takes candle's writer).
fn dtype_name(d: DType) -> Option<&'static str> {
    match d {
        DType::F32 => Some("F32"),
        DType::U8 => Some("U8"),
        _ => None,
    }
}

/// Whether every tensor can be streamed.
pub fn streamable(map: &BTreeMap<String, Tensor>) -> bool {
    map.values().all(|t| dtype_name(t.dtype()).is_some())
}

fn header(map: &BTreeMap<String, Tensor>) -> Vec<u8> {
    let mut h = serde_json::Map::new();
    let mut at = 0usize;
    for (name, t) in map {
        let n = t.elem_count() * t.dtype().size_in_bytes();
        h.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype()),
                "shape": t.dims(),
                "data_offsets": [at, at + n],
            }),
        );
        at += n;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(h)).expect("JSON serialises");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// A tensor's values as they lie in memory: safetensors' little-endian bytes on the
/// little-endian machines this runs on (x86-64, aarch64).
fn values_of(t: &Tensor) -> candle_core::Result<Values> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::U8 => Values::U8(flat.to_vec1::<u8>()?),
        _ => Values::F32(flat.to_vec1::<f32>()?),
    })
}

enum Values {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Values {
    fn bytes(&self) -> &[u8] {
        match self {
            Values::F32(v) => bytemuck::cast_slice::<f32, u8>(v),
            Values::U8(v) => v,
        }
    }
}

/// What goes to the hashing thread, in file order.
enum Chunk {
    Header(Vec<u8>),
    Values(Arc<Values>),
}

/// Writes `map` to `path` (created or truncated, then synced) and returns the file's sha256,
/// hex. Only for maps [`streamable`] accepts.
pub fn write_hashed(
    map: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    const { assert!(cfg!(target_endian = "little")) };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                match chunk {
                    Chunk::Header(b) => h.update(&b),
                    Chunk::Values(v) => h.update(v.bytes()),
                }
            }
            format!("{:x}", h.finalize())
        });
        let written = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let mut f = std::fs::File::create(path)?;
            let head = header(map);
            f.write_all(&head)?;
            let _ = tx.send(Chunk::Header(head));
            for t in map.values() {
                let v = Arc::new(values_of(t)?);
                f.write_all(v.bytes())?;
                let _ = tx.send(Chunk::Values(v));
            }
            // Synced here, while the hasher finishes the last tensors.
            f.sync_all()?;
            Ok(())
        })();
        drop(tx);
        let sum = hasher
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        written.map(|()| sum)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn candle_reads_it_back_and_the_sum_is_the_files() {
        let dev = Device::Cpu;
        let mut map = BTreeMap::new();
        map.insert(
            "b".to_string(),
            Tensor::arange(0f32, 6.0, &dev)
                .unwrap()
                .reshape((2, 3))
                .unwrap(),
        );
        map.insert(
            "a.x".to_string(),
            Tensor::new(&[1.5f32, -2.0, 3.25], &dev).unwrap(),
        );
        map.insert(
            "c".to_string(),
            Tensor::zeros((4, 1, 2), DType::F32, &dev).unwrap(),
        );
        assert!(streamable(&map));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.safetensors");
        let sum = write_hashed(&map, &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(sum, format!("{:x}", Sha256::digest(&bytes)));
        let back = candle_core::safetensors::load(&p, &dev).unwrap();
        assert_eq!(back.len(), 3);
        for (k, t) in &map {
            let b = &back[k];
            assert_eq!(b.dims(), t.dims());
            assert_eq!(
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        let mut half = map.clone();
        half.insert("h".into(), Tensor::zeros(2, DType::F16, &dev).unwrap());
        assert!(!streamable(&half));
    }
}
