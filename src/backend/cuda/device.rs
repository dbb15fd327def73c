//! One CUDA device: context, stream, and the kernels compiled for it.
//!
//! Kernel sources (`kernels/*.cu`, each behind the shared `kernels/common.cuh`) are embedded in
//! the library and compiled by NVRTC at first use, to PTX for the device's own architecture (`compute_90a` on Hopper, so the driver's JIT
//! may use every sm_90a instruction), with the macros each weight format needs. The PTX is kept
//! for the life of the process, keyed by source, macros and architecture; modules loaded from it
//! are kept per device.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{self, CUdevice_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DriverError, LaunchConfig,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{Error, Result};

/// A kernel source file embedded in the library.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name, for messages and cache keys.
    pub name: &'static str,
    /// CUDA C++ text.
    pub text: &'static str,
}

/// Fused dequantize-and-multiply kernels (`kernels/quant_gemm.cu`).
pub const QUANT_GEMM: KernelSource = KernelSource {
    name: "quant_gemm.cu",
    text: include_str!("../../../kernels/quant_gemm.cu"),
};

/// The forward pass apart from the projections (`kernels/forward.cu`).
pub const FORWARD: KernelSource = KernelSource {
    name: "forward.cu",
    text: include_str!("../../../kernels/forward.cu"),
};

/// Activation quantization for products with int8 or FP8 activations (`kernels/scaled_mm.cu`).
pub const SCALED_MM: KernelSource = KernelSource {
    name: "scaled_mm.cu",
    text: include_str!("../../../kernels/scaled_mm.cu"),
};

/// Definitions every source shares (`kernels/common.cuh`), put in front of each source.
const PRELUDE: &str = include_str!("../../../kernels/common.cuh");

/// Bandwidth probes (`kernels/bandwidth.cu`).
pub const BANDWIDTH: KernelSource = KernelSource {
    name: "bandwidth.cu",
    text: include_str!("../../../kernels/bandwidth.cu"),
};

/// PTX compiled in this process, by source name, macros and architecture.
fn ptx_cache() -> &'static Mutex<HashMap<String, String>> {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A driver error with what was being done.
pub(crate) fn driver_error(what: &str) -> impl FnOnce(DriverError) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e:?}"))
}

/// The virtual architecture NVRTC compiles for, from the compute capability. The kernels use
/// bf16 tensor cores and cp.async, so 8.0 is the oldest.
fn virtual_arch(major: i32, minor: i32) -> Result<&'static str> {
    Ok(match (major, minor) {
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 7) => "compute_87",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90a",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        (m, _) if m >= 8 => "compute_80",
        _ => {
            return Err(Error::Device(format!(
                "compute capability {major}.{minor}: the kernels need 8.0 or newer"
            )))
        }
    })
}

/// PTX of `source` for the virtual architecture `arch` (e.g. `compute_90a`) with `defines`
/// (`NAME=VALUE` macros), compiled by NVRTC once per process. Needs NVRTC, not a GPU.
pub fn compile(
    source: KernelSource,
    arch: &'static str,
    defines: &[(&str, String)],
) -> Result<String> {
    let mut options: Vec<String> = defines
        .iter()
        .map(|(name, value)| format!("-D{name}={value}"))
        .collect();
    options.push("--std=c++17".into());
    let key = format!("{}|{arch}|{}", source.name, options.join(" "));
    if let Some(ptx) = ptx_cache().lock().expect("PTX cache").get(&key) {
        return Ok(ptx.clone());
    }
    // SAFETY: only probes whether the NVRTC library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Device(
            "NVRTC (libnvrtc) was not found: kernels cannot be compiled".into(),
        ));
    }
    // The #line directive keeps NVRTC's messages pointing at the source's own lines.
    let text = format!("{PRELUDE}\n#line 1 \"{}\"\n{}", source.name, source.text);
    let compiled = compile_ptx_with_opts(
        text,
        CompileOptions {
            arch: Some(arch),
            options: options.clone(),
            name: Some(source.name.into()),
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::Device(format!(
            "compiling {} for {arch} with {options:?}:\n{}",
            source.name,
            log.to_string_lossy()
        )),
        other => Error::Device(format!("compiling {} for {arch}: {other}", source.name)),
    })?;
    let ptx = compiled.to_src();
    ptx_cache()
        .lock()
        .expect("PTX cache")
        .insert(key, ptx.clone());
    Ok(ptx)
}

/// A CUDA device with one stream; every launch and copy of lowbit goes through that stream.
pub struct CudaDevice {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: &'static str,
    compute_capability: (i32, i32),
    multiprocessors: usize,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    programmatic: AtomicBool,
}

/// The arguments of one kernel launch ([`CudaDevice::launch`]), in the kernel's parameter order.
/// Each takes one 8-byte slot; the driver reads as many bytes of it as the parameter has, and a
/// 4-byte value sits in the slot's first bytes (every supported device is little-endian).
pub struct KernelArgs<'a> {
    stream: &'a CudaStream,
    slots: Vec<u64>,
}

impl KernelArgs<'_> {
    /// A buffer's (or a view's) device address.
    pub fn ptr<T, P: DevicePtr<T>>(&mut self, buffer: &P) -> &mut Self {
        let (address, _record) = buffer.device_ptr(self.stream);
        self.slots.push(address);
        self
    }

    /// A buffer's device address, or a null pointer.
    pub fn ptr_or_null<T, P: DevicePtr<T>>(&mut self, buffer: Option<&P>) -> &mut Self {
        match buffer {
            Some(b) => self.ptr(b),
            None => self.null(),
        }
    }

    /// A null pointer.
    pub fn null(&mut self) -> &mut Self {
        self.slots.push(0);
        self
    }

    /// An `int`.
    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.slots.push(u64::from(value as u32));
        self
    }

    /// A `long`.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.slots.push(value as u64);
        self
    }

    /// A `float`.
    pub fn f32(&mut self, value: f32) -> &mut Self {
        self.slots.push(u64::from(value.to_bits()));
        self
    }
}

impl CudaDevice {
    /// Opens device `ordinal`. Fails with [`Error::Device`] (never panics) when the CUDA driver
    /// library is missing, no device is present, or the device is older than compute 8.0.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        // SAFETY: only probes whether the driver library can be loaded; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Device(
                "the CUDA driver library (libcuda) was not found".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(driver_error("counting CUDA devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Device(format!(
                "CUDA device {ordinal} requested, {count} present"
            )));
        }
        let context = CudaContext::new(ordinal).map_err(driver_error("creating a CUDA context"))?;
        // SAFETY: lowbit issues all work on the one stream below, so the per-buffer events that
        // order work across streams are not needed.
        unsafe { context.disable_event_tracking() };
        let name = context
            .name()
            .map_err(driver_error("reading the device name"))?;
        let compute_capability = context
            .compute_capability()
            .map_err(driver_error("reading the compute capability"))?;
        let arch = virtual_arch(compute_capability.0, compute_capability.1)?;
        let multiprocessors = context
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_error("reading the multiprocessor count"))?
            as usize;
        // A stream of its own (not the legacy default stream), so work can be captured in
        // CUDA graphs.
        let stream = context
            .new_stream()
            .map_err(driver_error("creating a CUDA stream"))?;
        Ok(CudaDevice {
            context,
            stream,
            name,
            arch,
            compute_capability,
            multiprocessors,
            modules: Mutex::new(HashMap::new()),
            programmatic: AtomicBool::new(
                compute_capability.0 >= 9 && std::env::var_os("LOWBIT_CUDA_NO_PDL").is_none(),
            ),
        })
    }

    /// Whether kernels are launched with programmatic dependent launch (compute 9.0 and newer;
    /// on by default there unless `LOWBIT_CUDA_NO_PDL` is set): each kernel may then start while
    /// the one before it finishes, which hides most of the gap between small kernels (see
    /// `kernels/common.cuh`).
    pub fn programmatic_launch(&self) -> bool {
        self.programmatic.load(Ordering::Relaxed)
    }

    /// Turns programmatic dependent launch on or off for later launches (graphs captured before
    /// keep what they captured). Ignored (always off) below compute 9.0.
    pub fn set_programmatic_launch(&self, on: bool) {
        self.programmatic
            .store(on && self.compute_capability.0 >= 9, Ordering::Relaxed);
    }

    /// An empty argument list for [`CudaDevice::launch`].
    pub fn args(&self) -> KernelArgs<'_> {
        KernelArgs {
            stream: &self.stream,
            slots: Vec::with_capacity(16),
        }
    }

    /// Queues `function` on the stream with `config` and `args`, with programmatic dependent
    /// launch when [`CudaDevice::programmatic_launch`] is on.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number, order and size, every pointer must
    /// be valid for what the kernel does with it for as long as the launch runs, and the kernel
    /// must call `grid_dependency_wait()` (kernels/common.cuh) before it touches memory an
    /// earlier kernel writes or reads.
    pub unsafe fn launch(
        &self,
        function: &CudaFunction,
        config: LaunchConfig,
        args: &mut KernelArgs<'_>,
        what: &str,
    ) -> Result<()> {
        self.context
            .bind_to_thread()
            .map_err(driver_error("binding the CUDA context"))?;
        let mut params: Vec<*mut c_void> = args
            .slots
            .iter_mut()
            .map(|slot| (slot as *mut u64).cast::<c_void>())
            .collect();
        // SAFETY: all-zero bytes are a valid launch attribute (a plain C struct and union).
        let mut attribute: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attribute.id =
            sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attribute.value.programmaticStreamSerializationAllowed = 1;
        let programmatic = self.programmatic_launch();
        let launch = sys::CUlaunchConfig {
            gridDimX: config.grid_dim.0,
            gridDimY: config.grid_dim.1,
            gridDimZ: config.grid_dim.2,
            blockDimX: config.block_dim.0,
            blockDimY: config.block_dim.1,
            blockDimZ: config.block_dim.2,
            sharedMemBytes: config.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attribute,
            numAttrs: u32::from(programmatic),
        };
        // SAFETY: `launch` and `params` live until the call returns (the driver copies the
        // argument values at launch); the caller guarantees the arguments match the kernel.
        unsafe {
            sys::cuLaunchKernelEx(
                &launch,
                function.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(driver_error(what))
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// The virtual architecture kernels are compiled for.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// The stream all work goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all queued work; reports any error a kernel raised.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_error("waiting for the GPU"))
    }

    /// Fills `buf` with 0xFF bytes: NaN as f32 and as bf16, so any element a kernel should
    /// have written but did not shows up (used on fresh KV-cache buffers and by checks).
    pub fn poison<T>(&self, buf: &mut CudaSlice<T>) -> Result<()> {
        let bytes = buf.len() * std::mem::size_of::<T>();
        let (ptr, _record) = buf.device_ptr_mut(&self.stream);
        // SAFETY: the range is exactly the buffer's bytes, on the stream every use of the
        // buffer is ordered on.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream())
        }
        .map_err(driver_error("filling a buffer"))
    }

    /// The module compiled from `source` with `defines` (`NAME=VALUE` macros), compiling it on
    /// first use in this process.
    pub fn module(
        &self,
        source: KernelSource,
        defines: &[(&str, String)],
    ) -> Result<Arc<CudaModule>> {
        let key = format!("{}|{}|{defines:?}", source.name, self.arch);
        if let Some(module) = self.modules.lock().expect("module cache").get(&key) {
            return Ok(module.clone());
        }
        let ptx = compile(source, self.arch, defines)?;
        let module = self
            .context
            .load_module(Ptx::from_src(ptx))
            .map_err(driver_error(&format!("loading {}", source.name)))?;
        self.modules
            .lock()
            .expect("module cache")
            .insert(key, module.clone());
        Ok(module)
    }

    /// Function `name` of `module`.
    pub fn function(module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
        module
            .load_function(name)
            .map_err(driver_error(&format!("finding kernel {name}")))
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("multiprocessors", &self.multiprocessors)
            .finish()
    }
}
