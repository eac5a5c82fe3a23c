//! The block-wise run's GGUF: the teacher's file with every block replaced by its trained,
//! shipped form — the bytes the fake-quant trained against, copied, never quantized again —
//! and the rest (embedding, LM head, final norm) through the recipe as `export-gguf` and
//! `llama-quantize` would write it. Assembled by qd-export's one assembler, so its metadata,
//! types, fallbacks and finiteness checks are export's own.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use qd_export::{assemble, write_new, ExportError, FileSource, Recipe, TensorSource};
use qd_gguf::{GgmlType, GgufFile, Value};

use super::shipped::{ShippedBlock, ShippedMatrix};

struct Source<'a> {
    /// The teacher's file: every tensor not trained here.
    file: FileSource<'a>,
    matrices: HashMap<&'a str, &'a ShippedMatrix>,
    vectors: HashMap<&'a str, &'a Tensor>,
}

impl Source<'_> {
    fn trained(&self, name: &str) -> bool {
        self.matrices.contains_key(name) || self.vectors.contains_key(name)
    }
}

impl TensorSource for Source<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.file.tensors()
    }

    fn f32(&self, name: &str) -> qd_export::Result<Tensor> {
        match (self.vectors.get(name), self.matrices.get(name)) {
            (Some(v), _) => Ok((*v).clone()),
            (None, Some(m)) => Ok(Tensor::from_vec(
                qd_quant::dequantize(m.ty, &m.bytes).map_err(|err| ExportError::Quant {
                    name: name.to_string(),
                    err,
                })?,
                m.dims.as_slice(),
                &Device::Cpu,
            )
            .map_err(|err| ExportError::Candle {
                name: name.to_string(),
                err,
            })?),
            (None, None) => self.file.f32(name),
        }
    }

    fn raw(&self, name: &str, ty: GgmlType) -> Option<Vec<u8>> {
        if self.trained(name) {
            return None;
        }
        self.file.raw(name, ty)
    }

    fn own_blocks(&self, name: &str, ty: GgmlType) -> Option<qd_export::Result<Vec<u8>>> {
        let m = self.matrices.get(name)?;
        Some(if m.ty == ty {
            Ok(m.bytes.clone())
        } else {
            Err(ExportError::Invalid(format!(
                "{name} was trained on the {} grid but the recipe writes {}",
                m.ty.name(),
                ty.name()
            )))
        })
    }
}

/// Writes the student of `blocks` (every block of `file`, in order) to `path` with `recipe`;
/// returns the file's size in bytes.
pub fn write_model(
    file: &GgufFile,
    blocks: &[ShippedBlock],
    recipe: Recipe,
    path: &Path,
    extra: Vec<(String, Value)>,
) -> qd_export::Result<u64> {
    let source = Source {
        file: FileSource(file),
        matrices: blocks
            .iter()
            .flat_map(|b| b.matrices.iter().map(|(n, m)| (n.as_str(), m)))
            .collect(),
        vectors: blocks
            .iter()
            .flat_map(|b| b.vectors.iter().map(|(n, v)| (n.as_str(), v)))
            .collect(),
    };
    let mut extra = extra;
    extra.push(("qat_distill.recipe".into(), Value::String(recipe.name())));
    let exported = assemble(file, blocks.len(), &source, recipe, None, extra)?;
    write_new(&exported, path, true)?;
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}
