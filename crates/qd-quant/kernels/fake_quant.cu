// Fake-quant kernels: dequantize(quantize(x)) for GGUF block types, bit-exact with the CPU op
// (a port of llama.cpp's quantize_row_*_ref). Built with --fmad=false so that no a*b+c is fused:
// the reference evaluates every product and sum in plain f32.
#include <stdint.h>

__device__ __forceinline__ uint16_t fp32_to_fp16(float f) {
    const float scale_to_inf = __uint_as_float(0x77800000u);
    const float scale_to_zero = __uint_as_float(0x08800000u);
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = __float_as_uint(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = __uint_as_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = __float_as_uint(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

__device__ __forceinline__ float fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = __uint_as_float((two_w >> 4) + (0xE0u << 23)) * __uint_as_float(0x07800000u);
    const float denormalized = __uint_as_float((two_w >> 17) | (126u << 23)) - 0.5f;
    return __uint_as_float(sign | (two_w < (1u << 27) ? __float_as_uint(denormalized) : __float_as_uint(normalized)));
}

__device__ __forceinline__ float round_fp16(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

__device__ __forceinline__ int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i = __float_as_int(val);
    return (i & 0x007fffff) - 0x00400000;
}

// C's (int8_t)(float) as x86-64 GCC compiles it (cvttss2si, low byte): out-of-range, inf and
// NaN give 0, where PTX's cvt would saturate.
__device__ __forceinline__ int c_f32_to_i8(float x) {
    return (x > -2147483648.f && x < 2147483648.f) ? (int)(signed char)(int)x : 0;
}

// Records the lowest block index that holds a NaN or ±Inf, so the host can name the row exactly
// as the CPU op does. `*bad` starts at 0 (a memset, no host copy) and holds n_blocks − block for
// the first bad block, so the largest value wins.
__device__ __forceinline__ void flag_nonfinite(bool finite, unsigned long long blk, unsigned long long n_blocks,
                                               unsigned long long* bad) {
    if (!finite) atomicMax(bad, n_blocks - blk);
}

__device__ __forceinline__ bool all_finite(float4 v) {
    return isfinite(v.x) && isfinite(v.y) && isfinite(v.z) && isfinite(v.w);
}

// The 32-value types run eight lanes per block, four values per lane through one 16-byte load
// and store: coalesced, and three shuffle rounds per block instead of five per value. Each thread
// takes one block in each half of the tensor and issues both loads before any arithmetic, so twice
// the bytes are in flight. Lanes past the end still take part in the shuffles (full-warp masks)
// but load zeros and store nothing.

// The value with the largest magnitude in the block, first occurrence on ties (ggml's
// `if (amax < fabsf(v))` scan), +0 for an all-zero block.
__device__ __forceinline__ float group_signed_max(float4 v, int sub) {
    const float vals[4] = {v.x, v.y, v.z, v.w};
    float a = 0.0f, m = 0.0f;
    int idx = 32;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        if (a < fabsf(vals[k])) { a = fabsf(vals[k]); m = vals[k]; idx = sub * 4 + k; }
    }
#pragma unroll
    for (int off = 4; off > 0; off >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, a, off);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, off);
        const float om = __shfl_xor_sync(0xffffffffu, m, off);
        if (oa > a || (oa == a && oi < idx)) { a = oa; idx = oi; m = om; }
    }
    return a == 0.0f ? 0.0f : m;
}

// Q4_0 (NMAX 8) and Q5_0 (NMAX 16): d = signed max / −NMAX, codes clamp at 2·NMAX − 1, value
// (q − NMAX)·fp16(d). Dividing by −NMAX, a power of two, is the same correctly rounded result as
// multiplying by its exact reciprocal, so the multiply keeps bit equality with the CPU.
template <int NMAX>
struct Symmetric {
    __device__ __forceinline__ static float4 run(float4 v, int sub) {
        const float max = group_signed_max(v, sub);
        const float d = max * (-1.0f / (float)NMAX);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const float d16 = round_fp16(d);
        return make_float4(one(v.x, id, d16), one(v.y, id, d16), one(v.z, id, d16), one(v.w, id, d16));
    }
    __device__ __forceinline__ static float one(float v, float id, float d16) {
        int q = c_f32_to_i8(v * id + ((float)NMAX + 0.5f));
        q = q < 2 * NMAX - 1 ? q : 2 * NMAX - 1;
        return (float)(q - NMAX) * d16;
    }
};

// Q8_0: d = amax / 127, code round(v / d).
struct Q8 {
    __device__ __forceinline__ static float4 run(float4 v, int) {
        float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
        for (int off = 4; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const float d16 = round_fp16(d);
        return make_float4(one(v.x, id, d16), one(v.y, id, d16), one(v.z, id, d16), one(v.w, id, d16));
    }
    __device__ __forceinline__ static float one(float v, float id, float d16) {
        return (float)c_f32_to_i8(roundf(v * id)) * d16;
    }
};

template <typename T>
__device__ __forceinline__ void fq_32(const float4* __restrict__ x, float4* __restrict__ y,
                                      unsigned long long n_blocks, unsigned long long* __restrict__ bad) {
    const unsigned long long half = (n_blocks + 1) >> 1;
    const unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int sub = threadIdx.x & 7;
    const unsigned long long b0 = t >> 3, b1 = b0 + half;
    const bool live0 = b0 < half, live1 = live0 && b1 < n_blocks;
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 v0 = live0 ? __ldcs(x + b0 * 8 + sub) : zero;
    const float4 v1 = live1 ? __ldcs(x + b1 * 8 + sub) : zero;
    if (live0) flag_nonfinite(all_finite(v0), b0, n_blocks, bad);
    if (live1) flag_nonfinite(all_finite(v1), b1, n_blocks, bad);
    const float4 r0 = T::run(v0, sub);
    const float4 r1 = T::run(v1, sub);
    if (live0) __stcs(y + b0 * 8 + sub, r0);
    if (live1) __stcs(y + b1 * 8 + sub, r1);
}

extern "C" __global__ void fq_q4_0(const float4* __restrict__ x, float4* __restrict__ y, unsigned long long n_blocks,
                                   unsigned long long* __restrict__ bad) {
    fq_32<Symmetric<8>>(x, y, n_blocks, bad);
}

extern "C" __global__ void fq_q5_0(const float4* __restrict__ x, float4* __restrict__ y, unsigned long long n_blocks,
                                   unsigned long long* __restrict__ bad) {
    fq_32<Symmetric<16>>(x, y, n_blocks, bad);
}

extern "C" __global__ void fq_q8_0(const float4* __restrict__ x, float4* __restrict__ y, unsigned long long n_blocks,
                                   unsigned long long* __restrict__ bad) {
    fq_32<Q8>(x, y, n_blocks, bad);
}

// ---- Q4_K: one thread per 256-value block, the reference algorithm verbatim.

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

__device__ float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                                  float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = clampi(l, 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = clampi(l, 0, nmax);
            Laux[i] = l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

__device__ __forceinline__ void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63; *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

extern "C" __global__ void fq_q4_k(const float* __restrict__ xg, float* __restrict__ yg, unsigned long long n_blocks, unsigned long long* __restrict__ bad) {
    const unsigned long long b = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_blocks) return;
    const float* x = xg + b * 256;
    float* y = yg + b * 256;
    uint8_t L[32], Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) {
            flag_nonfinite(isfinite(x[32 * j + l]), b, n_blocks, bad);
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        }
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L, &mins[j], Laux, -1.f, 0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t sc[12];
    for (int j = 0; j < 12; ++j) sc[j] = 0;
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= ((ls >> 4) << 6);
            sc[j - 0] |= ((lm >> 4) << 6);
        }
    }
    const float d_all = round_fp16(max_scale / 63.f);
    const float dmin = round_fp16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        get_scale_min_k4(j, sc, &s, &m);
        const float d = d_all * s;
        const float dm = dmin * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = 0;
            if (d != 0.0f) {
                l = nearest_int((x[32 * j + ii] + dm) / d);
                l = clampi(l, 0, 15);
            } else {
                // The reference keeps the codes of the search when the stored scale is 0;
                // recompute them for this sub-block.
                l = -1;
            }
            L[ii] = (uint8_t)l;
        }
        if (d == 0.0f) {
            float w2[32];
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l) w2[l] = av_x + fabsf(x[32 * j + l]);
            float mn;
            make_qkx2_quants(32, 15, x + 32 * j, w2, L, &mn, Laux, -1.f, 0.1f, 20);
        }
        // Dequantize: d1 * q - m1, as dequantize_row_q4_K.
        for (int ii = 0; ii < 32; ++ii) y[32 * j + ii] = d * L[ii] - dm;
    }
}
