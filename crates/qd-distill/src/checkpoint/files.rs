//! Checkpoints on disk: the student's weights (safetensors, GGUF tensor names), the optimizer moments,
//! and a JSON of everything else a resumed run needs. Each is a directory written under a
//! temporary name and renamed into place, so a crash or a full disk leaves the previous
//! checkpoint intact and never a half-written one.
//!
//! Every file is checksummed: `SHA256SUMS`, written last (in `sha256sum`'s format, so
//! `sha256sum -c SHA256SUMS` checks a checkpoint by hand), holds the sha256 of the two tensor
//! files and the state, and the state says that it exists. Every reader verifies the files it
//! reads before it parses a byte of them, so damage in a file's data (a bad copy, a disk error,
//! a partial overwrite), which safetensors' own header checks cannot see, is refused naming the
//! file instead of being trained on or exported. sha256 because the workspace already has it
//! and both CPUs seen here hash it in hardware (SHA-NI, ~1.6 GB/s a core); the tensor files are
//! hashed as they are written (`tensor_file`), the readers hash them on two threads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::error::CheckpointError;
use super::tensor_reader::TensorReader;

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
/// The checksum file, and the state key that says a checkpoint has one.
const SUMS: &str = "SHA256SUMS";
const SUMS_KEY: &str = "checksums";

/// sha256 of a file, hex (the one the run records for its teacher and student files).
pub fn sha256_of(path: &Path) -> Result<String, CheckpointError> {
    qd_gguf::file_sha256(path).map_err(io(path))
}

/// sha256 of several files, one thread each.
fn sha256_all(paths: &[PathBuf]) -> Result<Vec<String>, CheckpointError> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = paths.iter().map(|p| s.spawn(|| sha256_of(p))).collect();
        jobs.into_iter()
            .map(|j| j.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The sums `dir/SHA256SUMS` records, by file name.
fn read_sums(dir: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let path = dir.join(SUMS);
    let text = std::fs::read_to_string(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::Invalid {
            path: path.clone(),
            problem: "missing (the checkpoint was not finished, or was damaged)".into(),
        },
        std::io::ErrorKind::InvalidData => CheckpointError::Invalid {
            path: path.clone(),
            problem: "damaged: not text".into(),
        },
        _ => CheckpointError::Io {
            path: path.clone(),
            err,
        },
    })?;
    let bad = || CheckpointError::Invalid {
        path: path.clone(),
        problem: "damaged: not `sha256  file` lines".into(),
    };
    if !text.ends_with('\n') {
        return Err(bad());
    }
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        let (hash, name) = line.split_once("  ").ok_or_else(bad)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        sums.insert(name.to_string(), hash.to_string());
    }
    for name in [WEIGHTS, OPTIMIZER, STATE] {
        if !sums.contains_key(name) {
            return Err(bad());
        }
    }
    Ok(sums)
}

/// Checks `names` in `dir` against `sums`.
fn verify(
    dir: &Path,
    sums: &BTreeMap<String, String>,
    names: &[&str],
) -> Result<(), CheckpointError> {
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for p in &paths {
        if !p.is_file() {
            return Err(CheckpointError::Invalid {
                path: p.clone(),
                problem: "missing".into(),
            });
        }
    }
    for ((path, name), found) in paths.iter().zip(names).zip(sha256_all(&paths)?) {
        let recorded = &sums[*name];
        if found != *recorded {
            return Err(CheckpointError::Damaged {
                path: path.clone(),
                recorded: recorded.clone(),
                found,
            });
        }
    }
    Ok(())
}

/// The state and, for a checkpoint written with checksums, its sums — the state's own checked.
/// A checkpoint written before checksums existed has no `checksums` key and is read as it is.
fn state_and_sums(
    dir: &Path,
) -> Result<(serde_json::Value, Option<BTreeMap<String, String>>), CheckpointError> {
    let state_path = dir.join(STATE);
    let text = std::fs::read(&state_path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::Invalid {
            path: dir.to_path_buf(),
            problem: format!("not a checkpoint: it has no {STATE} (the run's config and step)"),
        },
        _ => CheckpointError::Io {
            path: state_path.clone(),
            err,
        },
    })?;
    let parsed = serde_json::from_slice::<serde_json::Value>(&text);
    // With a sums file, the state is checked before its parse can fail on damage; without
    // one, only a checkpoint from before checksums (no `checksums` key) is read as it is.
    let has_sums =
        dir.join(SUMS).exists() || parsed.as_ref().is_ok_and(|v| v.get(SUMS_KEY).is_some());
    let sums = if has_sums {
        let sums = read_sums(dir)?;
        verify(dir, &sums, &[STATE])?;
        Some(sums)
    } else {
        None
    };
    let state = parsed.map_err(|e| CheckpointError::Invalid {
        path: state_path,
        problem: e.to_string(),
    })?;
    Ok((state, sums))
}

fn save_tensors(map: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), CheckpointError> {
    let m: HashMap<String, Tensor> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    candle_core::safetensors::save(&m, path).map_err(|e| CheckpointError::Invalid {
        path: path.into(),
        problem: e.to_string(),
    })
}

/// Writes a tensor file and returns its sha256: hashed as it is written where every tensor is
/// f32 (see `tensor_file`), else written by candle and read back.
fn save_hashed(map: &BTreeMap<String, Tensor>, path: &Path) -> Result<String, CheckpointError> {
    if super::tensor_file::streamable(map) {
        return super::tensor_file::write_hashed(map, path).map_err(|e| CheckpointError::Invalid {
            path: path.into(),
            problem: e.to_string(),
        });
    }
    save_tensors(map, path)?;
    sha256_of(path)
}

/// A checkpoint verified against its sums, its tensor files opened but not read: a resumed
/// run copies one tensor at a time into its student and optimizer.
pub struct OpenCheckpoint {
    pub weights: TensorReader,
    pub optimizer: TensorReader,
    pub state: serde_json::Value,
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
        // A checkpoint a killed run was writing (any step) is removed here.
        qd_gguf::remove_stale_temps(parent, ".step-");
        let tmp = parent.join(format!(".{name}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = (|| {
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            // Both tensor files at once: each is paced by its hasher, one core each.
            let (w, o) = std::thread::scope(|s| {
                let w = s.spawn(|| save_hashed(&self.weights, &tmp.join(WEIGHTS)));
                let o = save_hashed(&self.optimizer, &tmp.join(OPTIMIZER));
                (w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), o)
            });
            let (w, o) = (w?, o?);
            let mut state = self.state.clone();
            if let Some(obj) = state.as_object_mut() {
                obj.insert(SUMS_KEY.into(), SUMS.into());
            }
            let state = serde_json::to_vec_pretty(&state).expect("JSON values serialise");
            std::fs::write(tmp.join(STATE), state).map_err(io(&tmp))?;
            let names = [WEIGHTS, OPTIMIZER, STATE];
            let hashes = [w, o, sha256_of(&tmp.join(STATE))?];
            let sums: String = names
                .iter()
                .zip(&hashes)
                .map(|(n, h)| format!("{h}  {n}\n"))
                .collect();
            std::fs::write(tmp.join(SUMS), sums).map_err(io(&tmp))?;
            for f in [WEIGHTS, OPTIMIZER, STATE, SUMS] {
                std::fs::File::open(tmp.join(f))
                    .and_then(|f| f.sync_all())
                    .map_err(io(&tmp))?;
            }
            if dir.exists() {
                remove_checkpoint(dir)?;
            }
            std::fs::rename(&tmp, dir).map_err(io(dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Reads `dir` after checking every file against its `SHA256SUMS`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, CheckpointError> {
        let ck = Self::open(dir)?;
        Ok(Self {
            weights: ck.weights.read_all(device)?,
            optimizer: ck.optimizer.read_all(device)?,
            state: ck.state,
        })
    }

    /// `dir` checked against its `SHA256SUMS`, its tensor files' headers read and checked,
    /// no tensor read yet.
    pub fn open(dir: &Path) -> Result<OpenCheckpoint, CheckpointError> {
        let (state, sums) = state_and_sums(dir)?;
        if let Some(sums) = &sums {
            verify(dir, sums, &[WEIGHTS, OPTIMIZER])?;
        }
        Ok(OpenCheckpoint {
            weights: TensorReader::open(&dir.join(WEIGHTS))?,
            optimizer: TensorReader::open(&dir.join(OPTIMIZER))?,
            state,
        })
    }

    /// The run state alone (config, step, provenance), checked against its sum.
    pub fn load_state(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
        Ok(state_and_sums(dir)?.0)
    }

    /// The trained weights alone, after checking the whole checkpoint against its sums.
    pub fn load_weights(
        dir: &Path,
        device: &Device,
    ) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
        // Every file, the optimizer's too: a damaged checkpoint is refused whole, not used in part.
        Self::open(dir)?.weights.read_all(device)
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
        remove_checkpoint(old)?;
    }
    Ok(())
}

/// Removes a checkpoint so that no half of it is ever left under its name: renamed first (one
/// atomic step) to a temporary name, which a killed process leaves for the next save to clear,
/// then deleted file by file.
fn remove_checkpoint(dir: &Path) -> Result<(), CheckpointError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!(".{name}.old.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&doomed);
    std::fs::rename(dir, &doomed).map_err(io(dir))?;
    std::fs::remove_dir_all(&doomed).map_err(io(dir))
}
