//! A checkpoint as a GGUF file: the student rebuilt from its teacher (embeddings and anything
//! else it did not train), the trained weights loaded over it, and every tensor quantized with
//! the recipe it trained against.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use qd_export::{assemble, Exported, Recipe, TensorSource};
use qd_gguf::{GgufFile, Value};

use crate::checkpoint::{
    check_imatrix, check_student_file, check_teacher, rebuild_student, resolve, Checkpoint,
    CheckpointError, RunState,
};
use crate::student::pruned_file::layout_key;
use crate::student::var_store::step_name;
use crate::student::{Student, VarStore};

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The recipe to write; by default the one the checkpoint trained with.
    pub recipe: Option<Recipe>,
    /// Allow a recipe other than the trained one (post-training quantization).
    pub from_f32: bool,
    /// The teacher file, when it has moved since training.
    pub teacher: Option<PathBuf>,
    /// An importance matrix (llama.cpp's imatrix GGUF) for ggml's weighted quantizers: the one
    /// QAT trained against (when it has moved since training; its sha256 must match), or any
    /// one with `from_f32` (post-training quantization of the trained weights).
    pub imatrix: Option<PathBuf>,
}

/// What was exported, for the report and the provenance keys.
pub struct StudentExport {
    pub exported: Exported,
    pub recipe: Recipe,
    pub checkpoint: PathBuf,
    pub step: u64,
    /// True when the recipe is the one QAT trained against.
    pub matches_training: bool,
}

/// The student's tensors; with `learned` (a QAT run with learned step sizes, exported with the
/// recipe it trained), a weight with learned steps is written with them.
struct StoreSource<'a> {
    store: &'a VarStore,
    learned: bool,
}

/// llama.cpp's layout ([`layout_key`]), each block's tensors by name.
fn order_key(name: &str) -> ((usize, usize), String) {
    (layout_key(name), name.to_string())
}

impl TensorSource for StoreSource<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = self.store.shapes();
        v.sort_by_key(|(n, _)| order_key(n));
        v
    }

    fn f32(&self, name: &str) -> qd_export::Result<Tensor> {
        self.store
            .tensor(name)
            .map_err(|e| qd_export::ExportError::Invalid(e.to_string()))
    }

    fn own_blocks(&self, name: &str, ty: qd_gguf::GgmlType) -> Option<qd_export::Result<Vec<u8>>> {
        let steps = self
            .store
            .vars
            .get(&step_name(name))
            .filter(|_| self.learned)?;
        let candle = |err| qd_export::ExportError::Candle {
            name: name.to_string(),
            err,
        };
        Some((|| {
            let w = self
                .store
                .tensor(name)
                .map_err(|e| qd_export::ExportError::Invalid(e.to_string()))?;
            let n = w.dims().last().copied().unwrap_or(0);
            let w = w
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle)?;
            let d = steps
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle)?;
            qd_quant::quantize_with_steps(ty, &w, n, &d).map_err(|err| {
                qd_export::ExportError::Quant {
                    name: name.to_string(),
                    err,
                }
            })
        })())
    }
}

fn refuse<T>(msg: String) -> Result<T, CheckpointError> {
    Err(CheckpointError::Refused(msg))
}

/// The recipe to write (the option's, else the trained one) and whether QAT trained it;
/// another recipe only as post-training quantization (`from_f32`) or f32.
fn choose_recipe(
    dir: &Path,
    trained: Option<Recipe>,
    opts: &ExportOptions,
) -> Result<(Recipe, bool), CheckpointError> {
    let Some(recipe) = opts.recipe.or(trained) else {
        return refuse(format!(
            "{} was trained without QAT; choose a recipe (--recipe) and pass --from-f32 for post-training quantization",
            dir.display()
        ));
    };
    let matches_training = trained == Some(recipe);
    if !matches_training && !opts.from_f32 && recipe != Recipe::F32 {
        return refuse(format!(
            "{} trained {}, not {}; pass --from-f32 to quantize it after training anyway",
            dir.display(),
            trained
                .map(|r| format!("with QAT recipe {}", r.name()))
                .unwrap_or_else(|| "without QAT".into()),
            recipe.name()
        ));
    }
    Ok((recipe, matches_training))
}

/// The importance matrix the export writes with: the one QAT trained against (found by
/// content: the option's file, else the run's), or with `from_f32` any one given.
fn choose_imatrix(
    dir: &Path,
    state: &RunState,
    opts: &ExportOptions,
    recipe: Recipe,
    matches_training: bool,
) -> Result<Option<(qd_export::Imatrix, PathBuf)>, CheckpointError> {
    Ok(match (&opts.imatrix, state.imatrix_sha256.as_deref()) {
        // QAT trained on an imatrix's weighted grid: export writes that grid, with that file.
        (given, Some(want)) if matches_training => {
            let Some(p) = given.clone().or_else(|| state.config.imatrix.clone()) else {
                return refuse(format!(
                    "{} trained against an importance matrix (sha256 {want}) but names none",
                    dir.display()
                ));
            };
            check_imatrix(dir, want, &p)?;
            Some((qd_export::Imatrix::open(&p)?, p))
        }
        (Some(p), _) if !opts.from_f32 && recipe != Recipe::F32 => {
            return refuse(format!(
                "{} trained without the importance matrix {}; pass --from-f32 to quantize it \
                 after training with it",
                dir.display(),
                p.display()
            ))
        }
        (Some(p), _) => Some((qd_export::Imatrix::open(p)?, p.clone())),
        (None, _) => None,
    })
}

/// The keys that say where the file came from, and the student's own shape (a config student
/// may differ from the teacher in all of these).
fn provenance_keys(
    state: &RunState,
    teacher: &GgufFile,
    template: &GgufFile,
    student: &Student,
    recipe: Recipe,
    matches_training: bool,
) -> Result<Vec<(String, Value)>, CheckpointError> {
    let cfg = &state.config;
    let name = teacher
        .opt("general.name", GgufFile::get_str)?
        .unwrap_or("model")
        .to_string();
    let s = |v: &str| Value::String(v.to_string());
    let mut extra = vec![
        (
            "general.name".to_string(),
            s(&format!("{name} student ({} blocks)", student.hp.n_layer)),
        ),
        (
            "qat_distill.teacher_sha256".to_string(),
            s(&state.teacher_sha256),
        ),
        ("qat_distill.recipe".to_string(), s(&recipe.name())),
        ("qat_distill.qat".to_string(), Value::Bool(matches_training)),
        (
            "qat_distill.steps".to_string(),
            Value::U64(state.step as u64),
        ),
        ("qat_distill.data_hash".to_string(), s(&state.data_hash)),
        (
            "qat_distill.student_init".to_string(),
            s(&match (&cfg.student, &cfg.student_file) {
                (Some(c), _) => {
                    format!("config: {}", serde_json::to_string(c).unwrap_or_default())
                }
                (None, Some(p)) => format!("file: {}", p.display()),
                (None, None) => format!("teacher blocks {:?}", cfg.student_blocks),
            }),
        ),
    ];
    let arch = student.hp.arch.name();
    let hp = &student.hp;
    for (k, v) in [
        ("feed_forward_length", hp.n_ff),
        ("attention.head_count", hp.n_head),
        ("attention.head_count_kv", hp.n_head_kv),
        ("attention.key_length", hp.head_dim),
        ("attention.value_length", hp.value_dim),
    ] {
        extra.push((format!("{arch}.{k}"), Value::U32(v as u32)));
    }
    if template
        .get(&format!("{arch}.rope.dimension_count"))
        .is_some()
    {
        extra.push((
            format!("{arch}.rope.dimension_count"),
            Value::U32(hp.rope_dim as u32),
        ));
    }
    Ok(extra)
}

/// Rebuilds the student of checkpoint `dir` and assembles its GGUF file (not yet written).
pub fn export_checkpoint(
    dir: &Path,
    opts: &ExportOptions,
) -> Result<StudentExport, CheckpointError> {
    let dir = resolve(dir)?;
    let state = RunState::from_json(Checkpoint::load_state(&dir)?, &dir)?;
    let cfg = &state.config;
    let trained = cfg.qat.as_deref().map(Recipe::parse).transpose()?;
    let (recipe, matches_training) = choose_recipe(&dir, trained, opts)?;
    let imatrix = choose_imatrix(&dir, &state, opts, recipe, matches_training)?;
    let teacher_path = opts.teacher.clone().unwrap_or_else(|| cfg.teacher.clone());
    let teacher = GgufFile::open(&teacher_path)?;
    check_teacher(&dir, &state, &teacher_path)?;
    // A student that started as a file (pruned, trimmed) is rebuilt from it, and the file is
    // the template of the export: its tokenizer and shape are the student's.
    let sf = match &cfg.student_file {
        Some(p) => {
            check_student_file(&dir, &state, p)?;
            Some(GgufFile::open(p)?)
        }
        None => None,
    };
    let (student, store) = rebuild_student(&dir, cfg, &teacher, sf.as_ref(), &Device::Cpu)?;
    let template = sf.as_ref().unwrap_or(&teacher);
    let extra = provenance_keys(
        &state,
        &teacher,
        template,
        &student,
        recipe,
        matches_training,
    )?;
    let exported = assemble(
        template,
        student.hp.n_layer,
        &StoreSource {
            store: &store,
            learned: matches_training,
        },
        recipe,
        imatrix
            .as_ref()
            .map(|(imatrix, path)| qd_export::WithImatrix { imatrix, path }),
        extra,
    )?;
    Ok(StudentExport {
        exported,
        recipe,
        checkpoint: dir,
        step: state.step as u64,
        matches_training,
    })
}
