//! Dense bf16 products through cuBLAS: the baseline the quantized kernels are measured against.

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::CudaDevice;
use crate::error::{Error, Result};

/// A cuBLAS handle bound to the device's stream.
pub struct Blas {
    handle: CudaBlas,
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
        Ok(Blas { handle })
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
}
