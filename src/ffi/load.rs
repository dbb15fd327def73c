//! Loading with settings (device, weight dtype) and saving a model, quantized in memory or not,
//! as a checkpoint directory.

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::sync::Arc;

use super::marshal::{c_str, model_ref, read_versioned, require, write_if_some, write_out};
use super::model::{lowbit_model, Gpu};
use super::status::{guard, guard_value, lowbit_status, Failure};
use crate::checkpoint::{Checkpoint, Dtype};
use crate::model::Model;
use crate::quant::apply::checkpoint_from_model;

/// The device of `lowbit_load_default_params()`.
const DEFAULT_DEVICE: &CStr = c"cpu";

/// Settings of `lowbit_model_load_with_params`. Obtain them from
/// `lowbit_load_default_params()` and change the fields you need; never build one from scratch,
/// so that `struct_size` is right and fields added by later versions get their defaults.
///
/// The strings it points to stay the caller's; lowbit reads them only during the call.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_load_params {
    /// `sizeof(lowbit_load_params)` as the caller's header defines it. A library accepts the
    /// sizes of its own layout and of every earlier one; others give
    /// `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub struct_size: usize,
    /// Where the model runs: `"cpu"` (the default; NULL means `"cpu"`), or `"cuda"` /
    /// `"cuda:N"` for CUDA GPU 0 / N: the weights are then uploaded once, and every forward
    /// pass of `lowbit_generate`, `lowbit_logits`, the scoring functions, `lowbit_eval` and
    /// `lowbit_bench` runs on that GPU (tokenizing and sampling stay on the CPU). Needs a
    /// lowbit built with the `cuda` feature. Case is ignored. A string, so that devices added
    /// later need no change of this struct.
    pub device: *const c_char,
    /// The dtype dense weight matrices are converted to when loaded: `"f32"`, `"bf16"` or
    /// `"f16"`; NULL (the default) keeps the stored dtype. Norms, biases and activations are
    /// always f32; quantized layers stay as stored.
    pub dtype: *const c_char,
}

/// The size of each published layout of `lowbit_load_params`, oldest first.
const LOAD_PARAMS_LAYOUTS: [usize; 1] = [size_of::<lowbit_load_params>()];

fn default_load_params() -> lowbit_load_params {
    lowbit_load_params {
        struct_size: size_of::<lowbit_load_params>(),
        device: DEFAULT_DEVICE.as_ptr(),
        dtype: std::ptr::null(),
    }
}

/// The default load settings: device `"cpu"`, weights in their stored dtype; `struct_size` is
/// set. The struct is returned by value and its strings are static: nothing to free.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn lowbit_load_default_params() -> lowbit_load_params {
    guard_value(
        // Unreachable in practice; a zero struct_size makes any later use fail loudly.
        lowbit_load_params {
            struct_size: 0,
            ..default_load_params()
        },
        default_load_params,
    )
}

/// A device a model can be placed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    fn parse(text: &str) -> Result<Device, Failure> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Failure::invalid(format!(
                        "params->device '{text}' is not a device (expected cpu, cuda or cuda:N)"
                    ))
                }),
        }
    }
}

fn parse_dtype(text: &str) -> Result<Dtype, Failure> {
    match text.trim().to_ascii_lowercase().as_str() {
        "f32" => Ok(Dtype::F32),
        "bf16" => Ok(Dtype::BF16),
        "f16" => Ok(Dtype::F16),
        _ => Err(Failure::invalid(format!(
            "params->dtype '{text}' is not a weight dtype (expected f32, bf16 or f16)"
        ))),
    }
}

/// Loads a model from `path` (as `lowbit_model_load` does) with `params`: the device it runs
/// on and the dtype of its dense weight matrices. `params` NULL means
/// `lowbit_load_default_params()`. On success `*out` is a new model the caller frees with
/// `lowbit_model_free`; on failure `*out` is set to NULL.
///
/// Errors: those of `lowbit_model_load`, and `LOWBIT_ERR_INVALID_ARGUMENT` (wrong
/// `params->struct_size`; a device or dtype that is not one of the names listed at
/// `lowbit_load_params`, or not UTF-8), `LOWBIT_ERR_UNSUPPORTED` (a device this build or
/// machine cannot run on: `"cuda"` in a build without the `cuda` feature, checked before the
/// checkpoint is read; no such GPU or no CUDA driver; a model the GPU kernels do not take,
/// such as `w4a8` layers; the message says which).
///
/// Thread-safe: loads may run concurrently.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or points to a
/// `lowbit_load_params` whose `struct_size` is set and whose strings are NULL or
/// NUL-terminated; `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_load_with_params(
    path: *const c_char,
    params: *const lowbit_load_params,
    out: *mut *mut lowbit_model,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable per this function's contract.
        unsafe { write_if_some(out, std::ptr::null_mut()) };
        require(out, "out")?;
        // SAFETY: `path` is NULL or NUL-terminated per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        if path.is_empty() {
            return Err(Failure::invalid("path is empty"));
        }
        let params = if params.is_null() {
            default_load_params()
        } else {
            // SAFETY: a struct with `struct_size` set, per this function's contract.
            unsafe {
                read_versioned(
                    params,
                    default_load_params(),
                    &LOAD_PARAMS_LAYOUTS,
                    "lowbit_load_params",
                    "lowbit_load_default_params",
                )
            }?
        };
        let device = if params.device.is_null() {
            Device::Cpu
        } else {
            // SAFETY: non-NULL and NUL-terminated per this function's contract.
            Device::parse(unsafe { c_str(params.device, "params->device") }?)?
        };
        let dtype = if params.dtype.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated per this function's contract.
            Some(parse_dtype(unsafe {
                c_str(params.dtype, "params->dtype")
            }?)?)
        };
        if let Device::Cuda(index) = device {
            crate::backend::require_cuda_build().map_err(|e| Gpu::failure(e, index))?;
        }
        let model = Arc::new(Model::from_checkpoint(&Checkpoint::open(path)?, dtype)?);
        let gpu = match device {
            Device::Cpu => None,
            Device::Cuda(index) => Some(Gpu::upload(model.clone(), index)?),
        };
        let handle = lowbit_model::into_raw(model, gpu, Path::new(path));
        // SAFETY: checked non-NULL above; writable per this function's contract.
        unsafe { write_out(out, handle, "out") }
    })
}

/// Writes `model` as a checkpoint directory `dir`, which `lowbit_model_load` loads again:
/// model.safetensors (quantized layers as codes and scales, the layout `lowbit_quantize`
/// writes), config.json (with a `quantization_config` recording each quantized layer's scheme
/// and the method, when the model is quantized), and tokenizer.json and tokenizer_config.json
/// when the model has a tokenizer. This is how a model quantized in memory by
/// `lowbit_model_quantize` is kept. `dir` is created if needed (with its parents); files of
/// those names already there are replaced, others left alone; `dir` must not be the directory
/// the model was loaded from.
///
/// Tensors the model does not hold in memory in changed form (embeddings, norms of an
/// unquantized model, and the configuration) are read again from the path the model was
/// loaded from, which must therefore still hold the same checkpoint. Dense weights are written
/// in the dtype the model holds them in. Nothing is allocated for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or dir NULL), `LOWBIT_ERR_INVALID_ARGUMENT` (dir
/// empty or not UTF-8, or the model's own directory), `LOWBIT_ERR_IO` (the source checkpoint
/// cannot be read again, or a file cannot be written; the message names the path; a failure
/// while writing can leave partial files), `LOWBIT_ERR_FORMAT` and `LOWBIT_ERR_CONFIG` (the
/// source checkpoint changed since loading).
///
/// Thread-safe: the model is only read; several threads may save (each into its own `dir`)
/// and run the model at once.
///
/// # Safety
/// `model` is NULL or a live model; `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_save(
    model: *const lowbit_model,
    dir: *const c_char,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        unsafe { model_ref(model) }?;
        // SAFETY: as above; the handle is only read.
        let handle = unsafe { &*model };
        // SAFETY: `dir` is NULL or NUL-terminated per this function's contract.
        let dir = unsafe { c_str(dir, "dir") }?;
        if dir.is_empty() {
            return Err(Failure::invalid("dir is empty"));
        }
        let dir = Path::new(dir);
        super::quantize::check_out_dir(&handle.source, dir, "dir")?;
        let source = Checkpoint::open(&handle.source)?;
        let checkpoint = match &handle.quantized_with {
            Some((rules, method)) => checkpoint_from_model(&handle.model, &source, rules, method),
            None => Checkpoint::from_parts(
                source.path().to_path_buf(),
                source.config().clone(),
                handle.model.export_tensors(source.tensors()),
                source.tokenizer_json().map(str::to_string),
            ),
        };
        checkpoint.save(dir)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_unknown_names_are_invalid() {
        assert_eq!(Device::parse("CPU").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(Device::parse("cuda:3").unwrap(), Device::Cuda(3));
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1"] {
            let failure = Device::parse(bad).unwrap_err();
            assert_eq!(failure.status, lowbit_status::LOWBIT_ERR_INVALID_ARGUMENT);
            assert!(failure.message.contains("expected cpu, cuda or cuda:N"));
        }
    }
}
