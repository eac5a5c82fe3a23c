//! A model of a named shape ([`ModelShape`]) with random weights, in a recipe's quantization
//! mix (Q4_K_M for a teacher, as llama-quantize would pick per tensor), with a tokenizer of the
//! shape's kind and size — written straight to disk tensor by tensor, so a 7B model never sits
//! in memory whole. Weights are N(0, 1/cols) matrices, norms ones, biases zeros; each tensor
//! drawn from its own seed in row chunks, so the bytes do not depend on the thread count.

use std::path::Path;

use qd_gguf::{GgmlType, GgufWriter, TensorHeader, Value};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::{ExportError, Result};
use crate::recipe::{ModelInfo, Recipe, TensorKind};
use crate::shape::ModelShape;
use crate::synthetic::{encode, normal};
use crate::synthetic_vocab::synthetic_vocab;

/// The seed of every synthetic vocabulary.
const VOCAB_SEED: u64 = 0;

/// Rows drawn per task (each chunk its own seed).
const ROWS_PER_CHUNK: usize = 64;

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeModelReport {
    pub bytes: u64,
    pub n_params: usize,
    pub n_tensors: usize,
    /// Tensors per block type, e.g. `q4_K: 193`.
    pub types: Vec<(String, usize)>,
}

/// The GGUF metadata of `shape` (hyper-parameters and tokenizer) for a file of `recipe`.
pub fn shape_metadata(shape: &ModelShape, recipe: &Recipe) -> Result<GgufWriter> {
    let a = shape.arch.as_str();
    let k = |s: &str| format!("{a}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(a.into()));
    w.set(
        "general.name",
        Value::String(format!("{} (synthetic: random weights)", shape.name)),
    );
    w.set("general.alignment", Value::U32(32));
    w.set("general.file_type", Value::U32(recipe.file_type()));
    w.set("general.quantization_version", Value::U32(2));
    w.set(&k("context_length"), u(shape.max_position_embeddings));
    w.set(&k("embedding_length"), u(shape.hidden_size));
    w.set(&k("block_count"), u(shape.num_hidden_layers));
    w.set(&k("feed_forward_length"), u(shape.intermediate_size));
    w.set(&k("attention.head_count"), u(shape.num_attention_heads));
    w.set(&k("attention.head_count_kv"), u(shape.num_key_value_heads));
    w.set(&k("attention.key_length"), u(shape.head_dim()));
    w.set(&k("attention.value_length"), u(shape.head_dim()));
    w.set(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(shape.rms_norm_eps as f32),
    );
    w.set(&k("rope.freq_base"), Value::F32(shape.rope_theta as f32));
    w.set(&k("rope.dimension_count"), u(shape.head_dim()));
    w.set(&k("vocab_size"), u(shape.vocab_size));
    if let Some(sw) = shape.sliding_window {
        w.set(&k("attention.sliding_window"), u(sw));
    }
    // The vocabulary depends on the tokenizer's kind and size only, never on the weights'
    // seed: shapes that share a published tokenizer (LLaMA-2-7B and TinyLlama-1.1B) share the
    // synthetic one too, so a teacher and a student made apart can be distilled.
    let vocab = synthetic_vocab(
        &shape.tokenizer,
        shape.tokenizer_pre.as_deref(),
        shape.vocab_size,
        VOCAB_SEED,
    )?;
    vocab.write_metadata(&mut w);
    Ok(w)
}

/// The block type each tensor gets under `recipe` (`F32` for what stays unquantized).
pub fn shape_tensor_types(
    shape: &ModelShape,
    recipe: &Recipe,
) -> Vec<(String, Vec<usize>, GgmlType)> {
    let info = ModelInfo {
        n_layer: shape.num_hidden_layers,
        n_gqa: shape.num_attention_heads / shape.num_key_value_heads,
        imatrix: false,
    };
    let has_output = !shape.tie_word_embeddings;
    shape
        .tensors()
        .into_iter()
        .map(|(name, dims)| {
            let row = *dims.last().unwrap_or(&1);
            let kind = TensorKind::of(&name, &dims, has_output);
            let ty = recipe
                .choose(kind, row, &info)
                .used
                .unwrap_or(GgmlType::F32);
            (name, dims, ty)
        })
        .collect()
}

fn tensor_values(
    name: &str,
    dims: &[usize],
    shape: &ModelShape,
    seed: u64,
    rows: std::ops::Range<usize>,
) -> Vec<f32> {
    let row = *dims.last().unwrap_or(&1);
    if dims.len() < 2 {
        return if name == "rope_freqs.weight" {
            shape.rope_factors().unwrap_or_default()
        } else if name.ends_with(".bias") {
            vec![0.0; row]
        } else {
            vec![1.0; row]
        };
    }
    let std = 1.0 / (row as f64).sqrt();
    let chunks: Vec<usize> = (rows.start..rows.end).step_by(ROWS_PER_CHUNK).collect();
    chunks
        .into_par_iter()
        .flat_map_iter(|r0| {
            let n = ROWS_PER_CHUNK.min(rows.end - r0);
            let mut rng =
                StdRng::seed_from_u64(seed ^ (r0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            (0..n * row)
                .map(move |_| normal(&mut rng, std))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A streamed write's failure: the file's I/O or a tensor's encoding.
enum Stream {
    Io(std::io::Error),
    Export(ExportError),
}

impl From<std::io::Error> for Stream {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Writes a random-weight model of `shape` in `recipe`'s mix to `path`, atomically.
/// `progress(done, total)` is called after each tensor with parameter counts.
pub fn write_shape_model(
    shape: &ModelShape,
    recipe: &Recipe,
    seed: u64,
    path: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ShapeModelReport> {
    shape.validate()?;
    let meta = shape_metadata(shape, recipe)?;
    let tensors = shape_tensor_types(shape, recipe);
    let headers: Vec<TensorHeader> = tensors
        .iter()
        .map(|(name, dims, ty)| {
            let n: usize = dims.iter().product();
            TensorHeader {
                name: name.clone(),
                shape: dims.clone(),
                dtype: *ty,
                len: ty.bytes_for(n as u64).unwrap_or(n as u64 * 4) as usize,
            }
        })
        .collect();
    let total: usize = shape.n_params();
    let mut done = 0usize;
    meta.write_streamed_atomic(
        path,
        &headers,
        |i| -> std::result::Result<Vec<u8>, Stream> {
            let (name, dims, ty) = &tensors[i];
            let rows = if dims.len() < 2 { 1 } else { dims[0] };
            let row = *dims.last().unwrap_or(&1);
            let tseed = seed.wrapping_add((i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            // A big matrix (an embedding of 262,144 rows) in pieces of 8,192 rows keeps the f32
            // draft small; rows are independent under every block type.
            let mut out = Vec::with_capacity(headers[i].len);
            let step = if dims.len() < 2 { 1 } else { 8192 };
            for r0 in (0..rows).step_by(step) {
                let r1 = (r0 + step).min(rows);
                let v = tensor_values(name, dims, shape, tseed, r0..r1);
                out.extend(encode(*ty, name, &v, row).map_err(Stream::Export)?);
            }
            done += dims.iter().product::<usize>();
            progress(done, total);
            Ok(out)
        },
    )
    .map_err(|e| match e {
        Stream::Export(e) => e,
        Stream::Io(err) => ExportError::Io {
            path: path.to_path_buf(),
            err,
        },
    })?;
    let bytes = std::fs::metadata(path)
        .map_err(|err| ExportError::Io {
            path: path.to_path_buf(),
            err,
        })?
        .len();
    let mut types: Vec<(String, usize)> = Vec::new();
    for (_, _, ty) in &tensors {
        let n = ty.name().to_string();
        match types.iter_mut().find(|(t, _)| *t == n) {
            Some(slot) => slot.1 += 1,
            None => types.push((n, 1)),
        }
    }
    Ok(ShapeModelReport {
        bytes,
        n_params: total,
        n_tensors: tensors.len(),
        types,
    })
}
