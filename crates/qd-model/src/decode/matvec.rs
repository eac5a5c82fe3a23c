//! The decoder's products: one token through the VNNI kernels, with activation buffers kept
//! between tokens and the rows of several matrices that read the same input shared out as one
//! set of chunks (Q, K and V; gate and up).

use crate::kernels::isa::Isa;
use crate::kernels::kquant::{self, PackedKQuant};
use crate::kernels::q8_0::{self, PackedQ8_0};
use crate::kernels::tasks::{tiles_per_task, ROWS};
use crate::linear::QLinear;
use qd_gguf::GgmlType;

/// A weight the decoder can multiply by without candle.
#[derive(Clone, Copy)]
pub(crate) enum Mat<'m> {
    Q8(&'m PackedQ8_0),
    K(&'m PackedKQuant),
}

impl<'m> Mat<'m> {
    /// `None` for weight types the kernels do not cover (the decoder then does not apply).
    pub(crate) fn of(l: &'m QLinear) -> Option<Self> {
        l.packed_q8_0()
            .map(Mat::Q8)
            .or_else(|| l.packed_kquant().map(Mat::K))
    }

    pub(crate) fn rows(self) -> usize {
        match self {
            Mat::Q8(m) => m.rows(),
            Mat::K(m) => m.rows(),
        }
    }

    pub(crate) fn cols(self) -> usize {
        match self {
            Mat::Q8(m) => m.cols(),
            Mat::K(m) => m.cols(),
        }
    }

    /// `x [t, cols] → [t, rows]` through the kernel at level `isa`, for a batch of tokens.
    pub(crate) fn matmul(self, isa: Isa, x: &[f32]) -> Vec<f32> {
        let y = match self {
            Mat::Q8(m) => m.matmul_at(isa, x),
            Mat::K(m) => m.matmul_at(isa, x),
        };
        y.expect("the decoder runs at a level this CPU has and sizes inputs by the columns")
    }

    fn row_tiles(self) -> usize {
        self.rows().div_ceil(ROWS)
    }

    fn format(self) -> usize {
        match self {
            Mat::Q8(_) => 0,
            Mat::K(m) if m.kind() == GgmlType::Q4K => 1,
            Mat::K(_) => 2,
        }
    }
}

/// One input vector quantized in each format its consumers read: Q8_0 blocks, or Q8_K with
/// Q4_K's or Q6_K's sub-block factors.
#[derive(Default)]
pub(crate) struct Input {
    needs: [bool; 3],
    q8: q8_0::Acts,
    k4: kquant::Acts,
    k6: kquant::Acts,
}

impl Input {
    /// Quantizes `x` in the formats `mats` read, at level `isa` (which this CPU runs).
    pub(crate) fn quantize(&mut self, isa: Isa, x: &[f32], mats: &[Mat]) {
        self.needs = [false; 3];
        for m in mats {
            self.needs[m.format()] = true;
        }
        if self.needs[0] {
            self.q8.quantize_one(isa, x);
        }
        if self.needs[1] {
            self.k4.quantize_one(isa, x, GgmlType::Q4K);
        }
        if self.needs[2] {
            self.k6.quantize_one(isa, x, GgmlType::Q6K);
        }
    }
}

/// One product of a shared step: `out [rows] = mat · input`.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a, 'm> {
    pub mat: Mat<'m>,
    pub input: &'a Input,
    pub out: *mut f32,
}

impl<'a, 'm> Job<'a, 'm> {
    pub(crate) fn new(mat: Mat<'m>, input: &'a Input, out: *mut f32) -> Self {
        Self { mat, input, out }
    }
}

/// How `jobs` split into chunks: the number of chunks, and the job and tile range of chunk `c`.
pub(crate) struct Split<'j, 'a, 'm> {
    jobs: &'j [Job<'a, 'm>],
    /// Per job: first chunk, tiles per chunk.
    starts: [(usize, usize); 4],
    pub chunks: usize,
}

impl<'j, 'a, 'm> Split<'j, 'a, 'm> {
    pub(crate) fn new(jobs: &'j [Job<'a, 'm>], threads: usize) -> Self {
        assert!(jobs.len() <= 4, "at most four products share a step");
        let mut starts = [(0, 1); 4];
        let mut chunks = 0;
        for (s, j) in starts.iter_mut().zip(jobs) {
            let tiles = j.mat.row_tiles();
            // At most 32 tiles (512 rows) a chunk.
            let per = tiles_per_task(tiles, threads, 32);
            *s = (chunks, per);
            chunks += tiles.div_ceil(per);
        }
        Self {
            jobs,
            starts,
            chunks,
        }
    }

    /// Runs chunk `c` at level `isa`.
    ///
    /// # Safety
    /// This CPU runs `isa`; each job's `out` points to `rows` floats, its input was quantized
    /// for its matrix, and no two threads run the same chunk.
    pub(crate) unsafe fn run(&self, isa: Isa, c: usize) {
        let Some(i) = (0..self.jobs.len()).rev().find(|&i| self.starts[i].0 <= c) else {
            return;
        };
        let job = self.jobs[i];
        let (first, per) = self.starts[i];
        let r0 = (c - first) * per;
        let r1 = (r0 + per).min(job.mat.row_tiles());
        // SAFETY: the caller's contract.
        unsafe {
            match job.mat {
                Mat::Q8(m) => m.matvec_tiles(isa, &job.input.q8, r0, r1, job.out),
                Mat::K(m) if m.kind() == GgmlType::Q4K => {
                    m.matvec_tiles(isa, &job.input.k4, r0, r1, job.out)
                }
                Mat::K(m) => m.matvec_tiles(isa, &job.input.k6, r0, r1, job.out),
            }
        }
    }
}
