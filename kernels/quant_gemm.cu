// Fused dequantize-and-multiply for quantized weights: y[M, N] = x[M, K] W[N, K]^T, with x and y
// bf16 (row-major, K a multiple of 8) and W quantized. Compiled by NVRTC once per weight format,
// with these macros set by the host (src/backend/cuda/linear.rs):
//   FMT        0 int4 (offset-coded, code - 8), 1 int8, 2 4-bit code book (NF4/FP4), 3 FP8 E4M3
//   ASYM       1 when zero points are given (integer formats)
//   SCALE_F16  1 when scales are f16 bits, 0 for f32
//
// Weight layout (built by src/backend/cuda/layout.rs, whose documentation is the reference):
// tiles of 16 rows x 64 features, [row_tile][k_tile], each 512 bytes (4-bit) or 1024 (8-bit).
// Lane l (g = l / 4, t = l % 4) holds for k16 step j and register r the two values of the
// mma.m16n8k16 A fragment at row g + 8 (r & 1), features 16 t + 4 j + 2 (r >> 1) + {0, 1}.
//   4-bit: bytes 16 l .. 16 l + 16 of the tile, word j, register r in nibbles r and r + 4.
//   8-bit: word w = 2 j + (r >> 1) at 512 (w / 4) + 16 l + 4 (w % 4), register r in bytes
//          2 (r & 1) and 2 (r & 1) + 1.
// The B fragment of lane l is then token g, features 16 t .. 16 t + 16 of the tile: two 16-byte
// loads of x. Weights are A ("swap AB"), so C holds rows g, g + 8 and tokens 2 t, 2 t + 1.
// Scales [N, groups] (a tile lies in one group), zero points [N, groups] int8.
//
// Arithmetic: codes become exact bf16 integers (or exact FP8 values, or code-book values
// rounded to bf16), products accumulate in f32 per tile, and the tile's sum is scaled in f32.
// The only roundings are the code book's (NF4/FP4) and the final bf16 of y.

#ifndef FMT
#error "FMT must be defined"
#endif

// DIAG (timing only; the products are wrong): 1 loads no scales or zero points (each is 1.0,
// 0), 2 also skips the decode and the tensor-core math (the loaded weights are folded into the
// sums with one XOR), to show what the scale loads and the arithmetic cost the decode kernel.
#ifndef DIAG
#define DIAG 0
#endif

#define NIBBLE_CODES (FMT == 0 || FMT == 2)
#define TILE_BYTES (NIBBLE_CODES ? 512 : 1024)
#define TILE_VECS (TILE_BYTES / 16)

__device__ __forceinline__ u32 bf16x2_fma(u32 a, u32 b, u32 c) {
    u32 d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// bf16x2 with `lo` in the low half.
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

__device__ __forceinline__ void mma_bf16(float* c, const u32* a, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 ldg16(const void* p) {
    return __ldg((const uint4*)p);
}

// How the decode kernel loads activations (the host sets X_LOAD; comparisons only): 0 through
// the read-only path (ld.global.nc, the default), 1 with generic loads from a pointer the
// compiler cannot place in a state space, 2 with cached coherent global loads (ld.global.ca).
#ifndef X_LOAD
#define X_LOAD 0
#endif
__device__ __forceinline__ const u16* x_pointer(const u16* x) {
#if X_LOAD == 1
    const u16* p;
    asm("mov.b64 %0, %1;" : "=l"(p) : "l"(x));
    return p;
#else
    return x;
#endif
}
__device__ __forceinline__ uint4 load_x(const u16* p) {
#if X_LOAD == 0
    return ldg16(p);
#elif X_LOAD == 1
    return *(const uint4*)p;
#else
    return __ldca((const uint4*)p);
#endif
}

__device__ __forceinline__ u32 word(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Per-row decode constants of one tile: rows g (index 0) and g + 8 (index 1).
struct RowDecode {
    float scale[2];
    u32 offset[2];   // int4: bf16x2 of -(136 + z); 128 + code is what the magic number gives
    float zero[2];   // int8: 2^23 + 128 + z, subtracted from the magic-number float
};

// The raw scale bits (f16 bits or f32 bits) and zero points of rows g and g + 8 of a tile,
// loaded ahead of use: nothing here waits for the loads.
struct RowRaw {
    u32 scale[2];
    int zero[2];
};

__device__ __forceinline__ RowRaw load_row(const void* scales, const signed char* zeros, int row0,
                                           int N, int groups, int group) {
    RowRaw r;
#if DIAG
    for (int i = 0; i < 2; i++) {
        r.scale[i] = SCALE_F16 ? 0x3C00u : 0x3F800000u;
        r.zero[i] = 0;
    }
    return r;
#endif
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int row = min(row0 + 8 * i, N - 1);
        const long at = (long)row * groups + group;
#if SCALE_F16
        r.scale[i] = __ldg(((const u16*)scales) + at);
#else
        r.scale[i] = __float_as_uint(__ldg(((const float*)scales) + at));
#endif
#if ASYM
        r.zero[i] = __ldg(zeros + at);
#else
        r.zero[i] = 0;
#endif
    }
    return r;
}

__device__ __forceinline__ RowDecode decode_row(const RowRaw& r) {
    RowDecode d;
#pragma unroll
    for (int i = 0; i < 2; i++) {
#if SCALE_F16
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((u16)r.scale[i]));
        d.scale[i] = f;
#else
        d.scale[i] = __uint_as_float(r.scale[i]);
#endif
        const float z = (float)r.zero[i];
        u16 off = f32_to_bf16(-(136.0f + z));
        d.offset[i] = ((u32)off << 16) | off;
        d.zero[i] = 8388608.0f + 128.0f + z;
    }
    return d;
}

__device__ __forceinline__ RowDecode row_decode(const void* scales, const signed char* zeros,
                                                int row0, int N, int groups, int group) {
    return decode_row(load_row(scales, zeros, row0, N, groups, group));
}

// Decodes the four A registers of k16 step J from a lane's raw tile data (q[0], and q[1] for
// 8-bit codes).
template <int J>
__device__ __forceinline__ void decode(const uint4* q, const RowDecode& d, const u16* table,
                                       u32* a) {
#if FMT == 0
    const u32 w = word(q[0], J);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        u32 v = ((w >> (4 * r)) & 0x000F000Fu) | 0x43004300u;   // bf16 128 + code, per half
        a[r] = bf16x2_fma(v, 0x3F803F80u, d.offset[r & 1]);
    }
#elif FMT == 2
    const u32 w = word(q[0], J);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        u32 lo = table[(w >> (4 * r)) & 0xF];
        u32 hi = table[(w >> (4 * r + 16)) & 0xF];
        a[r] = lo | (hi << 16);
    }
#else
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int w_index = 2 * J + half;          // registers 2 half, 2 half + 1
        const u32 w = word(q[w_index / 4], w_index % 4);
        float f[4];
#if FMT == 1
        const u32 biased = w ^ 0x80808080u;        // int8 + 128 as u8
#pragma unroll
        for (int b = 0; b < 4; b++) {
            float magic = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7440 | b));
            f[b] = magic - d.zero[b >> 1];
        }
#else
#pragma unroll
        for (int b = 0; b < 4; b++) {
            u32 byte = (w >> (8 * b)) & 0xFF;
            u32 bits = ((byte & 0x80) << 24) | ((byte & 0x7F) << 20);
            f[b] = __fmul_rn(__uint_as_float(bits), __uint_as_float(0x7B800000u));  // * 2^120
        }
#endif
        a[2 * half] = pack_bf16x2(f[0], f[1]);
        a[2 * half + 1] = pack_bf16x2(f[2], f[3]);
    }
#endif
}

// Raw tile data of one lane.
__device__ __forceinline__ void load_tile(const uint4* tile, int lane, uint4* q) {
    q[0] = ldg16(tile + lane);
#if !NIBBLE_CODES
    q[1] = ldg16(tile + 32 + lane);
#endif
}

// acc[nt][c] += scale * (A_tile x B) for one row tile against NT token tiles.
template <int NT>
__device__ __forceinline__ void tile_product(const uint4* q, const RowDecode& d,
                                             const u16* table, const u32 (*b)[8],
                                             float (*acc)[4]) {
    float tmp[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) tmp[nt][c] = 0.0f;
    u32 a[4];
#define STEP(J)                                                          \
    decode<J>(q, d, table, a);                                           \
    _Pragma("unroll") for (int nt = 0; nt < NT; nt++)                    \
        mma_bf16(tmp[nt], a, b[nt][2 * J], b[nt][2 * J + 1]);
    STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[nt][c] += tmp[nt][c] * d.scale[c >> 1];
}

__device__ __forceinline__ void load_table(const u16* table, u16* shared_table) {
#if FMT == 2
    if (threadIdx.x < 16) shared_table[threadIdx.x] = table[threadIdx.x];
    __syncthreads();
#endif
}

// bf16(silu(g) u) of two product sums, each first rounded to bf16 as a product's output is:
// what the `swiglu` kernel of forward.cu computes from a gate/up product's output.
__device__ __forceinline__ u16 swiglu_of_sums(float gate_sum, float up_sum) {
    const float g = bf16_to_f32(f32_to_bf16(gate_sum));
    const float u = bf16_to_f32(f32_to_bf16(up_sum));
    return f32_to_bf16(g / (1.f + expf(-g)) * u);
}

// Decode (M <= 8 NT): a block owns RT row tiles and its warps (blockDim.x / 32, set by the host
// from the shape) split the k tiles into contiguous ranges, one per warp. A warp walks its range
// KU = 4 / RT tiles at a time, with the weights and scales of the next KU tiles loaded before it
// multiplies the current ones, so its loads stay in flight while it computes. The warps' partial
// sums meet in shared memory (dynamic: warps x RT x NT x 512 bytes) at the end, added in warp
// order, so the result does not depend on timing.
// Block b owns row tiles b RT .. b RT + RT - 1, or, when `pair_tiles` is non-zero (RT = 2, a
// stacked gate/up weight of 2 pair_tiles row tiles), gate tile b and its up tile b + pair_tiles;
// it then writes bf16(silu(gate) up) for its 16 rows into y, rows of pair_tiles * 16 values.
template <int NT, int RT>
struct DecodeChunk {
    static constexpr int KU = 4 / RT;
    uint4 q[KU][RT][2];
    RowRaw raw[KU][RT];
};

template <int NT, int RT>
__device__ __forceinline__ void fetch_chunk(DecodeChunk<NT, RT>& c, const uint4* w,
                                            const void* scales, const signed char* zeros,
                                            int lane, int g, int tile0, int tile_step,
                                            int kt0, int end, int k_tiles, int row_tiles, int N,
                                            int groups, int group_size) {
#pragma unroll
    for (int u = 0; u < DecodeChunk<NT, RT>::KU; u++)
#pragma unroll
        for (int rt = 0; rt < RT; rt++) {
            const int tile = tile0 + rt * tile_step;
            if (kt0 + u < end && tile < row_tiles) {
                load_tile(w + ((long)tile * k_tiles + kt0 + u) * TILE_VECS, lane, c.q[u][rt]);
                c.raw[u][rt] = load_row(scales, zeros, tile * 16 + g, N, groups,
                                        ((kt0 + u) * 64) / group_size);
            }
        }
}

template <int NT, int RT>
__device__ __forceinline__ void multiply_chunk(const DecodeChunk<NT, RT>& c, const u16* table,
                                               const u16* x, int g, int t, int tile0,
                                               int tile_step, int kt0, int end, int row_tiles,
                                               int M, int K,
                                               float (*acc)[NT][4]) {
#pragma unroll
    for (int u = 0; u < DecodeChunk<NT, RT>::KU; u++) {
        const int kt = kt0 + u;
        if (kt >= end) break;
        const int k = kt * 64 + 16 * t;
        u32 b[NT][8];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int token = nt * 8 + g;
            const u16* row = x + (long)min(token, M - 1) * K;
            uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
            if (token < M && k < K) lo = load_x(row + k);
            if (token < M && k + 8 < K) hi = load_x(row + k + 8);
            b[nt][0] = lo.x; b[nt][1] = lo.y; b[nt][2] = lo.z; b[nt][3] = lo.w;
            b[nt][4] = hi.x; b[nt][5] = hi.y; b[nt][6] = hi.z; b[nt][7] = hi.w;
        }
#pragma unroll
        for (int rt = 0; rt < RT; rt++) {
            if (tile0 + rt * tile_step >= row_tiles) break;
#if DIAG == 2
            const uint4 q = c.q[u][rt][0];
            acc[rt][0][0] += __uint_as_float((q.x ^ q.y ^ q.z ^ q.w ^ b[0][0]) & 0x3FFFFFFFu);
#else
            tile_product<NT>(c.q[u][rt], decode_row(c.raw[u][rt]), table, b, acc[rt]);
#endif
        }
    }
}

template <int NT, int RT>
__device__ void gemv(const uint4* __restrict__ w, const void* __restrict__ scales,
                     const signed char* __restrict__ zeros, const u16* __restrict__ table,
                     const u16* __restrict__ x, u16* __restrict__ y, int M, int N, int K,
                     int groups, int group_size, int pair_tiles) {
    __shared__ u16 shared_table[16];
    extern __shared__ float partial[];   // [warps][RT * NT * 4][32]
    constexpr int KU = DecodeChunk<NT, RT>::KU;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int k_tiles = (K + 63) / 64, row_tiles = (N + 15) / 16;
    const int tile0 = pair_tiles ? blockIdx.x : blockIdx.x * RT;
    const int tile_step = pair_tiles ? pair_tiles : 1;
    const int per_warp = (k_tiles + warps - 1) / warps;
    const int begin = warp * per_warp, end = min(k_tiles, begin + per_warp);

    float acc[RT][NT][4];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[rt][nt][c] = 0.0f;

    // Weights and scales are never written by a kernel: the first loads go out before the wait
    // for the kernel that writes x.
    DecodeChunk<NT, RT> a, b;
    fetch_chunk<NT, RT>(a, w, scales, zeros, lane, g, tile0, tile_step, begin, end, k_tiles,
                        row_tiles, N, groups, group_size);
    grid_dependency_wait();
    launch_dependents();
    load_table(table, shared_table);
    const u16* xs = x_pointer(x);
    for (int kt = begin; kt < end; kt += 2 * KU) {
        fetch_chunk<NT, RT>(b, w, scales, zeros, lane, g, tile0, tile_step, kt + KU, end,
                            k_tiles, row_tiles, N, groups, group_size);
        multiply_chunk<NT, RT>(a, shared_table, xs, g, t, tile0, tile_step, kt, end, row_tiles, M,
                               K, acc);
        if (kt + KU >= end) break;
        fetch_chunk<NT, RT>(a, w, scales, zeros, lane, g, tile0, tile_step, kt + 2 * KU, end,
                            k_tiles, row_tiles, N, groups, group_size);
        multiply_chunk<NT, RT>(b, shared_table, xs, g, t, tile0, tile_step, kt + KU, end,
                               row_tiles, M, K, acc);
    }

    constexpr int SLOTS = RT * NT * 4;
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                partial[(warp * SLOTS + (rt * NT + nt) * 4 + c) * 32 + lane] = acc[rt][nt][c];
    __syncthreads();
    if (pair_tiles) {
        // Slot s of the gate tile pairs with slot s + NT * 4 of the up tile.
        const int width = pair_tiles * 16;
        for (int e = threadIdx.x; e < NT * 4 * 32; e += blockDim.x) {
            const int l = e & 31, slot = e >> 5;
            const int c = slot & 3, nt = slot >> 2;
            float gate = 0.0f, up = 0.0f;
            for (int v = 0; v < warps; v++) {
                gate += partial[v * SLOTS * 32 + e];
                up += partial[v * SLOTS * 32 + NT * 4 * 32 + e];
            }
            const int row = tile0 * 16 + (l >> 2) + 8 * (c >> 1);
            const int token = nt * 8 + 2 * (l & 3) + (c & 1);
            if (token < M) y[(long)token * width + row] = swiglu_of_sums(gate, up);
        }
        return;
    }
    for (int e = threadIdx.x; e < SLOTS * 32; e += blockDim.x) {
        const int l = e & 31, slot = e >> 5;
        const int c = slot & 3, nt = (slot >> 2) % NT, rt = (slot >> 2) / NT;
        float sum = 0.0f;
        for (int v = 0; v < warps; v++) sum += partial[v * SLOTS * 32 + e];
        const int row = (tile0 + rt) * 16 + (l >> 2) + 8 * (c >> 1);
        const int token = nt * 8 + 2 * (l & 3) + (c & 1);
        if (row < N && token < M) y[(long)token * N + row] = f32_to_bf16(sum);
    }
}

// Up to 16 warps per block (the host picks how many), so up to 128 registers per thread.
#define GEMV_KERNEL(NT, RT)                                                                    \
    extern "C" __global__ void __launch_bounds__(512)                                          \
        gemv_nt##NT##_rt##RT(const uint4* w, const void* scales, const signed char* zeros,     \
                             const u16* table, const u16* x, u16* y, int M, int N, int K,      \
                             int groups, int group_size, int pair_tiles) {                     \
        gemv<NT, RT>(w, scales, zeros, table, x, y, M, N, K, groups, group_size, pair_tiles);  \
    }
GEMV_KERNEL(1, 1)
GEMV_KERNEL(1, 2)
GEMV_KERNEL(1, 4)
GEMV_KERNEL(2, 1)
GEMV_KERNEL(2, 2)
GEMV_KERNEL(2, 4)

// Prefill: a block of 8 warps computes 128 rows x 64 tokens; warp (wr = warp % 4, wn = warp / 4)
// owns rows 32 wr .. 32 wr + 32 (two row tiles, A straight from global memory, prefetched one
// k tile ahead) and tokens 32 wn .. 32 wn + 32 (four token tiles, B from shared memory, where
// cp.async stages the next k tile of x while this one is multiplied).
#define GEMM_TOKENS 64
#define GEMM_ROW_TILES 8
#define X_STRIDE 72   // u16 per staged token row: 64 + 8 of padding, conflict-free B loads

__device__ __forceinline__ void cp_async16(void* shared, const void* global, bool valid) {
    u32 address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }"
        : "=r"(address)
        : "l"(shared));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(global),
                 "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void stage_x(u16 (*xs)[X_STRIDE], const u16* x, int M, int K,
                                        int first_token, int k0) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int chunk = threadIdx.x + 256 * i;
        const int token = chunk >> 3, part = chunk & 7;
        const int gt = first_token + token, gk = k0 + 8 * part;
        const bool valid = gt < M && gk < K;
        cp_async16(&xs[token][8 * part], valid ? x + (long)gt * K + gk : x, valid);
    }
    asm volatile("cp.async.commit_group;");
}

extern "C" __global__ void __launch_bounds__(256)
    gemm(const uint4* __restrict__ w, const void* __restrict__ scales,
         const signed char* __restrict__ zeros, const u16* __restrict__ table,
         const u16* __restrict__ x, u16* __restrict__ y, int M, int N, int K, int groups,
         int group_size) {
    __shared__ u16 shared_table[16];
    __shared__ __align__(16) u16 xs[2][GEMM_TOKENS][X_STRIDE];
    grid_dependency_wait();
    launch_dependents();
    load_table(table, shared_table);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wn = warp >> 2;
    const int k_tiles = (K + 63) / 64, row_tiles = (N + 15) / 16;
    const int first_tile = blockIdx.x * GEMM_ROW_TILES + 2 * wr;
    const int first_token = blockIdx.y * GEMM_TOKENS;

    float acc[2][4][4];
#pragma unroll
    for (int rt = 0; rt < 2; rt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[rt][nt][c] = 0.0f;

    uint4 q[2][2], q_next[2][2];
#pragma unroll
    for (int rt = 0; rt < 2; rt++)
        if (first_tile + rt < row_tiles)
            load_tile(w + (long)(first_tile + rt) * k_tiles * TILE_VECS, lane, q[rt]);
    stage_x(xs[0], x, M, K, first_token, 0);

    for (int kt = 0; kt < k_tiles; kt++) {
        const bool more = kt + 1 < k_tiles;
        if (more) {
            stage_x(xs[(kt + 1) & 1], x, M, K, first_token, (kt + 1) * 64);
#pragma unroll
            for (int rt = 0; rt < 2; rt++)
                if (first_tile + rt < row_tiles)
                    load_tile(w + ((long)(first_tile + rt) * k_tiles + kt + 1) * TILE_VECS, lane,
                              q_next[rt]);
            asm volatile("cp.async.wait_group 1;");
        } else {
            asm volatile("cp.async.wait_group 0;");
        }
        __syncthreads();
        const u16(*tile_x)[X_STRIDE] = xs[kt & 1];
        u32 b[4][8];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const u16* p = &tile_x[32 * wn + 8 * nt + g][16 * t];
            uint4 lo = *(const uint4*)p, hi = *(const uint4*)(p + 8);
            b[nt][0] = lo.x; b[nt][1] = lo.y; b[nt][2] = lo.z; b[nt][3] = lo.w;
            b[nt][4] = hi.x; b[nt][5] = hi.y; b[nt][6] = hi.z; b[nt][7] = hi.w;
        }
        const int group = (kt * 64) / group_size;
#pragma unroll
        for (int rt = 0; rt < 2; rt++) {
            if (first_tile + rt < row_tiles) {
                RowDecode d =
                    row_decode(scales, zeros, (first_tile + rt) * 16 + g, N, groups, group);
                tile_product<4>(q[rt], d, shared_table, b, acc[rt]);
            }
        }
        __syncthreads();
        if (more) {
#pragma unroll
            for (int rt = 0; rt < 2; rt++) {
                q[rt][0] = q_next[rt][0];
                q[rt][1] = q_next[rt][1];
            }
        }
    }

#pragma unroll
    for (int rt = 0; rt < 2; rt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int row = (first_tile + rt) * 16 + g + 8 * (c >> 1);
                const int token = first_token + 32 * wn + 8 * nt + 2 * t + (c & 1);
                if (row < N && token < M) y[(long)token * N + row] = f32_to_bf16(acc[rt][nt][c]);
            }
}

// Dequantizes W to bf16 [N, K] row-major (w = value * scale, rounded once), for products with
// many tokens, where a dense bf16 GEMM on the dequantized copy beats the fused kernel. One warp
// per tile: lanes decode their fragments into a 16 x 64 tile in shared memory, then write it
// out row by row with 16-byte stores (K is a multiple of 8).
#define TILE_STRIDE 72   // u16 per staged row: 64 + 8 of padding
extern "C" __global__ void __launch_bounds__(256)
    dequantize(const uint4* __restrict__ w, const void* __restrict__ scales,
               const signed char* __restrict__ zeros, const u16* __restrict__ table,
               u16* __restrict__ out, int N, int K, int groups, int group_size) {
    __shared__ u16 shared_table[16];
    __shared__ __align__(16) u16 staged[8][16][TILE_STRIDE];
    grid_dependency_wait();
    launch_dependents();
    load_table(table, shared_table);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int k_tiles = (K + 63) / 64, row_tiles = (N + 15) / 16;
    const long tile = (long)blockIdx.x * 8 + warp;
    if (tile >= (long)row_tiles * k_tiles) return;
    const int row_tile = tile / k_tiles, kt = tile % k_tiles;
    uint4 q[2];
    load_tile(w + tile * TILE_VECS, lane, q);
    const RowDecode d = row_decode(scales, zeros, row_tile * 16 + g, N, groups, (kt * 64) / group_size);
    u16(*mine)[TILE_STRIDE] = staged[warp];
    u32 a[4];
#define STAGE(J)                                                                         \
    decode<J>(q, d, shared_table, a);                                                    \
    _Pragma("unroll") for (int r = 0; r < 4; r++) {                                      \
        const float s = d.scale[r & 1];                                                  \
        const float lo = __uint_as_float(a[r] << 16) * s;                                \
        const float hi = __uint_as_float(a[r] & 0xFFFF0000u) * s;                        \
        *(u32*)&mine[g + 8 * (r & 1)][16 * t + 4 * J + 2 * (r >> 1)] = pack_bf16x2(lo, hi); \
    }
    STAGE(0) STAGE(1) STAGE(2) STAGE(3)
#undef STAGE
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int piece = lane + 32 * i;            // 16 rows x 8 pieces of 8 values
        const int r = piece >> 3, part = piece & 7;
        const int row = row_tile * 16 + r, k = kt * 64 + 8 * part;
        if (row < N && k < K)
            *(uint4*)&out[(long)row * K + k] = *(const uint4*)&mine[r][8 * part];
    }
}
