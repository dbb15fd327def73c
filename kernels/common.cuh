// Definitions every kernel source shares. src/backend/cuda/device.rs puts this text in front of
// each source before NVRTC compiles it (each source is compiled on its own, without includes).
//
// bf16 travels as its 16 bits (u16); conversions to bf16 round to nearest even.
//
// Programmatic dependent launch (compute 9.0 and newer): the host may launch a kernel with the
// programmatic-serialization attribute, and it then starts while the kernel before it on the
// stream is still running. Such a kernel must call grid_dependency_wait() before it reads
// anything an earlier kernel wrote or writes anything an earlier kernel reads; the call returns
// once the kernel before it has finished and its writes are visible. Every kernel of lowbit
// calls it; what a kernel does before the call touches only memory no kernel writes (weights).
// launch_dependents() lets the next kernel start its blocks (they wait in their own
// grid_dependency_wait()). Both are no-ops when the kernel was launched without the attribute.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u16 d;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(d) : "f"(f));
    return d;
}

// Sum over a warp; every lane gets the same bits (each adds the same pairs, in orders that
// differ only by commutation).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The residual update and RMSNorm of one token's row, computed by one warp, bit for bit as
// forward.cu's add_rms_norm computes them with its 256 threads: v = row + (delta + bias) (the
// addition only when delta is given), the sum of squares in block_sum's order (thread i adds
// v[i], v[i + 256], ... in turn, each 32 threads' sums meet in a warp sum, then the 8 warps'),
// out = bf16(weight (v / rms)). row_out, when given, receives v.
#define NORM_THREADS 256
__device__ __forceinline__ float residual_value(const float* row, const u16* delta,
                                                const float* bias, int i) {
    float v = row[i];
    if (delta) v += bf16_to_f32(delta[i]) + (bias ? bias[i] : 0.f);
    return v;
}

__device__ void warp_rms_norm(const float* row, const u16* delta, const float* bias,
                              const float* weight, int hidden, float eps, u16* out,
                              float* row_out, int lane) {
    float mine = 0.f;
    for (int w = 0; w < NORM_THREADS / 32; w++) {
        float ss = 0.f;
        for (int i = 32 * w + lane; i < hidden; i += NORM_THREADS) {
            const float v = residual_value(row, delta, bias, i);
            ss += v * v;
        }
        ss = warp_sum(ss);
        if (lane == w) mine = ss;
    }
    const float inv = 1.f / sqrtf(warp_sum(mine) / hidden + eps);
    for (int i = lane; i < hidden; i += 32) {
        const float v = residual_value(row, delta, bias, i);
        out[i] = f32_to_bf16(weight[i] * (v * inv));
        if (row_out) row_out[i] = v;
    }
}

__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void launch_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
