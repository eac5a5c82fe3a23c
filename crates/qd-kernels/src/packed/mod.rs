//! The packed integer kernels behind the fused prefill and decoder (`decode/`) and the graph
//! path's Q8_0 products: weights repacked once into tiles of 16 rows, activations quantized as
//! ggml quantizes them, and the integer sums formed exactly, at whichever level this CPU runs.
//!
//! - [`isa`] (this crate's, re-exported): the levels and the one CPU-feature probe of the
//!   workspace.
//! - [`q8_0`], [`kquant`]: one format each — its tiles, its activation quantizer, and its scalar
//!   kernel, the portable level and the oracle every SIMD level equals bit for bit (as ggml keeps
//!   a `_generic` kernel beside each SIMD one).
//! - `avx512`, `avx2`, `neon`: one instruction set each — the [`Level`] trait's tile kernels and activation
//!   quantizers for every format, in that level's instructions.
//! - `lanes`: the scalar level's integer sums in the tiles' lane order; `tasks`: how a product
//!   splits over threads.
//!
//! A new level is one file implementing [`Level`], one [`isa::Isa`] variant with its probe, and
//! one arm in each format's `dispatch` and quantizer.

/// A SIMD level from kernel bodies: `#[target_feature]` wrappers around
/// `$q8_body::<T, BITS[, $flag]>` and `$kq_body::<T, NG[, $flag]>` (bodies `#[inline(always)]`,
/// so they compile with the level's features), and its [`Level`] impl with the file's block
/// quantizers `q8_0_block` and `q8_k_block`. `avx2.rs` and `neon.rs` make two levels each from
/// one set of bodies, a flag apart (AVX-VNNI, the dot product); `avx512.rs` one.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! simd_level {
    ($level:ident, $features:literal, $q8_body:ident, $kq_body:ident $(, $flag:literal)?) => {
        impl $crate::packed::Level for $level {
            unsafe fn q8_0_tile<const T: usize, const BITS: u32>(
                w: Weights,
                nb: usize,
                a: ActsAt,
                res: &mut [[f32; ROWS]; 4],
            ) {
                #[target_feature(enable = $features)]
                unsafe fn tile<const T: usize, const BITS: u32>(
                    w: Weights,
                    nb: usize,
                    a: ActsAt,
                    res: &mut [[f32; ROWS]; 4],
                ) {
                    // SAFETY: the caller's contract (the level's features; `w` and `a` as
                    // `Level::q8_0_tile` states).
                    unsafe { $q8_body::<T, BITS $(, $flag)?>(w, nb, a, res) }
                }
                // SAFETY: the trait's contract.
                unsafe { tile::<T, BITS>(w, nb, a, res) }
            }

            unsafe fn kquant_tile<const T: usize, const NG: usize>(
                tiles: *const Tile,
                nsb: usize,
                aq: &[i8],
                k: usize,
                af: &[[f32; 2]],
                res: &mut [[f32; ROWS]; 4],
            ) {
                #[target_feature(enable = $features)]
                unsafe fn tile<const T: usize, const NG: usize>(
                    tiles: *const Tile,
                    nsb: usize,
                    aq: &[i8],
                    k: usize,
                    af: &[[f32; 2]],
                    res: &mut [[f32; ROWS]; 4],
                ) {
                    // SAFETY: the caller's contract, as `Level::kquant_tile` states.
                    unsafe { $kq_body::<T, NG $(, $flag)?>(tiles, nsb, aq, k, af, res) }
                }
                // SAFETY: the trait's contract.
                unsafe { tile::<T, NG>(tiles, nsb, aq, k, af, res) }
            }

            unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
                // SAFETY: the trait's contract (both levels of a file have its base features).
                unsafe { q8_0_block(x, q) }
            }

            unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32 {
                // SAFETY: the trait's contract.
                unsafe { q8_k_block(x, q) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub use crate::isa;
pub mod kquant;
mod lanes;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod q8_0;
pub mod scales;
pub mod tasks;

use lanes::SPAN;
use tasks::{for_row_tiles, store, SharedOut, ROWS};

use isa::Isa;

/// One SIMD level's kernels for every packed format. The functions are `unsafe` because they
/// run only where the CPU has the level's features (the caller checks [`Isa::runs_here`]) and
/// read through raw tile pointers.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
trait Level {
    /// 16 rows × `T` tokens over all `nb` blocks of one Q8_0 row tile, codes stored in `BITS`
    /// bits, into `res[..T]`.
    ///
    /// # Safety
    /// This CPU runs the level; `w` points to `nb` blocks of a row tile and `a` to `T` tokens,
    /// as [`q8_0::Weights`] and [`q8_0::ActsAt`] describe.
    unsafe fn q8_0_tile<const T: usize, const BITS: u32>(
        w: q8_0::Weights,
        nb: usize,
        a: q8_0::ActsAt,
        res: &mut [[f32; ROWS]; 4],
    );

    /// 16 rows × `T` tokens over all `nsb` sub-blocks of one K-quant row tile (`NG` groups of
    /// 4 values a sub-block: 8 for Q4_K, nibble-packed; 4 for Q6_K), into `res[..T]`.
    ///
    /// # Safety
    /// This CPU runs the level; `tiles` points to `nsb` tiles; `aq` holds `T` tokens of `k`
    /// codes and `af` their `T·nsb` factors.
    unsafe fn kquant_tile<const T: usize, const NG: usize>(
        tiles: *const kquant::Tile,
        nsb: usize,
        aq: &[i8],
        k: usize,
        af: &[[f32; 2]],
        res: &mut [[f32; ROWS]; 4],
    );

    /// One 32-value block's Q8_0 codes into `q[..32]`: `d` as stored and Σq, as
    /// [`q8_0::q8_0_block_generic`].
    ///
    /// # Safety
    /// This CPU runs the level; `x` and `q` hold at least 32 values.
    unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32);

    /// One 256-value block's Q8_K codes into `q[..256]`; `d`, as
    /// [`kquant::q8_k_block_generic`].
    ///
    /// # Safety
    /// This CPU runs the level; `x` and `q` hold at least 256 values.
    unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32;
}

/// One operation at a level: `simd::<L>()` with a SIMD level's kernels, `scalar()` with the
/// oracle's.
trait AtLevel {
    type Out;

    /// # Safety
    /// This CPU runs `L`, and the operation's own contract holds.
    unsafe fn simd<L: Level>(self) -> Self::Out;

    /// # Safety
    /// The operation's own contract holds.
    unsafe fn scalar(self) -> Self::Out;
}

/// Runs `op` at level `isa`: the one place that maps levels to their kernels.
///
/// # Safety
/// This CPU runs `isa`, and `op`'s own contract holds.
unsafe fn at_level<A: AtLevel>(isa: Isa, op: A) -> A::Out {
    #[cfg(target_arch = "aarch64")]
    use neon::{Neon, NeonDot};
    #[cfg(target_arch = "x86_64")]
    use {avx2::Avx2, avx2::AvxVnni, avx512::Avx512};
    match isa {
        // SAFETY: the caller's contract, which includes that this CPU runs `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { op.simd::<Avx512>() },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => unsafe { op.simd::<AvxVnni>() },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { op.simd::<Avx2>() },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => unsafe { op.simd::<NeonDot>() },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { op.simd::<Neon>() },
        // SAFETY: the caller's contract.
        _ => unsafe { op.scalar() },
    }
}

/// What a packed format gives the product code all formats share.
trait Packed: Sync + Sized {
    /// Activations quantized for this format.
    type Acts: Sync;

    fn n(&self) -> usize;

    fn k(&self) -> usize;

    /// `x [t, k]` quantized for this format at level `isa` (which this CPU runs).
    fn quantize(&self, isa: Isa, x: &[f32]) -> Self::Acts;

    /// Row tiles `r0..r1` of `y [t, n]` for `t` tokens of `acts`, through level `L`'s tile.
    ///
    /// # Safety
    /// As [`Packed::dispatch`], with `L` a level this CPU runs.
    unsafe fn row_tiles<L: Level>(
        &self,
        acts: &Self::Acts,
        t: usize,
        r0: usize,
        r1: usize,
        out: &SharedOut,
    );

    /// Row tile `rt` × tokens `s .. s + T` of `acts` at the scalar level, the oracle: each
    /// (sub-)block decoded once for the `T` tokens, each token's sums over them in order.
    fn tile_generic<const T: usize>(
        &self,
        acts: &Self::Acts,
        rt: usize,
        s: usize,
    ) -> [[f32; ROWS]; T];

    /// Row tiles `r0..r1` at the scalar level: [`Packed::tile_generic`] for `SPAN` tokens at
    /// a time (decoding shared), the rest one by one.
    ///
    /// # Safety
    /// As [`Packed::dispatch`].
    unsafe fn row_tiles_generic(
        &self,
        acts: &Self::Acts,
        t: usize,
        r0: usize,
        r1: usize,
        out: &SharedOut,
    ) {
        for rt in r0..r1 {
            let rows = ROWS.min(self.n() - rt * ROWS);
            let mut s = 0;
            while s < t {
                // Both stores: tokens `s .. s + T ≤ t` and rows `16·rt .. 16·rt + rows` lie
                // inside `out`'s `t·n` floats, and this task alone writes row tile `rt`.
                if t - s >= SPAN {
                    let res = self.tile_generic::<SPAN>(acts, rt, s);
                    // SAFETY: as said above.
                    unsafe { store(out, &res, s, self.n(), rt, rows) };
                    s += SPAN;
                } else {
                    let res = self.tile_generic::<1>(acts, rt, s);
                    // SAFETY: as said above.
                    unsafe { store(out, &res, s, self.n(), rt, rows) };
                    s += 1;
                }
            }
        }
    }

    /// Row tiles `r0..r1` of `y [t, n]` at level `isa`.
    ///
    /// # Safety
    /// This CPU runs `isa`; `acts` holds `t` tokens of `k` values quantized for this format;
    /// `out` points to `t·n` floats whose row tiles `r0..r1` no other thread writes meanwhile.
    unsafe fn dispatch(
        &self,
        isa: Isa,
        acts: &Self::Acts,
        t: usize,
        r0: usize,
        r1: usize,
        out: &SharedOut,
    ) {
        struct Tiles<'a, P: Packed> {
            p: &'a P,
            acts: &'a P::Acts,
            t: usize,
            r0: usize,
            r1: usize,
            out: &'a SharedOut,
        }
        impl<P: Packed> AtLevel for Tiles<'_, P> {
            type Out = ();
            unsafe fn simd<L: Level>(self) {
                // SAFETY: the caller's contract.
                unsafe {
                    self.p
                        .row_tiles::<L>(self.acts, self.t, self.r0, self.r1, self.out)
                }
            }
            unsafe fn scalar(self) {
                // SAFETY: the caller's contract.
                unsafe {
                    self.p
                        .row_tiles_generic(self.acts, self.t, self.r0, self.r1, self.out)
                }
            }
        }
        let op = Tiles {
            p: self,
            acts,
            t,
            r0,
            r1,
            out,
        };
        // SAFETY: the caller's contract.
        unsafe { at_level(isa, op) }
    }
}

/// The SIMD levels' walk over a product: each row tile `r0..r1`, its tokens in groups of 4 (the
/// rest one by one); `tile(rt, s, tt, res)` fills `res[..tt]` with tokens `s..s + tt` of row
/// tile `rt`, which are then stored into `out`.
///
/// # Safety
/// `out` points to `t·n` floats whose row tiles `r0..r1` no other thread writes meanwhile.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn each_tile(
    n: usize,
    t: usize,
    r0: usize,
    r1: usize,
    out: &SharedOut,
    mut tile: impl FnMut(usize, usize, usize, &mut [[f32; ROWS]; 4]),
) {
    let mut res = [[0f32; ROWS]; 4];
    for rt in r0..r1 {
        let rows = ROWS.min(n - rt * ROWS);
        let mut s = 0;
        while s < t {
            let tt = if t - s >= 4 { 4 } else { 1 };
            tile(rt, s, tt, &mut res);
            // SAFETY: tokens `s..s + tt` and rows `16·rt .. 16·rt + rows` lie inside `out`'s
            // `t·n` floats, and this task alone writes row tile `rt`.
            unsafe { store(out, &res[..tt], s, n, rt, rows) };
            s += tt;
        }
    }
}

/// `y [t, n] = x [t, k] · Wᵀ` at level `isa`, over row tiles in parallel; `None` where this CPU
/// does not run `isa` or `x` is not whole rows of `k`.
fn matmul_at<P: Packed>(p: &P, isa: Isa, x: &[f32]) -> Option<Vec<f32>> {
    if !isa.runs_here() || !x.len().is_multiple_of(p.k()) {
        return None;
    }
    let t = x.len() / p.k();
    let acts = p.quantize(isa, x);
    let mut y = vec![0f32; t * p.n()];
    let out = SharedOut(y.as_mut_ptr());
    // SAFETY: `acts` holds `t` tokens of `k` quantized for this format, `y` holds `t·n`
    // floats, the tasks write disjoint row tiles, and this CPU runs `isa` (checked above).
    for_row_tiles(p.n(), |r0, r1| unsafe {
        p.dispatch(isa, &acts, t, r0, r1, &out)
    });
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::isa::Isa;

    /// Scripts that run the tests on emulated CPUs (`tools/arm-check.sh`) name the level each
    /// CPU model must be detected at, so that a probe gone wrong cannot leave the SIMD levels
    /// untested while every test passes.
    #[test]
    fn detects_the_level_a_script_expects() {
        if let Ok(want) = std::env::var("QAT_DISTILL_EXPECT_ISA") {
            assert_eq!(Isa::detected(), Isa::parse(&want).unwrap(), "{want}");
        }
    }
}
