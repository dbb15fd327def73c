// The decoder's forward pass apart from the projections (src/backend/cuda/model.rs runs it):
// embedding gather, RMSNorm (fused with the residual add), q/k/v post-processing (bias, Qwen3's
// per-head RMSNorm, RoPE, KV-cache append), attention over the KV cache, SwiGLU, and logits.
//
// Layout (T new tokens of a ragged batch, row-major, token-major):
//   residual x      f32  [T, hidden]   (the stream the blocks add into)
//   projection in   bf16 [T, features] (what the quantized and cuBLAS products read)
//   projection out  bf16 [T, features], its bias applied by the kernel that consumes it
//   q after RoPE    f32  [T, heads * head_dim]
//   KV cache        f32, one buffer per (sequence, layer) for keys and one for values:
//                   [position][kv_head][head_dim], post-RoPE keys (as the CPU cache)
//   kv_table        u64  [layers][sequences][2]: device addresses of those buffers (keys, values)
//   seq_of, pos     i32  [T]: the token's sequence and absolute position
//   cos, sin        f32  [T, head_dim / 2], computed on the host by src/model/rope.rs
// Compiled per model with HEAD_DIM (head_dim) defined, so the attention's loops unroll.
// bf16 travels as its 16 bits (u16); conversions round to nearest even.

// NVRTC has no math.h: minus infinity from its bits.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

__device__ float block_max(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : NEG_INF;
        s = warp_max(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// x[t] = table[tokens[t]] as f32. Grid: T blocks.
extern "C" __global__ void embed_f32(const float* __restrict__ table, const u32* __restrict__ tokens,
                                     int hidden, float* __restrict__ x) {
    grid_dependency_wait();
    launch_dependents();
    const long row = (long)tokens[blockIdx.x] * hidden;
    float* dst = x + (long)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = table[row + i];
}

extern "C" __global__ void embed_bf16(const u16* __restrict__ table, const u32* __restrict__ tokens,
                                      int hidden, float* __restrict__ x) {
    grid_dependency_wait();
    launch_dependents();
    const long row = (long)tokens[blockIdx.x] * hidden;
    float* dst = x + (long)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = bf16_to_f32(table[row + i]);
}

// Row r (one block each): when delta is given, x[r] += delta[r] + bias (bias may be null) and
// is written back; then out[r] = bf16(weight * (x[r] / sqrt(mean(x[r]^2) + eps))), the CPU's
// order of operations.
extern "C" __global__ void add_rms_norm(float* __restrict__ x, const u16* __restrict__ delta,
                                        const float* __restrict__ bias,
                                        const float* __restrict__ weight, u16* __restrict__ out,
                                        int hidden, float eps) {
    grid_dependency_wait();
    launch_dependents();
    float* row = x + (long)blockIdx.x * hidden;
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float v = row[i];
        if (delta) {
            v += bf16_to_f32(delta[(long)blockIdx.x * hidden + i]) + (bias ? bias[i] : 0.f);
            row[i] = v;
        }
        ss += v * v;
    }
    const float inv = 1.f / sqrtf(block_sum(ss) / hidden + eps);
    u16* dst = out + (long)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = f32_to_bf16(weight[i] * (row[i] * inv));
}

// Most head_dim the q/k/v and attention kernels take.
#define MAX_HEAD_DIM 256
#define QKV_WARPS 8

// q, k and v rows are q_stride and kv_stride apart (one stacked product puts them side by side).
// One block of QKV_WARPS warps per token; warp w takes heads w, w + QKV_WARPS, ... of the
// n_heads query, n_kv key and n_kv value heads. Each head: bias, then (query and key heads)
// the per-head RMSNorm when its weight is given, then RoPE; queries go to q_out, keys and
// values into the cache at the token's position.
extern "C" __global__ void qkv_rope(const u16* __restrict__ q, const u16* __restrict__ k,
                                    const u16* __restrict__ v, int q_stride, int kv_stride,
                                    const float* __restrict__ q_bias,
                                    const float* __restrict__ k_bias, const float* __restrict__ v_bias,
                                    const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                                    const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                    const int* __restrict__ seq_of, const int* __restrict__ pos,
                                    const u64* __restrict__ kv_table, int sequences, int layer,
                                    int n_heads, int n_kv, int head_dim, float eps,
                                    float* __restrict__ q_out) {
    grid_dependency_wait();
    launch_dependents();
    __shared__ float buf[QKV_WARPS][MAX_HEAD_DIM];
    const int t = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int half = head_dim / 2, q_width = n_heads * head_dim, kv_width = n_kv * head_dim;
    const u64* entry = kv_table + 2 * ((long)layer * sequences + seq_of[t]);
    float* k_cache = (float*)entry[0] + (long)pos[t] * kv_width;
    float* v_cache = (float*)entry[1] + (long)pos[t] * kv_width;
    const float* c = cos_table + (long)t * half;
    const float* s = sin_table + (long)t * half;
    float* b = buf[warp];
    for (int head = warp; head < n_heads + 2 * n_kv; head += QKV_WARPS) {
        const u16* src;
        const float *bias, *norm;
        float* dst;
        bool rotate = true;
        if (head < n_heads) {
            src = q + (long)t * q_stride + head * head_dim;
            bias = q_bias ? q_bias + head * head_dim : 0;
            norm = q_norm;
            dst = q_out + (long)t * q_width + head * head_dim;
        } else if (head < n_heads + n_kv) {
            const int h = head - n_heads;
            src = k + (long)t * kv_stride + h * head_dim;
            bias = k_bias ? k_bias + h * head_dim : 0;
            norm = k_norm;
            dst = k_cache + h * head_dim;
        } else {
            const int h = head - n_heads - n_kv;
            src = v + (long)t * kv_stride + h * head_dim;
            bias = v_bias ? v_bias + h * head_dim : 0;
            norm = 0;
            dst = v_cache + h * head_dim;
            rotate = false;
        }
        float ss = 0.f;
        for (int d = lane; d < head_dim; d += 32) {
            const float val = bf16_to_f32(src[d]) + (bias ? bias[d] : 0.f);
            b[d] = val;
            ss += val * val;
        }
        if (norm) {
            const float inv = 1.f / sqrtf(warp_sum(ss) / head_dim + eps);
            for (int d = lane; d < head_dim; d += 32) b[d] = norm[d] * (b[d] * inv);
        }
        __syncwarp();
        if (rotate) {
            for (int d = lane; d < half; d += 32) {
                const float x1 = b[d], x2 = b[d + half];
                dst[d] = x1 * c[d] - x2 * s[d];
                dst[d + half] = x2 * c[d] + x1 * s[d];
            }
        } else {
            for (int d = lane; d < head_dim; d += 32) dst[d] = b[d];
        }
        __syncwarp();
    }
}

#define ATT_THREADS 256
#define ATT_WARPS (ATT_THREADS / 32)
#ifndef HEAD_DIM
#define HEAD_DIM MAX_HEAD_DIM
#endif
// float2 pieces of a head row per lane (HEAD_DIM is set per model when compiling).
#define ATT_CHUNKS ((HEAD_DIM + 63) / 64)
// Keys each warp loads at once: loads in flight per lane.
#define ATT_UNROLL (ATT_CHUNKS >= 2 ? 4 : 8)

// Causal attention of token t, query head h (grid: n_heads x T, ATT_THREADS threads) over
// positions 0..pos[t] of its sequence's cache (flash-decoding within the block). Warp w takes
// keys w, w + ATT_WARPS, ... ATT_UNROLL at a time, loading their key and value rows together
// (lanes split a row into float2 pieces, so loads are coalesced and q . k is a warp sum), and
// keeps its own online softmax (running max, sum, and sum of p v); the warps' states are merged
// at the end. Output bf16 [T, n_heads * head_dim]; head_dim == HEAD_DIM.
extern "C" __global__ void attention(const float* __restrict__ q, const u64* __restrict__ kv_table,
                                     int sequences, int layer, const int* __restrict__ seq_of,
                                     const int* __restrict__ pos, int n_heads, int n_kv,
                                     int head_dim, float scale, u16* __restrict__ out) {
    grid_dependency_wait();
    launch_dependents();
    __shared__ float2 acc_s[ATT_WARPS][HEAD_DIM / 2];
    __shared__ float max_s[ATT_WARPS], sum_s[ATT_WARPS];
    const int head = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int q_width = n_heads * head_dim, kv_width = n_kv * head_dim;
    const int kv_head = head / (n_heads / n_kv);
    const int pieces = head_dim / 2;
    const u64* entry = kv_table + 2 * ((long)layer * sequences + seq_of[t]);
    const float* keys = (const float*)entry[0] + kv_head * head_dim;
    const float* values = (const float*)entry[1] + kv_head * head_dim;
    const int visible = pos[t] + 1;
    const float2* q2 = (const float2*)(q + (long)t * q_width + head * head_dim);
    float2 qr[ATT_CHUNKS], acc[ATT_CHUNKS];
#pragma unroll
    for (int c = 0; c < ATT_CHUNKS; ++c) {
        const int i = lane + 32 * c;
        qr[c] = i < pieces ? q2[i] : make_float2(0.f, 0.f);
        acc[c] = make_float2(0.f, 0.f);
    }
    float running_max = NEG_INF, running_sum = 0.f;
    for (int base = warp; base < visible; base += ATT_UNROLL * ATT_WARPS) {
        float dot[ATT_UNROLL];
        float2 v[ATT_UNROLL][ATT_CHUNKS];
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int j = base + u * ATT_WARPS;
            float d = 0.f;
#pragma unroll
            for (int c = 0; c < ATT_CHUNKS; ++c) {
                const int i = lane + 32 * c;
                v[u][c] = make_float2(0.f, 0.f);
                if (j < visible && i < pieces) {
                    const float2 kk = ((const float2*)(keys + (long)j * kv_width))[i];
                    v[u][c] = ((const float2*)(values + (long)j * kv_width))[i];
                    d += qr[c].x * kk.x + qr[c].y * kk.y;
                }
            }
            dot[u] = d;
        }
        float round_max = NEG_INF;
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int j = base + u * ATT_WARPS;
            dot[u] = j < visible ? warp_sum(dot[u]) * scale : NEG_INF;
            round_max = fmaxf(round_max, dot[u]);
        }
        // base < visible, so the round has a key and round_max is finite.
        const float new_max = fmaxf(running_max, round_max);
        const float correction = expf(running_max - new_max);
        running_sum *= correction;
#pragma unroll
        for (int c = 0; c < ATT_CHUNKS; ++c) {
            acc[c].x *= correction;
            acc[c].y *= correction;
        }
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const float p = expf(dot[u] - new_max);
            running_sum += p;
#pragma unroll
            for (int c = 0; c < ATT_CHUNKS; ++c) {
                acc[c].x += p * v[u][c].x;
                acc[c].y += p * v[u][c].y;
            }
        }
        running_max = new_max;
    }
#pragma unroll
    for (int c = 0; c < ATT_CHUNKS; ++c) {
        const int i = lane + 32 * c;
        if (i < pieces) acc_s[warp][i] = acc[c];
    }
    if (lane == 0) {
        max_s[warp] = running_max;
        sum_s[warp] = running_sum;
    }
    __syncthreads();
    // Warps that saw no key have max -inf and sum 0: their weight below is 0.
    float total_max = NEG_INF;
    for (int w = 0; w < ATT_WARPS; ++w) total_max = fmaxf(total_max, max_s[w]);
    float weight[ATT_WARPS];
    float total_sum = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w) {
        weight[w] = expf(max_s[w] - total_max);
        total_sum += sum_s[w] * weight[w];
    }
    const float inv = 1.f / total_sum;
    u16* dst = out + (long)t * q_width + head * head_dim;
    for (int i = tid; i < pieces; i += ATT_THREADS) {
        float2 total = make_float2(0.f, 0.f);
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            total.x += acc_s[w][i].x * weight[w];
            total.y += acc_s[w][i].y * weight[w];
        }
        dst[2 * i] = f32_to_bf16(total.x * inv);
        dst[2 * i + 1] = f32_to_bf16(total.y * inv);
    }
}

// out = bf16(silu(gate + gate_bias) * (up + up_bias)) over [rows, width] (n = rows * width
// values, out packed); input rows are `stride` apart; biases may be null.
extern "C" __global__ void swiglu(const u16* __restrict__ gate, const u16* __restrict__ up,
                                  const float* __restrict__ gate_bias, const float* __restrict__ up_bias,
                                  long n, int width, int stride, u16* __restrict__ out) {
    grid_dependency_wait();
    launch_dependents();
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int f = (int)(i % width);
        const long at = (i / width) * stride + f;
        const float g = bf16_to_f32(gate[at]) + (gate_bias ? gate_bias[f] : 0.f);
        const float u = bf16_to_f32(up[at]) + (up_bias ? up_bias[f] : 0.f);
        out[i] = f32_to_bf16(g / (1.f + expf(-g)) * u);
    }
}

// out[i] = src[rows[i]] for bf16 rows of `width` values. Grid: one block per selected row.
extern "C" __global__ void gather_rows(const u16* __restrict__ src, const int* __restrict__ rows,
                                       int width, u16* __restrict__ out) {
    grid_dependency_wait();
    launch_dependents();
    const u16* from = src + (long)rows[blockIdx.x] * width;
    u16* to = out + (long)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
}

// Logits of a head whose product is bf16 (the quantized kernels): widened to f32.
extern "C" __global__ void widen_bf16(const u16* __restrict__ src, long n, float* __restrict__ out) {
    grid_dependency_wait();
    launch_dependents();
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = bf16_to_f32(src[i]);
}

// Greedy picks: out[r] = the index of the largest of logits[r, 0..width), the first on ties
// (as the host's argmax); NaN never wins (all NaN gives 0). Grid: one block of ARGMAX_THREADS
// per row.
#define ARGMAX_THREADS 1024
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_rows(const float* __restrict__ logits, int width, unsigned* __restrict__ out) {
    grid_dependency_wait();
    launch_dependents();
    __shared__ float best_s[ARGMAX_THREADS / 32];
    __shared__ int index_s[ARGMAX_THREADS / 32];
    const float* row = logits + (long)blockIdx.x * width;
    float best = NEG_INF;
    int index = width;   // none yet: loses every comparison below
    for (int i = threadIdx.x; i < width; i += ARGMAX_THREADS) {
        const float v = row[i];
        if (v > best || (index == width && v == v)) {
            best = v;
            index = i;
        }
    }
    // A candidate wins if larger, or equal and earlier; `index == width` is no candidate.
#pragma unroll
    for (int step = 16; step > 0; step >>= 1) {
        const float b = __shfl_xor_sync(0xFFFFFFFFu, best, step);
        const int j = __shfl_xor_sync(0xFFFFFFFFu, index, step);
        if (j != width && (index == width || b > best || (b == best && j < index))) {
            best = b;
            index = j;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        best_s[warp] = best;
        index_s[warp] = index;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; ++w) {
            const int j = index_s[w];
            if (j != width && (index == width || best_s[w] > best || (best_s[w] == best && j < index))) {
                best = best_s[w];
                index = j;
            }
        }
        out[blockIdx.x] = index == width ? 0u : (unsigned)index;
    }
}
