//! A model of another file's exact shape with random weights: the same metadata and tokenizer,
//! the same tensor names, shapes and block types, so it runs at the same speed. For measuring
//! a shape without its weights (a GPU machine the real teacher cannot travel to, a model not
//! yet downloaded). A *skeleton* carries the shape alone — the metadata and a list of tensors,
//! no data (Gemma 3 270M's: a few MB, mostly its tokenizer) — and is enough to make one.

use qd_gguf::{string_array, GgmlType, GgufFile, GgufWriter, TensorData, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ExportError, Result};

/// The metadata key a skeleton lists its tensors under, one `name|ggml type id|d0,d1,…` each
/// (row-major dims).
pub const SKELETON_KEY: &str = "qat_distill.skeleton.tensors";

/// One tensor's name, block type and row-major shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorShape {
    pub name: String,
    pub dtype: GgmlType,
    pub shape: Vec<usize>,
}

/// The tensors of a model or of a skeleton.
pub fn tensor_shapes(f: &GgufFile) -> Result<Vec<TensorShape>> {
    let Some(list) = f.get(SKELETON_KEY) else {
        return Ok(f
            .tensors()
            .iter()
            .map(|t| TensorShape {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape(),
            })
            .collect());
    };
    let Value::Array(_, items) = list else {
        return Err(ExportError::Invalid(format!(
            "{SKELETON_KEY} is not an array"
        )));
    };
    items
        .iter()
        .map(|v| {
            let bad = || ExportError::Invalid(format!("bad skeleton entry {v:?}"));
            let s = v.as_str().ok_or_else(bad)?;
            let mut parts = s.split('|');
            let (Some(name), Some(ty), Some(dims), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let dtype = ty
                .parse::<u32>()
                .ok()
                .and_then(GgmlType::from_id)
                .ok_or_else(bad)?;
            let shape = dims
                .split(',')
                .map(|d| d.parse::<usize>().map_err(|_| bad()))
                .collect::<Result<Vec<_>>>()?;
            Ok(TensorShape {
                name: name.to_string(),
                dtype,
                shape,
            })
        })
        .collect()
}

/// One draw of N(0, std²) (Box–Muller from two uniforms): random weights here and in
/// `qd-distill`'s configured students.
pub fn normal(rng: &mut impl Rng, std: f64) -> f32 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `values` (rows of `row` values) stored as block type `ty`: f32, f16 or quantized by the
/// export's own quantizers.
pub(crate) fn encode(ty: GgmlType, name: &str, values: &[f32], row: usize) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        other => {
            let quant = |err| ExportError::Quant {
                name: name.to_string(),
                err,
            };
            let q = qd_quant::quantizable(other).map_err(quant)?;
            qd_quant::quantize(q, values, row).map_err(quant)?
        }
    })
}

/// `f`'s metadata and tensor list, without tensor data.
pub fn skeleton(f: &GgufFile) -> Result<GgufWriter> {
    let shapes = tensor_shapes(f)?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k, v.clone());
    }
    w.set(
        SKELETON_KEY,
        string_array(shapes.iter().map(|t| {
            let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            format!("{}|{}|{}", t.name, t.dtype.id(), dims.join(","))
        })),
    );
    Ok(w)
}

/// A model of `f`'s shape (a model or a skeleton) with random weights drawn from `seed`: vectors
/// (norms, biases) are ones, matrices N(0, 1/cols), each stored in its own block type.
pub fn synthetic(f: &GgufFile, seed: u64) -> Result<GgufWriter> {
    let shapes = tensor_shapes(f)?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k != SKELETON_KEY {
            w.set(k, v.clone());
        }
    }
    let name = f
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or("model")
        .to_string();
    w.set(
        "general.name",
        Value::String(format!("{name} (synthetic: random weights)")),
    );
    let mut rng = StdRng::seed_from_u64(seed);
    for t in shapes {
        let n: usize = t.shape.iter().product();
        let row = t.shape.last().copied().unwrap_or(1).max(1);
        let values: Vec<f32> = if t.shape.len() < 2 {
            vec![1.0; n]
        } else {
            let std = 1.0 / (row as f64).sqrt();
            (0..n).map(|_| normal(&mut rng, std)).collect()
        };
        let data = encode(t.dtype, &t.name, &values, row)?;
        w.add_tensor(TensorData {
            name: t.name,
            shape: t.shape,
            dtype: t.dtype,
            data,
        });
    }
    Ok(w)
}
