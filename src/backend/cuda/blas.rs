//! Dense bf16 products through cuBLAS (the baseline the quantized kernels are measured against),
//! and products of quantized activations and weights through cuBLASLt: FP8 E4M3 with per-channel
//! and per-token scales or 128x128 and 1x128 block scales, applied by the tensor-core kernel
//! itself, and int8 with i32 sums.

use cudarc::cublas::{result::gemm_ex, sys};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::cublaslt::{result as lt, sys as lt_sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;

use super::device::CudaDevice;
use crate::error::{Error, Result};

/// Bytes of the workspace given to cuBLAS (its default size on Hopper), so it allocates nothing
/// while a CUDA graph is being captured.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle bound to the device's stream, and a cuBLASLt handle where that library is
/// installed. Both use one workspace: they run on the same stream, one product at a time.
pub struct Blas {
    handle: CudaBlas,
    lt: Option<LtHandle>,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    workspace: CudaSlice<u8>,
}

struct LtHandle(lt_sys::cublasLtHandle_t);

// SAFETY: a cuBLASLt handle holds no per-call state (each product gets its own descriptors and
// the stream explicitly) and cuBLAS documents its handles as usable from several host threads;
// lowbit's products run on one stream, and the GPU model queues them under its pass lock.
unsafe impl Send for LtHandle {}
// SAFETY: as for Send: shared use only reads the handle.
unsafe impl Sync for LtHandle {}

impl Drop for LtHandle {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `lt::create_handle` and is destroyed once, here.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

/// What a [`Blas::scaled`] product multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaledKind {
    /// int8 codes, i32 sums out; the scales are applied afterwards.
    Int8,
    /// E4M3 codes with one f32 scale per weight row and per token, bf16 out.
    Fp8Channel,
    /// E4M3 codes with one f32 scale per 128x128 weight block and per 1x128 token group, bf16
    /// out.
    Fp8Block,
}

/// The operands of a [`Blas::scaled`] product (device buffers, layouts in
/// `kernels/scaled_mm.cu`): weight codes `[rows, cols]` and their scales, activation codes
/// `[tokens, cols]` and their scales.
pub struct ScaledOperands<'a> {
    /// Weight codes, row-major, `cols` bytes per row.
    pub weight: &'a CudaSlice<u8>,
    /// Weight scales (none for int8).
    pub weight_scales: &'a CudaSlice<f32>,
    /// Activation codes, row-major, `cols` bytes per token.
    pub activations: &'a CudaSlice<u8>,
    /// Activation scales (none for int8).
    pub activation_scales: &'a CudaSlice<f32>,
}

/// Descriptors of one cuBLASLt product, destroyed on drop.
struct LtDescriptors {
    desc: lt_sys::cublasLtMatmulDesc_t,
    layouts: Vec<lt_sys::cublasLtMatrixLayout_t>,
    pref: Option<lt_sys::cublasLtMatmulPreference_t>,
}

impl Drop for LtDescriptors {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created once by cuBLASLt and is destroyed once, here,
        // after the product that used it was queued (cuBLASLt copies what it needs at launch).
        unsafe {
            for &l in &self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            if let Some(p) = self.pref {
                let _ = lt::destroy_matmul_pref(p);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

fn lt_error(what: &'static str) -> impl FnOnce(lt::CublasError) -> Error {
    move |e| Error::Device(format!("cuBLASLt, {what}: {e:?}"))
}

/// Sets one attribute of a matmul descriptor.
///
/// # Safety
/// `desc` must be live and `T` the attribute's documented type.
unsafe fn set_attribute<T>(
    desc: lt_sys::cublasLtMatmulDesc_t,
    attr: lt_sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> Result<()> {
    lt::set_matmul_desc_attribute(
        desc,
        attr,
        value as *const T as *const _,
        std::mem::size_of::<T>(),
    )
    .map_err(lt_error("setting a descriptor attribute"))
}

impl Blas {
    /// Creates the handle. Fails with [`Error::Device`] where cuBLAS is not installed.
    pub fn new(device: &CudaDevice) -> Result<Self> {
        // SAFETY: only probes whether the cuBLAS library can be loaded.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device("cuBLAS (libcublas) was not found".into()));
        }
        // SAFETY: only probes whether the cuBLASLt library can be loaded.
        let lt = if unsafe { lt_sys::is_culib_present() } {
            Some(LtHandle(
                lt::create_handle().map_err(lt_error("creating a handle"))?,
            ))
        } else {
            None
        };
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
            lt,
            stream,
            workspace,
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

    /// `out[tokens, rows] = activations[tokens, cols] weight[rows, cols]^T` on quantized codes
    /// through cuBLASLt: for [`ScaledKind::Int8`] `out` holds i32 sums, else bf16 values with
    /// both sides' scales applied. `tokens` must be a multiple of 4 and `cols` and `rows` of 16
    /// (the callers pad); `out` is `T`-typed and holds `tokens * rows` values.
    pub fn scaled<T: cudarc::driver::DeviceRepr>(
        &self,
        kind: ScaledKind,
        operands: ScaledOperands<'_>,
        out: &mut CudaSlice<T>,
        [tokens, rows, cols]: [usize; 3],
    ) -> Result<()> {
        use lt_sys::cublasLtMatmulDescAttributes_t as Attr;
        use lt_sys::cublasLtMatmulMatrixScale_t as Scale;
        use lt_sys::cudaDataType_t as Type;
        let Some(handle) = &self.lt else {
            return Err(Error::Device(
                "cuBLASLt (libcublasLt) was not found: products of quantized activations need it"
                    .into(),
            ));
        };
        let out_bytes = if kind == ScaledKind::Int8 { 4 } else { 2 };
        if !tokens.is_multiple_of(4)
            || !rows.is_multiple_of(16)
            || !cols.is_multiple_of(16)
            || std::mem::size_of::<T>() != out_bytes
            || operands.weight.len() < rows * cols
            || operands.activations.len() < tokens * cols
            || out.len() < tokens * rows
        {
            return Err(Error::InvalidArgument(format!(
                "{kind:?} product of [{tokens}, {cols}] and [{rows}, {cols}]: unaligned sizes or \
                 buffers too small"
            )));
        }
        let (code_type, out_type, compute, scale_type) = match kind {
            ScaledKind::Int8 => (
                Type::CUDA_R_8I,
                Type::CUDA_R_32I,
                lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
                Type::CUDA_R_32I,
            ),
            _ => (
                Type::CUDA_R_8F_E4M3,
                Type::CUDA_R_16BF,
                lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                Type::CUDA_R_32F,
            ),
        };
        let stream = &self.stream;
        let (w_ptr, _w) = operands.weight.device_ptr(stream);
        let (ws_ptr, _ws) = operands.weight_scales.device_ptr(stream);
        let (a_ptr, _a) = operands.activations.device_ptr(stream);
        let (as_ptr, _as) = operands.activation_scales.device_ptr(stream);
        let (out_ptr, _out) = out.device_ptr_mut(stream);
        let (work_ptr, _work) = self.workspace.device_ptr(stream);
        // cuBLASLt is column-major: the weight is A = [cols, rows] taken transposed, the
        // activations B = [cols, tokens], the output D = [rows, tokens], which is out
        // row-major; A's scales run over D's rows, B's over its columns (the scale layouts of
        // kernels/scaled_mm.cu and scaled.rs).
        let mut descriptors = LtDescriptors {
            desc: lt::create_matmul_desc(compute, scale_type)
                .map_err(lt_error("creating the descriptor"))?,
            layouts: Vec::with_capacity(3),
            pref: None,
        };
        let desc = descriptors.desc;
        // SAFETY: `desc` is live; every attribute gets the type cuBLASLt documents for it
        // (cublasOperation_t and the scale modes are 32-bit enums, scale pointers are device
        // addresses of f32 buffers that outlive the queued product).
        unsafe {
            let transpose = sys::cublasOperation_t::CUBLAS_OP_T;
            let plain = sys::cublasOperation_t::CUBLAS_OP_N;
            set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_TRANSA, &transpose)?;
            set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_TRANSB, &plain)?;
            if kind != ScaledKind::Int8 {
                let (w_mode, a_mode) = if kind == ScaledKind::Fp8Block {
                    (
                        Scale::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                        Scale::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                    )
                } else {
                    (
                        Scale::CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
                        Scale::CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
                    )
                };
                set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &w_mode)?;
                set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &a_mode)?;
                set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ws_ptr)?;
                set_attribute(desc, Attr::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &as_ptr)?;
            }
        }
        let layout = |t, r: usize, c: usize| {
            lt::create_matrix_layout(t, r as u64, c as u64, r as i64)
                .map_err(lt_error("creating a layout"))
        };
        descriptors.layouts.push(layout(code_type, cols, rows)?);
        descriptors.layouts.push(layout(code_type, cols, tokens)?);
        descriptors.layouts.push(layout(out_type, rows, tokens)?);
        let [a_layout, b_layout, d_layout] = [0, 1, 2].map(|i| descriptors.layouts[i]);
        let pref = lt::create_matmul_pref().map_err(lt_error("creating a preference"))?;
        descriptors.pref = Some(pref);
        let workspace_bytes = WORKSPACE_BYTES as u64;
        // SAFETY: `pref` is live and the attribute is a u64.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                lt_sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace_bytes) as *const u64 as *const _,
                8,
            )
        }
        .map_err(lt_error("setting the workspace size"))?;
        // SAFETY: every descriptor is live and describes the buffers checked above.
        let heuristic = unsafe {
            lt::get_matmul_algo_heuristic(
                handle.0, desc, a_layout, b_layout, d_layout, d_layout, pref,
            )
        }
        .map_err(|e| {
            Error::Device(format!(
                "cuBLASLt has no {kind:?} kernel for [{tokens}, {cols}] x [{rows}, {cols}]^T on \
                 this GPU: {e:?}"
            ))
        })?;
        let (one_i, zero_i, one_f, zero_f) = (1i32, 0i32, 1f32, 0f32);
        let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) =
            if kind == ScaledKind::Int8 {
                ((&one_i) as *const i32 as _, (&zero_i) as *const i32 as _)
            } else {
                ((&one_f) as *const f32 as _, (&zero_f) as *const f32 as _)
            };
        // SAFETY: the buffers hold the sizes checked above and stay alive until the stream has
        // run the product (their guards are held until it is queued, and the callers keep the
        // buffers); alpha and beta have the scale type's width; C is D with beta 0; the
        // workspace is WORKSPACE_BYTES long and used only on this stream.
        unsafe {
            lt::matmul(
                handle.0,
                desc,
                alpha,
                beta,
                w_ptr as *const _,
                a_layout,
                a_ptr as *const _,
                b_layout,
                out_ptr as *const _,
                d_layout,
                out_ptr as *mut _,
                d_layout,
                &heuristic.algo,
                work_ptr as *mut _,
                WORKSPACE_BYTES,
                stream.cu_stream() as *mut _,
            )
        }
        .map_err(lt_error("running the product"))
    }
}
