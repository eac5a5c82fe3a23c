//! One GGUF file from named f32 tensors: the template's metadata and tokenizer verbatim, the
//! block count and file type of the new model, and every tensor quantized per the recipe.

use std::path::Path;

use candle_core::Tensor;
use qd_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value};

use crate::error::{ExportError, Result};
use crate::imatrix::Imatrix;
use crate::recipe::{Choice, ModelInfo, Recipe, TensorKind};

/// What happened to one tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<usize>,
    pub choice: Choice,
    /// Source bytes kept as they were (requantizing to the type a tensor already has).
    pub copied: bool,
}

impl TensorReport {
    pub fn type_name(&self) -> &'static str {
        self.choice.used.map(|t| t.name()).unwrap_or("F32")
    }
}

pub struct Exported {
    pub writer: GgufWriter,
    pub tensors: Vec<TensorReport>,
}

impl Exported {
    /// One line per tensor whose wanted type did not fit its rows, as llama-quantize warns.
    pub fn fallbacks(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|t| t.choice.fell_back())
            .map(|t| {
                let name = |c: Option<qd_gguf::GgmlType>| c.map(|q| q.name()).unwrap_or("F32");
                format!(
                    "{}: rows of {} do not fit {}; using {} as llama.cpp does",
                    t.name,
                    t.dims.last().copied().unwrap_or(0),
                    name(t.choice.wanted),
                    name(t.choice.used)
                )
            })
            .collect()
    }

    pub fn tensor_bytes(&self) -> usize {
        self.writer.tensors.iter().map(|t| t.data.len()).sum()
    }
}

/// Where the tensors come from: their names and shapes up front (rules depend on the whole set),
/// then each one's f32 values, or its source bytes when they already have the chosen type.
pub trait TensorSource {
    fn tensors(&self) -> Vec<(String, Vec<usize>)>;
    fn f32(&self, name: &str) -> Result<Tensor>;
    /// Bytes of `name` if it is stored as `ty` already.
    fn raw(&self, _name: &str, _ty: GgmlType) -> Option<Vec<u8>> {
        None
    }
    /// `name`'s blocks of `ty` when the source decides them itself rather than the recipe's
    /// quantizer (QAT with learned step sizes: the steps are trained, the codes follow).
    fn own_blocks(&self, _name: &str, _ty: qd_gguf::GgmlType) -> Option<Result<Vec<u8>>> {
        None
    }
}

/// An importance matrix for an export, with the path it came from (for errors and the
/// `quantize.imatrix.*` keys llama-quantize writes).
#[derive(Clone, Copy)]
pub struct WithImatrix<'a> {
    pub imatrix: &'a Imatrix,
    pub path: &'a Path,
}

/// Builds the file in memory. `template` supplies every metadata key (architecture, tokenizer,
/// `general.*`); `n_layer` replaces its block count; `extra` adds provenance keys. With an
/// importance matrix, every tensor it has an entry for is quantized by ggml's weighted
/// quantizer and the file type's imatrix rules apply, as `llama-quantize --imatrix` does.
pub fn assemble(
    template: &GgufFile,
    n_layer: usize,
    source: &dyn TensorSource,
    recipe: Recipe,
    imatrix: Option<WithImatrix<'_>>,
    extra: Vec<(String, Value)>,
) -> Result<Exported> {
    let arch = template.architecture()?.to_string();
    let mut w = GgufWriter::new();
    for (k, v) in template.metadata() {
        w.set(k, v.clone());
    }
    w.set(&format!("{arch}.block_count"), Value::U32(n_layer as u32));
    w.set("general.file_type", Value::U32(recipe.file_type()));
    w.set("general.quantization_version", Value::U32(2));
    w.set("general.alignment", Value::U32(32));
    for (k, v) in extra {
        w.set(&k, v);
    }
    let list = source.tensors();
    let has_output = list.iter().any(|(n, _)| n == "output.weight");
    if let Some(im) = imatrix {
        check_imatrix(recipe, im, &list)?;
        for (k, v) in imatrix_keys(im) {
            w.set(&k, v);
        }
    } else if let Recipe::Llama(f) = recipe {
        if f.requires_imatrix() {
            return Err(ExportError::Invalid(format!(
                "recipe {} needs an importance matrix (--imatrix), as llama-quantize does",
                recipe.name()
            )));
        }
    }
    let model = ModelInfo::of(template, n_layer, imatrix.is_some());
    let mut reports = Vec::with_capacity(list.len());
    for (name, dims) in list {
        let kind = TensorKind::of(&name, &dims, has_output);
        let row = dims.last().copied().unwrap_or(0);
        let choice = recipe.choose(kind, row, &model);
        let ggml = choice.used.unwrap_or(GgmlType::F32);
        // llama-quantize keeps a tensor's bytes when it already has the type, imatrix or not.
        let own = choice.used.and_then(|ty| source.own_blocks(&name, ty));
        let (data, copied) = match (source.raw(&name, ggml), own) {
            (Some(bytes), _) => (bytes, true),
            (None, Some(bytes)) => (bytes?, false),
            (None, None) => {
                let t = source.f32(&name)?;
                let values = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|err| ExportError::Candle {
                        name: name.clone(),
                        err,
                    })?;
                let bytes = match choice.used {
                    None => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    Some(ty) => match imatrix.and_then(|im| im.imatrix.weights(&name)) {
                        Some(w) => qd_quant::quantize_weighted(ty, &values, row, &w),
                        None => qd_quant::quantize(ty, &values, row),
                    }
                    .map_err(|err| ExportError::Quant {
                        name: name.clone(),
                        err,
                    })?,
                };
                (bytes, false)
            }
        };
        // What llama.cpp would decode to ±inf/NaN never leaves: an fp16 scale that overflowed
        // (a finite but huge weight, e.g. damaged checkpoint data) or a copied block that was
        // already bad.
        qd_gguf::check_data(ggml, &data, row).map_err(|bad| ExportError::NotFinite {
            name: name.clone(),
            ty: ggml.name(),
            bad,
        })?;
        w.add_tensor(TensorData {
            name: name.clone(),
            shape: dims.clone(),
            dtype: ggml,
            data,
        });
        reports.push(TensorReport {
            name,
            dims,
            choice,
            copied,
        });
    }
    Ok(Exported {
        writer: w,
        tensors: reports,
    })
}

/// An imatrix fits a recipe that uses one and the model's tensors (names and widths).
fn check_imatrix(recipe: Recipe, im: WithImatrix<'_>, list: &[(String, Vec<usize>)]) -> Result<()> {
    if !recipe.uses_imatrix() {
        return Err(ExportError::Invalid(format!(
            "recipe {} does not use an importance matrix (llama-quantize ignores it too); drop --imatrix",
            recipe.name()
        )));
    }
    im.imatrix.check_model(im.path, list)
}

/// The provenance keys `llama-quantize --imatrix` adds.
fn imatrix_keys(im: WithImatrix<'_>) -> Vec<(String, Value)> {
    let mut keys = vec![(
        "quantize.imatrix.file".to_string(),
        Value::String(im.path.display().to_string()),
    )];
    if let Some(d) = im.imatrix.datasets.first() {
        keys.push(("quantize.imatrix.dataset".into(), Value::String(d.clone())));
    }
    keys.push((
        "quantize.imatrix.entries_count".into(),
        Value::I32(im.imatrix.entries.len() as i32),
    ));
    if im.imatrix.chunk_count > 0 {
        keys.push((
            "quantize.imatrix.chunks_count".into(),
            Value::I32(im.imatrix.chunk_count as i32),
        ));
    }
    keys
}

/// Writes `exported` to `path` atomically; an existing file is kept unless `force`.
pub fn write_new(exported: &Exported, path: &Path, force: bool) -> Result<()> {
    if path.is_dir() {
        return Err(ExportError::Invalid(format!(
            "{} is a directory, not an output file",
            path.display()
        )));
    }
    if path.exists() && !force {
        return Err(ExportError::Exists {
            path: path.to_path_buf(),
        });
    }
    exported
        .writer
        .write_atomic(path)
        .map_err(|err| ExportError::Io {
            path: path.to_path_buf(),
            err,
        })
}
