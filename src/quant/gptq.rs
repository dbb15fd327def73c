//! GPTQ (Frantar et al. 2022): integer weights quantized one input column at a time, each
//! column's rounding error spread over the columns not yet quantized through the inverse Hessian
//! of the layer's inputs, so that the output error `||W X^T - Q X^T||` is small rather than
//! `||W - Q||`.
//!
//! The algorithm is the reference code's (IST-DASLab/gptq `fasterquant`, as in llm-compressor's
//! `GPTQModifier`), on a Hessian `H = sum x x^T` (or its mean) of shape `[cols, cols]`:
//! 1. dead inputs (`H[i,i] == 0`) get `H[i,i] = 1` and `W[:, i] = 0`;
//! 2. with act-order, columns are visited by descending `diag(H)` (a stable sort);
//! 3. `H += dampening * mean(diag(H)) * I`;
//! 4. `U` = the upper Cholesky factor of `H^-1` (`H^-1 = U^T U`);
//! 5. columns in blocks of `block_size`: column `i` is quantized with its group's scale and zero
//!    point (the conventions of [`super::rtn`]: `int_params`, `int_code`, scales rounded to f16),
//!    its error `e = (w - q) / U[i,i]` is subtracted from the block's later columns
//!    (`w_j -= e U[i,j]`), and when the block is done from all later columns at once (the lazy
//!    batch update).
//!
//! The reported loss is the reference's `sum (w - q)^2 / U[i,i]^2 / 2`.
//!
//! Where the reference leaves room, lowbit chooses:
//! - Group parameters (without static groups) are fitted to the group's *current* weights, every
//!   update of earlier columns included, also those still pending in the lazy batch. The
//!   reference fits a group that starts inside a block to the weights as of the block's start;
//!   the two agree whenever every group starts a block (`group_size` a multiple of `block_size`,
//!   as with the defaults g128 / 128) and for per-channel scales.
//! - Act-order always uses static groups. A [`QuantizedTensor`] has no `g_idx`: group `g` is the
//!   stored columns `g*G..(g+1)*G`. So groups are formed over the *original* column order and
//!   their parameters fitted up front to the original weights (the reference's
//!   `static_groups=True`, llm-compressor's `actorder="weight"`); only the visiting order
//!   changes. Codes are stored in original column order and [`GptqResult::g_idx`] is `None`.
//! - `U` is computed without forming `H^-1`: with `J` the reversal permutation, `J H J = L L^T`
//!   (Cholesky), so `H = R R^T` with `R = J L J` upper triangular and `H^-1 = R^-T R^-1`: the
//!   (unique) upper Cholesky factor of `H^-1` is `R^-1 = J L^-1 J`. One factorization instead of
//!   the reference's two, in f64 (the reference works in f32 on the GPU).
//! - If `H` is not numerically positive definite, the dampening is raised tenfold, up to
//!   [`DAMPENING_RETRIES`] times, before an error; [`GptqResult::dampening`] says what was used.
//!
//! Rows (output channels) are independent given `U`; they are processed in parallel chunks, and
//! every value is computed in the same order whatever the thread count, so results are
//! deterministic.

use rayon::prelude::*;

use super::rtn::{int_code, int_params};
use super::scheme::{Granularity, QuantScheme, WeightFormat};
use super::weights::{f16_tensor, QuantizedTensor, Scales};
use crate::checkpoint::{Dtype, Tensor};
use crate::error::{Error, Result};

/// Default dampening, as a fraction of the mean of `diag(H)` (the reference's `percdamp`).
pub const DEFAULT_DAMPENING: f64 = 0.01;
/// Default columns per lazy batch update (the reference's `blocksize`).
pub const DEFAULT_BLOCK_SIZE: usize = 128;
/// Tenfold increases of the dampening tried when `H` is not positive definite.
pub const DAMPENING_RETRIES: usize = 3;
/// A Cholesky pivot below this fraction of its diagonal entry counts as not positive: `H` is
/// singular to working precision (condition ~1e12 leaves ~4 significant digits in f64).
const MIN_RELATIVE_PIVOT: f64 = 1e-12;
/// Rows quantized by one task: `U` is read from memory once per chunk.
const ROW_CHUNK: usize = 16;
/// Columns of one tile of the lazy update, so that the tiles of `W` and `U` stay in cache.
const UPDATE_TILE: usize = 512;
/// Columns of one Cholesky panel / inverse batch: each matrix row is loaded once per panel.
const PANEL: usize = 64;

/// Options of [`gptq_quantize`]; start from `GptqOptions::default()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Added to `diag(H)`, as a fraction of its mean (default 0.01).
    pub dampening: f64,
    /// Columns per lazy batch update (default 128); changes speed, not the result's meaning.
    pub block_size: usize,
    /// Visit columns by descending `diag(H)` (implies static groups, see the module notes).
    pub act_order: bool,
    /// Fit every group's scale and zero point up front to the original weights.
    pub static_groups: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            dampening: DEFAULT_DAMPENING,
            block_size: DEFAULT_BLOCK_SIZE,
            act_order: false,
            static_groups: false,
        }
    }
}

/// What [`gptq_quantize`] returns.
#[derive(Clone, Debug)]
pub struct GptqResult {
    /// The quantized weight, columns in their original order, packed as RTN packs them.
    pub tensor: QuantizedTensor,
    /// Group of each input column when groups do not follow the column order; always `None`
    /// today, since act-order uses static groups (see the module notes).
    pub g_idx: Option<Vec<i32>>,
    /// The GPTQ loss `sum (w - q)^2 / U[i,i]^2 / 2`.
    pub error: f64,
    /// The dampening actually used (a fraction of the mean of `diag(H)`): the requested one, or
    /// a larger one if `H` was not positive definite with it.
    pub dampening: f64,
}

/// Quantizes a row-major `[rows, cols]` weight with GPTQ, given the Hessian `hessian` of its
/// inputs (row-major `[cols, cols]`, symmetric, `sum x x^T` over the calibration tokens or its
/// mean). Integer schemes only, group-wise or per channel.
///
/// Errors ([`Error::InvalidArgument`]): sizes that do not match, non-finite values, a negative
/// diagonal entry, a format other than 4/8-bit integers, bad options, or a Hessian that is not
/// positive definite even after [`DAMPENING_RETRIES`] tenfold increases of the dampening.
pub fn gptq_quantize(
    weight: &[f32],
    shape: [usize; 2],
    hessian: &[f64],
    scheme: &QuantScheme,
    options: &GptqOptions,
) -> Result<GptqResult> {
    let [rows, cols] = shape;
    let invalid =
        |what: String| Error::InvalidArgument(format!("GPTQ of a [{rows}, {cols}] weight: {what}"));
    if weight.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(invalid(format!("{} weight values given", weight.len())));
    }
    let (bits, symmetric) = match scheme.weight {
        WeightFormat::Int {
            bits: bits @ (4 | 8),
            symmetric,
        } => (bits, symmetric),
        _ => {
            return Err(invalid(format!(
                "GPTQ quantizes 4- or 8-bit integer weights, not {scheme}; use RTN for \
                 NF4/FP4/FP8"
            )))
        }
    };
    if !matches!(
        scheme.granularity,
        Granularity::Group(_) | Granularity::Channel
    ) {
        return Err(invalid(format!(
            "{scheme}: GPTQ takes group-wise or per-channel integer scales"
        )));
    }
    if let Some(bad) = weight.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "weight value {} at index {bad} is not finite",
            weight[bad]
        )));
    }
    if hessian.len() != cols * cols {
        return Err(invalid(format!(
            "the Hessian has {} values, expected [{cols}, {cols}] = {}",
            hessian.len(),
            cols * cols
        )));
    }
    if let Some(bad) = hessian.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "Hessian entry [{}, {}] = {} is not finite",
            bad / cols,
            bad % cols,
            hessian[bad]
        )));
    }
    if let Some(i) = (0..cols).find(|&i| hessian[i * cols + i] < 0.0) {
        return Err(invalid(format!(
            "Hessian diagonal entry {i} is {}, but a sum of x x^T has no negative diagonal",
            hessian[i * cols + i]
        )));
    }
    if options.block_size == 0 {
        return Err(invalid("the GPTQ block size must be at least 1".into()));
    }
    if !(options.dampening.is_finite() && options.dampening >= 0.0) {
        return Err(invalid(format!(
            "dampening {} is not a non-negative fraction",
            options.dampening
        )));
    }

    let dead: Vec<bool> = (0..cols).map(|i| hessian[i * cols + i] == 0.0).collect();
    // order[p]: the original column visited p-th.
    let mut order: Vec<usize> = (0..cols).collect();
    if options.act_order {
        // Dead inputs count with the diagonal 1 they are given, as in the reference.
        let diag = |i: usize| if dead[i] { 1.0 } else { hessian[i * cols + i] };
        order.sort_by(|&a, &b| diag(b).total_cmp(&diag(a)));
    }
    // The Hessian in visiting order, symmetrized (exact for a symmetric input).
    let mut permuted = vec![0f64; cols * cols];
    permuted
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(p, row)| {
            let a = order[p];
            for (v, &b) in row.iter_mut().zip(&order) {
                *v = 0.5 * hessian[a * cols + b] + 0.5 * hessian[b * cols + a];
            }
        });
    for (p, &column) in order.iter().enumerate() {
        if dead[column] {
            permuted[p * cols + p] = 1.0;
        }
    }
    let mean_diagonal = (0..cols).map(|p| permuted[p * cols + p]).sum::<f64>() / cols as f64;

    let mut dampening = options.dampening;
    let mut tried = Vec::new();
    let upper = loop {
        match inverse_cholesky_upper(&permuted, cols, dampening * mean_diagonal) {
            Ok(upper) => break upper,
            Err(position) => {
                tried.push(dampening);
                if tried.len() > DAMPENING_RETRIES {
                    return Err(invalid(format!(
                        "the Hessian is not positive definite (Cholesky fails at input column \
                         {}) even with dampening {tried:?} x its mean diagonal {mean_diagonal:e}; \
                         the calibration inputs may be degenerate or the Hessian corrupted",
                        order[position]
                    )));
                }
                dampening = if dampening > 0.0 {
                    dampening * 10.0
                } else {
                    DEFAULT_DAMPENING
                };
            }
        }
    };

    let group_size = scheme.group_size(cols);
    let groups = cols.div_ceil(group_size);
    let plan = Plan {
        cols,
        group_size,
        groups,
        bits,
        symmetric,
        block_size: options.block_size.min(cols),
        static_groups: options.static_groups || options.act_order,
        order: &order,
        dead: &dead,
        upper: &upper,
    };
    let mut codes = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * groups];
    let mut zero_points = vec![0i8; rows * groups];
    let losses: Vec<f64> = weight
        .par_chunks(ROW_CHUNK * cols)
        .zip(codes.par_chunks_mut(ROW_CHUNK * cols))
        .zip(scales.par_chunks_mut(ROW_CHUNK * groups))
        .zip(zero_points.par_chunks_mut(ROW_CHUNK * groups))
        .map(|(((w, c), s), z)| plan.quantize_rows(w, c, s, z))
        .collect();
    let tensor = QuantizedTensor::new(
        *scheme,
        shape,
        pack_codes(&codes, shape, bits),
        Scales::Dense(f16_tensor(vec![rows, groups], &scales)),
        (!symmetric).then_some(zero_points),
    )?;
    Ok(GptqResult {
        tensor,
        g_idx: None,
        error: losses.iter().sum(),
        dampening,
    })
}

/// Everything the row chunks share.
struct Plan<'a> {
    cols: usize,
    group_size: usize,
    groups: usize,
    bits: u8,
    symmetric: bool,
    block_size: usize,
    static_groups: bool,
    order: &'a [usize],
    dead: &'a [bool],
    /// `U`, row-major `[cols, cols]`, in visiting order.
    upper: &'a [f64],
}

impl Plan<'_> {
    /// Scale and zero point of a group spanning `values`, exactly as RTN fits them.
    fn fit(&self, values: impl Iterator<Item = f32>) -> (f32, i32) {
        let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        int_params(lo, hi, self.bits, self.symmetric)
    }

    /// Runs GPTQ on whole rows `weight` (original order); writes their codes (original order),
    /// scales and zero points; returns their loss.
    fn quantize_rows(
        &self,
        weight: &[f32],
        codes: &mut [i8],
        scales: &mut [f32],
        zero_points: &mut [i8],
    ) -> f64 {
        let (n, groups, group_size, block_size) =
            (self.cols, self.groups, self.group_size, self.block_size);
        let chunk = weight.len() / n;
        let original: Vec<f32> = weight
            .iter()
            .enumerate()
            .map(|(k, &w)| if self.dead[k % n] { 0.0 } else { w })
            .collect();
        if self.static_groups {
            for r in 0..chunk {
                for g in 0..groups {
                    let span = r * n + g * group_size..r * n + ((g + 1) * group_size).min(n);
                    let (scale, zero) = self.fit(original[span].iter().copied());
                    scales[r * groups + g] = scale;
                    zero_points[r * groups + g] = zero as i8;
                }
            }
        }
        // The working weights, in visiting order.
        let mut w: Vec<f64> = (0..chunk * n)
            .map(|k| original[k - k % n + self.order[k % n]] as f64)
            .collect();
        // errors[r * block_size + k]: the scaled error of the block's k-th column in row r.
        let mut errors = vec![0f64; chunk * block_size];
        let mut loss = 0.0;
        for start in (0..n).step_by(block_size) {
            let end = (start + block_size).min(n);
            for i in start..end {
                let column = self.order[i];
                let group = column / group_size;
                if !self.static_groups && i % group_size == 0 {
                    // Without act-order, position i is column i.
                    for r in 0..chunk {
                        let (scale, zero) = self.fit(
                            (i..(i + group_size).min(n))
                                .map(|c| self.current(&w, &errors, r, start, i, c) as f32),
                        );
                        scales[r * groups + group] = scale;
                        zero_points[r * groups + group] = zero as i8;
                    }
                }
                let u_row = &self.upper[i * n..(i + 1) * n];
                let d = u_row[i];
                for r in 0..chunk {
                    let scale = scales[r * groups + group];
                    let zero = zero_points[r * groups + group] as i32;
                    let value = w[r * n + i];
                    let code = int_code(value as f32, scale, zero, self.bits);
                    codes[r * n + column] = code as i8;
                    let residual = value - ((code - zero) as f32 * scale) as f64;
                    loss += residual * residual / (d * d) / 2.0;
                    let e = residual / d;
                    errors[r * block_size + i - start] = e;
                    let rest = &mut w[r * n + i + 1..r * n + end];
                    for (x, &u) in rest.iter_mut().zip(&u_row[i + 1..end]) {
                        *x -= e * u;
                    }
                }
            }
            // Lazy batch update: W[:, end..] -= E[:, block] U[block, end..].
            for tile in (end..n).step_by(UPDATE_TILE) {
                let tile_end = (tile + UPDATE_TILE).min(n);
                for k in 0..end - start {
                    let u = &self.upper[(start + k) * n + tile..(start + k) * n + tile_end];
                    for r in 0..chunk {
                        let e = errors[r * block_size + k];
                        let target = &mut w[r * n + tile..r * n + tile_end];
                        for (x, &v) in target.iter_mut().zip(u) {
                            *x -= e * v;
                        }
                    }
                }
            }
        }
        loss
    }

    /// The current weight at position `c` of row `r` while position `i` of the block starting
    /// at `start` is being quantized: beyond the block, the lazy updates still pending applied.
    fn current(
        &self,
        w: &[f64],
        errors: &[f64],
        r: usize,
        start: usize,
        i: usize,
        c: usize,
    ) -> f64 {
        let n = self.cols;
        let mut value = w[r * n + c];
        if c >= start + self.block_size {
            for k in 0..i - start {
                value -= errors[r * self.block_size + k] * self.upper[(start + k) * n + c];
            }
        }
        value
    }
}

/// The upper Cholesky factor `U` of `(H + damp I)^-1`, row-major, for a symmetric `[n, n]` `H`.
/// `Err(p)`: `H + damp I` is not numerically positive definite; row/column `p` is where that
/// shows.
fn inverse_cholesky_upper(
    hessian: &[f64],
    n: usize,
    damp: f64,
) -> std::result::Result<Vec<f64>, usize> {
    // M = J (H + damp I) J = L L^T, and U = J L^-1 J (see the module notes).
    let mut lower: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let v = hessian[(n - 1 - i) * n + (n - 1 - j)];
            if i == j {
                v + damp
            } else {
                v
            }
        })
        .collect();
    cholesky_lower(&mut lower, n).map_err(|k| n - 1 - k)?;
    let inverse_columns = inverse_lower_columns(&lower, n);
    // U[i][j] = L^-1[n-1-i][n-1-j], which inverse_columns holds at [n-1-j][n-1-i].
    let mut upper = vec![0f64; n * n];
    upper.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = inverse_columns[(n - 1 - j) * n + (n - 1 - i)];
        }
    });
    if upper.iter().all(|v| v.is_finite()) {
        Ok(upper)
    } else {
        Err(0)
    }
}

/// In-place lower Cholesky factor of a symmetric positive definite `[n, n]` matrix (the lower
/// triangle is read; the strict upper triangle is zeroed). Left-looking, a panel of columns at a
/// time so that each row is loaded once per panel; rows below the panel in parallel. `Err(k)`:
/// the pivot of row `k` is not (numerically) positive.
fn cholesky_lower(a: &mut [f64], n: usize) -> std::result::Result<(), usize> {
    for p0 in (0..n).step_by(PANEL) {
        let p1 = (p0 + PANEL).min(n);
        // The diagonal block, in order.
        for i in p0..p1 {
            for j in p0..=i {
                let s = a[i * n + j] - dot(&a[i * n..i * n + j], &a[j * n..j * n + j]);
                if j < i {
                    a[i * n + j] = s / a[j * n + j];
                } else {
                    let positive =
                        s.is_finite() && s > 0.0 && s > MIN_RELATIVE_PIVOT * a[i * n + i];
                    if !positive {
                        return Err(i);
                    }
                    a[i * n + i] = s.sqrt();
                }
            }
        }
        // The rows below it, each independently from the finished panel rows.
        let (top, bottom) = a.split_at_mut(p1 * n);
        let top = &*top;
        bottom.par_chunks_mut(n).for_each(|row| {
            for j in p0..p1 {
                let pivot_row = &top[j * n..j * n + j];
                row[j] = (row[j] - dot(&row[..j], pivot_row)) / top[j * n + j];
            }
        });
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Ok(())
}

/// The inverse of a lower triangular `[n, n]` `L`, stored by columns: `t[j * n + i] =
/// (L^-1)[i][j]` for `i >= j`, zero elsewhere. Forward substitution for a batch of columns at
/// a time, so that each row of `L` is loaded once per batch; batches in parallel.
fn inverse_lower_columns(lower: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0f64; n * n];
    t.par_chunks_mut(PANEL * n)
        .enumerate()
        .for_each(|(batch, columns)| {
            let j0 = batch * PANEL;
            for (k, column) in columns.chunks_mut(n).enumerate() {
                column[j0 + k] = 1.0 / lower[(j0 + k) * n + j0 + k];
            }
            for i in j0 + 1..n {
                let row = &lower[i * n..i * n + i];
                for (k, column) in columns.chunks_mut(n).enumerate() {
                    let j = j0 + k;
                    if j < i {
                        column[i] = -dot(&row[j..i], &column[j..i]) / lower[i * n + i];
                    }
                }
            }
        });
    t
}

/// A dot product with four independent sums, so that it vectorizes.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0f64; 4];
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            sums[k] += x[k] * y[k];
        }
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// Signed codes `[rows, cols]` in the stored layout of [`super::weights`], byte for byte what
/// `rtn.rs` writes (it keeps its packing inline): int4 offset-coded (`q + 8`) nibbles, eight
/// per I32 word, low nibble first, rows padded to whole words; int8 as I8 bytes.
fn pack_codes(codes: &[i8], [rows, cols]: [usize; 2], bits: u8) -> Tensor {
    if bits == 4 {
        let words_per_row = cols.div_ceil(8);
        let mut words = vec![0u32; rows * words_per_row];
        words
            .par_chunks_mut(words_per_row)
            .zip(codes.par_chunks(cols))
            .for_each(|(row_words, row_codes)| {
                for (k, &q) in row_codes.iter().enumerate() {
                    row_words[k / 8] |= (((q as i32 + 8) & 0x0F) as u32) << (4 * (k % 8));
                }
            });
        Tensor::from_bytes(
            vec![rows, words_per_row],
            Dtype::I32,
            bytemuck::cast_slice(&words),
        )
    } else {
        Tensor::from_bytes(vec![rows, cols], Dtype::I8, bytemuck::cast_slice(codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random symmetric positive definite matrix `B B^T / n + 0.1 I`.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let b: Vec<f64> = (0..n * n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = dot(&b[i * n..(i + 1) * n], &b[j * n..(j + 1) * n]) / n as f64;
            }
            h[i * n + i] += 0.1;
        }
        h
    }

    #[test]
    fn upper_factor_inverts_the_hessian() {
        // Sizes around the panel width, so that partial panels and batches are exercised.
        for n in [1, 5, 64, 150] {
            let h = spd(n, n as u64);
            let damp = 0.01;
            let u = inverse_cholesky_upper(&h, n, damp).unwrap();
            for i in 0..n {
                assert!(u[i * n + i] > 0.0);
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
                }
            }
            // (U^T U) (H + damp I) = I; entries of H^-1 are at most 10 (0.1 I in H), f64 leaves
            // ~1e-13 after the O(n) sums.
            for i in 0..n {
                for j in 0..n {
                    let mut v = 0.0;
                    for k in 0..n {
                        let inverse_ik: f64 =
                            (0..=i.min(k)).map(|m| u[m * n + i] * u[m * n + k]).sum();
                        let h_kj = h[k * n + j] + if k == j { damp } else { 0.0 };
                        v += inverse_ik * h_kj;
                    }
                    let expected = if i == j { 1.0 } else { 0.0 };
                    assert!((v - expected).abs() < 1e-9, "n {n} [{i}, {j}] = {v}");
                }
            }
        }
    }

    #[test]
    fn diagonal_hessian_gives_diagonal_factor() {
        let n = 70;
        let h: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 + k as f64 } else { 0.0 })
            .collect();
        let u = inverse_cholesky_upper(&h, n, 0.5).unwrap();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn indefinite_matrix_is_rejected() {
        let h = [1.0, 2.0, 2.0, 1.0];
        assert!(inverse_cholesky_upper(&h, 2, 0.0).is_err());
        assert!(inverse_cholesky_upper(&h, 2, 1.5).is_ok());
    }
}
