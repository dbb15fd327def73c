//! The CUDA backend: fused dequantize-and-multiply kernels for quantized weights on NVIDIA GPUs.
//!
//! [`layout`] (always built, so its CPU checks run everywhere) rearranges quantized weights into
//! the tiles the kernels read. With the `cuda` feature: [`device`] holds the context, stream and
//! per-process cache of kernels compiled by NVRTC from `kernels/*.cu` for the GPU's own
//! architecture; [`linear`] uploads packed weights and launches the kernels; [`blas`] wraps
//! cuBLAS for dense bf16 products (the baseline the kernels are measured against) and cuBLASLt
//! for products of int8 or FP8 codes; [`scaled`] runs the projections whose activations are
//! quantized (W8A8) on those; [`check`]
//! compares the kernels with the CPU (used by the GPU tests and the device benchmark); [`ops`]
//! launches the rest of the forward pass (`kernels/forward.cu`); [`model`] runs the whole
//! decoder on the GPU with its KV cache in [`kv_cache`].
//!
//! The CUDA driver, NVRTC, cuBLAS and cuBLASLt are loaded at run time: building needs no CUDA install,
//! and [`device::CudaDevice::new`] returns an error, not a panic, where none is found.

pub mod layout;

#[cfg(feature = "cuda")]
pub mod blas;
#[cfg(feature = "cuda")]
pub mod check;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod kv_cache;
#[cfg(feature = "cuda")]
mod layers;
#[cfg(feature = "cuda")]
pub mod linear;
#[cfg(feature = "cuda")]
pub mod model;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
mod plan;
#[cfg(feature = "cuda")]
pub mod scaled;
#[cfg(feature = "cuda")]
mod workspace;
