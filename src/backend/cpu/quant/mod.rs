//! Fused dequantize-and-multiply on the CPU: `y = x W^T + b` with W a [`QuantizedTensor`],
//! never materializing W in floating point.
//!
//! Work is split over blocks of output rows (about `TASK_VALUES` weights each) with rayon. A
//! block's rows form as many contiguous streams as a kernel set reads rows together (up to
//! [`ROW_TILE`]), and kernels are handed the rows in stream order, so the rows they read
//! together lie far apart: one thread streams weights from DRAM at close to the read bandwidth
//! only with several distant streams in flight (the hardware prefetchers track each). Each
//! kernel call takes a quarter of the block against up to [`TOKEN_TILE`] activation rows; with
//! more than one activation row (prefill, batched decode) the rows are also cut into k-slices
//! of about [`SLICE_BYTES`] of activations, so a slice stays in L1 while every weight row of the
//! block passes over it, and partial sums add up. Per weight row, a kernel computes `sum_g scale[g] * sum_{i in g} v(code_i) * x_i`;
//! zero-point offsets (`w = scale * v - offset`) are subtracted afterwards with per-group
//! activation sums, and the bias added.
//!
//! Kernels exist per instruction set ([`scalar`] is the reference; `avx2`, `avx512` and
//! `avx512_limbs` (int4 against one token by VNNI integer products, see [`limbs`]) on x86-64,
//! `neon` on aarch64), chosen once by CPU feature detection; `LOWBIT_ISA` caps the choice (see
//! [`kernels`]).
//!
//! Activation layout: byte codes read activations in natural order; for nibble codes each kernel
//! set names a [`NibbleLayout`], and the activations are permuted once per call to match. Rows of
//! activations are zero-padded to a multiple of 32 values; float rows start on a cache line.
//!
//! Kernel contract: for k-slices a kernel is called with sub-slices of the codes, scales and
//! activations that start on a group boundary and on a multiple of [`SLICE_ALIGN`] values, which
//! every layout maps onto itself.

mod aligned;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_int;
#[cfg(target_arch = "x86_64")]
pub mod avx512_limbs;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod blocks;
pub mod limbs;
#[cfg(target_arch = "aarch64")]
pub mod neon;

use std::cell::RefCell;
use std::sync::OnceLock;

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::quant::activation::{fake_quantize_fp8, quantize_int8_rows};
use crate::quant::{ActivationFormat, CodeKind, Granularity, QuantizedTensor, Scales};
use aligned::LineAligned;

/// Activation rows processed together against one decoded weight row.
pub const TOKEN_TILE: usize = 8;

/// Weight rows a kernel reads together (streams it interleaves).
pub const ROW_TILE: usize = 4;

/// Activation bytes per k-slice of a tile (a slice of every tile row fits in L1 with room for
/// the weight codes passing through).
pub const SLICE_BYTES: usize = 32 * 1024;

/// Values a k-slice starts on a multiple of: a chunk of every layout.
pub const SLICE_ALIGN: usize = 128;

/// Kernel calls a block's rows are split into per slice (see `Job::run_block`).
const BLOCK_PARTS: usize = 4;

/// Weight values a rayon task aims at (1 MB of int4 codes, about 0.1 ms of decode on one core):
/// enough rows per stream to amortize the streams' start. Twice the earlier 2^20 made
/// w4a16-g128 on the 4096x4096, 11008x4096 and 4096x11008 matrices 4-18% faster at batch 1
/// and 1 or 2 threads on a 2-core Xeon (full benchmark runs; on 2 threads 20.6 -> 22.9, 19.9 ->
/// 23.5 and 23.0 -> 24.0 GB/s, while the read probe measured 24.2 and then 22.1 GB/s); small
/// matrices are split by thread count first and keep their tasks.
const TASK_VALUES: usize = 1 << 21;

/// Instruction sets with quantized kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuantIsa {
    /// Portable Rust: the reference.
    Scalar,
    /// aarch64 NEON (integer products by `smull` + `sadalp`).
    Neon,
    /// aarch64 NEON with the dotprod extension (integer products by `sdot`).
    NeonDotprod,
    /// x86-64 AVX2 + FMA (+ F16C).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ VNNI for the int8 path when present).
    Avx512,
    /// x86-64 AVX-512 with VNNI: as [`QuantIsa::Avx512`], and int4 weights against one token of
    /// float activations by integer products on the activations split into bytes
    /// (`avx512_limbs`).
    Avx512Vnni,
}

/// The order in which a kernel reads the activations of nibble codes, per chunk of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NibbleLayout {
    /// Natural order.
    Natural,
    /// Chunks of `2B` values covering `B` code bytes: first the values whose codes sit in the
    /// low nibbles (in byte order), then those in the high nibbles.
    Bytes(usize),
    /// Chunks of 128 values covering 64 code bytes, read as sixteen little-endian 32-bit words:
    /// the value in bits `4s..4s+4` of word `j` sits at position `16s + j`. A last chunk of
    /// `L < 128` values (a multiple of 32) has `L/8` words: position `(L/8)s + j`.
    Words,
}

/// One weight row as a kernel sees it.
#[derive(Clone, Copy, Debug)]
pub struct RowArgs<'a> {
    /// How codes decode.
    pub kind: &'a CodeKind,
    /// The row's stored codes (at least `ceil(k/2)` bytes for nibbles, `k` for bytes).
    pub codes: &'a [u8],
    /// Input features.
    pub k: usize,
    /// Values per scale group: a multiple of 32, or `>= k` (one group).
    pub group_size: usize,
    /// One scale per group.
    pub scales: &'a [f32],
}

/// Float path: for weight row `r` of `rows` and activation row `t` of `xs`, `out[r * xs.len() +
/// t] = sum_g scales[g] * sum_{i in g} v(code_i) * xs[t][i]`. `rows` holds rows of one kind, `k`
/// and group size, read [`KernelSet::row_tile`] consecutive ones at a time (so consecutive rows
/// should lie far apart in memory); `xs` 1..=[`TOKEN_TILE`] rows in the kernel's activation
/// layout, `ceil(k/32)*32` values each, zero past `k`.
pub type FloatKernel = unsafe fn(&[RowArgs<'_>], &[&[f32]], &mut [f32]);

/// Integer path (int4/int8 codes, int8 activations): as [`FloatKernel`] with `q(code_i)` the
/// signed integer value; `xsums[t][g]` is the sum of `xs[t]` over group `g` (for kernels that
/// multiply offset-coded unsigned codes).
pub type IntKernel = unsafe fn(&[RowArgs<'_>], &[&[i8]], &[&[i32]], &mut [f32]);

/// The kernels of one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct KernelSet {
    /// Which instruction set.
    pub isa: QuantIsa,
    /// Weight rows the kernels read together (1..=[`ROW_TILE`]): the dispatcher interleaves
    /// that many streams.
    pub row_tile: usize,
    /// Activation layout of the float path for nibble codes.
    pub float_layout: NibbleLayout,
    /// Activation layout of the integer path for nibble codes.
    pub int_layout: NibbleLayout,
    /// Float-activation kernel.
    pub dot_float: FloatKernel,
    /// int8-activation kernel.
    pub dot_int8: IntKernel,
    /// Int4 weights against one token of float activations in limbs, where the set has one
    /// (see `avx512_limbs`).
    pub dot_limbs: Option<LimbKernel>,
}

/// Limb kernel: `out[r] = sum_g scales[g] * sum_{i in g} v(code_i) x_i` for each row, `x` one
/// token in [`limbs::Limbs`].
///
/// # Safety
/// As `avx512_limbs::dot_limbs`.
pub type LimbKernel = unsafe fn(&[RowArgs<'_>], &limbs::Limbs, &mut [f32]);

/// The kernel sets this CPU can run, the portable one first.
pub fn available() -> Vec<KernelSet> {
    let mut sets = vec![scalar::KERNELS];
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::supported() {
            sets.push(avx2::KERNELS);
        }
        if avx512::supported() {
            sets.push(avx512::KERNELS);
        }
        if avx512_limbs::supported() {
            sets.push(avx512_limbs::KERNELS);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if neon::supported() {
            sets.push(neon::KERNELS);
        }
        if neon::dotprod_supported() {
            sets.push(neon::DOTPROD_KERNELS);
        }
    }
    sets
}

/// The best kernel set (chosen once per process), capped by `LOWBIT_ISA`: `scalar`, `neon`
/// (NEON without SDOT), `neon-dotprod`, `avx2`, `avx512` (without the limb kernel) or
/// `avx512-vnni` picks the best available set at or below the named one in the order of
/// [`QuantIsa`] (a name of another architecture caps to the portable kernels or leaves the
/// choice alone); any other value or none, the best set.
pub fn kernels() -> KernelSet {
    static CHOSEN: OnceLock<KernelSet> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cap = match std::env::var("LOWBIT_ISA").as_deref() {
            Ok("scalar") => QuantIsa::Scalar,
            Ok("neon") => QuantIsa::Neon,
            Ok("neon-dotprod") => QuantIsa::NeonDotprod,
            Ok("avx2") => QuantIsa::Avx2,
            Ok("avx512") => QuantIsa::Avx512,
            Ok("avx512-vnni") => QuantIsa::Avx512Vnni,
            _ => QuantIsa::Avx512Vnni,
        };
        available()
            .into_iter()
            .rfind(|k| k.isa <= cap)
            .unwrap_or(scalar::KERNELS)
    })
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread buffers reused across calls, so the hot path does not allocate once warm.
#[derive(Default)]
struct Scratch {
    /// Scales of the task's rows, `[rows, groups]`.
    scales: Vec<f32>,
    /// Zero-point offsets of the task's rows, `[rows, groups]`.
    offsets: Vec<f32>,
    /// Dot products of the task's rows with the tile, summed over slices, `[rows, tile]`.
    sums: Vec<f32>,
    /// One kernel call's results, rows in stream order, `[rows, tile]`.
    results: Vec<f32>,
}

/// `out[t, n] = sum_k x[t, k] * w[n, k] + bias[n]` with the best kernels; `x` is `[m, k]`,
/// `out` `[m, n]`.
pub fn linear(x: &[f32], m: usize, w: &QuantizedTensor, bias: Option<&[f32]>, out: &mut [f32]) {
    linear_with(&kernels(), x, m, w, bias, out)
}

/// Activations as the kernels read them.
enum Activations {
    /// Float rows `[m, padded]`, starting on a cache line (see [`LineAligned`]).
    Float(LineAligned),
    /// One token for the limb kernel (see [`limbs::Limbs`]).
    Limbs(limbs::Limbs),
    /// int8 rows `[m, padded]`, their exact sums per kernel group (see
    /// [`Plan::kernel_group`]) `[m, sum_groups]`, and per-row scales.
    Int {
        codes: Vec<i8>,
        sums: Vec<i32>,
        sum_groups: usize,
        scales: Vec<f32>,
    },
}

/// The sums of `row`'s groups of `group_size` float activations into `out` (for zero-point
/// offsets).
fn group_sums(row: &[f32], group_size: usize, out: &mut [f32]) {
    for (sum, part) in out.iter_mut().zip(row.chunks(group_size)) {
        *sum = part.iter().sum();
    }
}

/// `x` in limbs for the limb kernel (vectorized where it runs).
fn split_limbs(x: &[f32]) -> limbs::Limbs {
    // Zeros up to whole chunks (the kernel reads none of their codes).
    let padded;
    let x = if x.len().is_multiple_of(limbs::CHUNK) {
        x
    } else {
        padded = {
            let mut v = x.to_vec();
            v.resize(x.len().next_multiple_of(limbs::CHUNK), 0.0);
            v
        };
        &padded[..]
    };
    #[cfg(target_arch = "x86_64")]
    {
        avx512_limbs::split(x)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        limbs::Limbs::new(x)
    }
}

/// Whether the limb kernel takes rows of `kind` (see `avx512_limbs::fits`).
fn limbs_fit(kind: &CodeKind, k: usize, group_size: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512_limbs::fits(kind, k, group_size)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kind, k, group_size);
        false
    }
}

/// [`linear`] with an explicit kernel set (tests and benchmarks compare them).
pub fn linear_with(
    set: &KernelSet,
    x: &[f32],
    m: usize,
    w: &QuantizedTensor,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "quantized linear: input size");
    assert_eq!(out.len(), m * n, "quantized linear: output size");
    if m == 0 || n == 0 {
        return;
    }
    let scheme = w.scheme();
    let kind = w.code_kind();
    let group_size = w.group_size();
    let groups = w.groups();
    // The SIMD kernels need groups on 32-value blocks; no scheme makes others, but stay exact.
    let set = if group_size >= k || group_size.is_multiple_of(32) {
        set
    } else {
        &scalar::KERNELS
    };
    let padded = k.div_ceil(32) * 32;
    let high_first = matches!(
        kind,
        CodeKind::Nibble {
            high_first: true,
            ..
        }
    );
    let integer = scheme.activation == ActivationFormat::Int8;
    let layout = match (&kind, integer) {
        (CodeKind::Nibble { .. }, false) => set.float_layout,
        (CodeKind::Nibble { .. }, true) => set.int_layout,
        _ => NibbleLayout::Natural,
    };

    // Activations: per-token dynamic quantization first, then the kernel layout.
    let mut fake_quantized: Vec<f32>;
    let x = if scheme.activation == ActivationFormat::Fp8 {
        fake_quantized = x.to_vec();
        let group = if scheme.granularity == Granularity::Block128 {
            crate::quant::scheme::FP8_BLOCK
        } else {
            k
        };
        fake_quantize_fp8(&mut fake_quantized, k, group);
        &fake_quantized[..]
    } else {
        x
    };
    let plan = Plan::new(n, k, m, group_size);
    // Per-token, per-group sums of the activations as the kernels see them (for offsets).
    let mut sums = vec![0f32; if w.has_offsets() { m * groups } else { 0 }];
    let limb_kernel = set.dot_limbs.filter(|_| {
        m == 1 && scheme.activation == ActivationFormat::Float && limbs_fit(&kind, k, group_size)
    });
    let activations = if limb_kernel.is_some() {
        if w.has_offsets() {
            group_sums(x, group_size, &mut sums);
        }
        Activations::Limbs(split_limbs(x))
    } else if integer {
        let mut codes = vec![0i8; m * k];
        let mut scales = vec![1f32; m];
        quantize_int8_rows(x, k, &mut codes, &mut scales);
        let mut laid_out = vec![0i8; m * padded];
        // The kernels' groups: a k-slice of a one-group row is a group of its own.
        let sum_group = plan.kernel_group(k, group_size);
        let sum_groups = k.div_ceil(sum_group);
        let mut int_sums = vec![0i32; m * sum_groups];
        for t in 0..m {
            let row = &codes[t * k..(t + 1) * k];
            permute(
                row,
                &mut laid_out[t * padded..][..padded],
                layout,
                high_first,
            );
            for (g, part) in row.chunks(sum_group).enumerate() {
                int_sums[t * sum_groups + g] = part.iter().map(|&v| v as i32).sum();
            }
            if w.has_offsets() {
                for (g, part) in row.chunks(group_size).enumerate() {
                    let s: i32 = part.iter().map(|&v| v as i32).sum();
                    sums[t * groups + g] = s as f32 * scales[t];
                }
            }
        }
        Activations::Int {
            codes: laid_out,
            sums: int_sums,
            sum_groups,
            scales,
        }
    } else {
        let mut aligned = LineAligned::zeroed(m * padded);
        let laid_out = aligned.values_mut();
        for t in 0..m {
            let row = &x[t * k..(t + 1) * k];
            permute(
                row,
                &mut laid_out[t * padded..][..padded],
                layout,
                high_first,
            );
            if w.has_offsets() {
                group_sums(row, group_size, &mut sums[t * groups..(t + 1) * groups]);
            }
        }
        Activations::Float(aligned)
    };

    let nibble = matches!(kind, CodeKind::Nibble { .. });
    let job = Job {
        set,
        w,
        kind: &kind,
        k,
        m,
        padded,
        group_size,
        groups,
        nibble,
        activations: &activations,
        offset_sums: &sums,
        bias,
        plan: &plan,
    };
    // Results weight-row-major ([n, m]) so each task owns a contiguous block.
    let compute = |target: &mut [f32]| {
        target
            .par_chunks_mut(plan.rows_per_task * m)
            .enumerate()
            .for_each(|(task, block_out)| {
                SCRATCH.with(|scratch| {
                    job.run_block(
                        task * plan.rows_per_task,
                        block_out,
                        &mut scratch.borrow_mut(),
                    )
                })
            });
    };
    if m == 1 {
        compute(out);
    } else {
        let mut transposed = vec![0f32; m * n];
        compute(&mut transposed);
        crate::backend::cpu::transpose_into(&transposed, n, m, out);
    }
}

/// How a call is cut into tasks and k-slices.
struct Plan {
    /// Weight rows per rayon task.
    rows_per_task: usize,
    /// Values per k-slice (`>= k`: no slicing).
    slice: usize,
}

impl Plan {
    fn new(n: usize, k: usize, m: usize, group_size: usize) -> Self {
        let tile = m.min(TOKEN_TILE);
        // Enough tasks for every thread to get several; each a multiple of the row tile.
        let threads = rayon::current_num_threads().max(1);
        let by_work = TASK_VALUES / k.max(1);
        let by_balance = n.div_ceil(4 * threads);
        let rows_per_task = by_work
            .min(by_balance)
            .max(4 * ROW_TILE)
            .next_multiple_of(ROW_TILE)
            .min(n);
        let slice = if m == 1 {
            k
        } else {
            // A multiple of the layout chunk and of the group (so scales slice with it).
            let unit = if group_size >= k {
                SLICE_ALIGN
            } else {
                lcm(SLICE_ALIGN, group_size)
            };
            let wanted = SLICE_BYTES / (4 * tile);
            (wanted / unit).max(1) * unit
        };
        Plan {
            rows_per_task,
            slice,
        }
    }

    /// The group size the kernels see: a k-slice of a one-group row is one group.
    fn kernel_group(&self, k: usize, group_size: usize) -> usize {
        if group_size >= k {
            self.slice.min(k).max(1)
        } else {
            group_size
        }
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// Everything a task needs, shared by all tasks of a call.
struct Job<'a> {
    set: &'a KernelSet,
    w: &'a QuantizedTensor,
    kind: &'a CodeKind,
    k: usize,
    m: usize,
    padded: usize,
    group_size: usize,
    groups: usize,
    nibble: bool,
    activations: &'a Activations,
    /// Per-token group sums of the activations (offsets), `[m, groups]` or empty.
    offset_sums: &'a [f32],
    bias: Option<&'a [f32]>,
    plan: &'a Plan,
}

impl Job<'_> {
    /// Computes rows `first..` into `block_out` (`[rows, m]`).
    fn run_block(&self, first: usize, block_out: &mut [f32], scratch: &mut Scratch) {
        let (m, groups) = (self.m, self.groups);
        let count = block_out.len() / m;
        let Scratch {
            scales,
            offsets,
            sums,
            results,
        } = scratch;
        fill_block_scales(self.w, first, count, scales, offsets);
        let all_codes = self.w.codes().raw_bytes();
        let row_bytes = self.w.row_bytes();
        let first_group = |start: usize| {
            if self.group_size >= self.k {
                0
            } else {
                start / self.group_size
            }
        };
        // Row `i + q * span` of the block is the `i`-th of stream `q`; kernels read the rows
        // of one `i` together.
        let streams = self.set.row_tile.clamp(1, ROW_TILE);
        let span = count.div_ceil(streams);
        let mut order = Vec::with_capacity(count);
        for i in 0..span {
            for q in 0..streams {
                if i + q * span < count {
                    order.push(i + q * span);
                }
            }
        }
        // The kernel calls of a block (parts of its rows, slices, tiles) each prefetch a share
        // of the next block's scales, which would otherwise stall the block's start.
        let next_scales = scale_bytes(self.w, first + count..first + 2 * count);
        let calls = m.div_ceil(TOKEN_TILE) * self.k.div_ceil(self.plan.slice) * BLOCK_PARTS;
        let share = next_scales.len().div_ceil(calls).next_multiple_of(64);
        let mut prefetched = 0;
        let part_rows = order.len().div_ceil(BLOCK_PARTS).max(1);
        let mut rows = Vec::with_capacity(part_rows);
        for t0 in (0..m).step_by(TOKEN_TILE) {
            let tile = TOKEN_TILE.min(m - t0);
            sums.clear();
            sums.resize(count * tile, 0.0);
            results.resize(part_rows * tile, 0.0);
            for start in (0..self.k).step_by(self.plan.slice) {
                let end = (start + self.plan.slice).min(self.k);
                let (from, to) = if self.nibble {
                    (start / 2, end.div_ceil(2))
                } else {
                    (start, end)
                };
                let (from, to) = (from.min(row_bytes), to.min(row_bytes));
                let group = first_group(start);
                for part in order.chunks(part_rows) {
                    let end_prefetch = (prefetched + share).min(next_scales.len());
                    for line in (prefetched..end_prefetch).step_by(64) {
                        prefetch_line(&next_scales[line..]);
                    }
                    prefetched = end_prefetch;
                    rows.clear();
                    for &r in part {
                        let codes = &all_codes[(first + r) * row_bytes..][..row_bytes];
                        rows.push(RowArgs {
                            kind: self.kind,
                            codes: &codes[from..to],
                            k: end - start,
                            group_size: self.group_size,
                            scales: &scales[r * groups + group..(r + 1) * groups],
                        });
                    }
                    let results = &mut results[..part.len() * tile];
                    self.call(&rows, t0, tile, start, results);
                    for (&r, part) in part.iter().zip(results.chunks_exact(tile)) {
                        for (s, &v) in sums[r * tile..(r + 1) * tile].iter_mut().zip(part) {
                            *s += v;
                        }
                    }
                }
            }
            for r in 0..count {
                let row = first + r;
                for t in 0..tile {
                    let token = t0 + t;
                    let mut v = sums[r * tile + t];
                    if let Activations::Int { scales, .. } = self.activations {
                        v *= scales[token];
                    }
                    if self.w.has_offsets() {
                        let s = &self.offset_sums[token * groups..(token + 1) * groups];
                        let o = &offsets[r * groups..(r + 1) * groups];
                        v -= o.iter().zip(s).map(|(o, s)| o * s).sum::<f32>();
                    }
                    if let Some(b) = self.bias {
                        v += b[row];
                    }
                    block_out[r * m + token] = v;
                }
            }
        }
    }

    /// One kernel call: `rows` against activation rows `t0..t0 + tile` from value `start` on.
    fn call(&self, rows: &[RowArgs<'_>], t0: usize, tile: usize, start: usize, out: &mut [f32]) {
        let padded = self.padded;
        match self.activations {
            Activations::Float(x) => {
                let x = x.values();
                let xs: [&[f32]; TOKEN_TILE] = std::array::from_fn(|i| {
                    let t = t0 + i.min(tile - 1);
                    &x[t * padded + start..(t + 1) * padded]
                });
                // SAFETY: a KernelSet only exists for instruction sets this CPU supports (see
                // `available`); the rows and slices have the documented sizes.
                unsafe { (self.set.dot_float)(rows, &xs[..tile], out) };
            }
            Activations::Limbs(limbs) => {
                let kernel = self
                    .set
                    .dot_limbs
                    .expect("limbs only for a set with their kernel");
                // SAFETY: as above; limbs are made only for one token, whole rows (no k-slices
                // with one token) and rows that `limbs_fit`.
                unsafe { kernel(rows, limbs, out) };
            }
            Activations::Int {
                codes,
                sums,
                sum_groups,
                ..
            } => {
                let groups = *sum_groups;
                let first_group = start / self.plan.kernel_group(self.k, self.group_size);
                let xs: [&[i8]; TOKEN_TILE] = std::array::from_fn(|i| {
                    let t = t0 + i.min(tile - 1);
                    &codes[t * padded + start..(t + 1) * padded]
                });
                let xsums: [&[i32]; TOKEN_TILE] = std::array::from_fn(|i| {
                    let t = t0 + i.min(tile - 1);
                    &sums[t * groups + first_group..(t + 1) * groups]
                });
                // SAFETY: as above.
                unsafe { (self.set.dot_int8)(rows, &xs[..tile], &xsums[..tile], out) };
            }
        }
    }
}

/// Scales (and zero-point offsets) of rows `first..first + count` into `scales` and `offsets`
/// (`[count, groups]`): f16 and f32 scales of one row each in one conversion, others row by row.
fn fill_block_scales(
    w: &QuantizedTensor,
    first: usize,
    count: usize,
    scales: &mut Vec<f32>,
    offsets: &mut Vec<f32>,
) {
    let groups = w.groups();
    let values = count * groups;
    scales.resize(values, 0.0);
    offsets.resize(if w.has_offsets() { values } else { 0 }, 0.0);
    let range = first * groups..(first + count) * groups;
    if let (Scales::Dense(t), 1, false) = (w.scales(), w.scheme().row_block(), w.has_offsets()) {
        if let Some(all) = t.as_f16() {
            all[range].convert_to_f32_slice(scales);
            return;
        }
        if let Some(all) = t.as_f32() {
            scales.copy_from_slice(&all[range]);
            return;
        }
    }
    let mut unused = [];
    for r in 0..count {
        let part = r * groups..(r + 1) * groups;
        let offsets = if w.has_offsets() {
            &mut offsets[part.clone()]
        } else {
            &mut unused[..]
        };
        w.fill_row_scales(first + r, &mut scales[part], offsets);
    }
}

/// The stored bytes of the scales of `rows` where they are one dense row each (else, or past
/// the tensor, fewer or none).
fn scale_bytes(w: &QuantizedTensor, rows: std::ops::Range<usize>) -> &[u8] {
    match w.scales() {
        Scales::Dense(t) if w.scheme().row_block() == 1 => {
            let row = w.groups() * t.dtype().size();
            let all = t.raw_bytes();
            let end = (rows.end * row).min(all.len());
            &all[(rows.start * row).min(end)..end]
        }
        _ => &[],
    }
}

/// Prefetches the cache line at the start of `bytes` into L2 (a hint: no effect on memory).
#[inline]
fn prefetch_line(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(bytes.as_ptr().cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a prefetch hint reads nothing into the program and never faults, whatever the
    // address; it touches neither the stack nor the flags.
    unsafe {
        std::arch::asm!(
            "prfm pldl2keep, [{0}]",
            in(reg) bytes.as_ptr(),
            options(nostack, readonly, preserves_flags)
        )
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = bytes;
}

/// Writes `src` (k values) into `dst` (padded to a multiple of 32) in `layout` (see
/// [`NibbleLayout`]); `high_first`: the first value of each code byte is in its high nibble.
pub fn permute<T: Copy + Default>(
    src: &[T],
    dst: &mut [T],
    layout: NibbleLayout,
    high_first: bool,
) {
    dst.fill(T::default());
    let get = |i: usize| src.get(i).copied().unwrap_or_default();
    // Value index of the low (first) and high (second) nibble of code byte `b`.
    let low = usize::from(high_first);
    match layout {
        NibbleLayout::Natural => dst[..src.len()].copy_from_slice(src),
        NibbleLayout::Bytes(block) => {
            for (c, chunk) in dst.chunks_mut(2 * block).enumerate() {
                let base = c * 2 * block;
                let (lows, highs) = chunk.split_at_mut(block.min(chunk.len()));
                for (b, d) in lows.iter_mut().enumerate() {
                    *d = get(base + 2 * b + low);
                }
                for (b, d) in highs.iter_mut().enumerate() {
                    *d = get(base + 2 * b + 1 - low);
                }
            }
        }
        NibbleLayout::Words => {
            for (c, chunk) in dst.chunks_mut(128).enumerate() {
                let base = c * 128;
                let words = chunk.len() / 8;
                for s in 0..8 {
                    // Bits `4s..4s+4` of a word: byte `s / 2`, its low nibble for even `s`.
                    let within = s ^ low;
                    for (j, d) in chunk[words * s..words * (s + 1)].iter_mut().enumerate() {
                        *d = get(base + 8 * j + within);
                    }
                }
            }
        }
    }
}
