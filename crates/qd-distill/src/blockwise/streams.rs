//! The two residual streams block-wise QAT carries from block to block, one `[1, s, d]` tensor
//! per cached sequence: the teacher's (through its own blocks: block `il`'s output is the
//! target of student block `il`) and the student's (through the blocks already trained, as the
//! file will hold them: block `il`'s input). EfficientQAT's Block-AP keeps the same pair
//! (`fp_inps`, `quant_inps`), so that each block learns to undo the error of the quantized
//! blocks before it, not only its own.

use candle_core::{Device, Result, Tensor};
use qd_model::block::Block;
use qd_model::{BlockContext, Linear, QModel};

pub struct Streams {
    pub teacher: Vec<Tensor>,
    pub student: Vec<Tensor>,
    /// The first `n_train` sequences train; the rest are held out.
    n_train: usize,
}

impl Streams {
    /// The teacher's embeddings of `train` then `held_out` (every sequence of one length): the
    /// input of block 0 on both sides.
    pub fn embed(
        teacher: &QModel,
        train: &[Vec<u32>],
        held_out: &[Vec<u32>],
        dev: &Device,
    ) -> Result<Self> {
        let mut teacher_side = Vec::with_capacity(train.len() + held_out.len());
        for seq in train.iter().chain(held_out) {
            let tokens = Tensor::new(seq.as_slice(), dev)?.unsqueeze(0)?;
            teacher_side.push(teacher.embed_tokens(&tokens)?.detach());
        }
        Ok(Self {
            student: teacher_side.clone(),
            teacher: teacher_side,
            n_train: train.len(),
        })
    }

    pub fn n_train(&self) -> usize {
        self.n_train
    }

    /// The held-out sequences' indices.
    pub fn held_out(&self) -> std::ops::Range<usize> {
        self.n_train..self.teacher.len()
    }

    /// The teacher side through the teacher's block `il`: afterwards it holds that block's
    /// outputs, the targets of student block `il`.
    pub fn advance_teacher(
        &mut self,
        teacher: &QModel,
        il: usize,
        bc: &BlockContext,
    ) -> Result<()> {
        for x in &mut self.teacher {
            *x = teacher.block_forward(il, x, bc, None)?.detach();
        }
        Ok(())
    }

    /// The student side through `block`, run as block `il` in f32.
    pub fn advance_student<L: Linear>(
        &mut self,
        teacher: &QModel,
        il: usize,
        block: &Block<L>,
        bc: &BlockContext,
    ) -> Result<()> {
        for x in &mut self.student {
            *x = teacher.run_block(il, block, x, bc, false, None)?.detach();
        }
        Ok(())
    }

    /// What both sides hold, in bytes.
    pub fn bytes(&self) -> usize {
        self.teacher
            .iter()
            .chain(&self.student)
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}
