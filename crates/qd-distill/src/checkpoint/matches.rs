//! Whether a checkpoint belongs with the files, data and options it is about to be used with:
//! the student, sequence, seed, recipe and optimizer it trained with, and the teacher, student
//! and importance-matrix files it read, by content (sha256), so a moved file is accepted and a
//! changed one refused by name. `train --resume` and `export-gguf --checkpoint` ask here alike.

use std::path::Path;

use super::error::CheckpointError;
use super::files::sha256_of;
use super::state::RunState;
use crate::train::config::RunConfig;

/// The content of the files a run reads besides its data, as its checkpoints record it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFiles {
    pub teacher_sha256: String,
    pub student_sha256: Option<String>,
    pub imatrix_sha256: Option<String>,
}

impl RunFiles {
    /// Hashes the teacher, student file and importance matrix `cfg` names.
    pub fn of(cfg: &RunConfig) -> Result<Self, CheckpointError> {
        let opt = |p: &Option<std::path::PathBuf>| p.as_deref().map(sha256_of).transpose();
        Ok(Self {
            teacher_sha256: sha256_of(&cfg.teacher)?,
            student_sha256: opt(&cfg.student_file)?,
            imatrix_sha256: opt(&cfg.imatrix)?,
        })
    }
}

fn refuse(msg: String) -> Result<(), CheckpointError> {
    Err(CheckpointError::Refused(msg))
}

/// A run may go on from checkpoint `dir` (state `saved`): same student, sequence length, seed,
/// QAT recipe, step sizes, teacher signal and optimizer, same student file and importance
/// matrix, same data. Learning rate, steps, evaluation and the device may change.
pub fn check_resumable(
    dir: &Path,
    saved: &RunState,
    cfg: &RunConfig,
    files: &RunFiles,
    data_hash: &str,
) -> Result<(), CheckpointError> {
    let was = &saved.config;
    if was.student_blocks != cfg.student_blocks
        || was.student != cfg.student
        || was.student_file != cfg.student_file
        || was.seq_len != cfg.seq_len
        || was.seed != cfg.seed
        || was.qat != cfg.qat
        || was.learned_steps != cfg.learned_steps
        || was.kd_top_k != cfg.kd_top_k
        || was.teacher_cache.is_some() != cfg.teacher_cache.is_some()
        || was.optimizer != cfg.optimizer
    {
        return refuse(format!(
            "{} was trained with another student, sequence length, seed, QAT recipe, step-size \
             setting, teacher signal (full, top-k, cached) or optimizer",
            dir.display()
        ));
    }
    if saved.student_sha256 != files.student_sha256 {
        return refuse(format!(
            "{} was trained from another student file (sha256 {})",
            dir.display(),
            saved.student_sha256.as_deref().unwrap_or("none")
        ));
    }
    if saved.imatrix_sha256 != files.imatrix_sha256 {
        return refuse(format!(
            "{} was trained against another importance matrix (sha256 {})",
            dir.display(),
            saved.imatrix_sha256.as_deref().unwrap_or("none")
        ));
    }
    if saved.data_hash != data_hash {
        return refuse(format!("{} was trained on other data", dir.display()));
    }
    Ok(())
}

/// `teacher` is the teacher checkpoint `dir` (state `saved`) trained against.
pub fn check_teacher(dir: &Path, saved: &RunState, teacher: &Path) -> Result<(), CheckpointError> {
    if saved.teacher_sha256 != sha256_of(teacher)? {
        return refuse(format!(
            "{} is not the teacher {} was trained against (sha256 {})",
            teacher.display(),
            dir.display(),
            saved.teacher_sha256
        ));
    }
    Ok(())
}

/// `student` is the student file checkpoint `dir` (state `saved`) started from.
pub fn check_student_file(
    dir: &Path,
    saved: &RunState,
    student: &Path,
) -> Result<(), CheckpointError> {
    if saved.student_sha256.as_deref() != Some(sha256_of(student)?.as_str()) {
        return refuse(format!(
            "{} is not the student file {} was trained from",
            student.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// `imatrix` is the importance matrix (sha256 `want`) checkpoint `dir` trained against.
pub fn check_imatrix(dir: &Path, want: &str, imatrix: &Path) -> Result<(), CheckpointError> {
    if sha256_of(imatrix)? != want {
        return refuse(format!(
            "{} is not the importance matrix {} trained against (sha256 {want}); pass that file \
             with --imatrix",
            imatrix.display(),
            dir.display()
        ));
    }
    Ok(())
}
