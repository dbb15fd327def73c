//! Compute backends. The CPU backend holds the dense kernels the forward pass runs on.

pub mod cpu;
