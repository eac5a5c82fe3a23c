//! A run's checkpoints over time: write the next one (and prune the oldest), find the newest
//! intact one to resume from (passing over damaged ones, named), and resolve what a user names
//! for export (a checkpoint, or a run directory holding some).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::error::CheckpointError;
use super::files::{checkpoint_dir, list, prune, Checkpoint, OpenCheckpoint};
use super::state::RunState;

/// The newest intact checkpoint of a run, verified and opened (its tensors read on demand).
pub struct Latest {
    pub dir: PathBuf,
    pub checkpoint: OpenCheckpoint,
    pub state: RunState,
    /// Newer checkpoints passed over because they are damaged, each with why.
    pub skipped: Vec<String>,
}

/// The newest checkpoint under `root` whose files are intact, or `None` when there is none.
/// A damaged one (its sha256, its state, a file missing) is passed over for the one before it
/// while one is left; when the oldest is damaged too, its error is returned.
pub fn latest_intact(root: &Path) -> Result<Option<Latest>, CheckpointError> {
    let mut dirs = list(root);
    let mut skipped = Vec::new();
    while let Some(dir) = dirs.pop() {
        let loaded = Checkpoint::open(&dir).and_then(|mut ck| {
            let state = RunState::from_json(std::mem::take(&mut ck.state), &dir)?;
            Ok((ck, state))
        });
        match loaded {
            Ok((checkpoint, state)) => {
                return Ok(Some(Latest {
                    dir,
                    checkpoint,
                    state,
                    skipped,
                }))
            }
            Err(e) if !dirs.is_empty() => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Writes checkpoint `state.step` under `root` (weights, optimizer moments, typed state) and
/// keeps the newest `keep`.
pub fn write(
    root: &Path,
    keep: usize,
    state: &RunState,
    weights: BTreeMap<String, Tensor>,
    optimizer: BTreeMap<String, Tensor>,
) -> Result<PathBuf, CheckpointError> {
    let dir = checkpoint_dir(root, state.step as u64);
    Checkpoint {
        weights,
        optimizer,
        state: state.to_json(),
    }
    .save(&dir)?;
    prune(root, keep)?;
    Ok(dir)
}

/// `dir` itself when it is a checkpoint, else the newest `step-*` checkpoint inside it.
pub fn resolve(dir: &Path) -> Result<PathBuf, CheckpointError> {
    if dir.join("state.json").is_file() || dir.join("model.safetensors").is_file() || !dir.is_dir()
    {
        return Ok(dir.to_path_buf());
    }
    list(dir).pop().ok_or_else(|| CheckpointError::Invalid {
        path: dir.to_path_buf(),
        problem: "holds no checkpoint (no state.json, no step-* directories)".into(),
    })
}
