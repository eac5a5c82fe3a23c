//! Q8_0 weights × Q8_0 activations in packed tiles, at every level of `isa` (the SIMD ones in
//! `avx512.rs` and `avx2.rs`; the scalar one here, the portable level and the oracle: same
//! integer sums, same f32 operations in the same order, so the same bits), for the shapes
//! candle's own VNNI path skips: its repacked kernels need the inner dimension to be a multiple of 256, and Gemma 3
//! 270M's is 640, so its tied 262k-row LM head (Q8_0) and every Q5_0 tensor (widened to Q8_0)
//! ran through candle's AVX2 `vec_dot` — a quarter of a training step, most of a generated token.
//!
//! Activations are quantized exactly as ggml-cpu's x86 `quantize_row_q8_0` does (the rule
//! `ggml_numerics` reproduces), so each block's integer dot product is the one llama.cpp
//! computes; only the order of the f32 sums of `d_w·d_x·Σq_w·q_x` differs.
//!
//! Weights are repacked once, as llama.cpp repacks for its AVX-512 path: 16 rows per tile, each
//! 32-value block stored as 8 groups × 16 rows × 4 bytes, so one `vpdpbusd` multiplies 4 values
//! of one token into 16 rows at once (AVX2 does it in two halves of 8 rows). `vpdpbusd` takes
//! unsigned × signed bytes, so weights are stored `q + 128` and each block's sum is corrected
//! by `128·Σq_x` (one integer per token and block): the integer sums stay exact.

use half::f16;

use super::isa::Isa;
use super::lanes::{row_sums, row_sums_8bit, split_nibbles, widen, LANES};
use super::tasks::{SharedOut, ROWS};
use super::{AtLevel, Level, Packed};

const QK: usize = 32;
const BLOCK_BYTES: usize = 34;

/// Whether the packed kernels run at a SIMD level here (checked at run time, lowered by
/// `QAT_DISTILL_ISA`): the graph path prefers candle's kernels to the scalar level.
pub fn available() -> bool {
    Isa::active() > Isa::Scalar
}

/// One 64-byte line of a tile: an AVX-512 register's worth of codes, two AVX2 ones.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Line(pub(super) [u8; 64]);

/// A Q8_0 matrix `[n, k]` repacked for the kernel. Each tile holds one block (32 values) of 16
/// rows: the 16 scales as stored (f16), and the codes as `[group of 4][row][4]` bytes, stored
/// unsigned in as few bits as the matrix needs — 8 (`q + 128`, 8 lines), 5 (`q + 16`: 4 lines of
/// nibbles, groups 2p and 2p+1 sharing line p, and a line of high bits, one 64-bit mask per
/// group) or 4 (`q + 8`, the nibbles only). A Q5_0 or Q4_0 matrix, widened to Q8_0 exactly, is
/// so read at its own file size (22 or 18 bytes per 32 values), where widening alone made it 36:
/// generation reads every weight once per token, so bytes are its time.
pub struct PackedQ8_0 {
    n: usize,
    k: usize,
    /// 8, 5 or 4.
    bits: u32,
    /// `[n.div_ceil(16)][k / 32]` tiles of `lines_per_tile(bits)` lines; rows past `n` are 0.
    lines: Vec<Line>,
    /// `[n.div_ceil(16)][k / 32]`, f16 bits.
    scales: Vec<[u16; ROWS]>,
}

pub(super) fn lines_per_tile(bits: u32) -> usize {
    match bits {
        8 => 8,
        5 => 5,
        _ => 4,
    }
}

impl PackedQ8_0 {
    /// Repacks the Q8_0 bytes of `W [n, k]` (the same tiles for every level); `None` where the
    /// kernel cannot run (`k` not a multiple of 32, or a byte count that does not match).
    pub fn new(w: &[u8], n: usize, k: usize) -> Option<Self> {
        use rayon::prelude::*;
        if k == 0 || !k.is_multiple_of(QK) || w.len() != n * (k / QK) * BLOCK_BYTES {
            return None;
        }
        let nb = k / QK;
        // The fewest bits that hold every code: exact, whatever the file's type was.
        let (lo, hi) = w
            .par_chunks(BLOCK_BYTES)
            .map(|blk| {
                blk[2..].iter().fold((0i8, 0i8), |(lo, hi), &q| {
                    (lo.min(q as i8), hi.max(q as i8))
                })
            })
            .reduce(|| (0, 0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
        let bits = if lo >= -8 && hi < 8 {
            4
        } else if lo >= -16 && hi < 16 {
            5
        } else {
            8
        };
        let per = lines_per_tile(bits);
        let offset: i32 = 1 << (bits - 1);
        let tiles = n.div_ceil(ROWS) * nb;
        let mut lines = vec![Line([0; 64]); tiles * per];
        let mut scales = vec![[0u16; ROWS]; tiles];
        lines
            .par_chunks_mut(nb * per)
            .zip(scales.par_chunks_mut(nb))
            .enumerate()
            .for_each(|(rt, (row_lines, row_scales))| {
                for (b, (tile, d)) in row_lines.chunks_mut(per).zip(row_scales).enumerate() {
                    for (r, dr) in d.iter_mut().enumerate().take(n - rt * ROWS) {
                        let off = ((rt * ROWS + r) * nb + b) * BLOCK_BYTES;
                        let blk = &w[off..off + BLOCK_BYTES];
                        *dr = u16::from_le_bytes([blk[0], blk[1]]);
                        for (i, &q) in blk[2..].iter().enumerate() {
                            let u = (q as i8 as i32 + offset) as u8;
                            let (g, idx) = (i / 4, r * 4 + i % 4);
                            if bits == 8 {
                                tile[g].0[idx] = u;
                            } else {
                                tile[g / 2].0[idx] |= (u & 15) << (4 * (g % 2));
                                if bits == 5 {
                                    tile[4].0[g * 8 + idx / 8] |= ((u >> 4) & 1) << (idx % 8);
                                }
                            }
                        }
                    }
                }
            });
        Some(Self {
            n,
            k,
            bits,
            lines,
            scales,
        })
    }

    /// Bits per stored code (8, 5 or 4).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// `y[16·r0 ..] = W · x` over row tiles `r0..r1` for one token quantized by
    /// [`Acts::quantize_one`]: the decoder's threads share a product through this.
    ///
    /// # Safety
    /// This CPU runs `isa`; `acts` holds one token of `k` values; `y` points to `n` floats of
    /// which no other thread writes rows `16·r0 .. 16·r1` meanwhile.
    pub unsafe fn matvec_tiles(&self, isa: Isa, acts: &Acts, r0: usize, r1: usize, y: *mut f32) {
        debug_assert_eq!(acts.q.len(), self.k);
        // SAFETY: the caller's contract.
        unsafe { self.dispatch(isa, acts, 1, r0, r1, &SharedOut(y)) }
    }

    /// `y [t, n] = x [t, k] · Wᵀ` at [`Isa::active`]'s level; `None` if `x` is not whole
    /// rows of `k`.
    pub fn matmul(&self, x: &[f32]) -> Option<Vec<f32>> {
        self.matmul_at(Isa::active(), x)
    }

    /// As [`PackedQ8_0::matmul`] at level `isa`; `None` also where this CPU does not run it.
    pub fn matmul_at(&self, isa: Isa, x: &[f32]) -> Option<Vec<f32>> {
        super::matmul_at(self, isa, x)
    }
}

impl Packed for PackedQ8_0 {
    type Acts = Acts;

    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn quantize(&self, isa: Isa, x: &[f32]) -> Acts {
        Acts::quantize(isa, x, self.k)
    }

    /// Row tiles `r0..r1` of `y [t, n]` for `t` tokens of `acts`, through level `L`'s tile.
    ///
    /// # Safety
    /// As [`Packed::dispatch`], with `L` a level this CPU runs.
    unsafe fn row_tiles<L: Level>(
        &self,
        acts: &Acts,
        t: usize,
        r0: usize,
        r1: usize,
        out: &SharedOut,
    ) {
        let nb = self.k / QK;
        let per = lines_per_tile(self.bits);
        let tile = |rt: usize, s: usize, tt: usize, res: &mut [[f32; ROWS]; 4]| {
            // Slicing checks that the tile starts inside the buffers, which hold `nb`
            // blocks of every row tile.
            let w = Weights {
                lines: self.lines[rt * nb * per..].as_ptr(),
                scales: self.scales[rt * nb..].as_ptr(),
            };
            let a = ActsAt {
                q: acts.q[s * self.k..].as_ptr(),
                k: self.k,
                d: acts.d[s * nb..].as_ptr(),
                corr: acts.corr[s * nb..].as_ptr(),
            };
            // SAFETY: `w` starts a whole row tile (`nb` blocks of `per` lines and scale
            // rows) and `a` `tt ≤ t − s` whole tokens of `acts`; that this CPU runs `L`
            // is the caller's contract.
            unsafe {
                match (tt, self.bits) {
                    (4, 8) => L::q8_0_tile::<4, 8>(w, nb, a, res),
                    (4, 5) => L::q8_0_tile::<4, 5>(w, nb, a, res),
                    (4, _) => L::q8_0_tile::<4, 4>(w, nb, a, res),
                    (_, 8) => L::q8_0_tile::<1, 8>(w, nb, a, res),
                    (_, 5) => L::q8_0_tile::<1, 5>(w, nb, a, res),
                    _ => L::q8_0_tile::<1, 4>(w, nb, a, res),
                }
            }
        };
        // SAFETY: the caller's contract on `out`.
        unsafe { super::each_tile(self.n, t, r0, r1, out, tile) }
    }

    /// The scalar level: for each row, block by block, the integer sum of the stored codes and
    /// the token's codes less the stored offset's share, then `acc = fma(sum, d_w·d_x, acc)` —
    /// the AVX-512 kernel's lanes, one at a time. A 4- or 5-bit block is decoded once for the
    /// `T` tokens; an 8-bit block's sums are formed from its lines as stored
    /// ([`row_sums_8bit`], signed codes, so without the offset's share).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // rows read best as indexed loops
    fn tile_generic<const T: usize>(&self, acts: &Acts, rt: usize, s: usize) -> [[f32; ROWS]; T] {
        let nb = self.k / QK;
        let per = lines_per_tile(self.bits);
        let shift = 8 - self.bits as i32;
        let lines = &self.lines[rt * nb * per..(rt + 1) * nb * per];
        let scales = &self.scales[rt * nb..(rt + 1) * nb];
        let mut codes = [[0u8; LANES]; 8];
        let mut acc = [[0f32; ROWS]; T];
        for (b, (l, dw)) in lines.chunks_exact(per).zip(scales).enumerate() {
            match self.bits {
                8 => {}
                5 => decode_block::<5>(l, &mut codes),
                _ => decode_block::<4>(l, &mut codes),
            }
            let dw = dw.map(|h| f16::from_bits(h).to_f32());
            for (j, acc) in acc.iter_mut().enumerate() {
                let tok = s + j;
                let at = tok * self.k + b * QK;
                let xw = &acts.wide[at..at + QK];
                // Both `Σ u·x − corr`.
                let (isum, corr) = match self.bits {
                    8 => (row_sums_8bit(std::array::from_fn(|g| &l[g].0), xw), 0),
                    _ => (
                        row_sums::<8, 4>(&codes, &acts.q[at..at + QK], xw),
                        acts.corr[tok * nb + b] >> shift,
                    ),
                };
                let dx = acts.d[tok * nb + b];
                for r in 0..ROWS {
                    acc[r] = ((isum[r] - corr) as f32).mul_add(dw[r] * dx, acc[r]);
                }
            }
        }
        acc
    }
}

/// One token's codes, scales, corrections and values, as the quantizer walks them.
type TokenParts<'a> = (((&'a mut [i8], &'a mut [f32]), &'a mut [i32]), &'a [f32]);

/// `x [t, k]` quantized per 32 values: signed codes, the scale as stored (fp16 → f32), and the
/// `128·Σq` that the unsigned weights add to each block's sum.
#[derive(Default)]
pub struct Acts {
    q: Vec<i8>,
    d: Vec<f32>,
    corr: Vec<i32>,
    /// `q` widened to 16 bits at the scalar level ([`widen`]); empty at the others.
    wide: Vec<i16>,
}

/// The codes of one 32-value block (ggml's x86 rule: `round_half_even(x·127/amax)`) into
/// `q[..32]`; returns `d` as stored (fp16 → f32) and Σq. The scalar level and the oracle of
/// every [`Level::q8_0_block`].
pub(crate) fn q8_0_block_generic(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let (d, id) = super::scales::q8_0_scale(&x[..QK]);
    let mut sum = 0i32;
    for (o, &v) in q[..QK].iter_mut().zip(x) {
        *o = (v * id).round_ties_even() as i8;
        sum += *o as i32;
    }
    (d, sum)
}

/// One block's quantization at a level.
struct Block<'a>(&'a [f32], &'a mut [i8]);

impl AtLevel for Block<'_> {
    type Out = (f32, i32);

    unsafe fn simd<L: Level>(self) -> (f32, i32) {
        // SAFETY: the caller's contract: this CPU runs `L`; blocks are whole.
        unsafe { L::q8_0_block(self.0, self.1) }
    }

    unsafe fn scalar(self) -> (f32, i32) {
        q8_0_block_generic(self.0, self.1)
    }
}

/// One token's blocks, in ggml's rule, at level `isa`.
fn quantize_token(isa: Isa, (((q, d), corr), x): TokenParts) {
    for (((xb, qb), db), cb) in x
        .chunks_exact(QK)
        .zip(q.chunks_exact_mut(QK))
        .zip(d)
        .zip(corr)
    {
        // SAFETY: callers quantize at a level this CPU runs (`matmul_at` and the decoder check
        // it); blocks are whole.
        let (d, sum) = unsafe { super::at_level(isa, Block(xb, qb)) };
        *db = d;
        *cb = 128 * sum;
    }
}

impl Acts {
    /// The values the codes stand for (`q·d`), as a product sees them: what candle's path is
    /// handed by qd-model's `ggml_numerics`, compared there.
    pub fn values(&self) -> Vec<f32> {
        self.q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.d[i / QK])
            .collect()
    }

    /// In parallel over tokens when there are several: at 512 tokens and k = 640 this pass is
    /// a sizeable part of a product.
    pub fn quantize(isa: Isa, x: &[f32], k: usize) -> Self {
        use rayon::prelude::*;
        debug_assert!(k.is_multiple_of(QK));
        let nbt = x.len() / QK;
        let (mut q, mut d, mut corr) = (vec![0i8; x.len()], vec![0f32; nbt], vec![0i32; nbt]);
        let nb = k / QK;
        if x.len() > k {
            q.par_chunks_mut(k)
                .zip(d.par_chunks_mut(nb))
                .zip(corr.par_chunks_mut(nb))
                .zip(x.par_chunks(k))
                .for_each(|p| quantize_token(isa, p));
        } else {
            // One token (generation): not worth a hand-off.
            quantize_token(isa, (((&mut q, &mut d), &mut corr), x));
        }
        let mut wide = Vec::new();
        if isa == Isa::Scalar {
            widen(&q, &mut wide);
        }
        Self { q, d, corr, wide }
    }

    /// One token, into buffers kept between calls (no allocation once they have grown).
    pub fn quantize_one(&mut self, isa: Isa, x: &[f32]) {
        debug_assert!(x.len().is_multiple_of(QK));
        let nb = x.len() / QK;
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.corr.resize(nb, 0);
        quantize_token(isa, (((&mut self.q, &mut self.d), &mut self.corr), x));
        if isa == Isa::Scalar {
            widen(&self.q, &mut self.wide);
        }
    }
}

/// Block `l`'s stored unsigned codes in the tile's lane order (`codes[g][4r + i]`: row `r`'s
/// value `4g + i`), decoded from a 4- or 5-bit tile as `tile` reads them; whole lines at a
/// time, so the compiler vectorises it.
#[inline(always)]
fn decode_block<const BITS: u32>(l: &[Line], codes: &mut [[u8; LANES]; 8]) {
    for (pair, line) in codes.chunks_exact_mut(2).zip(l) {
        let [even, odd] = pair else { unreachable!() };
        split_nibbles(&line.0, even, odd);
    }
    if BITS == 5 {
        for (g, cg) in codes.iter_mut().enumerate() {
            // Group g's high bits: one bit per lane, 8 lanes a byte.
            let m = u64::from_le_bytes(l[4].0[g * 8..g * 8 + 8].try_into().unwrap());
            for (j, c) in cg.iter_mut().enumerate() {
                *c |= (((m >> j) & 1) as u8) << 4;
            }
        }
    }
}

/// One row tile's weights: `nb` blocks of `lines_per_tile(bits)` 64-byte-aligned lines each,
/// and `nb` rows of 16 scales.
#[derive(Clone, Copy)]
pub(super) struct Weights {
    pub(super) lines: *const Line,
    pub(super) scales: *const [u16; ROWS],
}

/// Tokens' activations from the first one a tile call multiplies: per token, `k ≥ 32·nb`
/// codes, and `nb` scales and corrections.
#[derive(Clone, Copy)]
pub(super) struct ActsAt {
    pub(super) q: *const i8,
    pub(super) k: usize,
    pub(super) d: *const f32,
    pub(super) corr: *const i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Q8_0 bytes of `[n, k]` with codes and scales from a simple generator.
    fn weights(n: usize, k: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
        weights_in(n, k, seed, -128..128)
    }

    /// As [`weights`], codes drawn from `codes` (both ends included when the matrix is large).
    fn weights_in(
        n: usize,
        k: usize,
        seed: u32,
        codes: std::ops::Range<i32>,
    ) -> (Vec<u8>, Vec<f32>) {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s >> 8
        };
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..n * k / QK {
            let d = f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5);
            bytes.extend_from_slice(&d.to_bits().to_le_bytes());
            for _ in 0..QK {
                // −128 too: a legal Q8_0 code that ggml's own quantizer never writes.
                let q = (next() % codes.len() as u32) as i32 + codes.start;
                bytes.push(q as i8 as u8);
                dense.push(q as f32 * d.to_f32());
            }
        }
        (bytes, dense)
    }

    /// Against the same product in f64 over the same integers: what differs is only the order of
    /// the f32 sums, so the error is a few ulps of the sum of magnitudes.
    /// Every level this CPU runs gives the scalar level's bits.
    #[test]
    fn equals_the_f64_product_of_the_quantized_operands() {
        let cases = [
            (37, 640, 1, -128..128, 8),
            (64, 96, 5, -128..128, 8),
            (9, 2048, 4, -128..128, 8),
            (130, 640, 13, -128..128, 8),
            // A span of tokens sharing each decoded block at the scalar level, and the rest.
            (33, 640, 21, -128..128, 8),
            (33, 640, 21, -16..16, 5),
            (33, 96, 21, -8..8, 4),
            // Widened Q5_0 and Q4_0 codes, stored in 5 and 4 bits.
            (37, 640, 1, -16..16, 5),
            (130, 640, 13, -16..16, 5),
            (37, 640, 1, -8..8, 4),
            (64, 96, 5, -8..8, 4),
            // One code past 4 bits' range on either side.
            (16, 64, 4, -8..9, 5),
            (16, 64, 4, -9..8, 5),
            (16, 64, 4, -16..17, 8),
        ];
        for (n, k, t, codes, bits) in cases {
            let (w, dense) = weights_in(n, k, (n * k + t) as u32, codes.clone());
            let x: Vec<f32> = (0..t * k)
                .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
                .collect();
            let packed = PackedQ8_0::new(&w, n, k).expect("kernel applies");
            assert_eq!(packed.bits(), bits, "codes {codes:?}");
            let at = |isa: Isa| packed.matmul_at(isa, &x).expect("whole rows");
            let y = at(Isa::Scalar);
            let acts = Acts::quantize(Isa::Scalar, &x, k);
            for isa in Isa::supported() {
                let other = Acts::quantize(isa, &x, k);
                assert_eq!(other.q, acts.q, "{isa:?} activation codes");
                assert_eq!(other.corr, acts.corr, "{isa:?} activation sums");
                let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&other.d), bits(&acts.d), "{isa:?} activation scales");
                for (i, (a, b)) in at(isa).iter().zip(&y).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{isa:?} n {n} k {k} output {i}: {a} vs scalar {b}"
                    );
                }
            }
            for j in 0..t {
                for r in 0..n {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for b in 0..k / QK {
                        for i in 0..QK {
                            let xq =
                                acts.q[j * k + b * QK + i] as f64 * acts.d[j * (k / QK) + b] as f64;
                            let p = dense[r * k + b * QK + i] as f64 * xq;
                            want += p;
                            mag += p.abs();
                        }
                    }
                    let got = y[j * n + r] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * mag + 1e-30,
                        "n {n} k {k} t {t} row {r} token {j}: {got} vs {want} (mag {mag})"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let (w, _) = weights(4, 64, 1);
        assert!(PackedQ8_0::new(&w, 4, 60).is_none());
        assert!(PackedQ8_0::new(&w, 5, 64).is_none());
        let p = PackedQ8_0::new(&w, 4, 64).expect("whole blocks");
        assert!(p.matmul(&[0.0; 65]).is_none());
        for isa in Isa::ALL {
            assert_eq!(
                p.matmul_at(isa, &[0.0; 64]).is_some(),
                isa.runs_here(),
                "{isa:?}"
            );
        }
    }
}
