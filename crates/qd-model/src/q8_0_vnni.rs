//! Q8_0 weights × Q8_0 activations with AVX-512 VNNI, for the shapes candle's own VNNI path
//! skips: its repacked kernels need the inner dimension to be a multiple of 256, and Gemma 3
//! 270M's is 640, so its tied 262k-row LM head (Q8_0) and every Q5_0 tensor (widened to Q8_0)
//! ran through candle's AVX2 `vec_dot` — a quarter of a training step, most of a generated token.
//!
//! Activations are quantized exactly as ggml-cpu's x86 `quantize_row_q8_0` does (the rule
//! `ggml_numerics` reproduces), so each block's integer dot product is the one llama.cpp
//! computes; only the order of the f32 sums of `d_w·d_x·Σq_w·q_x` differs.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so activations are stored `q + 128` and each
//! weight block's accumulator starts at `−128·Σq_w` (one more `vpdpbusd` against a vector of
//! 128s per weight block, shared by every token of the tile): the integer sums stay exact.

use half::f16;

const QK: usize = 32;
const BLOCK_BYTES: usize = 34;

/// Whether this CPU runs the kernel (checked at run time: the default build targets plain x86-64).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x [t, k]` quantized per 32 values: codes `q + 128` and the scale as stored (fp16 → f32).
struct Acts {
    q: Vec<u8>,
    d: Vec<f32>,
}

fn quantize_acts(x: &[f32]) -> Acts {
    let mut q = vec![0u8; x.len()];
    let mut d = vec![0f32; x.len() / QK];
    for ((xb, qb), db) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).zip(&mut d) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        *db = f16::from_f32(amax / 127.0).to_f32();
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = ((v * id).round_ties_even() as i32 + 128) as u8;
        }
    }
    Acts { q, d }
}

/// `y [t, n] = x [t, k] · Wᵀ` for `w`, the Q8_0 bytes of `W [n, k]`; `None` where the kernel
/// does not apply (no AVX-512 VNNI, `k` not a multiple of 32, or sizes that disagree).
pub fn matmul(w: &[u8], n: usize, k: usize, x: &[f32]) -> Option<Vec<f32>> {
    if !available() || k == 0 || !k.is_multiple_of(QK) || !x.len().is_multiple_of(k) {
        return None;
    }
    let nb = k / QK;
    if w.len() != n * nb * BLOCK_BYTES {
        return None;
    }
    let t = x.len() / k;
    let acts = quantize_acts(x);
    let mut y = vec![0f32; t * n];
    #[cfg(target_arch = "x86_64")]
    {
        use rayon::prelude::*;
        // Rows in tasks of a few hundred KB of weights; each task writes its own columns of y.
        let rows_per_task = (n / (rayon::current_num_threads() * 8)).clamp(16, 512) / 4 * 4;
        let out = SharedOut(y.as_mut_ptr());
        let tasks = n.div_ceil(rows_per_task);
        (0..tasks).into_par_iter().for_each(|task| {
            let r0 = task * rows_per_task;
            let r1 = (r0 + rows_per_task).min(n);
            // SAFETY: the CPU has the features (`available`), every pointer stays inside `w`,
            // `acts` and `y`, and tasks write disjoint output columns.
            unsafe { rows(w, nb, k, &acts, t, n, r0, r1, &out) };
        });
    }
    Some(y)
}

struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements.
unsafe impl Sync for SharedOut {}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows(
    w: &[u8],
    nb: usize,
    k: usize,
    acts: &Acts,
    t: usize,
    n: usize,
    r0: usize,
    r1: usize,
    out: &SharedOut,
) {
    let mut r = r0;
    while r < r1 {
        let rr = if r1 - r >= 4 { 4 } else { 1 };
        let mut s = 0;
        while s < t {
            let tt = if t - s >= 4 { 4 } else { 1 };
            let wp = w.as_ptr().add(r * nb * BLOCK_BYTES);
            let ap = acts.q.as_ptr().add(s * k);
            let dp = acts.d.as_ptr().add(s * nb);
            let mut res = [[0f32; 4]; 4];
            match (rr, tt) {
                (4, 4) => tile::<4, 4>(wp, nb, ap, k, dp, &mut res),
                (4, _) => tile::<4, 1>(wp, nb, ap, k, dp, &mut res),
                (_, 4) => tile::<1, 4>(wp, nb, ap, k, dp, &mut res),
                _ => tile::<1, 1>(wp, nb, ap, k, dp, &mut res),
            }
            for (i, row) in res.iter().enumerate().take(rr) {
                for (j, v) in row.iter().enumerate().take(tt) {
                    *out.0.add((s + j) * n + r + i) = *v;
                }
            }
            s += tt;
        }
        r += rr;
    }
}

/// `R` weight rows × `T` tokens over all `nb` blocks, eight int32/f32 lanes per block.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(clippy::needless_range_loop)] // register tiles read best as indexed loops
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const u8,
    nb: usize,
    aq: *const u8,
    k: usize,
    ad: *const f32,
    res: &mut [[f32; 4]; 4],
) {
    use std::arch::x86_64::*;
    let row_bytes = nb * BLOCK_BYTES;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let k128 = _mm256_set1_epi8(-128);
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        let mut init = [_mm256_setzero_si256(); R];
        let mut wd = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let blk = w.add(r * row_bytes + b * BLOCK_BYTES);
            let bits = u16::from_le_bytes([*blk, *blk.add(1)]);
            wd[r] = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            wv[r] = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let bias = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k128, wv[r]);
            init[r] = _mm256_sub_epi32(_mm256_setzero_si256(), bias);
        }
        for j in 0..T {
            let av = _mm256_loadu_si256(aq.add(j * k + b * QK) as *const __m256i);
            let da = _mm256_set1_ps(*ad.add(j * nb + b));
            for r in 0..R {
                let isum = _mm256_dpbusd_epi32(init[r], av, wv[r]);
                let scale = _mm256_mul_ps(wd[r], da);
                acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r][j]);
            }
        }
    }
    for r in 0..R {
        for j in 0..T {
            let v = acc[r][j];
            let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
            res[r][j] = _mm_cvtss_f32(s1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0 bytes of `[n, k]` with codes and scales from a simple generator.
    fn weights(n: usize, k: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
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
                let q = (next() % 255) as i32 - 127;
                bytes.push(q as i8 as u8);
                dense.push(q as f32 * d.to_f32());
            }
        }
        (bytes, dense)
    }

    /// Against the same product in f64 over the same integers: what differs is only the order of
    /// the f32 sums, so the error is a few ulps of the sum of magnitudes.
    #[test]
    fn equals_the_f64_product_of_the_quantized_operands() {
        if !available() {
            eprintln!("no AVX-512 VNNI here; kernel not exercised");
            return;
        }
        for (n, k, t) in [(37, 640, 1), (64, 96, 5), (9, 2048, 4), (130, 640, 13)] {
            let (w, dense) = weights(n, k, (n * k + t) as u32);
            let x: Vec<f32> = (0..t * k)
                .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
                .collect();
            let y = matmul(&w, n, k, &x).expect("kernel applies");
            let acts = quantize_acts(&x);
            // The activations are ggml's, as `ggml_numerics` reproduces them for candle's path.
            let xt = candle_core::Tensor::from_vec(x.clone(), (t, k), &candle_core::Device::Cpu)
                .unwrap();
            let ggml = crate::ggml_numerics::quantize_activations(
                &xt,
                crate::ggml_numerics::ActQuant::Q8_0,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            for (i, g) in ggml.iter().enumerate() {
                let ours = (acts.q[i] as f32 - 128.0) * acts.d[i / QK];
                assert_eq!(ours, *g, "activation {i}"); // (−0 and +0 alike)
            }
            for j in 0..t {
                for r in 0..n {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for b in 0..k / QK {
                        for i in 0..QK {
                            let xq = (acts.q[j * k + b * QK + i] as f64 - 128.0)
                                * acts.d[j * (k / QK) + b] as f64;
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
        assert!(matmul(&w, 4, 60, &[0.0; 60]).is_none());
        assert!(matmul(&w, 5, 64, &[0.0; 64]).is_none());
        assert!(matmul(&w, 4, 64, &[0.0; 65]).is_none());
    }
}
