//! DistilBERT-style initialisation: a chosen subset of the teacher's blocks, plus its
//! embeddings and norms, dequantized to f32 and renumbered.

use candle_core::Device;
use qd_gguf::GgufFile;
use qd_model::{HParams, ModelError, Transformer};

use super::var_store::VarStore;
use super::Student;

/// Builds a student from teacher blocks `blocks` (teacher indices, in the student's order).
/// For gemma3 each student position must have the same attention kind (sliding-window or
/// global) as the teacher block placed there: the student keeps gemma3's 5-local-1-global
/// pattern by position, and a block trained for one kind does not transfer to the other.
pub fn student_from_teacher(
    teacher: &GgufFile,
    blocks: &[usize],
    device: &Device,
) -> qd_model::Result<(Student, VarStore)> {
    student_from_teacher_with(teacher, blocks, &[], device)
}

/// As [`student_from_teacher`], with the tensors named in `frozen` kept but not trained.
pub fn student_from_teacher_with(
    teacher: &GgufFile,
    blocks: &[usize],
    frozen: &[&str],
    device: &Device,
) -> qd_model::Result<(Student, VarStore)> {
    let thp = HParams::from_gguf(teacher)?;
    if blocks.is_empty() {
        return Err(ModelError::Config(
            "a student needs at least one block".into(),
        ));
    }
    let mut hp = thp.clone();
    hp.n_layer = blocks.len();
    for (new, &old) in blocks.iter().enumerate() {
        if old >= thp.n_layer {
            return Err(ModelError::Config(format!(
                "teacher block {old} does not exist (the teacher has {} blocks)",
                thp.n_layer
            )));
        }
        if hp.is_swa(new) != thp.is_swa(old) {
            let kind = |swa: bool| if swa { "sliding-window" } else { "global" };
            return Err(ModelError::Config(format!(
                "student block {new} is {} but teacher block {old} is {}; pick a teacher block of the same kind",
                kind(hp.is_swa(new)),
                kind(thp.is_swa(old))
            )));
        }
    }
    let mut store = VarStore::default();
    for t in teacher.tensors() {
        let name = &t.name;
        let renamed = match name.strip_prefix("blk.") {
            None => Some(name.clone()),
            Some(rest) => {
                let (idx, suffix) = rest.split_once('.').unwrap_or((rest, ""));
                let old: usize = idx
                    .parse()
                    .map_err(|_| ModelError::Config(format!("bad tensor name {name:?}")))?;
                blocks
                    .iter()
                    .position(|&b| b == old)
                    .map(|new| format!("blk.{new}.{suffix}"))
            }
        };
        if let Some(n) = renamed {
            store.insert_from_teacher(teacher, name, n, frozen, device)?;
        }
    }
    for name in frozen {
        store.freeze(name);
    }
    let model = Transformer::load(hp, &store, device)?;
    Ok((model, store))
}

/// A student that is a whole GGUF file (a `qat-distill student` output: pruned, trimmed), every
/// tensor dequantized to f32 but those in `frozen`.
pub fn student_from_file(
    file: &GgufFile,
    frozen: &[&str],
    device: &Device,
) -> qd_model::Result<(Student, VarStore)> {
    let n = HParams::from_gguf(file)?.n_layer;
    student_from_teacher_with(file, &(0..n).collect::<Vec<_>>(), frozen, device)
}
