//! A block-wise run's finished blocks on disk, so that a stopped run (Ctrl-C, a crash, a full
//! disk) resumes at the first block it had not finished: `out/blocks/blk-NNN.safetensors`
//! (each matrix's shipped bytes as a `U8` tensor, the vectors in f32) written under a
//! temporary name and renamed, then `blk-NNN.json` — its types, its report, the sha256 of the
//! tensor file and the run's identity — written last, atomically: a block without its JSON
//! was not finished. On resume, a block whose tensor file does not match its sum is refused
//! naming the file (never trained on), and one made by another configuration too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::shipped::{BlockReport, ShippedBlock, ShippedMatrix};
use crate::checkpoint::tensor_file::write_hashed;
use crate::checkpoint::{sha256_of, TensorReader};
use crate::train::error::TrainError;

/// What must be equal for a finished block to be reused: every input of its training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub teacher_sha256: String,
    pub data_hash: String,
    /// The run's configuration as JSON, without what does not change a block (its output
    /// directory, evaluation and checkpoint cadence).
    pub config: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct BlockJson {
    block: usize,
    identity: Identity,
    /// Matrix name → (type name, row-major dims).
    matrices: BTreeMap<String, (String, Vec<usize>)>,
    report: BlockReport,
    sha256: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |err| TrainError::Io {
        path: path.to_path_buf(),
        err,
    }
}

fn paths(dir: &Path, il: usize) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("blk-{il:03}.safetensors")),
        dir.join(format!("blk-{il:03}.json")),
    )
}

/// Removes every finished block under `dir` (a run started afresh).
pub fn clear(dir: &Path) -> Result<(), TrainError> {
    if dir.is_dir() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Writes block `b` under `dir`.
pub fn save(dir: &Path, b: &ShippedBlock, identity: &Identity) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (tensors, json) = paths(dir, b.il);
    let mut map = BTreeMap::new();
    let dev = Device::Cpu;
    for (name, m) in &b.matrices {
        map.insert(
            name.clone(),
            Tensor::from_slice(&m.bytes, m.bytes.len(), &dev)?,
        );
    }
    for (name, v) in &b.vectors {
        map.insert(name.clone(), v.to_device(&dev)?);
    }
    let tmp = tensors.with_extension(format!("tmp.{}", std::process::id()));
    let sha256 =
        write_hashed(&map, &tmp).map_err(|e| TrainError::Config(format!("{}: {e}", tmp.display())));
    let sha256 = match sha256 {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &tensors).map_err(io(&tensors))?;
    let record = BlockJson {
        block: b.il,
        identity: identity.clone(),
        matrices: b
            .matrices
            .iter()
            .map(|(n, m)| (n.clone(), (m.ty.name().to_string(), m.dims.clone())))
            .collect(),
        report: b.report,
        sha256,
    };
    let text = serde_json::to_vec_pretty(&record).expect("serialisable");
    qd_gguf::write_atomic(&json, &text).map_err(io(&json))?;
    Ok(json)
}

/// Block `il` as a finished run left it under `dir`, `None` when it was not finished.
pub fn load(
    dir: &Path,
    il: usize,
    identity: &Identity,
) -> Result<Option<ShippedBlock>, TrainError> {
    let (tensors, json) = paths(dir, il);
    let text = match std::fs::read(&json) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&json)(e)),
    };
    let bad = |problem: String| {
        TrainError::Config(format!(
            "{}: {problem}; remove it to train that block again",
            json.display()
        ))
    };
    let record: BlockJson =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not a finished block ({e})")))?;
    if record.block != il {
        return Err(bad(format!("holds block {}, not {il}", record.block)));
    }
    if record.identity != *identity {
        return Err(bad(
            "was trained from another teacher, data or configuration than this run's".into(),
        ));
    }
    let found = sha256_of(&tensors)?;
    if found != record.sha256 {
        return Err(bad(format!(
            "its tensors ({}) are damaged: sha256 {found:.12}…, recorded {:.12}…",
            tensors.display(),
            record.sha256
        )));
    }
    let reader = TensorReader::open(&tensors)?;
    let dev = Device::Cpu;
    let mut matrices = BTreeMap::new();
    let mut vectors = BTreeMap::new();
    for name in reader.names() {
        let t = reader.read(name, &dev)?.expect("a name the reader listed");
        match record.matrices.get(name) {
            Some((ty, dims)) => {
                let ty = qd_quant::parse_type(ty)
                    .ok_or_else(|| bad(format!("unknown block type {ty}")))?;
                let bytes = t.to_vec1::<u8>()?;
                let want = dims.iter().product::<usize>() / ty.block_size() * ty.type_size();
                if bytes.len() != want {
                    return Err(bad(format!(
                        "{name}: {} bytes for {dims:?} {}",
                        bytes.len(),
                        ty.name()
                    )));
                }
                matrices.insert(
                    name.to_string(),
                    ShippedMatrix {
                        ty,
                        dims: dims.clone(),
                        bytes,
                    },
                );
            }
            None => {
                vectors.insert(name.to_string(), t);
            }
        }
    }
    Ok(Some(ShippedBlock {
        il,
        matrices,
        vectors,
        report: record.report,
    }))
}
