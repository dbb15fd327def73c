// Memory bandwidth probes, the ceiling the quantized kernels are measured against.
// Layout: flat arrays of 16-byte vectors, `n` of them; every thread walks a grid-stride loop
// with four independent 16-byte loads in flight.


// Reads every byte once. The xor of all words is written only if it equals a value no input
// makes likely, so the loads cannot be dropped and almost nothing is written.
extern "C" __global__ void read_probe(const uint4* __restrict__ src, long n, u32* sink) {
    const long stride = (long)gridDim.x * blockDim.x;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    u32 acc = 0;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldg(src + i), b = __ldg(src + i + stride);
        uint4 c = __ldg(src + i + 2 * stride), d = __ldg(src + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;
        acc ^= c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        uint4 a = __ldg(src + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9E3779B9u) sink[0] = acc;
}

// Copies `n` vectors: bytes read plus bytes written is the copy bandwidth.
extern "C" __global__ void copy_probe(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                      long n) {
    const long stride = (long)gridDim.x * blockDim.x;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}
