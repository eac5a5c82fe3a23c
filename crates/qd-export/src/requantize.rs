//! Any GGUF to another recipe, like `llama-quantize`: every tensor dequantized and quantized
//! again, except those already of the chosen type, whose bytes are kept (as llama-quantize does).

use candle_core::{Device, Tensor};
use qd_gguf::{GgmlType, GgufFile, Value};

use crate::assemble::{assemble, Exported, TensorSource, WithImatrix};
use crate::error::Result;
use crate::recipe::Recipe;

/// A GGUF file's tensors as an export's source: each dequantized, or its bytes where it already
/// has the chosen type.
pub struct FileSource<'a>(pub &'a GgufFile);

impl TensorSource for FileSource<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.0
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape()))
            .collect()
    }

    fn f32(&self, name: &str) -> Result<Tensor> {
        Ok(self.0.dequantize(name, &Device::Cpu)?)
    }

    fn raw(&self, name: &str, ty: GgmlType) -> Option<Vec<u8>> {
        let info = self.0.tensor_info(name).ok()?;
        (info.dtype == ty)
            .then(|| self.0.tensor_bytes(name).ok().map(<[u8]>::to_vec))
            .flatten()
    }
}

pub fn requantize(
    src: &GgufFile,
    recipe: Recipe,
    imatrix: Option<WithImatrix<'_>>,
    extra: Vec<(String, Value)>,
) -> Result<Exported> {
    let arch = src.architecture()?.to_string();
    let n_layer = src.get_usize(&format!("{arch}.block_count"))?;
    let mut extra = extra;
    extra.push(("qat_distill.recipe".into(), Value::String(recipe.name())));
    assemble(src, n_layer, &FileSource(src), recipe, imatrix, extra)
}
