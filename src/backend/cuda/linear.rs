//! Quantized linear layers on the GPU: weights uploaded once in the device layout
//! ([`super::layout`]), products launched on the device's stream.
//!
//! `y[m, rows] = x[m, cols] W^T` with `x` and `y` bf16. Up to 16 tokens run the decode kernel
//! (`gemv_nt{1,2}_rt{1,2,4}`: 8 or 16 tokens per instruction, 1 to 4 row tiles per block, the
//! k tiles split among 1 to 16 warps); more run the tensor-core GEMM (`gemm`, 128 rows x 64
//! tokens per block).

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig};
use half::bf16;

use super::device::{driver_error, CudaDevice, QUANT_GEMM};
use super::layout::{DeviceFormat, DeviceScales, PackedWeight, TILE_ROWS};
use crate::error::{Error, Result};
use crate::quant::QuantizedTensor;

/// Most tokens the decode kernel takes (two token tiles of 8).
pub const GEMV_MAX_TOKENS: usize = 16;

/// Threads per block of the GEMM and the dequantization (8 warps).
const THREADS: u32 = 256;
/// Most warps of a decode block (`__launch_bounds__(512)` in the kernel).
pub const GEMV_MAX_WARPS: usize = 16;
/// Shared memory the decode kernel's partial sums may take: the 48 KiB a block gets without
/// opting in, less room for the kernel's static shared memory (the code book).
const GEMV_SHARED_BYTES: usize = 48 * 1024 - 256;
/// Weight rows of a GEMM block.
const GEMM_ROWS: usize = 128;
/// Tokens of a GEMM block.
const GEMM_TOKENS: usize = 64;

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The decode kernel with `row_tiles` (1, 2 or 4) 16-row tiles per block, whose k tiles
    /// `warps` warps split (1 to [`GEMV_MAX_WARPS`]; `None`: chosen from the shape).
    Gemv {
        /// Row tiles per block.
        row_tiles: usize,
        /// Warps per block, each taking a contiguous range of the k tiles.
        warps: Option<usize>,
    },
    /// The tensor-core GEMM.
    Gemm,
}

/// A quantized weight matrix on the GPU.
pub struct CudaQuantLinear {
    rows: usize,
    cols: usize,
    groups: usize,
    group_size: usize,
    format: DeviceFormat,
    device_bytes: usize,
    codes: CudaSlice<u8>,
    scales: CudaSlice<u8>,
    zero_points: Option<CudaSlice<i8>>,
    table: Option<CudaSlice<u16>>,
    /// `gemv[token_tiles - 1][log2(row_tiles)]`.
    gemv: Vec<Vec<CudaFunction>>,
    /// The decode kernel's `(row tiles, warps)` from [`decode_split`], chosen once at upload:
    /// `[token_tiles - 1][slot]`, slot 0 the automatic row tiles, slots 1-3 one, two and four
    /// row tiles (the split depends on the token count only through its token tiles).
    decode_splits: [[(usize, usize); 4]; 2],
    gemm: CudaFunction,
    dequantize: CudaFunction,
}

impl CudaQuantLinear {
    /// Packs and uploads `weight`.
    pub fn new(device: &CudaDevice, weight: &QuantizedTensor) -> Result<Self> {
        Self::from_packed(device, &PackedWeight::pack(weight)?)
    }

    /// Uploads a weight already in the device layout.
    pub fn from_packed(device: &CudaDevice, packed: &PackedWeight) -> Result<Self> {
        Self::upload(device, packed, 0)
    }

    /// For timing only: the products of this copy are wrong. With `diagnostic` 1 the kernels
    /// load no scales or zero points; with 2 they also skip the decode and the tensor-core
    /// math (`DIAG` in kernels/quant_gemm.cu). Timed against the real kernel, they show what
    /// the scale loads and the arithmetic cost.
    pub fn diagnostic(device: &CudaDevice, packed: &PackedWeight, diagnostic: u8) -> Result<Self> {
        Self::upload(device, packed, diagnostic)
    }

    fn upload(device: &CudaDevice, packed: &PackedWeight, diagnostic: u8) -> Result<Self> {
        let stream = device.stream();
        let upload = driver_error("uploading weights");
        let codes = stream.clone_htod(&packed.codes).map_err(upload)?;
        let (scale_bytes, scale_f16): (Vec<u8>, bool) = match &packed.scales {
            DeviceScales::F16(s) => (bytemuck::cast_slice(s).to_vec(), true),
            DeviceScales::F32(s) => (bytemuck::cast_slice(s).to_vec(), false),
        };
        let scales = stream
            .clone_htod(&scale_bytes)
            .map_err(driver_error("uploading scales"))?;
        let zero_points = match &packed.zero_points {
            Some(z) => Some(
                stream
                    .clone_htod(z)
                    .map_err(driver_error("uploading zero points"))?,
            ),
            None => None,
        };
        let table = match &packed.table {
            Some(t) => {
                let bits: Vec<u16> = t.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
                Some(
                    stream
                        .clone_htod(&bits)
                        .map_err(driver_error("uploading the code book"))?,
                )
            }
            None => None,
        };
        let module = device.module(
            QUANT_GEMM,
            &[
                ("FMT", (packed.format as u8).to_string()),
                ("ASYM", u8::from(zero_points.is_some()).to_string()),
                ("SCALE_F16", u8::from(scale_f16).to_string()),
                ("DIAG", diagnostic.to_string()),
                // How the decode kernel loads activations (`X_LOAD` in the kernel; the default
                // unless `LOWBIT_CUDA_X_LOAD` names another, for comparisons).
                (
                    "X_LOAD",
                    std::env::var("LOWBIT_CUDA_X_LOAD")
                        .ok()
                        .filter(|v| ["0", "1", "2"].contains(&v.as_str()))
                        .unwrap_or_else(|| "0".into()),
                ),
            ],
        )?;
        let gemv = (1..=2)
            .map(|nt| {
                [1, 2, 4]
                    .iter()
                    .map(|rt| CudaDevice::function(&module, &format!("gemv_nt{nt}_rt{rt}")))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut registers: DecodeRegisters = [[0; 3]; 2];
        for (regs, functions) in registers.iter_mut().zip(&gemv) {
            for (r, f) in regs.iter_mut().zip(functions) {
                *r = f
                    .num_regs()
                    .map_err(driver_error("reading kernel attributes"))?
                    .max(1) as usize;
            }
        }
        let decode_splits = [1, GEMV_MAX_TOKENS].map(|m| {
            [None, Some(1), Some(2), Some(4)].map(|row_tiles| {
                decode_split(
                    [packed.rows, packed.cols],
                    m,
                    row_tiles,
                    device.multiprocessors(),
                    &registers,
                )
            })
        });
        let gemm = CudaDevice::function(&module, "gemm")?;
        let dequantize = CudaDevice::function(&module, "dequantize")?;
        Ok(CudaQuantLinear {
            rows: packed.rows,
            cols: packed.cols,
            groups: packed.groups,
            group_size: packed.group_size,
            format: packed.format,
            device_bytes: packed.device_bytes(),
            codes,
            scales,
            zero_points,
            table,
            gemv,
            decode_splits,
            gemm,
            dequantize,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Decode rule of the codes.
    pub fn format(&self) -> DeviceFormat {
        self.format
    }

    /// Bytes of codes, scales and zero points a product reads.
    pub fn device_bytes(&self) -> usize {
        self.device_bytes
    }

    /// Registers per thread and local-memory (spill) bytes of each kernel, as the driver
    /// compiled them: `(name, registers, local bytes)`.
    pub fn kernel_resources(&self) -> Result<Vec<(String, i32, i32)>> {
        let mut out = Vec::new();
        let named = self
            .gemv
            .iter()
            .enumerate()
            .flat_map(|(nt, row)| {
                row.iter()
                    .enumerate()
                    .map(move |(rt, f)| (format!("gemv_nt{}_rt{}", nt + 1, 1 << rt), f))
            })
            .chain([("gemm".to_string(), &self.gemm)]);
        for (name, f) in named {
            let regs = f
                .num_regs()
                .map_err(driver_error("reading kernel attributes"))?;
            let local = f
                .local_size_bytes()
                .map_err(driver_error("reading kernel attributes"))?;
            out.push((name, regs, local));
        }
        Ok(out)
    }

    /// The kernel [`CudaQuantLinear::forward`] picks for `m` tokens on `device`: the GEMM
    /// above [`GEMV_MAX_TOKENS`] tokens, else the decode kernel with the row tiles and warps
    /// per block that [`decode_split`]'s model of waves finds fastest.
    /// (Chosen at upload for the device the weight lives on.)
    pub fn default_kernel(&self, m: usize) -> Kernel {
        if m > GEMV_MAX_TOKENS {
            return Kernel::Gemm;
        }
        let (row_tiles, warps) = self.decode_splits[token_tiles(m) - 1][0];
        Kernel::Gemv {
            row_tiles,
            warps: Some(warps),
        }
    }

    /// Warps per decode block with `row_tiles` (1, 2 or 4) row tiles (see [`decode_split`]).
    fn decode_warps(&self, m: usize, row_tiles: usize) -> usize {
        let slot = 1 + row_tiles.trailing_zeros() as usize;
        self.decode_splits[token_tiles(m) - 1][slot].1
    }

    /// `y = x W^T` for `m` tokens with the default kernel. `x` holds `m * cols` values and `y`
    /// `m * rows`; the work is queued on the device's stream.
    pub fn forward(
        &self,
        device: &CudaDevice,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        self.forward_with(device, x, m, y, self.default_kernel(m))
    }

    /// `y = x W^T` with a chosen kernel (benchmarks compare them).
    pub fn forward_with(
        &self,
        device: &CudaDevice,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
        kernel: Kernel,
    ) -> Result<()> {
        let kernel = match kernel {
            Kernel::Gemv {
                row_tiles,
                warps: None,
            } if [1, 2, 4].contains(&row_tiles) => Kernel::Gemv {
                row_tiles,
                warps: Some(self.decode_warps(m, row_tiles)),
            },
            other => other,
        };
        self.launch(device, x, m, y, kernel, 0)
    }

    /// For a stacked gate/up weight (gate rows, then as many up rows): `y = swiglu(x W^T)` for
    /// `m` tokens (at most [`GEMV_MAX_TOKENS`]), `y` holding `m` rows of `rows / 2` values. The
    /// decode kernel gives each block a gate tile and its up tile and writes
    /// `bf16(silu(g) u)` of the two products, each rounded to bf16 first: bit for bit the
    /// product with two row tiles per block (the same split of k among warps, so the same
    /// order of additions) followed by the forward pass's `swiglu` kernel, with one launch and
    /// one round trip through memory less. Needs `rows / 2` to be a multiple of 16.
    pub fn forward_swiglu(
        &self,
        device: &CudaDevice,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        let half = self.rows / 2;
        if m > GEMV_MAX_TOKENS
            || !self.rows.is_multiple_of(2)
            || !half.is_multiple_of(TILE_ROWS)
            || half == 0
        {
            return Err(Error::InvalidArgument(format!(
                "SwiGLU product [{}, {}]: {m} tokens (at most {GEMV_MAX_TOKENS}) and a stacked \
                 gate/up weight whose halves are multiples of {TILE_ROWS} rows",
                self.rows, self.cols
            )));
        }
        if y.len() < m * half {
            return Err(Error::InvalidArgument(format!(
                "SwiGLU product: {m} tokens need {} outputs, got {}",
                m * half,
                y.len()
            )));
        }
        let kernel = Kernel::Gemv {
            row_tiles: 2,
            warps: Some(self.decode_warps(m, 2)),
        };
        self.launch(device, x, m, y, kernel, half / TILE_ROWS)
    }

    /// Launches `kernel`; `pair_tiles` (decode kernel only) > 0 pairs gate and up tiles.
    fn launch(
        &self,
        device: &CudaDevice,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
        kernel: Kernel,
        pair_tiles: usize,
    ) -> Result<()> {
        let outputs = if pair_tiles > 0 {
            m * pair_tiles * TILE_ROWS
        } else {
            m * self.rows
        };
        if m == 0 || x.len() < m * self.cols || y.len() < outputs {
            return Err(Error::InvalidArgument(format!(
                "quantized product [{}, {}]: {m} tokens need {} inputs and {} outputs, got {} and {}",
                self.rows,
                self.cols,
                m * self.cols,
                outputs,
                x.len(),
                y.len()
            )));
        }
        let gemv = matches!(kernel, Kernel::Gemv { .. });
        let (function, config) = self.launch_plan(m, kernel, pair_tiles)?;
        let mut args = device.args();
        args.ptr(&self.codes)
            .ptr(&self.scales)
            .ptr_or_null(self.zero_points.as_ref())
            .ptr_or_null(self.table.as_ref())
            .ptr(x)
            .ptr(y);
        for v in [m, self.rows, self.cols, self.groups, self.group_size] {
            args.i32(v as i32);
        }
        if gemv {
            args.i32(pair_tiles as i32);
        }
        // SAFETY: the arguments match the kernel signatures in kernels/quant_gemm.cu (pointers to
        // codes, scales, zero points or null, code book or null, x, y; five ints; for the decode
        // kernel the paired tiles); the buffers hold the sizes the layout and the length checks
        // above guarantee, and the kernels bound every access by m, rows and cols (paired
        // tiles: the grid covers exactly the gate tiles, and y holds m rows of their rows).
        unsafe {
            device.launch(
                function,
                config,
                &mut args,
                "launching the quantized product",
            )
        }
    }

    /// Writes W dequantized to bf16, row-major `[rows, cols]`, into `out` (each weight rounded
    /// once from its f32 value). With many tokens, a dense bf16 GEMM on this copy
    /// ([`super::blas::Blas::linear`]) is faster than the fused kernel.
    pub fn dequantize_into(&self, device: &CudaDevice, out: &mut CudaSlice<bf16>) -> Result<()> {
        if out.len() < self.rows * self.cols {
            return Err(Error::InvalidArgument(format!(
                "dequantizing [{}, {}] needs {} outputs, got {}",
                self.rows,
                self.cols,
                self.rows * self.cols,
                out.len()
            )));
        }
        let tiles = self.rows.div_ceil(TILE_ROWS) * self.cols.div_ceil(super::layout::TILE_K);
        let config = LaunchConfig {
            grid_dim: (tiles.div_ceil(8) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = device.args();
        args.ptr(&self.codes)
            .ptr(&self.scales)
            .ptr_or_null(self.zero_points.as_ref())
            .ptr_or_null(self.table.as_ref())
            .ptr(out);
        for v in [self.rows, self.cols, self.groups, self.group_size] {
            args.i32(v as i32);
        }
        // SAFETY: matches `dequantize` in kernels/quant_gemm.cu; `out` holds rows * cols values
        // (checked above) and the kernel bounds every store by rows and cols.
        unsafe {
            device.launch(
                &self.dequantize,
                config,
                &mut args,
                "launching the dequantization",
            )
        }
    }

    fn launch_plan(
        &self,
        m: usize,
        kernel: Kernel,
        pair_tiles: usize,
    ) -> Result<(&CudaFunction, LaunchConfig)> {
        let row_tiles = self.rows.div_ceil(TILE_ROWS);
        let (function, grid, warps, shared) = match kernel {
            Kernel::Gemv {
                row_tiles: per_block,
                warps,
            } => {
                let warps = warps.unwrap_or(8);
                let nt = token_tiles(m);
                let valid = [1, 2, 4].contains(&per_block)
                    && (1..=max_decode_warps(per_block, nt)).contains(&warps);
                if m > GEMV_MAX_TOKENS || !valid {
                    return Err(Error::InvalidArgument(format!(
                        "decode kernel: {m} tokens (at most {GEMV_MAX_TOKENS}), {per_block} row \
                         tiles per block (1, 2 or 4), {warps} warps (at most {} here)",
                        if [1, 2, 4].contains(&per_block) {
                            max_decode_warps(per_block, nt)
                        } else {
                            0
                        }
                    )));
                }
                let blocks = if pair_tiles > 0 {
                    pair_tiles
                } else {
                    row_tiles.div_ceil(per_block)
                };
                (
                    &self.gemv[nt - 1][per_block.trailing_zeros() as usize],
                    (blocks as u32, 1),
                    warps as u32,
                    (warps * decode_partial_bytes(per_block, nt)) as u32,
                )
            }
            Kernel::Gemm if pair_tiles > 0 => {
                return Err(Error::InvalidArgument(
                    "only the decode kernel pairs gate and up tiles".into(),
                ))
            }
            Kernel::Gemm => (
                &self.gemm,
                (
                    self.rows.div_ceil(GEMM_ROWS) as u32,
                    m.div_ceil(GEMM_TOKENS) as u32,
                ),
                THREADS / 32,
                0,
            ),
        };
        if grid.1 > 65_535 {
            return Err(Error::InvalidArgument(format!("{m} tokens in one product")));
        }
        Ok((
            function,
            LaunchConfig {
                grid_dim: (grid.0, grid.1, 1),
                block_dim: (32 * warps, 1, 1),
                shared_mem_bytes: shared,
            },
        ))
    }
}

/// Registers per thread of the decode kernels, `[token_tiles - 1][log2(row_tiles)]`.
type DecodeRegisters = [[usize; 3]; 2];

/// Registers of one multiprocessor (every architecture since compute 5.0), a quarter for each
/// of its four warp schedulers.
const SM_REGISTERS: usize = 65_536;
/// Resident warps and blocks per multiprocessor (compute 8.0 and 9.0 allow 64 and 32; fewer
/// only make the model pessimistic).
const SM_WARPS: usize = 64;
const SM_BLOCKS: usize = 32;
/// Shared memory the model assumes per multiprocessor (Hopper has 228 KiB, Ampere 164).
const SM_SHARED_BYTES: usize = 100 * 1024;
/// A block's fixed cost in the model, in k tiles of one row tile: the launch, the reduction of
/// the warps' partial sums and the stores.
const BLOCK_OVERHEAD_TILES: usize = 2;

/// The decode kernel's row tiles and warps per block for a `[rows, cols]` weight and `m`
/// tokens on `multiprocessors` SMs (`row_tiles` fixed when given): the split with the least
/// modelled time, `waves * (k tiles per warp * row tiles + BLOCK_OVERHEAD_TILES)`, where a wave
/// is as many blocks as the SMs hold at once (registers per scheduler, warps, blocks, shared
/// memory) and a warp takes about the same time for each k tile of each row tile. Ties go to more warps per
/// block (more loads in flight). On an H100 the model's choice was the fastest of the 27 splits
/// measured, or within 10% of it, for 4096x4096, 14336x4096, 4096x14336, 9728x896, 896x4864 and
/// 1152x896 at 1 and 16 tokens, where the earlier rule (about 16 warps per SM over the grid)
/// was up to 1.6x slower: it took 9 warps (34 us) for 4096x14336, where 8 took 21.
fn decode_split(
    [rows, cols]: [usize; 2],
    m: usize,
    row_tiles: Option<usize>,
    multiprocessors: usize,
    registers: &DecodeRegisters,
) -> (usize, usize) {
    let nt = token_tiles(m);
    let k_tiles = cols.div_ceil(super::layout::TILE_K).max(1);
    let choices: &[usize] = match row_tiles {
        Some(ref r) => std::slice::from_ref(r),
        None => &[1, 2, 4],
    };
    let mut best: Option<((usize, usize), (usize, usize))> = None;
    for &rt in choices {
        let blocks = rows.div_ceil(TILE_ROWS * rt).max(1);
        let regs = registers[nt - 1][rt.trailing_zeros() as usize].div_ceil(8) * 8;
        let cap = max_decode_warps(rt, nt).min(k_tiles);
        for asked in 1..=cap {
            let per_warp = k_tiles.div_ceil(asked);
            // Warps beyond `k_tiles / per_warp` would get no k tile.
            let warps = k_tiles.div_ceil(per_warp);
            let shared = warps * decode_partial_bytes(rt, nt) + 1024;
            // The registers are split among the SM's four schedulers, whose warps each take
            // theirs from one quarter: `b` blocks fit when `ceil(b * warps / 4)` warps fit a
            // quarter (9 warps of 104 registers: one block, not two; measured 34 us for
            // 4096x14336, against 21 with 8 warps, two blocks).
            let per_quarter = SM_REGISTERS / 4 / (regs * 32);
            let resident = (4 * per_quarter / warps)
                .min(SM_WARPS / warps)
                .min(SM_BLOCKS)
                .min(SM_SHARED_BYTES / shared)
                .max(1);
            let waves = blocks.div_ceil(resident * multiprocessors.max(1));
            let cost = waves * (per_warp * rt + BLOCK_OVERHEAD_TILES);
            // Less time first, then more warps, then fewer row tiles.
            let key = (cost, usize::MAX - warps);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, (rt, warps)));
            }
        }
    }
    best.map_or((choices[0], 1), |(_, split)| split)
}

/// Token tiles of 8 the decode kernel takes for `m` tokens (1 or 2).
fn token_tiles(m: usize) -> usize {
    if m > 8 {
        2
    } else {
        1
    }
}

/// Shared bytes of one warp's partial sums in the decode kernel.
fn decode_partial_bytes(row_tiles: usize, token_tiles: usize) -> usize {
    row_tiles * token_tiles * 4 * 32 * 4
}

/// Most warps a decode block may have with `row_tiles` and `token_tiles`.
fn max_decode_warps(row_tiles: usize, token_tiles: usize) -> usize {
    (GEMV_SHARED_BYTES / decode_partial_bytes(row_tiles, token_tiles)).min(GEMV_MAX_WARPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::layout::TILE_K;

    /// Registers of the w4a16-g128 decode kernels as an H100 compiled them.
    const H100_W4A16: DecodeRegisters = [[98, 100, 105], [120, 117, 127]];

    /// Every split the automatic choice makes is launchable (threads, shared memory) and
    /// leaves no warp without a k tile, on small and large GPUs, for every shape class.
    #[test]
    fn automatic_decode_splits_are_launchable_and_leave_no_warp_idle() {
        let shapes = [
            [16, 64],
            [37, 200],
            [896, 896],
            [1152, 896],
            [9728, 896],
            [896, 4864],
            [4096, 4096],
            [14336, 4096],
            [4096, 14336],
            [151_936, 896],
        ];
        for registers in [H100_W4A16, [[32; 3]; 2], [[128; 3]; 2]] {
            for sms in [1, 46, 132, 148] {
                for [rows, cols] in shapes {
                    for m in [1, 4, 8, 9, 16] {
                        for fixed in [None, Some(1), Some(2), Some(4)] {
                            let (row_tiles, warps) =
                                decode_split([rows, cols], m, fixed, sms, &registers);
                            let k_tiles = cols.div_ceil(TILE_K);
                            let per_warp = k_tiles.div_ceil(warps);
                            let at = format!("{rows}x{cols} m={m} {fixed:?} sms={sms}");
                            assert!(fixed.is_none_or(|r| r == row_tiles), "{at}");
                            assert!([1, 2, 4].contains(&row_tiles), "{at}: {row_tiles}");
                            assert!((1..=GEMV_MAX_WARPS).contains(&warps), "{at}: {warps}");
                            let nt = token_tiles(m);
                            assert!(warps <= max_decode_warps(row_tiles, nt), "{at}");
                            let shared = warps * decode_partial_bytes(row_tiles, nt);
                            assert!(shared <= GEMV_SHARED_BYTES, "{at}: {shared} bytes");
                            assert!((warps - 1) * per_warp < k_tiles, "{at}: an idle warp");
                            assert!(warps * per_warp >= k_tiles, "{at}: k tiles left over");
                            // Uploads keep one split per token-tile count.
                            let same = if m > 8 { GEMV_MAX_TOKENS } else { 1 };
                            let cached = decode_split([rows, cols], same, fixed, sms, &registers);
                            assert_eq!((row_tiles, warps), cached, "{at}");
                        }
                    }
                }
            }
        }
    }

    /// The splits the checks run are launchable at every token count of the decode kernel.
    #[test]
    fn checked_splits_are_launchable() {
        for kernel in crate::backend::cuda::check::decode_kernels() {
            if let Kernel::Gemv {
                row_tiles,
                warps: Some(warps),
            } = kernel
            {
                for m in 1..=GEMV_MAX_TOKENS {
                    assert!(
                        warps <= max_decode_warps(row_tiles, token_tiles(m)),
                        "{kernel:?}"
                    );
                }
            }
        }
    }

    /// The model's choices for the shapes swept on an H100 (132 SMs; `benches/cuda` with
    /// `--sweep`, microseconds): each the fastest split measured or within 10% of it.
    #[test]
    fn decode_splits_follow_the_h100_sweep() {
        let split = |shape, m| decode_split(shape, m, None, 132, &H100_W4A16);
        // 6.13 and 6.76 us; the fastest, rt1 w8: 6.06 and 6.63.
        assert_eq!(split([4096, 4096], 1), (2, 16));
        assert_eq!(split([4096, 4096], 16), (2, 16));
        // 20.16, the fastest.
        assert_eq!(split([14336, 4096], 1), (4, 8));
        assert_eq!(split([14336, 4096], 16), (4, 8));
        // 19.81 and 19.20, the fastest.
        assert_eq!(split([4096, 14336], 1), (2, 16));
        assert_eq!(split([4096, 14336], 16), (2, 16));
        // 4.05 and 4.55, the fastest.
        assert_eq!(split([9728, 896], 1), (1, 3));
        assert_eq!(split([9728, 896], 16), (1, 3));
        // 3.61 and 4.05, the fastest.
        assert_eq!(split([896, 4864], 1), (1, 16));
        assert_eq!(split([896, 4864], 16), (1, 16));
        // 14 warps, one k tile each, as 16 would be: 1.85 and 2.11 (the fastest at 16 tokens,
        // rt1 w8: 2.07).
        assert_eq!(split([1152, 896], 1), (1, 14));
        assert_eq!(split([1152, 896], 16), (1, 14));
    }
}
