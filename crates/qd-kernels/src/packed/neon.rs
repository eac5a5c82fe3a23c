//! The aarch64 levels: NEON (every 64-bit Arm core: Raspberry Pi 4, Cortex-A72) and NEON with
//! the dot-product extension (`sdot`: Raspberry Pi 5, Jetson Orin, Apple Silicon, Snapdragon
//! X). A tile line of 16 rows × 4 codes is four 128-bit quarters of 4 rows; each quarter runs
//! over the row tile's blocks on its own.
//!
//! Codes are multiplied as signed bytes: codes of at most 6 bits are small positive numbers
//! (and the kernels subtract the stored offset's `Σq_x` share as the others do), while 8-bit
//! codes, stored `q + 128`, are turned back into `q` by flipping the top bit, which needs no
//! correction. Plain NEON forms each group's products with `smull`/`smlal` (two groups share a
//! 16-bit sum: `2·128·127 < 2¹⁵`) and adds pairs into 32-bit lanes with `sadalp`; the dot-product
//! level does a group in one `sdot`. The integer sums are exact, so the results are the scalar
//! level's bits. `sdot` is written as inline assembly: its intrinsic (`vdotq_s32`) is not yet
//! stable Rust.
//!
//! The activation quantizers give the scalar rules' codes and scales: `fcvtns` rounds half to
//! even like `round_ties_even`.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use super::kquant::Tile;
use super::q8_0::{lines_per_tile, ActsAt, Weights};
use super::tasks::ROWS;

/// Values per Q8_0 block.
const QK: usize = 32;

/// Plain NEON (Advanced SIMD).
pub(super) struct Neon;

/// NEON with the dot-product extension.
pub(super) struct NeonDot;

simd_level!(Neon, "neon", q8_0_quarters, kquant_quarters, false);
simd_level!(
    NeonDot,
    "neon,dotprod",
    q8_0_quarters,
    kquant_quarters,
    true
);

/// `acc + Σ_{i<4} w[r][i]·x[i]` per 32-bit lane `r` with `sdot`.
///
/// # Safety
/// The CPU has the dot-product extension.
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes only these registers; the caller's contract says the CPU
    // has it.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Two groups' sums for 4 rows: `acc + Σ_{i<4} (w0[r][i]·x0[i] + w1[r][i]·x1[i])` per lane `r`
/// with `DOT`; without it, half-row sums (`[r0 v0+v1, r0 v2+v3, r1 …]` in `acc[0]`, rows 2 and 3
/// in `acc[1]`), which [`rows_of`] adds up. Signed bytes with |w·x| ≤ 128·127.
///
/// # Safety
/// The CPU has NEON, and the dot-product extension when `DOT`.
#[inline(always)]
unsafe fn dot8<const DOT: bool>(
    acc: [int32x4_t; 2],
    w0: int8x16_t,
    x0: int8x16_t,
    w1: int8x16_t,
    x1: int8x16_t,
) -> [int32x4_t; 2] {
    // SAFETY: the caller's contract.
    unsafe {
        if DOT {
            [sdot(sdot(acc[0], w0, x0), w1, x1), acc[1]]
        } else {
            let lo = vmlal_s8(
                vmull_s8(vget_low_s8(w0), vget_low_s8(x0)),
                vget_low_s8(w1),
                vget_low_s8(x1),
            );
            let hi = vmlal_high_s8(vmull_high_s8(w0, x0), w1, x1);
            [vpadalq_s16(acc[0], lo), vpadalq_s16(acc[1], hi)]
        }
    }
}

/// The 4 rows' sums of [`dot8`]'s accumulators.
///
/// # Safety
/// The CPU has NEON.
#[inline(always)]
unsafe fn rows_of<const DOT: bool>(acc: [int32x4_t; 2]) -> int32x4_t {
    // SAFETY: the caller's contract.
    unsafe {
        if DOT {
            acc[0]
        } else {
            vpaddq_s32(acc[0], acc[1])
        }
    }
}

/// A token's 4 codes at `p`, repeated over the 16 bytes.
///
/// # Safety
/// `p` points to 4 readable bytes; the CPU has NEON.
#[inline(always)]
unsafe fn splat4(p: *const i8) -> int8x16_t {
    // SAFETY: the caller's contract.
    unsafe { vreinterpretq_s8_s32(vdupq_n_s32((p as *const i32).read_unaligned())) }
}

/// 4 scales stored as f16 bits, as f32 (`half`'s conversion is exact).
///
/// # Safety
/// `p` points to 4 readable `u16`; the CPU has NEON.
#[inline(always)]
unsafe fn scales4(p: *const u16) -> float32x4_t {
    // SAFETY: the caller's contract.
    unsafe {
        let s: [f32; 4] = std::array::from_fn(|i| f16::from_bits(*p.add(i)).to_f32());
        vld1q_f32(s.as_ptr())
    }
}

/// The Q8_0 tile, one quarter of 4 rows at a time; `res[j]` gets token `j`'s 16 rows.
///
/// # Safety
/// The CPU has NEON (and the dot-product extension when `DOT`); `w` and `a` as
/// `Level::q8_0_tile` states.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn q8_0_quarters<const T: usize, const BITS: u32, const DOT: bool>(
    w: Weights,
    nb: usize,
    a: ActsAt,
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read stays inside the blocks and tokens of the contract (`b < nb`,
    // `j < T`, `g < 8`, lines `b·per .. b·per + per`, quarter `h` of each).
    unsafe {
        let per = lines_per_tile(BITS);
        let shift = 8 - BITS as i32;
        let nibble = vdupq_n_u8(15);
        for h in 0..4 {
            let mut acc = [vdupq_n_f32(0.0); T];
            for b in 0..nb {
                let l = w.lines.add(b * per) as *const u8;
                let line = |i: usize| vld1q_u8(l.add(64 * i + 16 * h));
                let dw = scales4((w.scales.add(b) as *const u16).add(4 * h));
                let mut wq = [vdupq_n_s8(0); 8];
                if BITS == 8 {
                    for g in 0..8 {
                        // `q + 128` with its top bit flipped is `q`.
                        wq[g] = vreinterpretq_s8_u8(veorq_u8(line(g), vdupq_n_u8(0x80)));
                    }
                } else {
                    let mut u = [vdupq_n_u8(0); 8];
                    for p in 0..4 {
                        let v = line(p);
                        u[2 * p] = vandq_u8(v, nibble);
                        u[2 * p + 1] = vshrq_n_u8::<4>(v);
                    }
                    if BITS == 5 {
                        for g in 0..8 {
                            u[g] = vorrq_u8(u[g], high_bits(l.add(64 * 4), g, h));
                        }
                    }
                    for g in 0..8 {
                        wq[g] = vreinterpretq_s8_u8(u[g]);
                    }
                }
                for j in 0..T {
                    let x = a.q.add(j * a.k + b * QK);
                    let xb = |g: usize| splat4(x.add(4 * g));
                    let mut s = [vdupq_n_s32(0); 2];
                    for g in (0..8).step_by(2) {
                        s = dot8::<DOT>(s, wq[g], xb(g), wq[g + 1], xb(g + 1));
                    }
                    let mut isum = rows_of::<DOT>(s);
                    if BITS < 8 {
                        let corr = *a.corr.add(j * nb + b) >> shift;
                        isum = vsubq_s32(isum, vdupq_n_s32(corr));
                    }
                    let scale = vmulq_f32(dw, vdupq_n_f32(*a.d.add(j * nb + b)));
                    acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(isum), scale);
                }
            }
            for j in 0..T {
                vst1q_f32(res[j].as_mut_ptr().add(4 * h), acc[j]);
            }
        }
    }
}

/// Group `g`'s high bits for the 16 lanes of quarter `h` (2 bytes of the group's 64-bit mask)
/// as bytes of 0 or 16.
///
/// # Safety
/// The CPU has NEON; `masks` points to the tile's mask line.
#[inline(always)]
unsafe fn high_bits(masks: *const u8, g: usize, h: usize) -> uint8x16_t {
    // SAFETY: the mask line holds 8 groups × 8 bytes.
    unsafe {
        let m0 = *masks.add(g * 8 + 2 * h);
        let m1 = *masks.add(g * 8 + 2 * h + 1);
        // Byte j of the quarter takes mask byte j / 8, then its bit j % 8.
        let spread = vcombine_u8(vdup_n_u8(m0), vdup_n_u8(m1));
        let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(16))
    }
}

/// The K-quant tile, one quarter of 4 rows at a time; `res[j]` gets token `j`'s 16 rows.
///
/// # Safety
/// The CPU has NEON (and the dot-product extension when `DOT`); `tiles`, `aq` and `af` as
/// `Level::kquant_tile` states.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn kquant_quarters<const T: usize, const NG: usize, const DOT: bool>(
    tiles: *const Tile,
    nsb: usize,
    aq: &[i8],
    k: usize,
    af: &[[f32; 2]],
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read stays inside the tiles and tokens of the contract (`j < nsb`
    // tiles; token `jt`'s sub-block `j` inside `aq`, whose `k` codes follow; `res[j]`'s 16
    // floats).
    unsafe {
        let low = vdupq_n_u8(0x0F);
        for h in 0..4 {
            let mut acc = [vdupq_n_f32(0.0); T];
            for j in 0..nsb {
                let tile = &*tiles.add(j);
                let mut wq = [vdupq_n_s8(0); 8];
                for p in 0..4 {
                    let r = vld1q_u8(tile.q.as_ptr().add(p * 64 + 16 * h));
                    if NG == 8 {
                        wq[2 * p] = vreinterpretq_s8_u8(vandq_u8(r, low));
                        wq[2 * p + 1] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(r));
                    } else {
                        wq[p] = vreinterpretq_s8_u8(r);
                    }
                }
                let a = vld1q_f32(tile.a.as_ptr().add(4 * h));
                let b = vld1q_f32(tile.b.as_ptr().add(4 * h));
                for jt in 0..T {
                    let base = jt * k + j * 4 * NG;
                    debug_assert!(base + 4 * NG <= aq.len());
                    let act = |g: usize| splat4(aq.as_ptr().add(base + 4 * g));
                    let mut s = [vdupq_n_s32(0); 2];
                    for g in (0..NG).step_by(2) {
                        s = dot8::<DOT>(s, wq[g], act(g), wq[g + 1], act(g + 1));
                    }
                    let [dx, dxs] = af[jt * nsb + j];
                    let isum = vcvtq_f32_s32(rows_of::<DOT>(s));
                    acc[jt] = vfmaq_f32(acc[jt], vmulq_f32(a, vdupq_n_f32(dx)), isum);
                    acc[jt] = vfmsq_f32(acc[jt], b, vdupq_n_f32(dxs));
                }
            }
            for j in 0..T {
                vst1q_f32(res[j].as_mut_ptr().add(4 * h), acc[j]);
            }
        }
    }
}

/// Four vectors of 4 codes (each within ±127) as 16 bytes in order.
#[inline]
#[target_feature(enable = "neon")]
fn narrow(c: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(c[0]), vqmovn_s32(c[1]));
    let hi = vcombine_s16(vqmovn_s32(c[2]), vqmovn_s32(c[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// Q8_0 codes of one 32-value block into `q[..32]`; returns `d` as stored (fp16 → f32) and Σq.
///
/// # Safety
/// The CPU has NEON.
#[target_feature(enable = "neon")]
unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() >= QK && q.len() >= QK);
    // SAFETY: 32 values in and out (asserted above).
    unsafe {
        let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(x.as_ptr().add(4 * i)));
        let mut m = vabsq_f32(v[0]);
        for vi in &v[1..] {
            m = vmaxq_f32(m, vabsq_f32(*vi));
        }
        let amax = vmaxvq_f32(m);
        let d = f16::from_f32(amax / 127.0).to_f32();
        let id = vdupq_n_f32(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        // Round half to even, as `round_ties_even`.
        let c = v.map(|v| vcvtnq_s32_f32(vmulq_f32(v, id)));
        vst1q_s8(q.as_mut_ptr(), narrow([c[0], c[1], c[2], c[3]]));
        vst1q_s8(q.as_mut_ptr().add(16), narrow([c[4], c[5], c[6], c[7]]));
        let sum = c.iter().fold(vdupq_n_s32(0), |s, c| vaddq_s32(s, *c));
        (d, vaddvq_s32(sum))
    }
}

/// Q8_K codes of one 256-value block into `q[..256]`; returns `d` (0 for an all-zero block).
/// The value of largest magnitude, first on ties, maps to −127.
///
/// # Safety
/// The CPU has NEON.
#[target_feature(enable = "neon")]
unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32 {
    assert!(x.len() >= 256 && q.len() >= 256);
    // SAFETY: 256 values in and out (asserted above).
    unsafe {
        let load = |i: usize| vld1q_f32(x.as_ptr().add(4 * i));
        let mut m = vdupq_n_f32(0.0);
        for i in 0..64 {
            m = vmaxq_f32(m, vabsq_f32(load(i)));
        }
        let amax = vmaxvq_f32(m);
        if amax == 0.0 {
            q[..256].fill(0);
            return 0.0;
        }
        let first = x[..256]
            .iter()
            .position(|v| v.abs() == amax)
            .expect("the maximum is one of the values");
        let iscale = -127.0 / x[first];
        let s = vdupq_n_f32(iscale);
        let top = vdupq_n_s32(127);
        for i in 0..16 {
            let c: [int32x4_t; 4] = std::array::from_fn(|j| {
                vminq_s32(vcvtnq_s32_f32(vmulq_f32(s, load(4 * i + j))), top)
            });
            vst1q_s8(q.as_mut_ptr().add(16 * i), narrow(c));
        }
        1.0 / iscale
    }
}
