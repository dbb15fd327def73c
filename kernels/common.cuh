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
