//! Compute backends. The CPU backend holds the dense kernels the forward pass runs on; the CUDA
//! backend (feature `cuda`) holds the GPU kernels and the whole forward pass on the GPU.
//! [`with_decoder`] picks one for a run ([`Device`]); [`upload`] makes a GPU copy that lives as
//! long as its owner wants (the C API keeps one in the model handle).

pub mod cpu;
pub mod cuda;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{Decoder, Model};

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU (the model as loaded).
    #[default]
    Cpu,
    /// The first CUDA GPU (the model uploaded once; needs the `cuda` feature).
    Cuda,
}

impl Device {
    /// `cpu` or `cuda`.
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(Error::invalid(format!(
                "device '{other}': expected cpu or cuda"
            ))),
        }
    }
}

/// Runs `f` with `model` ready on `device`, and a short description of where it runs. For
/// [`Device::Cuda`] the model is uploaded to GPU 0 first (and freed after `f`). Errors:
/// [`Error::Device`] when lowbit was built without the `cuda` feature, no GPU or CUDA driver
/// is found, or the upload fails; [`Error::InvalidArgument`] for a model the GPU kernels do not
/// take.
pub fn with_decoder<R>(
    model: &Model,
    device: Device,
    f: impl FnOnce(&dyn Decoder, &str) -> R,
) -> Result<R> {
    match device {
        Device::Cpu => Ok(f(model, "CPU")),
        Device::Cuda => with_cuda(model, f),
    }
}

/// Checks that `device` can run a model, before any long work that would need it: always for
/// the CPU; for CUDA, that lowbit was built with the `cuda` feature and GPU 0 opens. Errors:
/// [`Error::Device`] with the reason.
pub fn check(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda => cuda::device::CudaDevice::new(0).map(|_| ()),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(no_cuda()),
    }
}

/// A decoder other threads may use: a GPU copy of a model.
pub type SharedDecoder = Box<dyn Decoder + Send + Sync>;

/// Uploads `model` to CUDA GPU `ordinal` and returns the copy. Errors: [`Error::Device`] when
/// lowbit was built without the `cuda` feature (see [`require_cuda_build`]), the GPU does not
/// open or the upload fails; [`Error::InvalidArgument`] for a model the GPU kernels do not take.
pub fn upload(model: Arc<Model>, ordinal: usize) -> Result<SharedDecoder> {
    #[cfg(feature = "cuda")]
    {
        let device = Arc::new(cuda::device::CudaDevice::new(ordinal)?);
        Ok(Box::new(cuda::model::CudaModel::new_shared(model, device)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (model, ordinal);
        Err(no_cuda())
    }
}

/// Fails with [`Error::Device`], saying so, when lowbit was built without the `cuda` feature:
/// a check that opens no GPU, for callers that want to refuse before long work.
pub fn require_cuda_build() -> Result<()> {
    if cfg!(feature = "cuda") {
        Ok(())
    } else {
        Err(no_cuda())
    }
}

fn no_cuda() -> Error {
    Error::Device("this lowbit was built without CUDA support (build with --features cuda)".into())
}

#[cfg(feature = "cuda")]
fn with_cuda<R>(model: &Model, f: impl FnOnce(&dyn Decoder, &str) -> R) -> Result<R> {
    let device = cuda::device::CudaDevice::new(0)?;
    let gpu = cuda::model::CudaModel::new(model, &device)?;
    let name = format!("{} (CUDA, kernels for {})", device.name(), device.arch());
    Ok(f(&gpu, &name))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda<R>(_model: &Model, _f: impl FnOnce(&dyn Decoder, &str) -> R) -> Result<R> {
    Err(no_cuda())
}
