//! Compute backends. The CPU backend holds the dense kernels the forward pass runs on; the CUDA
//! backend (feature `cuda`) holds the GPU kernels for quantized linear layers.

pub mod cpu;
pub mod cuda;
