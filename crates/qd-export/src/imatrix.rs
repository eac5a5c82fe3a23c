//! llama.cpp's importance-matrix file (`llama-imatrix -o FILE.gguf`, read by `llama-quantize
//! --imatrix`): a GGUF with `general.type = "imatrix"`, `imatrix.datasets`, `imatrix.chunk_count`,
//! `imatrix.chunk_size`, and per weight matrix two F32 tensors — `<name>.in_sum2`, the sum over
//! tokens of each input column's squared activation, and `<name>.counts`, the number of tokens
//! (one per matrix; experts would have one each). The weights a quantizer uses are
//! `in_sum2 / counts`, as llama-quantize's loader divides them.
//!
//! Reading is strict where llama-quantize would silently quantize without weights or abort
//! later: a file that is not an imatrix, a missing pair, a non-finite sum, a zero count, or
//! (checked against a model with [`Imatrix::check_model`]) a name or width the model does not
//! have, each fail in one line naming the file and tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qd_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value, ValueType};

use crate::error::{ExportError, Result};

/// One weight matrix's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Σ x² per input column (`nmat` rows of the matrix's width).
    pub sums: Vec<f32>,
    /// Tokens seen, per matrix (one for a dense weight).
    pub counts: Vec<f32>,
}

impl Entry {
    pub fn width(&self) -> usize {
        self.sums.len() / self.counts.len().max(1)
    }
}

/// An importance matrix, as llama.cpp stores it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imatrix {
    pub entries: BTreeMap<String, Entry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
}

/// A name's `in_sum2` and `counts` as they are found.
type HalfPair = (Option<Vec<f32>>, Option<Vec<f32>>);

const SUMS: &str = ".in_sum2";
const COUNTS: &str = ".counts";

fn bad(path: &Path, what: impl std::fmt::Display) -> ExportError {
    ExportError::Imatrix(format!("{}: {what}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl Imatrix {
    /// Reads and validates an imatrix GGUF.
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        Self::from_file(&file, path)
    }

    fn from_file(file: &GgufFile, path: &Path) -> Result<Self> {
        if let Some(t) = file.get("general.type").and_then(Value::as_str) {
            if t != "imatrix" {
                return Err(bad(
                    path,
                    format!("general.type is {t:?}, not an imatrix file"),
                ));
            }
        }
        let key = |k: &str| {
            file.get(k).and_then(Value::as_u64).ok_or_else(|| {
                bad(
                    path,
                    format!("missing imatrix metadata {k} (not an imatrix file?)"),
                )
            })
        };
        let chunk_count = key("imatrix.chunk_count")? as u32;
        let chunk_size = key("imatrix.chunk_size")? as u32;
        let datasets = file
            .get("imatrix.datasets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(path, "missing imatrix metadata imatrix.datasets"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut pairs: BTreeMap<String, HalfPair> = BTreeMap::new();
        for t in file.tensors() {
            let (base, is_sum) = match (t.name.strip_suffix(SUMS), t.name.strip_suffix(COUNTS)) {
                (Some(b), _) => (b, true),
                (_, Some(b)) => (b, false),
                _ => continue,
            };
            if t.dtype != GgmlType::F32 {
                return Err(bad(
                    path,
                    format!("{} is {}, not F32", t.name, t.dtype.name()),
                ));
            }
            let values = f32s(file.tensor_bytes(&t.name)?);
            let slot = pairs.entry(base.to_string()).or_default();
            if is_sum {
                slot.0 = Some(values);
            } else {
                slot.1 = Some(values);
            }
        }
        if pairs.is_empty() {
            return Err(bad(
                path,
                "no <tensor>.in_sum2 / .counts pairs: not an imatrix file",
            ));
        }
        let mut entries = BTreeMap::new();
        for (name, pair) in pairs {
            let (Some(sums), Some(counts)) = pair else {
                return Err(bad(
                    path,
                    format!("{name}: in_sum2 without counts or the other way round"),
                ));
            };
            let entry = Entry { sums, counts };
            entry
                .validate()
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            entries.insert(name, entry);
        }
        Ok(Self {
            entries,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// The per-column weights llama-quantize hands the quantizer: `in_sum2 / count`.
    pub fn weights(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let w = e.width();
        Some(
            e.sums
                .chunks_exact(w)
                .zip(&e.counts)
                .flat_map(|(s, &c)| s.iter().map(move |v| v / c))
                .collect(),
        )
    }

    /// Every entry must name a 2-D weight of the model (`tensors`: names and row-major shapes)
    /// whose rows are as wide as the entry. Model weights without an entry are quantized
    /// unweighted, as llama-quantize does (the embedding never has one).
    pub fn check_model(&self, path: &Path, tensors: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, e) in &self.entries {
            let Some((_, dims)) = tensors.iter().find(|(n, _)| n == name) else {
                return Err(bad(
                    path,
                    format!("{name} is not a tensor of this model (an imatrix of another model?)"),
                ));
            };
            let row = dims.last().copied().unwrap_or(0);
            if dims.len() < 2 || e.width() != row || e.counts.len() != 1 {
                return Err(bad(
                    path,
                    format!(
                        "{name}: {} columns × {} matrices, but the model's tensor is {dims:?}",
                        e.width(),
                        e.counts.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The file llama-imatrix writes: the metadata keys, then each entry's two tensors in name
    /// order.
    pub fn to_writer(&self) -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set("general.type", Value::String("imatrix".into()));
        w.set(
            "imatrix.datasets",
            Value::Array(
                ValueType::String,
                self.datasets.iter().cloned().map(Value::String).collect(),
            ),
        );
        w.set("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.set("imatrix.chunk_size", Value::U32(self.chunk_size));
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (name, e) in &self.entries {
            // One matrix: 1-D, as ggml writes a [width, 1] tensor (trailing 1s dropped).
            let nmat = e.counts.len();
            let (sums_shape, counts_shape) = if nmat == 1 {
                (vec![e.width()], vec![1])
            } else {
                (vec![nmat, e.width()], vec![nmat, 1])
            };
            w.add_tensor(TensorData {
                name: format!("{name}{SUMS}"),
                shape: sums_shape,
                dtype: GgmlType::F32,
                data: bytes(&e.sums),
            });
            w.add_tensor(TensorData {
                name: format!("{name}{COUNTS}"),
                shape: counts_shape,
                dtype: GgmlType::F32,
                data: bytes(&e.counts),
            });
        }
        w
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.to_writer()
            .write_atomic(path)
            .map_err(|err| ExportError::Io {
                path: PathBuf::from(path),
                err,
            })
    }
}

impl Entry {
    fn validate(&self) -> std::result::Result<(), String> {
        let nmat = self.counts.len();
        if nmat == 0 || self.sums.is_empty() || !self.sums.len().is_multiple_of(nmat) {
            return Err(format!(
                "{} sums do not split into {nmat} matrices",
                self.sums.len()
            ));
        }
        if let Some(i) = self.sums.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!(
                "sum {} at column {i} is not finite and non-negative",
                self.sums[i]
            ));
        }
        if let Some(c) = self.counts.iter().find(|c| !(c.is_finite() && **c >= 1.0)) {
            return Err(format!(
                "token count {c}: no calibration token reached this matrix"
            ));
        }
        Ok(())
    }
}
