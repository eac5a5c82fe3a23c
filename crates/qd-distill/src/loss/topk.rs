//! Divergence against a teacher kept only as its top-k tokens per position plus one tail bucket
//! holding the rest of its probability mass — what a cached or offline teacher stores.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

use super::divergence::{rowwise, Divergence};
use super::{masked_sum, TokenSum};

/// The teacher at temperature T, restricted to k tokens per position.
#[derive(Debug, Clone)]
pub struct TeacherTopK {
    /// `[n, k]` u32 token ids.
    pub ids: Tensor,
    /// `[n, k]` log-probabilities of those ids at temperature T (over the full vocabulary).
    pub logprobs: Tensor,
    /// `[n, 1]` log of the mass left to the other ids, where it was stored (a cache keeps it in
    /// f32 from the exact log-probabilities); else computed from `logprobs`.
    pub log_tail: Option<Tensor>,
}

impl TeacherTopK {
    /// From full teacher logits `[n, V]`.
    pub fn from_logits(teacher: &Tensor, k: usize, t: f64) -> Result<Self> {
        let lp = log_softmax(&teacher.detach().affine(1.0 / t, 0.0)?, D::Minus1)?;
        let ids = lp
            .arg_sort_last_dim(false)?
            .narrow(D::Minus1, 0, k)?
            .contiguous()?;
        let logprobs = lp.gather(&ids, D::Minus1)?;
        Ok(Self {
            ids,
            logprobs,
            log_tail: None,
        })
    }
}

/// `log(1 − Σ exp(lp))` per row, floored so that an (almost) empty tail stays finite.
fn log_tail(lp: &Tensor) -> Result<Tensor> {
    let mass = lp.exp()?.sum_keepdim(D::Minus1)?;
    let floor = 1e-12;
    (mass.neg()? + 1.0)?.maximum(floor)?.log()
}

/// Σ over unmasked rows of D over k+1 bins (the teacher's top-k ids and the tail).
pub fn divergence_topk(
    student: &Tensor,
    teacher: &TeacherTopK,
    mask: &Tensor,
    t: f64,
    div: Divergence,
) -> Result<TokenSum> {
    let lp_s_full = log_softmax(&student.affine(1.0 / t, 0.0)?, D::Minus1)?;
    let lp_s = lp_s_full.gather(&teacher.ids.to_dtype(DType::U32)?, D::Minus1)?;
    let lp_t = teacher.logprobs.to_dtype(lp_s.dtype())?;
    let s = Tensor::cat(&[&lp_s, &log_tail(&lp_s)?], D::Minus1)?;
    let tail_t = match &teacher.log_tail {
        Some(t) => t.to_dtype(lp_s.dtype())?,
        None => log_tail(&lp_t)?,
    };
    let t_ = Tensor::cat(&[&lp_t, &tail_t], D::Minus1)?;
    masked_sum(&rowwise(&t_, &s, div)?, mask)
}
