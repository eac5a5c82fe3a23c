//! The AVX-512 level (F/BW/VNNI and FMA: Intel since Ice Lake, AMD since Zen 4): each tile
//! line is one 512-bit register of 16 rows × 4 codes, and one `vpdpbusd` multiplies a token's 4
//! codes into all 16 rows. The activation quantizers give the scalar rules' codes and scales
//! (ggml's x86 `quantize_row_q8_0` and `quantize_row_q8_K_ref`) in a tenth of the instructions —
//! at 512 tokens the scalar loops were an eighth of a prompt's time.

use std::arch::x86_64::*;

use half::f16;

use super::kquant::Tile;
use super::q8_0::{lines_per_tile, ActsAt, Weights};
use super::tasks::ROWS;

/// Values per Q8_0 block.
const QK: usize = 32;

/// The AVX-512 VNNI level.
pub(super) struct Avx512;

simd_level!(
    Avx512,
    "avx512f,avx512bw,avx512vnni,fma",
    q8_0_tile,
    kquant_tile
);

/// Q8_0 codes of one 32-value block into `q[..32]`; returns `d` as stored (fp16 → f32) and Σq.
///
/// # Safety
/// The CPU has AVX-512F/BW; `x` and `q` hold at least 32 values.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() >= 32 && q.len() >= 32);
    // SAFETY: 32 values in and out (asserted above).
    unsafe {
        let a = _mm512_loadu_ps(x.as_ptr());
        let b = _mm512_loadu_ps(x.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = f16::from_f32(amax / 127.0).to_f32();
        let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        // Round half to even (the default rounding mode), as `round_ties_even`.
        let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, id));
        let qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, id));
        _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(
            q.as_mut_ptr().add(16) as *mut __m128i,
            _mm512_cvtepi32_epi8(qb),
        );
        (d, _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)))
    }
}

/// Q8_K codes of one 256-value block into `q[..256]`; returns `d` (0 for an all-zero block).
/// The value of largest magnitude, first on ties, maps to −127.
///
/// # Safety
/// The CPU has AVX-512F/BW; `x` and `q` hold at least 256 values.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32 {
    assert!(x.len() >= 256 && q.len() >= 256);
    // SAFETY: 256 values in and out (asserted above).
    unsafe {
        let load = |i: usize| _mm512_loadu_ps(x.as_ptr().add(16 * i));
        let mut m = _mm512_setzero_ps();
        for i in 0..16 {
            m = _mm512_max_ps(m, _mm512_abs_ps(load(i)));
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            q[..256].fill(0);
            return 0.0;
        }
        let target = _mm512_set1_ps(amax);
        let first = (0..16)
            .find_map(|i| {
                let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(load(i)), target);
                (hit != 0).then(|| 16 * i + hit.trailing_zeros() as usize)
            })
            .expect("the maximum is one of the values");
        let iscale = -127.0 / x[first];
        let s = _mm512_set1_ps(iscale);
        let top = _mm512_set1_epi32(127);
        for i in 0..16 {
            let c = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(s, load(i))), top);
            _mm_storeu_si128(
                q.as_mut_ptr().add(16 * i) as *mut __m128i,
                _mm512_cvtepi32_epi8(c),
            );
        }
        1.0 / iscale
    }
}

/// 16 rows × `T` tokens over all `nb` blocks of one row tile, codes stored in `BITS` bits.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI and FMA; `w` points to `nb` blocks of
/// `lines_per_tile(BITS)` 64-byte-aligned lines and `nb` scale rows; `a` to `T` tokens of
/// `a.k ≥ 32·nb` codes and `nb` scales and corrections each.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn q8_0_tile<const T: usize, const BITS: u32>(
    w: Weights,
    nb: usize,
    a: ActsAt,
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read below stays inside the blocks and tokens the contract
    // above promises (`b < nb`, `j < T`, `g < 8`, lines `b·per .. b·per + per`); the loads
    // of whole lines are aligned because `Line` is 64-byte aligned.
    unsafe {
        let per = lines_per_tile(BITS);
        // The codes are `q + 2^(BITS−1)`; `corr` holds 128·Σq_x.
        let shift = 8 - BITS as i32;
        let mut acc = [_mm512_setzero_ps(); T];
        let nibble = _mm512_set1_epi8(15);
        let high = _mm512_set1_epi8(16);
        for b in 0..nb {
            let l = w.lines.add(b * per);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(w.scales.add(b) as *const __m256i));
            let mut wq = [_mm512_setzero_si512(); 8];
            if BITS == 8 {
                for g in 0..8 {
                    wq[g] = _mm512_load_si512(l.add(g) as *const _);
                }
            } else {
                for p in 0..4 {
                    let v = _mm512_load_si512(l.add(p) as *const _);
                    wq[2 * p] = _mm512_and_si512(v, nibble);
                    wq[2 * p + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                }
                if BITS == 5 {
                    let masks = l.add(4) as *const u64;
                    for g in 0..8 {
                        let hb = _mm512_maskz_mov_epi8(masks.add(g).read(), high);
                        wq[g] = _mm512_or_si512(wq[g], hb);
                    }
                }
            }
            for j in 0..T {
                let x = a.q.add(j * a.k + b * QK) as *const i32;
                // Two chains halve the dependent `vpdpbusd` latency.
                let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for g in (0..8).step_by(2) {
                    s0 = _mm512_dpbusd_epi32(
                        s0,
                        wq[g],
                        _mm512_set1_epi32(x.add(g).read_unaligned()),
                    );
                    s1 = _mm512_dpbusd_epi32(
                        s1,
                        wq[g + 1],
                        _mm512_set1_epi32(x.add(g + 1).read_unaligned()),
                    );
                }
                let isum = _mm512_sub_epi32(
                    _mm512_add_epi32(s0, s1),
                    _mm512_set1_epi32(*a.corr.add(j * nb + b) >> shift),
                );
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.add(j * nb + b)));
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[j]);
            }
        }
        for j in 0..T {
            _mm512_storeu_ps(res[j].as_mut_ptr(), acc[j]);
        }
    }
}

/// 16 rows × `T` tokens over all `nsb` sub-blocks of one row tile; `NG` groups of 4 values per
/// sub-block (8: Q4_K, nibble-packed; 4: Q6_K, bytes).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
unsafe fn kquant_tile<const T: usize, const NG: usize>(
    tiles: *const Tile,
    nsb: usize,
    aq: &[i8],
    k: usize,
    af: &[[f32; 2]],
    res: &mut [[f32; ROWS]; 4],
) {
    // SAFETY: every pointer read stays inside the tiles and tokens of the contract (`j < nsb`
    // tiles, 64-byte aligned; token `jt`'s sub-block `j` inside `aq`, whose `k` codes follow;
    // `res[j]`'s 16 floats); the features are the caller's contract.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        let low = _mm512_set1_epi8(0x0F);
        for j in 0..nsb {
            let tile = &*tiles.add(j);
            let mut wq = [_mm512_setzero_si512(); NG];
            for p in 0..4 {
                let r = _mm512_load_si512(tile.q.as_ptr().add(p * 64) as *const _);
                if NG == 8 {
                    wq[2 * p] = _mm512_and_si512(r, low);
                    wq[2 * p + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(r), low);
                } else {
                    wq[p] = r;
                }
            }
            let a = _mm512_load_ps(tile.a.as_ptr());
            let b = _mm512_load_ps(tile.b.as_ptr());
            for jt in 0..T {
                let base = jt * k + j * 4 * NG;
                debug_assert!(base + 4 * NG <= aq.len());
                let act = |g: usize| {
                    _mm512_set1_epi32(
                        (aq.as_ptr().add(base + 4 * g) as *const i32).read_unaligned(),
                    )
                };
                // Two chains halve the dependent `vpdpbusd` latency.
                let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for g in (0..NG).step_by(2) {
                    s0 = _mm512_dpbusd_epi32(s0, wq[g], act(g));
                    s1 = _mm512_dpbusd_epi32(s1, wq[g + 1], act(g + 1));
                }
                let [dx, dxs] = af[jt * nsb + j];
                let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                acc[jt] = _mm512_fmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(dx)), isum, acc[jt]);
                acc[jt] = _mm512_fnmadd_ps(b, _mm512_set1_ps(dxs), acc[jt]);
            }
        }
        for j in 0..T {
            _mm512_storeu_ps(res[j].as_mut_ptr(), acc[j]);
        }
    }
}
