//! The Hessian `H = sum_t x_t x_t^T` of a projection's inputs (GPTQ's statistic), accumulated
//! over calibration activations `X` (`[tokens, width]`, row-major f32) into an f64 matrix.
//!
//! # Method
//!
//! `X` is packed into panels of [`PANEL`] columns (`[panel][token][PANEL]`, zero-padded), so that
//! a tile of `H` reads contiguous memory whatever the width. Each rayon task owns [`TILE_ROWS`]
//! rows of `H` and computes their upper-triangle tiles (`TILE_ROWS x PANEL` entries) token chunk
//! by token chunk: within a chunk of at most [`CHUNK_TOKENS`] tokens the products are summed in
//! f32 with fused multiply-adds (an AVX2+FMA kernel where the CPU has it, the same loops in
//! portable Rust otherwise), and each chunk's sums are added into the f64 `H`. The lower
//! triangle is copied from the upper one at the end of every call, so `H` stays symmetric.
//!
//! # Accuracy
//!
//! Every product `x_ti x_tj` of f32 values enters one f32 running sum of at most
//! `CHUNK_TOKENS` terms (one rounding per fused multiply-add), then an f64 sum. So
//! `|H_ij - H_ij(exact)| <= gamma(CHUNK_TOKENS) * sum_t |x_ti x_tj|` up to f64 rounding, with
//! `gamma(n) = n u / (1 - n u)` and `u = 2^-24` (Higham, *Accuracy and Stability of Numerical
//! Algorithms*, 2nd ed., eq. 3.5): about `1.5e-5` relative to the sum of magnitudes. GPTQ's
//! reference implementation accumulates the whole Hessian in f32.
//!
//! [`accumulate_hessian_reference`] is the plain f64 version the tests compare against.

use rayon::prelude::*;

/// Columns per packed panel: two AVX2 vectors of f32.
pub const PANEL: usize = 16;
/// Rows of `H` per task and micro-tile.
pub const TILE_ROWS: usize = 4;
/// Tokens summed in f32 before the sums move to f64 (see the module's accuracy note). A chunk
/// of one panel (`CHUNK_TOKENS x PANEL` f32, 16 KiB) stays in L1 while the task's tiles use it.
pub const CHUNK_TOKENS: usize = 256;

/// Adds `sum_t x_t x_t^T` of the `[rows, width]` matrix `values` into `hessian`
/// (`[width, width]`, row-major f64, symmetric on entry and on return).
///
/// # Panics
/// If `values.len()` is not `rows * width` with `hessian.len() == width * width`.
pub fn accumulate_hessian(hessian: &mut [f64], rows: usize, values: &[f32]) {
    if rows == 0 || values.is_empty() {
        return;
    }
    let width = values.len() / rows;
    assert!(
        width * rows == values.len() && hessian.len() == width * width,
        "Hessian of {} values as {rows} rows: width {width}, Hessian of {} values",
        values.len(),
        hessian.len()
    );
    let panels = width.div_ceil(PANEL);
    let packed = pack(values, rows, width);
    let kernel = best_kernel();
    hessian
        .par_chunks_mut(TILE_ROWS * width)
        .enumerate()
        .for_each(|(task, out)| {
            let first_row = task * TILE_ROWS;
            let tile_rows = out.len() / width;
            let row_panel = first_row / PANEL;
            let lane = first_row % PANEL;
            let mut sums = [[0f32; PANEL]; TILE_ROWS];
            for start in (0..rows).step_by(CHUNK_TOKENS) {
                let tokens = CHUNK_TOKENS.min(rows - start);
                let chunk = |panel: usize| {
                    let base = (panel * rows + start) * PANEL;
                    &packed[base..base + tokens * PANEL]
                };
                let row_chunk = chunk(row_panel);
                for column_panel in row_panel..panels {
                    kernel(row_chunk, lane, chunk(column_panel), &mut sums);
                    let first_column = column_panel * PANEL;
                    let columns = PANEL.min(width - first_column);
                    for (r, row_sums) in sums.iter().enumerate().take(tile_rows) {
                        let target = &mut out[r * width + first_column..][..columns];
                        for (h, &s) in target.iter_mut().zip(row_sums) {
                            *h += s as f64;
                        }
                    }
                }
            }
        });
    for i in 0..width {
        for j in 0..i {
            hessian[i * width + j] = hessian[j * width + i];
        }
    }
}

/// The same sum in plain f64 loops, one product at a time (the reference of the tests).
pub fn accumulate_hessian_reference(hessian: &mut [f64], rows: usize, values: &[f32]) {
    if rows == 0 {
        return;
    }
    let width = values.len() / rows;
    assert_eq!(hessian.len(), width * width);
    for row in values.chunks_exact(width) {
        for (i, &xi) in row.iter().enumerate() {
            for (h, &xj) in hessian[i * width..(i + 1) * width].iter_mut().zip(row) {
                *h += xi as f64 * xj as f64;
            }
        }
    }
}

/// `values` (`[rows, width]`) as `[panel][row][PANEL]`, zero-padded to whole panels.
fn pack(values: &[f32], rows: usize, width: usize) -> Vec<f32> {
    let panels = width.div_ceil(PANEL);
    let mut packed = vec![0f32; panels * rows * PANEL];
    packed
        .par_chunks_mut(rows * PANEL)
        .enumerate()
        .for_each(|(panel, out)| {
            let first = panel * PANEL;
            let columns = PANEL.min(width - first);
            for (row, target) in values.chunks_exact(width).zip(out.chunks_exact_mut(PANEL)) {
                target[..columns].copy_from_slice(&row[first..first + columns]);
            }
        });
    packed
}

/// A micro-kernel: `sums[r][c] = sum_t rows[t][lane + r] * columns[t][c]` over the tokens of a
/// chunk, both operands packed `[token][PANEL]`. Rows past the panel's end read as zero.
pub type Kernel = fn(&[f32], usize, &[f32], &mut [[f32; PANEL]; TILE_ROWS]);

/// The portable kernel (fused multiply-adds in the same order as the AVX2 one).
pub fn kernel_portable(
    rows: &[f32],
    lane: usize,
    columns: &[f32],
    sums: &mut [[f32; PANEL]; TILE_ROWS],
) {
    *sums = [[0f32; PANEL]; TILE_ROWS];
    let live = TILE_ROWS.min(PANEL - lane);
    for (r_token, c_token) in rows.chunks_exact(PANEL).zip(columns.chunks_exact(PANEL)) {
        for (r, row_sums) in sums.iter_mut().enumerate().take(live) {
            let x = r_token[lane + r];
            for (s, &y) in row_sums.iter_mut().zip(c_token) {
                *s = x.mul_add(y, *s);
            }
        }
    }
}

/// The AVX2+FMA kernel where this CPU has it (and `LOWBIT_ISA` is not `scalar`), else the
/// portable one.
pub fn best_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let avx2 = *DETECTED.get_or_init(|| {
            std::env::var("LOWBIT_ISA").map_or(true, |v| v != "scalar")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        });
        if avx2 {
            return avx2::kernel;
        }
    }
    kernel_portable
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// [`super::kernel_portable`] with eight 8-lane accumulators (4 rows x 16 columns).
    pub fn kernel(
        rows: &[f32],
        lane: usize,
        columns: &[f32],
        sums: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        // SAFETY: `best_kernel` hands out this function only after detecting AVX2 and FMA.
        unsafe { kernel_avx2(rows, lane, columns, sums) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_avx2(
        rows: &[f32],
        lane: usize,
        columns: &[f32],
        sums: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        let tokens = rows.len().min(columns.len()) / PANEL;
        // Rows past the panel end read lane 0 of the next token and are discarded below, so
        // every load stays inside `rows`; the last token's lanes are clamped instead.
        let live = TILE_ROWS.min(PANEL - lane);
        let mut acc = [_mm256_setzero_ps(); 2 * TILE_ROWS];
        for t in 0..tokens {
            let c = columns.as_ptr().add(t * PANEL);
            let r = rows.as_ptr().add(t * PANEL + lane);
            // SAFETY: `t < tokens` so `c..c+16` lies in `columns`; `r + k` for `k < live` lies
            // in the token's panel row of `rows`.
            let y0 = _mm256_loadu_ps(c);
            let y1 = _mm256_loadu_ps(c.add(8));
            for k in 0..TILE_ROWS {
                let x = if k < live {
                    _mm256_broadcast_ss(&*r.add(k))
                } else {
                    _mm256_setzero_ps()
                };
                acc[2 * k] = _mm256_fmadd_ps(x, y0, acc[2 * k]);
                acc[2 * k + 1] = _mm256_fmadd_ps(x, y1, acc[2 * k + 1]);
            }
        }
        for (k, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: each row of `sums` holds 16 f32, two unaligned 8-lane stores.
            _mm256_storeu_ps(row_sums.as_mut_ptr(), acc[2 * k]);
            _mm256_storeu_ps(row_sums.as_mut_ptr().add(8), acc[2 * k + 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rounding per fused multiply-add over a chunk (see the module's accuracy note), plus
    /// one more for the f64 sums of chunks and the f32 -> f64 conversion.
    const RELATIVE_TO_MAGNITUDE: f64 =
        (CHUNK_TOKENS as f64 + 2.0) * (f32::EPSILON as f64 / 2.0) * 1.01;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // A few large channels, as real activations have.
                if i % 37 == 0 {
                    u * 40.0
                } else {
                    u
                }
            })
            .collect()
    }

    fn check(rows: usize, width: usize, seed: u64, kernel_name: &str) {
        let x = values(rows * width, seed);
        let mut fast = vec![0f64; width * width];
        // Two calls: accumulation across calls keeps H symmetric and additive.
        let split = rows / 3;
        accumulate_hessian(&mut fast, split, &x[..split * width]);
        accumulate_hessian(&mut fast, rows - split, &x[split * width..]);
        let mut exact = vec![0f64; width * width];
        accumulate_hessian_reference(&mut exact, rows, &x);
        let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let mut magnitude = vec![0f64; width * width];
        accumulate_hessian_reference(&mut magnitude, rows, &abs);
        for i in 0..width * width {
            let bound = RELATIVE_TO_MAGNITUDE * magnitude[i] + 1e-300;
            assert!(
                (fast[i] - exact[i]).abs() <= bound,
                "{kernel_name} seed {seed} [{rows}x{width}] entry ({}, {}): {} vs {} (bound {bound})",
                i / width,
                i % width,
                fast[i],
                exact[i]
            );
        }
        for i in 0..width {
            for j in 0..i {
                assert_eq!(fast[i * width + j], fast[j * width + i]);
            }
        }
    }

    #[test]
    fn matches_the_f64_reference_on_ragged_shapes() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        for (rows, width) in [(1, 1), (7, 5), (300, 37), (513, 64), (600, 130)] {
            check(rows, width, seed, "best");
        }
    }

    #[test]
    fn kernels_agree() {
        let seed = 11;
        let (rows, width) = (CHUNK_TOKENS + 9, 2 * PANEL);
        let x = values(rows * width, seed);
        let packed = pack(&x, rows, width);
        for lane in [0, 4, 12, 13, 15] {
            let mut a = [[0f32; PANEL]; TILE_ROWS];
            let mut b = [[1f32; PANEL]; TILE_ROWS];
            let rows_chunk = &packed[..rows * PANEL];
            let columns_chunk = &packed[rows * PANEL..];
            kernel_portable(rows_chunk, lane, columns_chunk, &mut a);
            best_kernel()(rows_chunk, lane, columns_chunk, &mut b);
            for k in 0..TILE_ROWS {
                if lane + k < PANEL {
                    assert_eq!(a[k], b[k], "lane {lane} row {k}");
                }
            }
        }
    }
}
