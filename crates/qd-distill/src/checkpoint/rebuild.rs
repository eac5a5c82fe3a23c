//! The student a run describes, built afresh from its files, and a checkpoint's student (the
//! same build with the trained weights over it). Training builds its student here before it
//! resumes, export rebuilds a checkpoint's here, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use qd_gguf::GgufFile;

use super::error::CheckpointError;
use super::files::Checkpoint;
use super::tensor_reader::TensorReader;
use crate::student::{build_student, student_from_file, Student, VarStore, STEP_SUFFIX};
use crate::train::config::RunConfig;

/// The untrained student of `cfg`: from its own file `sf` when it started as one (pruned,
/// trimmed), else from the teacher's file `tf` (blocks, or a student config).
pub fn build_run_student(
    cfg: &RunConfig,
    tf: Option<&GgufFile>,
    sf: Option<&GgufFile>,
    dev: &Device,
) -> Result<(Student, VarStore), CheckpointError> {
    Ok(match sf {
        Some(sf) => student_from_file(sf, cfg.frozen_tensors(), dev)?,
        None => build_student(
            tf.ok_or_else(|| {
                CheckpointError::Refused("a student needs its file or the teacher's".into())
            })?,
            &cfg.student_blocks,
            cfg.student.as_ref(),
            cfg.frozen_tensors(),
            dev,
        )?,
    })
}

/// The student of checkpoint `dir` (trained with `cfg`) with its trained weights, learned
/// step sizes included, after checking every file of the checkpoint against its sums.
pub fn rebuild_student(
    dir: &Path,
    cfg: &RunConfig,
    tf: &GgufFile,
    sf: Option<&GgufFile>,
    dev: &Device,
) -> Result<(Student, VarStore), CheckpointError> {
    let (student, mut store) = build_run_student(cfg, Some(tf), sf, dev)?;
    let ck = Checkpoint::open(dir)?;
    if cfg.learned_steps {
        let mut steps = BTreeMap::new();
        for name in ck.weights.names().filter(|n| n.ends_with(STEP_SUFFIX)) {
            if let Some(t) = ck.weights.read(name, dev)? {
                steps.insert(name.to_string(), t);
            }
        }
        store.adopt_learned_steps(&steps)?;
    }
    load_store(&store, &ck.weights, dev)?;
    Ok((student, store))
}

/// Every variable of `store` overwritten from `weights`, one tensor at a time (read, copied into
/// place, dropped), after checking that the names and shapes match exactly: a 1.1B student's
/// weights are never held twice.
pub fn load_store(
    store: &VarStore,
    weights: &TensorReader,
    dev: &Device,
) -> Result<(), CheckpointError> {
    store.check_weights(|k| weights.dims(k), weights.names())?;
    for k in store.vars.keys() {
        if let Some(w) = weights.read(k, dev)? {
            store.set_weight(k, &w)?;
        }
    }
    Ok(())
}
