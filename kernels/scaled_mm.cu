// Products with quantized activations (W8A8 int8, W8A8 FP8): the activations are quantized here,
// dynamically, and cuBLASLt multiplies the codes (src/backend/cuda/scaled.rs).
//
//   x       bf16 [m, cols] row-major, as every projection input
//   codes   int8 or e4m3 [m_pad, cols_pad] row-major; rows m..m_pad and columns cols..cols_pad
//           are zero, so padding adds nothing to a product
//   scales  f32, per token: [m_pad]; per 1x128 group: [cols_pad / 128][m_pad] (the token index
//           fastest, the layout cuBLASLt reads for VEC128_32F scales)
//
// The rounding is the CPU's (src/quant/activation.rs):
//   int8: scale = max|x| / 127 (1 for an all-zero row), q = clamp(rint(x * (1 / scale)), +-127)
//   FP8:  scale = max|x| / 448 (1 for an all-zero group), code = e4m3(x / scale), ties to even,
//         saturating at +-448.
// One block of 128 threads per (token, group); a per-token scale is one group of cols_pad.
// Codes are stored 8 at a time when rows are read 8 values at a time: cols_pad is a multiple of
// 16, so each row of codes starts 8-byte aligned.

#define THREADS 128

__device__ __forceinline__ u8 f32_to_e4m3(float f) {
#if __CUDA_ARCH__ >= 890
    u16 pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(f));
    return (u8)(pair & 0xFF);
#else
    __trap();
    return 0;
#endif
}

// Largest |x| of the block's values (N threads), returned to every thread.
template <int N>
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[N / 32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float m = partial[0];
    for (int w = 1; w < N / 32; ++w) m = fmaxf(m, partial[w]);
    return m;
}

// Largest |x| of the 8 bf16 values of v.
__device__ __forceinline__ float max8(uint4 v, float amax) {
    const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        amax = fmaxf(amax, fabsf(__uint_as_float(w[i] << 16)));
        amax = fmaxf(amax, fabsf(__uint_as_float(w[i] & 0xFFFF0000u)));
    }
    return amax;
}

template <bool FP8>
__device__ __forceinline__ u8 encode(float v, float scale, float inverse) {
    if (FP8) return f32_to_e4m3(v / scale);
    const float q = fminf(fmaxf(rintf(v * inverse), -127.0f), 127.0f);
    return (u8)(signed char)(int)q;
}

// grid (m_pad, cols_pad / group); FP8 selects e4m3 codes, else int8. Rows of a multiple of 8
// values (16-byte aligned) are read 8 values per load and written 8 codes per store.
template <bool FP8>
__device__ void quantize(const u16* __restrict__ x, u8* __restrict__ codes,
                         float* __restrict__ scales, int m, int m_pad, int cols, int cols_pad,
                         int group) {
    grid_dependency_wait();
    launch_dependents();
    const int t = blockIdx.x, g = blockIdx.y;
    const int start = g * group, end = min(start + group, cols);
    const bool live = t < m;
    const bool vector = (cols % 8) == 0;
    const u16* row = x + (size_t)t * cols;
    float amax = 0.0f;
    if (live && vector) {
        for (int k = start + 8 * threadIdx.x; k < end; k += 8 * THREADS)
            amax = max8(*reinterpret_cast<const uint4*>(row + k), amax);
    } else if (live) {
        for (int k = start + threadIdx.x; k < end; k += THREADS)
            amax = fmaxf(amax, fabsf(bf16_to_f32(row[k])));
    }
    amax = block_max<THREADS>(amax);
    const float limit = FP8 ? 448.0f : 127.0f;
    const float scale = amax > 0.0f ? amax / limit : 1.0f;
    const float inverse = 1.0f / scale;
    u8* out = codes + (size_t)t * cols_pad;
    if (vector) {
        // cols_pad and group are multiples of 16, so 8-code runs never straddle the padding.
        for (int k = start + 8 * threadIdx.x; k < start + group; k += 8 * THREADS) {
            u32 packed[2] = {0u, 0u};
            if (live && k < cols) {
                const uint4 v = *reinterpret_cast<const uint4*>(row + k);
                const u32 w[4] = {v.x, v.y, v.z, v.w};
                for (int i = 0; i < 4; ++i) {
                    const u32 lo = encode<FP8>(__uint_as_float(w[i] << 16), scale, inverse);
                    const u32 hi =
                        encode<FP8>(__uint_as_float(w[i] & 0xFFFF0000u), scale, inverse);
                    packed[i / 2] |= (lo | (hi << 8)) << (16 * (i % 2));
                }
            }
            *reinterpret_cast<uint2*>(out + k) = make_uint2(packed[0], packed[1]);
        }
    } else {
        for (int k = start + threadIdx.x; k < start + group; k += THREADS) {
            u8 code = 0;
            if (live && k < cols) code = encode<FP8>(bf16_to_f32(row[k]), scale, inverse);
            out[k] = code;
        }
    }
    if (threadIdx.x == 0) scales[(size_t)g * m_pad + t] = scale;
}

// Per-token scales of rows of a multiple of 8 values, at most ROW_THREADS * ROW_VECS * 8: one
// block of ROW_THREADS threads per token reads its row once (ROW_VECS 16-byte loads in flight
// per thread, kept in registers for the codes), so a long row costs one memory round trip, not
// two passes of THREADS threads. Scales as above ([m_pad]).
#define ROW_THREADS 512
#define ROW_VECS 4

template <bool FP8>
__device__ void quantize_row(const u16* __restrict__ x, u8* __restrict__ codes,
                             float* __restrict__ scales, int m, int cols, int cols_pad) {
    grid_dependency_wait();
    launch_dependents();
    const int t = blockIdx.x;
    const bool live = t < m;
    const u16* row = x + (size_t)t * cols;
    uint4 v[ROW_VECS];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < ROW_VECS; ++i) {
        const int k = 8 * (threadIdx.x + i * ROW_THREADS);
        v[i] = make_uint4(0u, 0u, 0u, 0u);
        if (live && k < cols) v[i] = *reinterpret_cast<const uint4*>(row + k);
        amax = max8(v[i], amax);
    }
    amax = block_max<ROW_THREADS>(amax);
    const float limit = FP8 ? 448.0f : 127.0f;
    const float scale = amax > 0.0f ? amax / limit : 1.0f;
    const float inverse = 1.0f / scale;
    u8* out = codes + (size_t)t * cols_pad;
#pragma unroll
    for (int i = 0; i < ROW_VECS; ++i) {
        const int k = 8 * (threadIdx.x + i * ROW_THREADS);
        // cols_pad is a multiple of 16: a run of 8 codes is all in or all out; values past
        // cols (and every value of a padding token) are zero and encode to zero codes.
        if (k >= cols_pad) continue;
        const u32 w[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
        u32 packed[2] = {0u, 0u};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 lo = encode<FP8>(__uint_as_float(w[j] << 16), scale, inverse);
            const u32 hi = encode<FP8>(__uint_as_float(w[j] & 0xFFFF0000u), scale, inverse);
            packed[j / 2] |= (lo | (hi << 8)) << (16 * (j % 2));
        }
        *reinterpret_cast<uint2*>(out + k) = make_uint2(packed[0], packed[1]);
    }
    if (threadIdx.x == 0) scales[t] = scale;
}

extern "C" __global__ void __launch_bounds__(ROW_THREADS)
    quantize_row_int8(const u16* __restrict__ x, u8* __restrict__ codes,
                      float* __restrict__ scales, int m, int cols, int cols_pad) {
    quantize_row<false>(x, codes, scales, m, cols, cols_pad);
}

extern "C" __global__ void __launch_bounds__(ROW_THREADS)
    quantize_row_fp8(const u16* __restrict__ x, u8* __restrict__ codes,
                     float* __restrict__ scales, int m, int cols, int cols_pad) {
    quantize_row<true>(x, codes, scales, m, cols, cols_pad);
}

extern "C" __global__ void __launch_bounds__(THREADS)
    quantize_int8(const u16* __restrict__ x, u8* __restrict__ codes, float* __restrict__ scales,
                  int m, int m_pad, int cols, int cols_pad, int group) {
    quantize<false>(x, codes, scales, m, m_pad, cols, cols_pad, group);
}

extern "C" __global__ void __launch_bounds__(THREADS)
    quantize_fp8(const u16* __restrict__ x, u8* __restrict__ codes, float* __restrict__ scales,
                 int m, int m_pad, int cols, int cols_pad, int group) {
    quantize<true>(x, codes, scales, m, m_pad, cols, cols_pad, group);
}

// y[t, r] = bf16(acc[t, r] * token_scale[t] * row_scale[r]) for the first m tokens: the int8
// product's i32 sums ([m_pad, rows], cuBLASLt's column-major [rows, m_pad]) scaled back.
extern "C" __global__ void __launch_bounds__(256)
    scale_int32(const int* __restrict__ acc, const float* __restrict__ token_scale,
                const float* __restrict__ row_scale, u16* __restrict__ y, int m, int rows) {
    grid_dependency_wait();
    launch_dependents();
    const size_t i = (size_t)blockIdx.x * 256 + threadIdx.x;
    if (i >= (size_t)m * rows) return;
    const int t = (int)(i / rows), r = (int)(i % rows);
    y[i] = f32_to_bf16((float)acc[i] * token_scale[t] * row_scale[r]);
}
