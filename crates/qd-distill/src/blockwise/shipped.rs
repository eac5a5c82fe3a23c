//! A trained block as the file ships it: each weight matrix in its recipe type's blocks, the
//! norms (and biases) in f32. The student stream goes on through this form — the values
//! llama.cpp will multiply by, dequantized — so a block trained now and one read back from its
//! file on resume give the next block the same inputs, bit for bit.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use qd_gguf::GgmlType;
use qd_model::block::Block;
use qd_model::HParams;

use crate::student::{TrainableLinear, VarStore};
use crate::train::error::TrainError;

/// One weight matrix in its shipped blocks.
#[derive(Clone)]
pub struct ShippedMatrix {
    pub ty: GgmlType,
    /// Row-major `[rows, cols]`.
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// What block-wise QAT measured on one block: the held-out mean squared error of the student
/// block against the teacher block's output, on the grid before training (round-to-nearest of
/// the teacher's weights) and after.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct BlockReport {
    pub val_mse_before: f64,
    pub val_mse_after: f64,
    pub train_mse_last: f64,
    pub seconds: f64,
}

#[derive(Clone)]
pub struct ShippedBlock {
    pub il: usize,
    pub matrices: BTreeMap<String, ShippedMatrix>,
    pub vectors: BTreeMap<String, Tensor>,
    pub report: BlockReport,
}

impl ShippedBlock {
    /// The block over the shipped values (dequantized matrices, f32 vectors), untracked: what
    /// the next block's student input is computed with.
    pub fn block(&self, hp: &HParams, dev: &Device) -> Result<Block<TrainableLinear>, TrainError> {
        let mut store = VarStore::default();
        for (name, m) in &self.matrices {
            let values = qd_quant::dequantize(m.ty, &m.bytes)?;
            store.frozen.insert(
                name.clone(),
                Tensor::from_vec(values, m.dims.as_slice(), dev)?,
            );
        }
        for (name, v) in &self.vectors {
            store.frozen.insert(name.clone(), v.to_device(dev)?);
        }
        Ok(Block::load(hp, self.il, &store)?)
    }

    /// Parameters of the block (matrices and vectors).
    pub fn n_params(&self) -> usize {
        self.matrices
            .values()
            .map(|m| m.dims.iter().product::<usize>())
            .chain(self.vectors.values().map(Tensor::elem_count))
            .sum()
    }
}
