//! The AVX2 level (with FMA and F16C: Intel since Haswell, AMD since Zen 1) and its AVX-VNNI
//! flavour (Intel since Alder Lake and Sapphire Rapids, AMD since Zen 5). A tile line of 16
//! rows × 4 codes is two 256-bit halves of 8 rows; each half runs over the row tile's blocks on
//! its own, so a token's 8 weight registers and 4 accumulators fit the 16 `ymm` registers.
//!
//! A group of 4 codes meets a token's 4 codes in one `vpdpbusd` (AVX-VNNI) or in
//! `vpmaddubsw` + `vpmaddwd` (AVX2). `vpmaddubsw` saturates its 16-bit pair sums, so the plain
//! AVX2 kernels keep every pair sum in range: codes of at most 6 bits are small enough (two
//! groups may even share one 16-bit sum: `2·2·63·128 < 2¹⁵`), and 8-bit codes are multiplied
//! in sign-magnitude form (`|w|·(x·sign w)`, as ggml's AVX2 `mul_sum_i8_pairs` does), which
//! needs no `128·Σq_x` correction. Every integer sum is exact, so the results are the scalar
//! level's bits (the kernels' tests check it).
//!
//! The activation quantizers give the scalar rules' codes and scales: `vcvtps2dq` rounds half to
//! even like `round_ties_even`, and the codes are packed to bytes with saturating packs that
//! never saturate (|code| ≤ 127).

use std::arch::x86_64::*;

use half::f16;

use super::kquant::Tile;
use super::q8_0::{lines_per_tile, ActsAt, Weights};
use super::tasks::ROWS;

/// Values per Q8_0 block.
const QK: usize = 32;

/// The AVX2 level: `vpmaddubsw` + `vpmaddwd`.
pub(super) struct Avx2;

/// The AVX2 level with AVX-VNNI's `vpdpbusd`.
pub(super) struct AvxVnni;

simd_level!(Avx2, "avx2,fma,f16c", q8_0_halves, kquant_halves, false);
simd_level!(
    AvxVnni,
    "avx2,fma,f16c,avxvnni",
    q8_0_halves,
    kquant_halves,
    true
);

/// `acc + Σ_{i<4} (u0[r][i]·x0[i] + u1[r][i]·x1[i])` per 32-bit lane `r`: two groups of
/// unsigned codes against a token's two groups of 4 signed codes, each repeated over the lanes.
/// Without VNNI the groups' 16-bit pair sums are added before widening, which needs codes of at
/// most 6 bits (`2·2·63·128 < 2¹⁵`).
///
/// # Safety
/// The CPU has AVX2, and AVX-VNNI when `VNNI`.
#[inline(always)]
unsafe fn dot8<const VNNI: bool>(
    acc: __m256i,
    u0: __m256i,
    x0: __m256i,
    u1: __m256i,
    x1: __m256i,
) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(acc, u0, x0), u1, x1)
        } else {
            let p = _mm256_add_epi16(_mm256_maddubs_epi16(u0, x0), _mm256_maddubs_epi16(u1, x1));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
}

/// `acc + Σ_{i<4} w[r][i]·x[i]` for 8-bit codes stored `w + 128` in `u`, without the
/// correction: `|w|·(x·sign w)` keeps `vpmaddubsw`'s pair sums within `2·128·127`. Needs
/// |x| ≤ 127, which ggml's Q8_0 rule guarantees.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn dot4_signed(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let w = _mm256_xor_si256(u, _mm256_set1_epi8(-128));
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// Group `g`'s high bits for the 32 lanes of half `h` (4 bytes of the group's 64-bit mask) as
/// bytes of 0 or 16.
///
/// # Safety
/// The CPU has AVX2; `masks` points to the tile's mask line.
#[inline(always)]
unsafe fn high_bits(masks: *const u8, g: usize, h: usize) -> __m256i {
    // SAFETY: the mask line holds 8 groups × 8 bytes.
    unsafe {
        let m = (masks.add(g * 8 + 4 * h) as *const i32).read_unaligned();
        // Byte j of the half takes mask byte j / 8, then its bit j % 8.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(m),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }
}

/// The Q8_0 tile, one half of 8 rows at a time; `res[j]` gets token `j`'s 16 rows.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-VNNI when `VNNI`); `w` and `a` as
/// `Level::q8_0_tile` states.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn q8_0_halves<const T: usize, const BITS: u32, const VNNI: bool>(
    w: Weights,
    nb: usize,
    a: ActsAt,
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read stays inside the blocks and tokens of the contract (`b < nb`,
    // `j < T`, `g < 8`, lines `b·per .. b·per + per`, half `h` of each); the 32-byte loads
    // are aligned because `Line` is 64-byte aligned.
    unsafe {
        let per = lines_per_tile(BITS);
        let shift = 8 - BITS as i32;
        let nibble = _mm256_set1_epi8(15);
        // Plain AVX2 multiplies 8-bit codes in sign-magnitude form: no offset to correct.
        let corrected = VNNI || BITS < 8;
        for h in 0..2 {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..nb {
                let l = w.lines.add(b * per) as *const u8;
                let line = |i: usize| _mm256_load_si256(l.add(64 * i + 32 * h) as *const __m256i);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(
                    (w.scales.add(b) as *const u16).add(8 * h) as *const __m128i,
                ));
                let mut wq = [_mm256_setzero_si256(); 8];
                if BITS == 8 {
                    for g in 0..8 {
                        wq[g] = line(g);
                    }
                } else {
                    for p in 0..4 {
                        let v = line(p);
                        wq[2 * p] = _mm256_and_si256(v, nibble);
                        wq[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                    }
                    if BITS == 5 {
                        for g in 0..8 {
                            wq[g] = _mm256_or_si256(wq[g], high_bits(l.add(64 * 4), g, h));
                        }
                    }
                }
                for j in 0..T {
                    let x = a.q.add(j * a.k + b * QK) as *const i32;
                    let xb = |g: usize| _mm256_set1_epi32(x.add(g).read_unaligned());
                    // Two chains halve the dependent latency.
                    let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    if BITS == 8 && !VNNI {
                        for g in (0..8).step_by(2) {
                            s0 = dot4_signed(s0, wq[g], xb(g));
                            s1 = dot4_signed(s1, wq[g + 1], xb(g + 1));
                        }
                    } else {
                        for g in (0..8).step_by(4) {
                            s0 = dot8::<VNNI>(s0, wq[g], xb(g), wq[g + 1], xb(g + 1));
                            s1 = dot8::<VNNI>(s1, wq[g + 2], xb(g + 2), wq[g + 3], xb(g + 3));
                        }
                    }
                    let mut isum = _mm256_add_epi32(s0, s1);
                    if corrected {
                        let corr = *a.corr.add(j * nb + b) >> shift;
                        isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(corr));
                    }
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*a.d.add(j * nb + b)));
                    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[j]);
                }
            }
            for j in 0..T {
                _mm256_storeu_ps(res[j].as_mut_ptr().add(8 * h), acc[j]);
            }
        }
    }
}

/// The K-quant tile, one half of 8 rows at a time; `res[j]` gets token `j`'s 16 rows.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-VNNI when `VNNI`); `tiles`, `aq` and `af` as
/// `Level::kquant_tile` states.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn kquant_halves<const T: usize, const NG: usize, const VNNI: bool>(
    tiles: *const Tile,
    nsb: usize,
    aq: &[i8],
    k: usize,
    af: &[[f32; 2]],
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read stays inside the tiles and tokens of the contract (`j < nsb`
    // tiles; token `jt`'s sub-block `j` inside `aq`, whose `k` codes follow; `res[j]`'s 16
    // floats); tiles are 64-byte aligned, so each half of a 64-byte group line is a
    // 32-byte-aligned load.
    unsafe {
        let low = _mm256_set1_epi8(0x0F);
        for h in 0..2 {
            let mut acc = [_mm256_setzero_ps(); T];
            for j in 0..nsb {
                let tile = &*tiles.add(j);
                let mut wq = [_mm256_setzero_si256(); 8];
                for p in 0..4 {
                    let r =
                        _mm256_load_si256(tile.q.as_ptr().add(p * 64 + 32 * h) as *const __m256i);
                    if NG == 8 {
                        wq[2 * p] = _mm256_and_si256(r, low);
                        wq[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(r), low);
                    } else {
                        wq[p] = r;
                    }
                }
                let a = _mm256_load_ps(tile.a.as_ptr().add(8 * h));
                let b = _mm256_load_ps(tile.b.as_ptr().add(8 * h));
                for jt in 0..T {
                    let base = jt * k + j * 4 * NG;
                    debug_assert!(base + 4 * NG <= aq.len());
                    let act = |g: usize| {
                        _mm256_set1_epi32(
                            (aq.as_ptr().add(base + 4 * g) as *const i32).read_unaligned(),
                        )
                    };
                    // Codes have at most 6 bits: two groups share a 16-bit sum without VNNI.
                    let mut s0 = _mm256_setzero_si256();
                    let mut s1 = _mm256_setzero_si256();
                    for g in (0..NG).step_by(4) {
                        s0 = dot8::<VNNI>(s0, wq[g], act(g), wq[g + 1], act(g + 1));
                        s1 = dot8::<VNNI>(s1, wq[g + 2], act(g + 2), wq[g + 3], act(g + 3));
                    }
                    let [dx, dxs] = af[jt * nsb + j];
                    let isum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                    acc[jt] = _mm256_fmadd_ps(_mm256_mul_ps(a, _mm256_set1_ps(dx)), isum, acc[jt]);
                    acc[jt] = _mm256_fnmadd_ps(b, _mm256_set1_ps(dxs), acc[jt]);
                }
            }
            for j in 0..T {
                _mm256_storeu_ps(res[j].as_mut_ptr().add(8 * h), acc[j]);
            }
        }
    }
}

/// The largest |value| of 8-lane vectors, reduced to one f32.
#[inline]
#[target_feature(enable = "avx2")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

/// Clears the sign bit.
#[inline]
#[target_feature(enable = "avx2")]
fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// Four vectors of 8 codes (each within ±127) as 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2")]
fn pack_codes(q: [__m256i; 4]) -> __m256i {
    // The packs work within 128-bit lanes; the permutation puts the 4-code runs in order.
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let b = _mm256_packs_epi16(p01, p23);
    _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Q8_0 codes of one 32-value block into `q[..32]`; returns `d` as stored (fp16 → f32) and Σq.
///
/// # Safety
/// The CPU has AVX2; `x` and `q` hold at least 32 values.
#[target_feature(enable = "avx2")]
unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() >= QK && q.len() >= QK);
    // SAFETY: 32 values in and out (asserted above).
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let m = _mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        );
        let amax = hmax(m);
        let d = f16::from_f32(amax / 127.0).to_f32();
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        // Round half to even (the default rounding mode), as `round_ties_even`.
        let c = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, pack_codes(c));
        let s = _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3]));
        (d, hsum(s))
    }
}

/// The sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Q8_K codes of one 256-value block into `q[..256]`; returns `d` (0 for an all-zero block).
/// The value of largest magnitude, first on ties, maps to −127.
///
/// # Safety
/// The CPU has AVX2; `x` and `q` hold at least 256 values.
#[target_feature(enable = "avx2")]
unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32 {
    assert!(x.len() >= 256 && q.len() >= 256);
    // SAFETY: 256 values in and out (asserted above).
    unsafe {
        let load = |i: usize| _mm256_loadu_ps(x.as_ptr().add(8 * i));
        let mut m = _mm256_setzero_ps();
        for i in 0..32 {
            m = _mm256_max_ps(m, abs(load(i)));
        }
        let amax = hmax(m);
        if amax == 0.0 {
            q[..256].fill(0);
            return 0.0;
        }
        let target = _mm256_set1_ps(amax);
        let first = (0..32)
            .find_map(|i| {
                let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs(load(i)), target));
                (hit != 0).then(|| 8 * i + hit.trailing_zeros() as usize)
            })
            .expect("the maximum is one of the values");
        let iscale = -127.0 / x[first];
        let s = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        for i in 0..8 {
            let c: [__m256i; 4] = std::array::from_fn(|j| {
                _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(s, load(4 * i + j))), top)
            });
            _mm256_storeu_si256(q.as_mut_ptr().add(32 * i) as *mut __m256i, pack_codes(c));
        }
        1.0 / iscale
    }
}
