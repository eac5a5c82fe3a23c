//! Hidden-state matching: MSE or cosine distance between a student and a teacher hidden state,
//! through a learned projection when their widths differ.

use candle_core::{Result, Tensor, D};

use super::{masked_sum, TokenSum};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Mean over the hidden dimension of the squared difference.
    Mse,
    /// 1 − cos(student, teacher).
    Cosine,
}

/// Σ over unmasked rows. `student [n, ds]`, `teacher [n, dt]`; `projection [dt, ds]` maps the
/// student into the teacher's width (required when `ds ≠ dt`).
pub fn feature_loss(
    student: &Tensor,
    teacher: &Tensor,
    projection: Option<&Tensor>,
    mask: &Tensor,
    kind: FeatureKind,
) -> Result<TokenSum> {
    let s = match projection {
        Some(p) => student.matmul(&p.t()?)?,
        None => student.clone(),
    };
    let t = teacher.detach();
    if s.dims() != t.dims() {
        candle_core::bail!(
            "feature loss: student {:?} and teacher {:?} differ; give a projection",
            s.dims(),
            t.dims()
        );
    }
    let per_row = match kind {
        FeatureKind::Mse => (&s - &t)?.sqr()?.mean(D::Minus1)?,
        FeatureKind::Cosine => {
            let dot = (&s * &t)?.sum(D::Minus1)?;
            let ns = s.sqr()?.sum(D::Minus1)?.sqrt()?;
            let nt = t.sqr()?.sum(D::Minus1)?.sqrt()?;
            (dot / ((ns * nt)? + 1e-12)?)?.neg()?.affine(1.0, 1.0)?
        }
    };
    masked_sum(&per_row, mask)
}
