//! CPU kernels for dense weights: `y = x W^T (+ b)` with W stored row-major `[out, in]` in f32,
//! bf16 or f16, activations in f32, accumulation in f32.
//!
//! The dot products have a portable version ([`scalar`]) and SIMD ones: on x86-64 the same code
//! compiled for AVX2+FMA (`x86`), on aarch64 NEON intrinsics (`neon`), picked once at run time.
//! Work is split over output rows with rayon.

#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod quant;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use std::sync::OnceLock;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::checkpoint::{Dtype, Tensor};

/// The instruction set the dense kernels use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, auto-vectorized for the baseline target.
    Scalar,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// aarch64 NEON.
    Neon,
}

/// The instruction sets this CPU runs dense kernels on, the portable one first.
pub fn available_isas() -> Vec<Isa> {
    let mut isas = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        isas.push(Isa::Avx2);
    }
    #[cfg(target_arch = "aarch64")]
    if neon::supported() {
        isas.push(Isa::Neon);
    }
    isas
}

/// Detected once per process: the last of [`available_isas`]. `LOWBIT_ISA=scalar` forces the
/// portable path.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("LOWBIT_ISA").is_ok_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        available_isas().pop().unwrap_or(Isa::Scalar)
    })
}

/// f32 dot product on the best available path.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `isa()` is one of `available_isas()`.
    unsafe { dot_f32_on(isa(), a, b) }
}

/// Dot product of f32 activations with a bf16 weight row.
#[inline]
pub fn dot_bf16(a: &[f32], b: &[bf16]) -> f32 {
    // SAFETY: `isa()` is one of `available_isas()`.
    unsafe { dot_bf16_on(isa(), a, b) }
}

/// [`dot_f32`] on `isa`.
///
/// # Safety
/// `isa` must be one of [`available_isas`].
#[inline]
unsafe fn dot_f32_on(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is available only when AVX2 and FMA were detected on this CPU.
        Isa::Avx2 => unsafe { x86::dot_f32(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: Neon is available only when NEON was detected.
        Isa::Neon => unsafe { neon::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// [`dot_bf16`] on `isa`.
///
/// # Safety
/// `isa` must be one of [`available_isas`].
#[inline]
unsafe fn dot_bf16_on(isa: Isa, a: &[f32], b: &[bf16]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Avx2 => unsafe { x86::dot_bf16(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Neon => unsafe { neon::dot_bf16(a, b) },
        _ => scalar::dot_bf16(a, b),
    }
}

/// Output rows handled by one rayon task: enough work to amortize scheduling, few enough that
/// the task's weight rows stay in L2 while every activation tile passes over them, and, for
/// batches, few enough that every thread gets about four tasks (a 576-row projection on 16
/// threads would otherwise make 7 tasks and leave half the threads idle).
fn rows_per_task(rows: usize, k: usize, m: usize, element: usize) -> usize {
    let per_row = (k * m).max(1);
    let by_work = 65_536 / per_row;
    let by_cache = (192 * 1024 / (k * element).max(1)).max(TILE_ROWS);
    let chunk = if m >= TILE_TOKENS {
        let by_balance = rows
            .div_ceil(4 * rayon::current_num_threads().max(1))
            .next_multiple_of(TILE_ROWS);
        (by_cache / TILE_ROWS * TILE_ROWS).min(by_balance)
    } else {
        by_work
    };
    chunk.clamp(1, rows.max(1))
}

/// Tokens per task of [`transpose_into`]: a 64-byte line of each weight row's results.
const TRANSPOSE_TOKENS: usize = 16;

/// `out[t * n + r] = transposed[r * m + t]`: the weight-row-major (`[n, m]`) results of a
/// batched product written in the output layout (`[m, n]`), in parallel over blocks of tokens.
pub(crate) fn transpose_into(transposed: &[f32], n: usize, m: usize, out: &mut [f32]) {
    assert_eq!(transposed.len(), n * m, "transpose: input size");
    assert_eq!(out.len(), n * m, "transpose: output size");
    if n == 0 || m == 0 {
        return;
    }
    out.par_chunks_mut(TRANSPOSE_TOKENS * n)
        .enumerate()
        .for_each(|(block, chunk)| {
            let t0 = block * TRANSPOSE_TOKENS;
            let tokens = chunk.len() / n;
            for (r, row) in transposed.chunks_exact(m).enumerate() {
                for (t, &v) in row[t0..t0 + tokens].iter().enumerate() {
                    chunk[t * n + r] = v;
                }
            }
        });
}

/// Rows per prefill tile.
const TILE_ROWS: usize = 3;
/// Activation rows per prefill tile.
const TILE_TOKENS: usize = 4;

/// `out[t, n] = sum_k x[t, k] * w[n, k] + bias[n]` for `t < m`, `n < w.shape()[0]`.
///
/// `x` is `[m, k]` row-major, `w` is `[n, k]`, `out` is `[m, n]`. Panics if `w` is not a 2-D
/// float tensor (model loading guarantees it).
pub fn linear(x: &[f32], m: usize, w: &Tensor, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    assert_eq!(x.len(), m * k, "linear: input size");
    assert_eq!(out.len(), m * n, "linear: output size");
    if m == 1 {
        // Weight-row-major results are already the output layout.
        rows_major(x, m, k, w, bias, out);
        return;
    }
    // Results are produced weight-row-major ([n, m]) so each task owns a contiguous block.
    let mut transposed = vec![0f32; m * n];
    rows_major(x, m, k, w, bias, &mut transposed);
    transpose_into(&transposed, n, m, out);
}

/// A weight row as the kernels take it.
enum Row<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    /// f16 rows are widened once per row (f16 weights are rare: converted checkpoints).
    Widened(Vec<f32>),
}

fn weight_row(w: &Tensor, row: usize, k: usize) -> Row<'_> {
    let range = row * k..(row + 1) * k;
    match w.dtype() {
        Dtype::F32 => Row::F32(&w.as_f32().expect("aligned f32 weights")[range]),
        Dtype::BF16 => Row::Bf16(&w.as_bf16().expect("aligned bf16 weights")[range]),
        Dtype::F16 => {
            let src: &[f16] = &w.as_f16().expect("aligned f16 weights")[range];
            Row::Widened(src.iter().map(|v| v.to_f32()).collect())
        }
        // Model loading rejects dense weights of any other dtype.
        other => panic!("dense linear over {other:?} weights"),
    }
}

fn dot_row(x: &[f32], row: &Row<'_>) -> f32 {
    match row {
        Row::F32(w) => dot_f32(x, w),
        Row::Bf16(w) => dot_bf16(x, w),
        Row::Widened(w) => dot_f32(x, w),
    }
}

/// `out[r][t] = rows[r] . xs[t]` with the register-tiled kernel when the rows share a dtype.
fn tile(rows: &[Row<'_>; TILE_ROWS], xs: [&[f32]; TILE_TOKENS]) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    match rows {
        // SAFETY: `isa()` is one of `available_isas()`.
        [Row::F32(a), Row::F32(b), Row::F32(c)] => unsafe { tile_f32_on(isa(), [a, b, c], xs) },
        // SAFETY: as above.
        [Row::Bf16(a), Row::Bf16(b), Row::Bf16(c)] => unsafe { tile_bf16_on(isa(), [a, b, c], xs) },
        _ => std::array::from_fn(|r| std::array::from_fn(|t| dot_row(xs[t], &rows[r]))),
    }
}

/// An f32-weight prefill tile on `isa`.
///
/// # Safety
/// `isa` must be one of [`available_isas`].
unsafe fn tile_f32_on(
    isa: Isa,
    w: [&[f32]; TILE_ROWS],
    xs: [&[f32]; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Avx2 => unsafe { x86::tile_f32(w, xs) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Neon => unsafe { neon::tile_f32(w, xs) },
        _ => scalar::tile_f32(w, xs),
    }
}

/// A bf16-weight prefill tile on `isa`.
///
/// # Safety
/// `isa` must be one of [`available_isas`].
unsafe fn tile_bf16_on(
    isa: Isa,
    w: [&[bf16]; TILE_ROWS],
    xs: [&[f32]; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Avx2 => unsafe { x86::tile_bf16(w, xs) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as in `dot_f32_on`.
        Isa::Neon => unsafe { neon::tile_bf16(w, xs) },
        _ => scalar::tile_bf16(w, xs),
    }
}

/// `target[row * m + t] = x[t] . w[row] + bias[row]`, parallel over weight rows; for `m >= 4`
/// each task walks its rows (kept in L2) once per tile of 4 activation rows, 3 rows at a time.
fn rows_major(x: &[f32], m: usize, k: usize, w: &Tensor, bias: Option<&[f32]>, target: &mut [f32]) {
    let n = w.shape()[0];
    let chunk = rows_per_task(n, k, m, w.dtype().size());
    target
        .par_chunks_mut(chunk * m)
        .enumerate()
        .for_each(|(task, block)| {
            let first = task * chunk;
            let count = block.len() / m;
            let rows: Vec<Row<'_>> = (first..first + count)
                .map(|r| weight_row(w, r, k))
                .collect();
            let mut t0 = 0;
            while t0 + TILE_TOKENS <= m {
                let xs: [&[f32]; TILE_TOKENS] =
                    std::array::from_fn(|i| &x[(t0 + i) * k..(t0 + i + 1) * k]);
                let mut r = 0;
                while r + TILE_ROWS <= count {
                    let group: &[Row<'_>; TILE_ROWS] =
                        rows[r..r + TILE_ROWS].try_into().expect("three rows");
                    let values = tile(group, xs);
                    for (dr, row_values) in values.iter().enumerate() {
                        for (i, &v) in row_values.iter().enumerate() {
                            block[(r + dr) * m + t0 + i] = v;
                        }
                    }
                    r += TILE_ROWS;
                }
                for rr in r..count {
                    for (i, xt) in xs.iter().enumerate() {
                        block[rr * m + t0 + i] = dot_row(xt, &rows[rr]);
                    }
                }
                t0 += TILE_TOKENS;
            }
            for (r, row) in rows.iter().enumerate() {
                for t in t0..m {
                    block[r * m + t] = dot_row(&x[t * k..(t + 1) * k], row);
                }
                if let Some(b) = bias {
                    for d in &mut block[r * m..(r + 1) * m] {
                        *d += b[first + r];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Different summation orders of length-1000 f32 dot products of unit-scale values.
    const DOT_TOLERANCE: f32 = 1e-4;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `len` values in [-1, 1).
    fn values(len: usize, seed: &mut u64) -> Vec<f32> {
        (0..len).map(|_| lcg(seed)).collect()
    }

    /// The f64 dot product of `a` with `b` widened by `widen`.
    fn exact<W: Copy>(a: &[f32], b: &[W], widen: impl Fn(W) -> f64) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * widen(y)).sum()
    }

    /// Every element lands at its transposed place, for shapes around the task block.
    #[test]
    fn transpose_matches_the_definition() {
        let mut seed = 7u64;
        for (n, m) in [(1, 1), (7, 37), (3, 16), (64, 15), (5, 33)] {
            let input = values(n * m, &mut seed);
            let mut out = vec![f32::NAN; n * m];
            transpose_into(&input, n, m, &mut out);
            for r in 0..n {
                for t in 0..m {
                    assert_eq!(out[t * n + r], input[r * m + t], "n {n} m {m} r {r} t {t}");
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_f64_reference_on_odd_lengths() {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        let mut seed = start;
        let isas = available_isas();
        assert_eq!(isas[0], Isa::Scalar);
        assert!(isas.contains(&isa()), "{:?} not in {isas:?}", isa());
        for len in [1usize, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000] {
            let a = values(len, &mut seed);
            let b = values(len, &mut seed);
            let bb: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
            let xs: Vec<Vec<f32>> = (0..TILE_TOKENS).map(|_| values(len, &mut seed)).collect();
            let ws: Vec<Vec<f32>> = (0..TILE_ROWS).map(|_| values(len, &mut seed)).collect();
            let wbs: Vec<Vec<bf16>> = ws
                .iter()
                .map(|w| w.iter().map(|&v| bf16::from_f32(v)).collect())
                .collect();
            let x: [&[f32]; TILE_TOKENS] = std::array::from_fn(|t| &xs[t][..]);
            let w: [&[f32]; TILE_ROWS] = std::array::from_fn(|r| &ws[r][..]);
            let wb: [&[bf16]; TILE_ROWS] = std::array::from_fn(|r| &wbs[r][..]);
            let check = |isa: Isa, what: &str, got: f32, expected: f64| {
                assert!(
                    (got as f64 - expected).abs() < DOT_TOLERANCE as f64,
                    "{isa:?} {what} len {len}: {got} vs {expected}; seed {start}"
                );
            };
            for &isa in &isas {
                // SAFETY: `isa` comes from `available_isas()`.
                let (dot, dot_bf, tile, tile_bf) = unsafe {
                    (
                        dot_f32_on(isa, &a, &b),
                        dot_bf16_on(isa, &a, &bb),
                        tile_f32_on(isa, w, x),
                        tile_bf16_on(isa, wb, x),
                    )
                };
                check(isa, "dot_f32", dot, exact(&a, &b, f64::from));
                check(isa, "dot_bf16", dot_bf, exact(&a, &bb, |v| v.to_f64()));
                for r in 0..TILE_ROWS {
                    for t in 0..TILE_TOKENS {
                        check(isa, "tile_f32", tile[r][t], exact(x[t], w[r], f64::from));
                        let reference = exact(x[t], wb[r], |v| v.to_f64());
                        check(isa, "tile_bf16", tile_bf[r][t], reference);
                    }
                }
            }
        }
    }

    #[test]
    fn linear_matches_reference_for_each_dtype() {
        let mut seed = 42u64;
        // 9 activation rows exercise two full 4-row tiles plus one left over; 37 weight rows
        // twelve 3-row tiles plus one.
        let (m, n, k) = (9usize, 37usize, 29usize);
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let wt = Tensor::from_f32(vec![n, k], w);
        for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            let wd = wt.to_dtype(dtype);
            let wf = wd.to_f32_vec();
            for rows in [1, 3, 4, m] {
                let mut out = vec![0f32; rows * n];
                linear(&x[..rows * k], rows, &wd, Some(&bias), &mut out);
                for t in 0..rows {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|i| x[t * k + i] as f64 * wf[j * k + i] as f64)
                            .sum::<f64>()
                            + bias[j] as f64;
                        assert!((out[t * n + j] as f64 - exact).abs() < 1e-4, "{dtype:?}");
                    }
                }
            }
        }
    }
}
