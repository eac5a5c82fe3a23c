//! f32 products through the `gemm` crate for the callers that split work over threads
//! themselves (one product per task, no nested parallelism): the LM head's Q8_0 panels and the
//! prefill's attention.

/// A matrix in memory: its first element and the strides between rows and between columns.
#[derive(Clone, Copy)]
pub(crate) struct View<P> {
    pub ptr: P,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<P> View<P> {
    /// Rows `row_stride` apart, columns adjacent.
    pub(crate) fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]` on the calling thread (`+=` with `accumulate`).
///
/// # Safety
/// Every element the views address for these sizes is in bounds, `dst`'s are written by no
/// one else meanwhile, and `dst` overlaps neither input.
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: View<*mut f32>,
    accumulate: bool,
    lhs: View<*const f32>,
    rhs: View<*const f32>,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
