//! Checkpoints: the student's weights (safetensors, GGUF tensor names), the optimizer moments,
//! and a JSON of everything else a resumed run needs. Each is a directory written under a
//! temporary name and renamed into place, so a crash or a full disk leaves the previous
//! checkpoint intact and never a half-written one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |err| CheckpointError::Io {
        path: path.to_path_buf(),
        err,
    }
}

pub struct Checkpoint {
    pub weights: BTreeMap<String, Tensor>,
    pub optimizer: BTreeMap<String, Tensor>,
    /// Free-form run state (config, step, RNG, data position), owned by the trainer.
    pub state: serde_json::Value,
}

const WEIGHTS: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

fn save_tensors(map: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), CheckpointError> {
    let m: HashMap<String, Tensor> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    candle_core::safetensors::save(&m, path).map_err(|e| CheckpointError::Invalid {
        path: path.into(),
        problem: e.to_string(),
    })
}

fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::Invalid {
            path: path.into(),
            problem: "missing".into(),
        });
    }
    candle_core::safetensors::load(path, device)
        .map(|m| m.into_iter().collect())
        .map_err(|e| CheckpointError::Invalid {
            path: path.into(),
            problem: e.to_string(),
        })
}

impl Checkpoint {
    /// Writes `dir` atomically (a sibling temp directory renamed over it).
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = (|| {
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            save_tensors(&self.weights, &tmp.join(WEIGHTS))?;
            save_tensors(&self.optimizer, &tmp.join(OPTIMIZER))?;
            let state = serde_json::to_vec_pretty(&self.state).expect("JSON values serialise");
            std::fs::write(tmp.join(STATE), state).map_err(io(&tmp))?;
            for f in [WEIGHTS, OPTIMIZER, STATE] {
                std::fs::File::open(tmp.join(f))
                    .and_then(|f| f.sync_all())
                    .map_err(io(&tmp))?;
            }
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::rename(&tmp, dir).map_err(io(dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self, CheckpointError> {
        Ok(Self {
            state: Self::load_state(dir)?,
            weights: Self::load_weights(dir, device)?,
            optimizer: load_tensors(&dir.join(OPTIMIZER), device)?,
        })
    }

    /// The run state alone (config, step, provenance).
    pub fn load_state(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
        let state_path = dir.join(STATE);
        let text = std::fs::read_to_string(&state_path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => CheckpointError::Invalid {
                path: dir.to_path_buf(),
                problem: format!("not a checkpoint: it has no {STATE} (the run's config and step)"),
            },
            _ => CheckpointError::Io {
                path: state_path.clone(),
                err,
            },
        })?;
        serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
            path: state_path,
            problem: e.to_string(),
        })
    }

    /// The trained weights alone.
    pub fn load_weights(
        dir: &Path,
        device: &Device,
    ) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
        load_tensors(&dir.join(WEIGHTS), device)
    }
}

/// `root/step-00000042`: sorts by step.
pub fn checkpoint_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// The checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    v.sort();
    v
}

/// Deletes all but the newest `keep` checkpoints.
pub fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(root);
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(())
}
