//! How the packed kernels (`q8_0`, `kquant`) split a product over threads: tasks of
//! whole 16-row tiles, about eight per thread so two cores stay busy to the end, each writing
//! only its own output columns.

/// Rows per tile: one 512-bit register of f32 or i32 lanes.
pub const ROWS: usize = 16;

/// The output `y [t, n]`, shared by tasks that write disjoint elements.
pub struct SharedOut(pub *mut f32);
// SAFETY: tasks write disjoint elements.
unsafe impl Sync for SharedOut {}

/// Row tiles per task: about eight tasks per thread, at most `max` tiles each.
pub fn tiles_per_task(tiles: usize, threads: usize, max: usize) -> usize {
    (tiles / (threads * 8)).clamp(1, max)
}

/// Runs `f(r0, r1)` over ranges of the `n.div_ceil(16)` row tiles, in parallel.
pub(crate) fn for_row_tiles(n: usize, f: impl Fn(usize, usize) + Sync) {
    use rayon::prelude::*;
    let row_tiles = n.div_ceil(ROWS);
    let per_task = tiles_per_task(row_tiles, rayon::current_num_threads(), 64);
    (0..row_tiles.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let r0 = task * per_task;
            f(r0, (r0 + per_task).min(row_tiles));
        });
}

/// Copies the first `rows` lanes of each token's result into `y [t, n]` at row tile `rt`.
///
/// # Safety
/// `out` points to `t·n` floats, `s + res.len() ≤ t` for the tokens written, and no other task
/// writes these elements.
pub(crate) unsafe fn store(
    out: &SharedOut,
    res: &[[f32; ROWS]],
    s: usize,
    n: usize,
    rt: usize,
    rows: usize,
) {
    for (j, row) in res.iter().enumerate() {
        // SAFETY: within `y` by the caller's contract.
        unsafe {
            let dst = out.0.add((s + j) * n + rt * ROWS);
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst, rows);
        }
    }
}
