//! A pruned student as a GGUF file: the teacher's metadata and tokenizer with the student's
//! depth and widths, the kept blocks renumbered, and each tensor cut to the kept rows and
//! columns. A cut along rows copies whole rows as stored (a row is whole quantization blocks,
//! so the kept values are the teacher's exactly); a cut along columns splits blocks, so those
//! tensors are written as F32 of the teacher's dequantized values — exact as well, and
//! requantized only when the trained student is exported with a recipe.

use candle_core::{Device, Tensor};
use qd_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value, ValueType};
use qd_model::{HParams, ModelError};

/// What a student keeps of its teacher.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrunePlan {
    /// Teacher blocks, in the student's order.
    pub blocks: Vec<usize>,
    /// Per student block, the kept MLP channels (ascending); `None`: all of them.
    pub ffn: Option<Vec<Vec<usize>>>,
    /// Per student block, the kept query heads (ascending); `None`: all of them.
    pub heads: Option<Vec<Vec<usize>>>,
}

/// Which axis of a tensor a cut applies to, and the kept indices along it.
enum Cut {
    Keep,
    Rows(Vec<usize>),
    Cols(Vec<usize>),
}

/// `[h·width, (h+1)·width)` for each kept head.
fn head_span(heads: &[usize], width: usize) -> Vec<usize> {
    heads
        .iter()
        .flat_map(|&h| h * width..(h + 1) * width)
        .collect()
}

fn cut_for(
    suffix: &str,
    ffn: Option<&Vec<usize>>,
    heads: Option<&Vec<usize>>,
    hp: &HParams,
) -> Cut {
    match (suffix, ffn, heads) {
        ("ffn_gate.weight" | "ffn_up.weight", Some(c), _) => Cut::Rows(c.clone()),
        ("ffn_down.weight", Some(c), _) => Cut::Cols(c.clone()),
        ("attn_q.weight" | "attn_q.bias", _, Some(h)) => Cut::Rows(head_span(h, hp.head_dim)),
        ("attn_output.weight", _, Some(h)) => Cut::Cols(head_span(h, hp.value_dim)),
        _ => Cut::Keep,
    }
}

fn f32_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// The teacher's tensor `name`, cut as `cut` says.
fn cut_tensor(teacher: &GgufFile, name: &str, cut: &Cut) -> qd_model::Result<TensorData> {
    let info = teacher.tensor_info(name)?;
    let shape = info.shape();
    let bytes = teacher.tensor_bytes(name)?;
    let whole = |shape: Vec<usize>, dtype, data| TensorData {
        name: String::new(),
        shape,
        dtype,
        data,
    };
    let t = match cut {
        Cut::Keep => whole(shape, info.dtype, bytes.to_vec()),
        Cut::Rows(rows) if shape.len() == 2 => {
            let row = bytes.len() / shape[0];
            let mut data = Vec::with_capacity(row * rows.len());
            for &r in rows {
                data.extend_from_slice(&bytes[r * row..(r + 1) * row]);
            }
            whole(vec![rows.len(), shape[1]], info.dtype, data)
        }
        // A vector (a bias): its elements, as f32.
        Cut::Rows(idx) | Cut::Cols(idx) => {
            let dev = Device::Cpu;
            let t = teacher.dequantize(name, &dev)?;
            let ids = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), &dev)?;
            let dim = if matches!(cut, Cut::Cols(_)) {
                t.rank() - 1
            } else {
                0
            };
            let t = t.index_select(&ids, dim)?;
            whole(t.dims().to_vec(), GgmlType::F32, f32_bytes(&t)?)
        }
    };
    Ok(t)
}

/// The student file `plan` describes (in memory; the caller writes it atomically).
pub fn pruned_file(teacher: &GgufFile, plan: &PrunePlan) -> qd_model::Result<GgufWriter> {
    let hp = HParams::from_gguf(teacher)?;
    let arch = teacher.architecture()?.to_string();
    let n = plan.blocks.len();
    let per_block_len =
        |v: &Option<Vec<Vec<usize>>>, what: &str| -> qd_model::Result<Option<usize>> {
            let Some(v) = v else { return Ok(None) };
            let len = v.first().map_or(0, |c| c.len());
            if v.len() != n || v.iter().any(|c| c.len() != len) || len == 0 {
                return Err(ModelError::Config(format!(
                    "a student needs the same non-zero number of {what} in each of its {n} blocks"
                )));
            }
            Ok(Some(len))
        };
    let n_ff = per_block_len(&plan.ffn, "MLP channels")?.unwrap_or(hp.n_ff);
    let n_head = per_block_len(&plan.heads, "attention heads")?.unwrap_or(hp.n_head);
    let mut w = GgufWriter::new();
    for (k, v) in teacher.metadata() {
        w.set(k, v.clone());
    }
    w.set(&format!("{arch}.block_count"), Value::U32(n as u32));
    w.set(
        &format!("{arch}.feed_forward_length"),
        Value::U32(n_ff as u32),
    );
    w.set(
        &format!("{arch}.attention.head_count"),
        Value::U32(n_head as u32),
    );
    w.set(
        "qat_distill.student_blocks",
        Value::Array(
            ValueType::U32,
            plan.blocks.iter().map(|&b| Value::U32(b as u32)).collect(),
        ),
    );
    for t in teacher.tensors() {
        let (rename, cut) = match t.name.strip_prefix("blk.") {
            None => (t.name.clone(), Cut::Keep),
            Some(rest) => {
                let (idx, suffix) = rest.split_once('.').unwrap_or((rest, ""));
                let old: usize = idx
                    .parse()
                    .map_err(|_| ModelError::Config(format!("bad tensor name {:?}", t.name)))?;
                let Some(new) = plan.blocks.iter().position(|&b| b == old) else {
                    continue;
                };
                let ffn = plan.ffn.as_ref().map(|v| &v[new]);
                let heads = plan.heads.as_ref().map(|v| &v[new]);
                (
                    format!("blk.{new}.{suffix}"),
                    cut_for(suffix, ffn, heads, &hp),
                )
            }
        };
        let mut td = cut_tensor(teacher, &t.name, &cut)?;
        td.name = rename;
        w.add_tensor(td);
    }
    // Stable: within a block, the teacher's order.
    w.tensors.sort_by_key(|t| layout_key(&t.name));
    Ok(w)
}

/// `blk.{i}.{suffix}` → `(i, suffix)`.
pub(crate) fn split_block(name: &str) -> Option<(usize, &str)> {
    let (i, suffix) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((i.parse().ok()?, suffix))
}

/// `token_embd` first, then blocks in numeric order, then the rest: llama.cpp's layout.
pub(crate) fn layout_key(name: &str) -> (usize, usize) {
    if name.starts_with("token_embd") {
        return (0, 0);
    }
    match split_block(name) {
        Some((i, _)) => (1, i),
        None => (2, 0),
    }
}
