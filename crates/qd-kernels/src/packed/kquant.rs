//! Q4_K and Q6_K weights × Q8_K activations in packed tiles, at every level of `isa` (the SIMD
//! ones in `avx512.rs` and `avx2.rs`; the scalar one here, the portable level and the oracle,
//! bit-identical), forming llama.cpp's integer sums
//! for the teacher's K-quant tensors (its attention outputs and FFN down-projections). The fused
//! prefill and decoder (`decode/`) run them through it; candle's graph path (training, `eval
//! --graph`) keeps candle's own repacked kernels (docs/performance.md compares both, measured
//! by `benches/kquant_matmul.rs`).
//!
//! Both formats are affine per sub-block: a value is `a·q − b` with unsigned codes `q` (Q4_K:
//! `a = d·scale`, `b = dmin·min` per 32 values, `q` in 0..16; Q6_K: `a = d·scale`, `b = 32·a`
//! per 16 values, `q` in 0..64). So one kernel serves both: `vpdpbusd` multiplies the unsigned
//! codes by the signed activation codes exactly, and each sub-block adds
//! `d_x·(a·Σq·q_x − b·Σq_x)`. Activations are quantized as ggml's `quantize_row_q8_K_ref`
//! (one scale per 256 values), so the integer sums are those llama.cpp forms; only the order of
//! the f32 sums differs.
//!
//! Weights are repacked once into tiles of 16 rows × one sub-block: `a` and `b` as f32 and the
//! codes as `[group of 4][row][4]` bytes (Q6_K) or, for Q4_K, two groups per byte as nibbles —
//! 384 bytes per tile either way.

use half::f16;
use qd_gguf::GgmlType;

use super::isa::Isa;
use super::lanes::{row_sums, split_nibbles, widen, LANES};
use super::tasks::{SharedOut, ROWS};
use super::{AtLevel, Level, Packed};

const QK_K: usize = 256;

/// The K-quant block types this kernel runs: Q4_K and Q6_K (`PackedKQuant::new` admits no
/// other, so the helpers below read "not Q4_K" as Q6_K).
fn runs(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4K | GgmlType::Q6K)
}

/// Values per sub-block (one `a`, `b`): 32 for Q4_K, 16 for Q6_K.
fn group(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4K => 32,
        _ => 16,
    }
}

/// Sub-block `j` of a block: `(a, b)` and its codes, as ggml's `dequantize_row_*` reads them.
fn decode(ty: GgmlType, blk: &[u8], j: usize, codes: &mut [u8]) -> (f32, f32) {
    let f16_at = |o: usize| f16::from_bits(u16::from_le_bytes([blk[o], blk[o + 1]])).to_f32();
    match ty {
        GgmlType::Q4K => {
            let (d, dmin, sc, qs) = (f16_at(0), f16_at(2), &blk[4..16], &blk[16..144]);
            let (s, m) = if j < 4 {
                (sc[j] & 63, sc[j + 4] & 63)
            } else {
                (
                    (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4),
                    (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
                )
            };
            for (i, c) in codes.iter_mut().enumerate() {
                let byte = qs[32 * (j / 2) + i];
                *c = if j.is_multiple_of(2) {
                    byte & 0xF
                } else {
                    byte >> 4
                };
            }
            (d * s as f32, dmin * m as f32)
        }
        _ => {
            let (ql, qh, sc, d) = (&blk[..128], &blk[128..192], &blk[192..208], f16_at(208));
            for (i, c) in codes.iter_mut().enumerate() {
                let v = 16 * j + i;
                let (h, w) = (v / 128, v % 128);
                let (quarter, l) = (w / 32, w % 32);
                let lo = ql[64 * h + l + 32 * (quarter & 1)];
                let nibble = if quarter >= 2 { lo >> 4 } else { lo & 0xF };
                *c = nibble | (((qh[32 * h + l] >> (2 * quarter)) & 3) << 4);
            }
            let a = d * sc[j] as i8 as f32;
            (a, 32.0 * a)
        }
    }
}

/// One sub-block of 16 rows.
#[repr(C, align(64))]
#[derive(Clone)]
pub(super) struct Tile {
    pub(super) a: [f32; ROWS],
    pub(super) b: [f32; ROWS],
    pub(super) q: [u8; 256],
}

/// A Q4_K or Q6_K matrix `[n, k]` repacked for the kernel.
pub struct PackedKQuant {
    kind: GgmlType,
    n: usize,
    k: usize,
    /// `[n.div_ceil(16)][k / group]`; rows past `n` are zero.
    tiles: Vec<Tile>,
}

impl PackedKQuant {
    /// Repacks the bytes of `W [n, k]` (the same tiles for every level); `None` where the
    /// kernel cannot run (a type other than Q4_K and Q6_K, `k` not a multiple of 256, or a
    /// byte count that does not match).
    pub fn new(kind: GgmlType, w: &[u8], n: usize, k: usize) -> Option<Self> {
        use rayon::prelude::*;
        if !runs(kind)
            || k == 0
            || !k.is_multiple_of(QK_K)
            || w.len() != n * (k / QK_K) * kind.type_size()
        {
            return None;
        }
        let g = group(kind);
        let (nsb, per_block) = (k / g, QK_K / g);
        let empty = Tile {
            a: [0.0; ROWS],
            b: [0.0; ROWS],
            q: [0; 256],
        };
        let mut tiles = vec![empty; n.div_ceil(ROWS) * nsb];
        let bb = kind.type_size();
        tiles
            .par_chunks_mut(nsb)
            .enumerate()
            .for_each(|(rt, row_tiles)| {
                let mut codes = [0u8; 32];
                for (j, tile) in row_tiles.iter_mut().enumerate() {
                    for r in 0..ROWS.min(n - rt * ROWS) {
                        let off = ((rt * ROWS + r) * (k / QK_K) + j / per_block) * bb;
                        let (a, b) =
                            decode(kind, &w[off..off + bb], j % per_block, &mut codes[..g]);
                        tile.a[r] = a;
                        tile.b[r] = b;
                        for (i, &c) in codes[..g].iter().enumerate() {
                            match kind {
                                // Groups 2p and 2p+1 share register p: low and high nibbles.
                                GgmlType::Q4K => {
                                    let (grp, e) = (i / 4, i % 4);
                                    tile.q[(grp / 2) * 64 + r * 4 + e] |= c << (4 * (grp % 2));
                                }
                                _ => tile.q[(i / 4) * 64 + r * 4 + i % 4] = c,
                            }
                        }
                    }
                }
            });
        Some(Self { kind, n, k, tiles })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// The block type: Q4_K or Q6_K.
    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// `y[16·r0 ..] = W · x` over row tiles `r0..r1` for one token quantized by
    /// [`Acts::quantize_one`] for this matrix's kind.
    ///
    /// # Safety
    /// This CPU runs `isa`; `acts` holds one token of `k` values quantized for `self.kind()`;
    /// `y` points to `n` floats of which no other thread writes rows `16·r0 .. 16·r1`
    /// meanwhile.
    pub unsafe fn matvec_tiles(&self, isa: Isa, acts: &Acts, r0: usize, r1: usize, y: *mut f32) {
        debug_assert_eq!(acts.q.len(), self.k);
        debug_assert_eq!(acts.f.len(), self.k / group(self.kind));
        // SAFETY: the caller's contract.
        unsafe { self.dispatch(isa, acts, 1, r0, r1, &SharedOut(y)) }
    }

    /// `y [t, n] = x [t, k] · Wᵀ` at [`Isa::active`]'s level; `None` if `x` is not whole
    /// rows of `k`.
    pub fn matmul(&self, x: &[f32]) -> Option<Vec<f32>> {
        self.matmul_at(Isa::active(), x)
    }

    /// As [`PackedKQuant::matmul`] at level `isa`; `None` also where this CPU does not run it.
    pub fn matmul_at(&self, isa: Isa, x: &[f32]) -> Option<Vec<f32>> {
        super::matmul_at(self, isa, x)
    }
}

impl Packed for PackedKQuant {
    type Acts = Acts;

    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn quantize(&self, isa: Isa, x: &[f32]) -> Acts {
        Acts::quantize(isa, x, group(self.kind))
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
        let nsb = self.k / group(self.kind);
        let tile = |rt: usize, s: usize, tt: usize, res: &mut [[f32; ROWS]; 4]| {
            let tiles = self.tiles[rt * nsb..(rt + 1) * nsb].as_ptr();
            let (q, f) = (&acts.q[s * self.k..], &acts.f[s * nsb..]);
            // SAFETY: `tiles` starts row tile `rt`'s `nsb` tiles, and `tt` tokens of codes
            // and factors remain from `s`; that this CPU runs `L` is the caller's contract.
            unsafe {
                match (self.kind, tt) {
                    (GgmlType::Q4K, 4) => L::kquant_tile::<4, 8>(tiles, nsb, q, self.k, f, res),
                    (GgmlType::Q4K, _) => L::kquant_tile::<1, 8>(tiles, nsb, q, self.k, f, res),
                    (_, 4) => L::kquant_tile::<4, 4>(tiles, nsb, q, self.k, f, res),
                    (_, _) => L::kquant_tile::<1, 4>(tiles, nsb, q, self.k, f, res),
                }
            }
        };
        // SAFETY: the caller's contract on `out`.
        unsafe { super::each_tile(self.n, t, r0, r1, out, tile) }
    }

    /// The scalar level: per row and sub-block, the integer sum `Σ q_w·q_x` of the stored codes
    /// and the token's, then `acc = fma(a·d_x, sum, acc)` and `acc = fma(−b, d_x·Σq_x, acc)` —
    /// the AVX-512 kernel's lanes, one at a time ([`PackedKQuant::sub_blocks`]).
    fn tile_generic<const T: usize>(&self, acts: &Acts, rt: usize, s: usize) -> [[f32; ROWS]; T] {
        match self.kind {
            GgmlType::Q4K => self.sub_blocks::<T, 8>(acts, rt, s),
            _ => self.sub_blocks::<T, 4>(acts, rt, s),
        }
    }
}

impl PackedKQuant {
    /// [`Packed::tile_generic`] for sub-blocks of `NG` groups of 4 (8: Q4_K, 4: Q6_K): each
    /// sub-block decoded once for the `T` tokens, each token's sums over them in order.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // rows read best as indexed loops
    fn sub_blocks<const T: usize, const NG: usize>(
        &self,
        acts: &Acts,
        rt: usize,
        s: usize,
    ) -> [[f32; ROWS]; T] {
        let g = 4 * NG;
        let nsb = self.k / g;
        let tiles = &self.tiles[rt * nsb..(rt + 1) * nsb];
        let mut nibbles = [[0u8; LANES]; 8];
        let mut acc = [[0f32; ROWS]; T];
        for (j, tile) in tiles.iter().enumerate() {
            let (lines, _) = tile.q.as_chunks::<LANES>();
            // Group `grp` (values 4·grp .. 4·grp + 4 of each row) in lane order: Q4_K's groups
            // 2p and 2p + 1 are line p's nibbles, Q6_K's a line each.
            let codes: &[[u8; LANES]; NG] = if NG == 8 {
                for (pair, line) in nibbles.chunks_exact_mut(2).zip(lines) {
                    let [even, odd] = pair else { unreachable!() };
                    split_nibbles(line, even, odd);
                }
                nibbles[..NG].try_into().unwrap()
            } else {
                lines[..NG].try_into().unwrap()
            };
            for (jt, acc) in acc.iter_mut().enumerate() {
                let tok = s + jt;
                let at = tok * self.k + j * g;
                let (xq, xw) = (&acts.q[at..at + g], &acts.wide[at..at + g]);
                let isum = if NG == 8 {
                    row_sums::<NG, 8>(codes, xq, xw)
                } else {
                    row_sums::<NG, 2>(codes, xq, xw)
                };
                let [dx, dxs] = acts.f[tok * nsb + j];
                for r in 0..ROWS {
                    acc[r] = (tile.a[r] * dx).mul_add(isum[r] as f32, acc[r]);
                    acc[r] = (-tile.b[r]).mul_add(dxs, acc[r]);
                }
            }
        }
        acc
    }
}

/// One 256-value block's codes, factors and values, as the quantizer walks them.
type BlockParts<'a> = ((&'a mut [i8], &'a mut [[f32; 2]]), &'a [f32]);

/// `x [t, k]` as ggml's Q8_K: signed codes, and per token and sub-block of `group` values the
/// factors `(d_x, d_x·Σq_x)` the kernel scales the sub-block's two sums by.
#[derive(Default)]
pub struct Acts {
    q: Vec<i8>,
    f: Vec<[f32; 2]>,
    /// `q` widened to 16 bits at the scalar level ([`widen`]); empty at the others.
    wide: Vec<i16>,
}

/// The Q8_K codes of one 256-value block (`quantize_row_q8_K_ref`'s rule) into `q[..256]`;
/// returns `d` (0 for an all-zero block). The scalar level and the oracle of
/// every [`Level::q8_k_block`].
pub(crate) fn q8_k_block_generic(x: &[f32], q: &mut [i8]) -> f32 {
    match super::scales::q8_k_scale(&x[..QK_K]) {
        Some((iscale, d)) => {
            for (o, &v) in q[..QK_K].iter_mut().zip(x) {
                *o = (iscale * v).round_ties_even().min(127.0) as i8;
            }
            d
        }
        None => {
            q[..QK_K].fill(0);
            0.0
        }
    }
}

/// One block's quantization at a level.
struct Block<'a>(&'a [f32], &'a mut [i8]);

impl AtLevel for Block<'_> {
    type Out = f32;

    unsafe fn simd<L: Level>(self) -> f32 {
        // SAFETY: the caller's contract: this CPU runs `L`; blocks are whole.
        unsafe { L::q8_k_block(self.0, self.1) }
    }

    unsafe fn scalar(self) -> f32 {
        q8_k_block_generic(self.0, self.1)
    }
}

/// One 256-value block in ggml's rule at level `isa`, with its sub-block factors for groups
/// of `group`.
fn quantize_block(isa: Isa, ((qb, fb), xb): BlockParts, group: usize) {
    // SAFETY: callers quantize at a level this CPU runs (`matmul_at` and the decoder check it);
    // blocks are whole.
    let d = unsafe { super::at_level(isa, Block(xb, qb)) };
    for (g, out) in qb.chunks_exact(group).zip(fb) {
        let sum: i32 = g.iter().map(|&c| c as i32).sum();
        *out = [d, d * sum as f32];
    }
}

impl Acts {
    /// The values the codes stand for (`q·d_x` per sub-block), as a product sees them:
    /// compared with qd-model's `ggml_numerics` there.
    pub fn values(&self) -> Vec<f32> {
        let group = self.q.len() / self.f.len().max(1);
        self.q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.f[i / group][0])
            .collect()
    }

    /// In parallel over 256-value blocks when there are many.
    pub fn quantize(isa: Isa, x: &[f32], group: usize) -> Self {
        use rayon::prelude::*;
        let mut q = vec![0i8; x.len()];
        let mut f = vec![[0f32; 2]; x.len() / group];
        let per = QK_K / group;
        if x.len() > 4 * QK_K * 8 {
            q.par_chunks_mut(QK_K)
                .zip(f.par_chunks_mut(per))
                .zip(x.par_chunks(QK_K))
                .with_min_len(16)
                .for_each(|p| quantize_block(isa, p, group));
        } else {
            // A token or two (generation): not worth a hand-off.
            q.chunks_mut(QK_K)
                .zip(f.chunks_mut(per))
                .zip(x.chunks(QK_K))
                .for_each(|p| quantize_block(isa, p, group));
        }
        let mut wide = Vec::new();
        if isa == Isa::Scalar {
            widen(&q, &mut wide);
        }
        Self { q, f, wide }
    }

    /// One token for weights of `kind` (Q4_K or Q6_K), into buffers kept between calls (no
    /// allocation once they have grown).
    pub fn quantize_one(&mut self, isa: Isa, x: &[f32], kind: GgmlType) {
        debug_assert!(runs(kind), "{kind} is not a type of this kernel");
        let group = group(kind);
        debug_assert!(x.len().is_multiple_of(QK_K));
        self.q.resize(x.len(), 0);
        self.f.resize(x.len() / group, [0.0; 2]);
        self.q
            .chunks_mut(QK_K)
            .zip(self.f.chunks_mut(QK_K / group))
            .zip(x.chunks(QK_K))
            .for_each(|p| quantize_block(isa, p, group));
        if isa == Isa::Scalar {
            widen(&self.q, &mut self.wide);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(seed: u32) -> impl FnMut() -> u32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s >> 8
        }
    }

    /// Random Q4_K/Q6_K bytes of `[n, k]` (any bit pattern is a valid block, save fp16 scales,
    /// which are set to small normal values) and their dequantized values as qd-quant reads them.
    fn weights(kind: GgmlType, n: usize, k: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
        let mut next = gen(seed);
        let bb = kind.type_size();
        let mut bytes: Vec<u8> = (0..n * k / QK_K * bb).map(|_| next() as u8).collect();
        for blk in bytes.chunks_exact_mut(bb) {
            let mut scale = || {
                f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5)
                    .to_bits()
                    .to_le_bytes()
            };
            match kind {
                GgmlType::Q4K => {
                    blk[0..2].copy_from_slice(&scale());
                    blk[2..4].copy_from_slice(&scale());
                }
                _ => blk[208..210].copy_from_slice(&scale()),
            }
        }
        let dense = qd_quant::dequantize(kind, &bytes).expect("whole blocks");
        (bytes, dense)
    }

    /// Against the f64 product of the dequantized weights (qd-quant's port of ggml's
    /// `dequantize_row_*`) and the Q8_K activations: only the f32 summation order differs.
    /// Every level this CPU runs gives the scalar level's bits.
    #[test]
    fn equals_the_f64_product_of_the_quantized_operands() {
        for kind in [GgmlType::Q4K, GgmlType::Q6K] {
            for (n, k, t) in [
                (37, 256, 1),
                (16, 1024, 5),
                (9, 2048, 4),
                (130, 1024, 13),
                (33, 512, 21),
            ] {
                let (w, dense) = weights(kind, n, k, (n * k + t) as u32);
                let x: Vec<f32> = (0..t * k)
                    .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
                    .collect();
                let packed = PackedKQuant::new(kind, &w, n, k).expect("kernel applies");
                let at = |isa: Isa| packed.matmul_at(isa, &x).expect("whole rows");
                let y = at(Isa::Scalar);
                for isa in Isa::supported() {
                    let acts = Acts::quantize(isa, &x, group(kind));
                    let scalar = Acts::quantize(Isa::Scalar, &x, group(kind));
                    assert_eq!(acts.q, scalar.q, "{isa:?} activation codes");
                    let bits =
                        |f: &[[f32; 2]]| f.iter().map(|p| p.map(f32::to_bits)).collect::<Vec<_>>();
                    assert_eq!(bits(&acts.f), bits(&scalar.f), "{isa:?} activation factors");
                    let yi = at(isa);
                    for (i, (a, b)) in yi.iter().zip(&y).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{kind:?} {isa:?} output {i}: {a} vs scalar {b}"
                        );
                    }
                }
                let acts = Acts::quantize(Isa::Scalar, &x, group(kind));
                let g = group(kind);
                for j in 0..t {
                    for r in 0..n {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for i in 0..k {
                            let xq = acts.q[j * k + i] as f64 * acts.f[(j * k + i) / g][0] as f64;
                            let p = dense[r * k + i] as f64 * xq;
                            want += p;
                            mag += p.abs();
                        }
                        let got = y[j * n + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * mag + 1e-30,
                            "{kind:?} n {n} k {k} t {t} row {r} token {j}: {got} vs {want} (mag {mag})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let (w, _) = weights(GgmlType::Q4K, 4, 256, 1);
        assert!(PackedKQuant::new(GgmlType::Q4K, &w, 4, 128).is_none());
        assert!(PackedKQuant::new(GgmlType::Q4K, &w, 5, 256).is_none());
        assert!(PackedKQuant::new(GgmlType::Q6K, &w, 4, 256).is_none());
        let p = PackedKQuant::new(GgmlType::Q4K, &w, 4, 256).expect("whole blocks");
        assert!(p.matmul(&[0.0; 257]).is_none());
        for isa in Isa::ALL {
            let ran = p.matmul_at(isa, &[0.0; 256]);
            assert_eq!(ran.is_some(), isa.runs_here(), "{isa:?}");
        }
    }
}
