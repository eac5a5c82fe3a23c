//! Writing GGUF v3 files atomically (temp file in the same directory, then rename), so a crash
//! never leaves a half-written model at the target path.

use std::io::Write;
use std::path::Path;

use crate::dtype::GgmlType;
use crate::reader::{DEFAULT_ALIGNMENT, MAGIC};
use crate::value::{Value, ValueType};

pub struct TensorData {
    pub name: String,
    /// Row-major (candle) shape, outermost first.
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
    pub data: Vec<u8>,
}

/// A tensor's entry in the file's table, its data written later (a streamed write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    pub name: String,
    /// Row-major (candle) shape, outermost first.
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
    /// The data's length in bytes.
    pub len: usize,
}

impl TensorHeader {
    fn of(t: &TensorData) -> Self {
        Self {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype,
            len: t.data.len(),
        }
    }
}

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorData>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(ty, items) => {
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
        self
    }

    pub fn add_tensor(&mut self, t: TensorData) -> &mut Self {
        self.tensors.push(t);
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The file up to its first tensor's data (magic, metadata, the tensor table for tensors
    /// of these names, shapes, types and byte lengths, padding), and each tensor's offset
    /// within the data section and the section's padded length.
    fn header(&self, tensors: &[TensorHeader]) -> (Vec<u8>, Vec<usize>, usize) {
        let align = self.alignment() as usize;
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(tensors.len());
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.len).div_ceil(align) * align;
        }
        out.resize(out.len().div_ceil(align) * align, 0);
        (out, offsets, offset)
    }

    /// Serialises the whole file into memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let heads: Vec<TensorHeader> = self.tensors.iter().map(TensorHeader::of).collect();
        let (mut out, offsets, end) = self.header(&heads);
        let base = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(base + off, 0);
            out.extend_from_slice(&t.data);
        }
        // ggml's reader expects the data blob padded to the alignment after the last tensor too
        // (gguf_write pads every tensor): without it, a file ending in a 4-byte tensor (an
        // imatrix's counts) is "failed to read tensor data binary blob" to llama.cpp.
        out.resize(base + end, 0);
        out
    }

    /// Writes a file too large to hold in memory, atomically: this writer's metadata (its
    /// tensors are ignored), then the tensors `tensors` announces, tensor `i`'s bytes from
    /// `data(i)` in order, each checked against its announced length. A failure (an error
    /// from `data`, a wrong length, a full disk) leaves no file behind.
    pub fn write_streamed_atomic<E: From<std::io::Error>>(
        &self,
        path: &Path,
        tensors: &[TensorHeader],
        mut data: impl FnMut(usize) -> Result<Vec<u8>, E>,
    ) -> Result<(), E> {
        let (head, offsets, end) = self.header(tensors);
        let mut result = Ok(());
        let io = write_atomic_with(path, |f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(&head)?;
            let mut at = 0usize;
            for (i, (t, off)) in tensors.iter().zip(offsets).enumerate() {
                w.write_all(&vec![0u8; off - at])?;
                let bytes = match data(i) {
                    Ok(b) => b,
                    Err(e) => {
                        result = Err(e);
                        return Err(std::io::Error::other("tensor data failed"));
                    }
                };
                if bytes.len() != t.len {
                    return Err(std::io::Error::other(format!(
                        "tensor {} produced {} bytes, announced {}",
                        t.name,
                        bytes.len(),
                        t.len
                    )));
                }
                w.write_all(&bytes)?;
                at = off + t.len;
            }
            w.write_all(&vec![0u8; end - at])?;
            w.flush()
        })
        .map_err(E::from);
        // The producer's own error, when it was the cause, says more than the I/O one.
        result.and(io)
    }

    /// Writes atomically: a temp file beside `path`, fsynced, then renamed over it.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}

/// Atomic whole-file write used for every artefact we produce.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// As [`write_atomic`], the contents written by `fill` into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    remove_stale_temps(&dir, &format!(".{name}.tmp."));
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes what writers killed mid-write (kill -9, power loss) left in `dir`: entries whose
/// name starts with `prefix` and ends in `.tmp.<pid>` (files or directories) and whose process
/// no longer runs. Only where `/proc` shows processes (Linux); elsewhere, and for a live or
/// unknown pid, nothing is touched. Failures are ignored: a stale temporary costs disk space,
/// never correctness.
pub fn remove_stale_temps(dir: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with(prefix))
            .and_then(|n| n.rsplit_once(".tmp."))
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

/// Convenience for building string arrays (tokenizer vocabularies).
pub fn string_array<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Value {
    Value::Array(
        ValueType::String,
        items.into_iter().map(|s| Value::String(s.into())).collect(),
    )
}
