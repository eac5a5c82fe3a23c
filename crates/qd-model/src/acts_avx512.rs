//! The VNNI kernels' activation quantizers in AVX-512: the same codes and scales as the scalar
//! rules in `ggml_numerics` (ggml's x86 `quantize_row_q8_0` and `quantize_row_q8_K_ref`; the
//! kernels' tests compare them), in a tenth of the instructions — at 512 tokens the scalar loops
//! were an eighth of a prompt's time. Only called where the kernels run, i.e. on CPUs with
//! AVX-512 VNNI (which implies F and BW).

use std::arch::x86_64::*;

use half::f16;

/// Q8_0 codes of one 32-value block into `q[..32]`; returns `d` as stored (fp16 → f32) and Σq.
///
/// # Safety
/// The CPU has AVX-512F/BW; `x` and `q` hold at least 32 values.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    debug_assert!(x.len() >= 32 && q.len() >= 32);
    // SAFETY: 32 values in and out, by the caller's contract.
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
pub(crate) unsafe fn q8_k_block(x: &[f32], q: &mut [i8]) -> f32 {
    debug_assert!(x.len() >= 256 && q.len() >= 256);
    // SAFETY: 256 values in and out, by the caller's contract.
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
