//! Dense bf16 products through cuBLAS: the baseline the quantized kernels are measured against.

use cudarc::cublas::{result::gemm_ex, sys};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;

use super::device::CudaDevice;
use crate::error::{Error, Result};

/// Bytes of the workspace given to cuBLAS (its default size on Hopper), so it allocates nothing
/// while a CUDA graph is being captured.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle bound to the device's stream.
pub struct Blas {
    handle: CudaBlas,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    _workspace: CudaSlice<u8>,
}

impl Blas {
    /// Creates the handle. Fails with [`Error::Device`] where cuBLAS is not installed.
    pub fn new(device: &CudaDevice) -> Result<Self> {
        // SAFETY: only probes whether the cuBLAS library can be loaded.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device("cuBLAS (libcublas) was not found".into()));
        }
        let handle = CudaBlas::new(device.stream().clone())
            .map_err(|e| Error::Device(format!("creating a cuBLAS handle: {e:?}")))?;
        let stream = device.stream().clone();
        let mut workspace = stream
            .alloc_zeros::<u8>(WORKSPACE_BYTES)
            .map_err(|e| Error::Device(format!("allocating the cuBLAS workspace: {e:?}")))?;
        {
            let (ptr, _record) = workspace.device_ptr_mut(&stream);
            // SAFETY: the buffer is WORKSPACE_BYTES long and lives as long as the handle (both
            // fields of Blas); the handle uses it on the same stream.
            unsafe { sys::cublasSetWorkspace_v2(*handle.handle(), ptr as *mut _, WORKSPACE_BYTES) }
                .result()
                .map_err(|e| Error::Device(format!("setting the cuBLAS workspace: {e:?}")))?;
        }
        Ok(Blas {
            handle,
            stream,
            _workspace: workspace,
        })
    }

    /// `y[m, rows] = x[m, cols] w[rows, cols]^T`, bf16 in and out, f32 accumulation.
    pub fn linear(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        [m, rows, cols]: [usize; 3],
    ) -> Result<()> {
        if x.len() < m * cols || w.len() < rows * cols || y.len() < m * rows {
            return Err(Error::InvalidArgument(format!(
                "bf16 product [{m}, {cols}] x [{rows}, {cols}]^T: buffers too small"
            )));
        }
        // cuBLAS is column-major: it sees w as [cols, rows] (so op T), x as [cols, m] and y as
        // [rows, m], which is y^T = w x^T.
        let config = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: rows as i32,
            n: m as i32,
            k: cols as i32,
            alpha: bf16::ONE,
            lda: cols as i32,
            ldb: cols as i32,
            beta: bf16::ZERO,
            ldc: rows as i32,
        };
        // SAFETY: the sizes were checked above against the leading dimensions passed.
        unsafe { self.handle.gemm(config, w, x, y) }
            .map_err(|e| Error::Device(format!("cuBLAS bf16 GEMM: {e:?}")))
    }

    /// `y[m, rows] = x[m, cols] w[rows, cols]^T` with bf16 inputs and f32 output (logits), f32
    /// accumulation.
    pub fn linear_f32_out(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<f32>,
        [m, rows, cols]: [usize; 3],
    ) -> Result<()> {
        if x.len() < m * cols || w.len() < rows * cols || y.len() < m * rows {
            return Err(Error::InvalidArgument(format!(
                "bf16 product [{m}, {cols}] x [{rows}, {cols}]^T into f32: buffers too small"
            )));
        }
        let stream = &self.stream;
        let (alpha, beta) = (1f32, 0f32);
        let (w_ptr, _w) = w.device_ptr(stream);
        let (x_ptr, _x) = x.device_ptr(stream);
        let (y_ptr, _y) = y.device_ptr_mut(stream);
        // SAFETY: the same column-major reading as `linear` (y^T = w x^T), sizes checked above;
        // alpha and beta are f32 as CUBLAS_COMPUTE_32F requires; the handle is bound to the
        // stream the buffers are used on.
        unsafe {
            gemm_ex(
                *self.handle.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                rows as i32,
                m as i32,
                cols as i32,
                (&alpha) as *const f32 as *const _,
                w_ptr as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                cols as i32,
                x_ptr as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                cols as i32,
                (&beta) as *const f32 as *const _,
                y_ptr as *mut _,
                sys::cudaDataType_t::CUDA_R_32F,
                rows as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device(format!("cuBLAS bf16 GEMM with f32 output: {e:?}")))
    }
}
