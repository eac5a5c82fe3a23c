//! Student models: the shared transformer over trainable f32 weights that a fake-quant op can
//! wrap, with GGUF tensor names throughout (so export is a mapping, not a translation).

pub mod from_config;
pub mod from_teacher;
pub mod importance;
pub mod probe;
pub mod pruned_file;
pub mod qat;
pub mod selection;
pub mod trainable;
pub mod var_store;
pub mod vocab_map;

pub use from_config::{student_from_config, StudentConfig};
pub use from_teacher::{student_from_file, student_from_teacher, student_from_teacher_with};
pub use importance::{calibration_sequences, measure, Importance};
pub use pruned_file::{pruned_file, PrunePlan};
pub use qat::QatPlan;
pub use trainable::{TrainableEmbedding, TrainableLinear};
pub use var_store::{step_name, VarStore, STEP_SUFFIX};
pub use vocab_map::{vocab_map, VocabMap};

/// A student: the same transformer as the teacher, over trainable weights.
pub type Student = qd_model::Transformer<TrainableLinear, TrainableEmbedding>;

/// The student a run describes: from a config when it has one, else from teacher blocks.
pub fn build_student(
    teacher: &qd_gguf::GgufFile,
    blocks: &[usize],
    config: Option<&StudentConfig>,
    frozen: &[&str],
    device: &candle_core::Device,
) -> qd_model::Result<(Student, VarStore)> {
    match config {
        Some(c) => student_from_config(teacher, c, frozen, device),
        None => student_from_teacher_with(teacher, blocks, frozen, device),
    }
}
