//! What several of this crate's tests build: a tiny teacher of a family and the whole-model
//! QAT student made from it (every block and the embedding trained, Q4_0 fake-quant).

use candle_core::Device;
use qd_distill::student::{
    student_from_teacher, QatPlan, TrainableEmbedding, TrainableLinear, VarStore,
};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{QModel, Transformer};

/// The student as training runs it: its weights the store's variables.
pub type Student = Transformer<TrainableLinear, TrainableEmbedding>;

/// A tiny Q8_0 teacher of `fam`, and its QAT student with the trained variables (with learned
/// step sizes when `learned`).
pub fn tiny_qat(fam: Family, learned: bool) -> (QModel, Student, VarStore) {
    let dev = Device::Cpu;
    let f =
        GgufFile::from_bytes("tiny.gguf", tiny_gguf(&TinySpec::new(fam, GgmlType::Q8_0))).unwrap();
    let teacher = qd_model::load_quantized(&f, &dev).unwrap();
    let n = teacher.hp.n_layer;
    let (student, mut store) = student_from_teacher(&f, &(0..n).collect::<Vec<_>>(), &dev).unwrap();
    let info = qd_export::ModelInfo {
        n_layer: n,
        n_gqa: 2,
        imatrix: false,
    };
    let plan = QatPlan::new(
        qd_export::Recipe::parse("q4_0").unwrap(),
        &store,
        &info,
        false,
    );
    if learned {
        assert!(plan.add_learned_steps(&mut store).unwrap() > 0);
    }
    let qat = Transformer::load(student.hp.clone(), &plan.apply(&store).unwrap(), &dev).unwrap();
    (teacher, qat, store)
}
