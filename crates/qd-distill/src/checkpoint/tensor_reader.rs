//! A safetensors file read one tensor at a time. candle's `safetensors::load` reads the whole
//! file into memory and then copies every tensor out of it, so loading a checkpoint held its
//! bytes twice, and a resumed run held the loaded maps beside the student's own weights and
//! moments: the 1.1B pairing's resume peaked at 17.1 GB against 13.8 GB in its steps
//! (docs/scale.md). Here only the header is kept; each tensor is read from its offsets when it
//! is asked for, and the caller copies it into place and drops it.
//!
//! The file is untrusted: the header's length, its JSON, every dtype, shape and offset pair are
//! checked against the file's size before a byte of data is read, and any mismatch is a typed
//! error naming the file (never a panic or an allocation the file's size does not justify).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::error::CheckpointError;

/// Where one tensor lies in the file.
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offsets in the file.
    start: u64,
    end: u64,
}

/// An opened safetensors file: its header parsed and checked, its data read on demand.
pub struct TensorReader {
    path: PathBuf,
    file: File,
    entries: BTreeMap<String, Entry>,
}

/// The largest header this reads (safetensors' own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "U8" => DType::U8,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        _ => return None,
    })
}

impl TensorReader {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let bad = |problem: String| CheckpointError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let io = |err| CheckpointError::Io {
            path: path.to_path_buf(),
            err,
        };
        let file = File::open(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => bad("missing".into()),
            _ => io(err),
        })?;
        let size = file.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        file.read_exact_at(&mut len, 0)
            .map_err(|_| bad(format!("{size} bytes: too short for a safetensors header")))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || header_len > size - 8 {
            return Err(bad(format!(
                "header of {header_len} bytes does not fit the file's {size}"
            )));
        }
        let mut json = vec![0u8; header_len as usize];
        file.read_exact_at(&mut json, 8).map_err(io)?;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
        let data = 8 + header_len;
        let mut entries = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry = parse_entry(&v, data, size)
                .map_err(|problem| bad(format!("tensor {name:?}: {problem}")))?;
            entries.insert(name, entry);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Tensor `name`'s dimensions, from the header.
    pub fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(|e| e.shape.clone())
    }

    /// Tensor `name` read from the file onto `dev`; `Ok(None)` when the file has no such tensor.
    pub fn read(&self, name: &str, dev: &Device) -> Result<Option<Tensor>, CheckpointError> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; (e.end - e.start) as usize];
        self.file
            .read_exact_at(&mut bytes, e.start)
            .map_err(|err| CheckpointError::Io {
                path: self.path.clone(),
                err,
            })?;
        const { assert!(cfg!(target_endian = "little")) };
        let t = Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, dev)?;
        Ok(Some(t))
    }

    /// Every tensor, by name (what candle's loader returns, without the file's bytes beside it).
    pub fn read_all(&self, dev: &Device) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
        let mut out = BTreeMap::new();
        for name in self.entries.keys() {
            if let Some(t) = self.read(name, dev)? {
                out.insert(name.clone(), t);
            }
        }
        Ok(out)
    }
}

/// One header entry checked against the file: a known dtype, a shape whose byte count is the
/// offsets' span, and offsets inside the data.
fn parse_entry(v: &serde_json::Value, data: u64, size: u64) -> Result<Entry, String> {
    let dtype_name = v["dtype"].as_str().ok_or("no dtype")?;
    let dtype = dtype_of(dtype_name).ok_or_else(|| format!("unsupported dtype {dtype_name}"))?;
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or("a dimension is not a count")
        })
        .collect::<Result<_, _>>()?;
    let offsets = v["data_offsets"].as_array().ok_or("no data_offsets")?;
    let [a, b] = offsets.as_slice() else {
        return Err("data_offsets is not a pair".into());
    };
    let (a, b) = (
        a.as_u64().ok_or("bad data offset")?,
        b.as_u64().ok_or("bad data offset")?,
    );
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
            n.checked_mul(d as u64)
        })
        .ok_or("shape overflows")?;
    if a > b || b - a != bytes {
        return Err(format!(
            "offsets {a}..{b} do not hold {bytes} bytes of {shape:?} {dtype_name}"
        ));
    }
    let (start, end) = (data + a, data.checked_add(b).ok_or("offset overflows")?);
    if end > size {
        return Err(format!("ends at byte {end}, past the file's {size}"));
    }
    Ok(Entry {
        dtype,
        shape,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path) -> (PathBuf, BTreeMap<String, Tensor>) {
        let dev = Device::Cpu;
        let mut map = BTreeMap::new();
        map.insert(
            "w".to_string(),
            Tensor::arange(0f32, 12.0, &dev)
                .unwrap()
                .reshape((3, 4))
                .unwrap(),
        );
        map.insert("m8".to_string(), Tensor::new(&[1u8, 2, 250], &dev).unwrap());
        map.insert(
            "h".to_string(),
            Tensor::new(&[1.5f32, -2.0], &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        );
        let p = dir.join("t.safetensors");
        let hashed: std::collections::HashMap<_, _> = map.clone().into_iter().collect();
        candle_core::safetensors::save(&hashed, &p).unwrap();
        (p, map)
    }

    #[test]
    fn reads_what_candle_wrote_tensor_by_tensor() {
        let d = tempfile::tempdir().unwrap();
        let (p, map) = write(d.path());
        let r = TensorReader::open(&p).unwrap();
        assert_eq!(r.names().collect::<Vec<_>>(), vec!["h", "m8", "w"]);
        for (k, t) in &map {
            let back = r.read(k, &Device::Cpu).unwrap().unwrap();
            assert_eq!(back.dtype(), t.dtype());
            assert_eq!(back.dims(), t.dims());
            let (a, b) = (
                back.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
                t.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
            );
            assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        }
        assert!(r.read("nope", &Device::Cpu).unwrap().is_none());
        assert_eq!(r.read_all(&Device::Cpu).unwrap().len(), 3);
    }

    #[test]
    fn hostile_files_fail_typed() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = write(d.path());
        let good = std::fs::read(&p).unwrap();
        let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short", good[..5].to_vec()),
            ("huge header", {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            }),
            ("truncated data", good[..good.len() - 4].to_vec()),
            ("bad json", {
                let mut b = good.clone();
                b[8] = b'x';
                b
            }),
            ("header only", good[..8 + header_len].to_vec()),
        ];
        for (what, bytes) in cases {
            let q = d.path().join("bad.safetensors");
            std::fs::write(&q, &bytes).unwrap();
            let err = TensorReader::open(&q)
                .err()
                .unwrap_or_else(|| panic!("{what} opened"));
            assert!(
                matches!(err, CheckpointError::Invalid { .. }),
                "{what}: {err}"
            );
        }
        // A shape that does not match its offsets.
        let text = String::from_utf8(good[8..8 + header_len].to_vec()).unwrap();
        let lied = text.replacen("[3,4]", "[4,4]", 1);
        assert_ne!(lied, text);
        let mut b = good[..8].to_vec();
        b.extend_from_slice(lied.as_bytes());
        b.extend_from_slice(&good[8 + header_len..]);
        let q = d.path().join("lie.safetensors");
        std::fs::write(&q, &b).unwrap();
        let err = TensorReader::open(&q).err().unwrap().to_string();
        assert!(
            err.contains("\"w\"") && err.contains("do not hold"),
            "{err}"
        );
    }
}
