//! The fake-quant kernels behind quantization-aware training: `dequantize(quantize(x))` for the
//! block formats the trainer fakes, at whichever level this CPU runs, each level bit-identical
//! with the scalar oracle (and so with ggml's reference quantizers, which qd-quant's tests
//! compare it with).
//!
//! - [`symmetric`]: Q4_0, Q5_0, Q8_0 — the scalar oracle and one SIMD body.
//! - [`affine`], `affine_simd`: Q4_K, Q5_K's `make_qkx2_quants` fits, sixteen sub-blocks a
//!   time — the scalar oracle, and one SIMD body.
//! - `vector`: the sixteen-lane vector those bodies are written in; `avx512`, `avx2`, `neon`:
//!   one instruction set each, implementing it (one `zmm`, two `ymm`, four `q` registers).
//!
//! The kernels take a format's numbers ([`SymmetricGrid`], [`AffineSearch`], [`StoredGrid`]),
//! never its name: which format has which numbers is qd-quant's knowledge, so one type
//! (`qd_gguf::GgmlType`, and qd-quant's quantizable subset of it) names a block format.
//!
//! The levels are [`Isa`]'s: AVX-512 VNNI runs the AVX-512 body, AVX2 and AVX-VNNI the AVX2
//! one, NEON and NEON + dot product the NEON one, scalar the oracle. `QAT_DISTILL_ISA` lowers
//! them as it lowers the packed kernels. A new level is one file implementing `F32x16` and one
//! `fake_level!` line, plus an arm in [`symmetric_at`] and [`affine_sets_at`].

/// Implements [`vector::F32x16`] methods whose body is one expression of intrinsics over the
/// arguments, each in an `unsafe` block justified by the trait's contract.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! ops {
    ($(fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block)*) => {
        $(
            #[inline(always)]
            unsafe fn $name($($a: $t),*) $(-> $r)? {
                // SAFETY: the trait's contract: this CPU runs the implementing level.
                unsafe { $body }
            }
        )*
    };
}

pub mod affine;
mod affine_simd;
pub mod symmetric;
mod vector;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use affine::{AffineSearch, StoredGrid};
pub use symmetric::SymmetricGrid;

use crate::isa::Isa;

/// A SIMD level's `#[target_feature]` entry points, instantiating the generic bodies with the
/// level's vector type `$v` and features.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! fake_level {
    ($v:ty, $features:literal) => {
        /// [`symmetric::simd`](crate::fake::symmetric::simd) at this level.
        ///
        /// # Safety
        /// This CPU has the level's features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn symmetric(g: crate::fake::SymmetricGrid, x: &[f32], y: &mut [f32]) {
            // SAFETY: the caller's contract.
            unsafe { crate::fake::symmetric::simd::<$v>(g, x, y) }
        }

        /// [`affine_simd::simd`](crate::fake::affine_simd) at this level.
        ///
        /// # Safety
        /// This CPU has the level's features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn affine_sets<const S: usize>(
            x: &[f32],
            y: &mut [f32],
            search: crate::fake::AffineSearch,
            grid: &impl crate::fake::StoredGrid,
        ) {
            // SAFETY: the caller's contract.
            unsafe { crate::fake::affine_simd::simd::<$v, S>(x, y, search, grid) }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use fake_level;

/// `dequantize(quantize(x))` of whole 32-value blocks of the format `g` describes, at the
/// active level.
///
/// # Panics
/// If `x` and `y` differ in length or are not whole blocks.
pub fn symmetric(g: SymmetricGrid, x: &[f32], y: &mut [f32]) {
    symmetric_at(Isa::active(), g, x, y)
}

/// As [`symmetric`] at level `isa`, or the best level this CPU runs below it (tests run each).
///
/// # Panics
/// If `x` and `y` differ in length or are not whole blocks.
pub fn symmetric_at(isa: Isa, g: SymmetricGrid, x: &[f32], y: &mut [f32]) {
    assert!(x.len() == y.len() && x.len().is_multiple_of(32));
    match Isa::best_up_to(isa) {
        // SAFETY: `best_up_to` returns a level this CPU runs; lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::symmetric(g, x, y) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni | Isa::Avx2 => unsafe { avx2::symmetric(g, x, y) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot | Isa::Neon => unsafe { neon::symmetric(g, x, y) },
        _ => symmetric::scalar(g, x, y),
    }
}

/// Fake-quant of `2·S` consecutive 256-value super-blocks of a K-quant (`x.len() == y.len() ==
/// 512·S`) fitted with `search` and stored as `grid` packs them, at the active level. The `S`
/// sets of 16 sub-blocks are searched together, hiding each other's latency.
///
/// # Panics
/// If the lengths are not `512·S`.
pub fn affine_sets<const S: usize>(
    x: &[f32],
    y: &mut [f32],
    search: AffineSearch,
    grid: &impl StoredGrid,
) {
    affine_sets_at::<S>(Isa::active(), x, y, search, grid)
}

/// As [`affine_sets`] at level `isa`, or the best level this CPU runs below it.
///
/// # Panics
/// If the lengths are not `512·S`.
pub fn affine_sets_at<const S: usize>(
    isa: Isa,
    x: &[f32],
    y: &mut [f32],
    search: AffineSearch,
    grid: &impl StoredGrid,
) {
    assert!(x.len() == 512 * S && y.len() == x.len());
    match Isa::best_up_to(isa) {
        // SAFETY: `best_up_to` returns a level this CPU runs; lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::affine_sets::<S>(x, y, search, grid) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni | Isa::Avx2 => unsafe { avx2::affine_sets::<S>(x, y, search, grid) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot | Isa::Neon => unsafe { neon::affine_sets::<S>(x, y, search, grid) },
        _ => affine::scalar::<S>(x, y, search, grid),
    }
}

#[cfg(test)]
mod tests;
