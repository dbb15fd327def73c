//! Launches of the forward-pass kernels of `kernels/forward.cu` (embedding, RMSNorm, q/k/v with
//! RoPE, attention, SwiGLU, row gather, logits widening). Each wrapper checks the sizes the
//! kernel relies on, then queues the launch on the device's stream.

use cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig};
use half::bf16;

use super::device::{CudaDevice, FORWARD};
use crate::error::{Error, Result};

/// Threads of the row kernels (norms, gathers).
const ROW_THREADS: u32 = 256;
/// Threads of the q/k/v kernel (`QKV_WARPS` warps in forward.cu).
const QKV_THREADS: u32 = 256;
/// Threads of the attention kernel (`ATT_THREADS` in forward.cu).
const ATT_THREADS: u32 = 256;
/// Most head_dim the kernels take (`MAX_HEAD_DIM` in forward.cu).
pub const MAX_HEAD_DIM: usize = 256;

/// The forward-pass kernels, loaded once per model.
pub struct ForwardKernels {
    head_dim: usize,
    embed_f32: CudaFunction,
    embed_bf16: CudaFunction,
    add_rms_norm: CudaFunction,
    qkv_rope: CudaFunction,
    attention: CudaFunction,
    swiglu: CudaFunction,
    gather_rows: CudaFunction,
    widen_bf16: CudaFunction,
    argmax_rows: CudaFunction,
}

/// Shapes of the attention of one layer.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// The per-token bookkeeping of a pass on the device.
pub struct TokenTables<'a> {
    /// Sequence of each token.
    pub seq_of: &'a CudaView<'a, i32>,
    /// Absolute position of each token.
    pub position: &'a CudaView<'a, i32>,
    /// RoPE cosines, `[tokens, head_dim / 2]`.
    pub cos: &'a CudaView<'a, f32>,
    /// RoPE sines, `[tokens, head_dim / 2]`.
    pub sin: &'a CudaView<'a, f32>,
    /// Cache addresses, `[layers][sequences][keys, values]`.
    pub kv_table: &'a CudaView<'a, u64>,
    /// Sequences in the pass.
    pub sequences: usize,
}

/// Threads of `argmax_rows` (ARGMAX_THREADS in kernels/forward.cu).
const ARGMAX_THREADS: u32 = 1024;

fn grid(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn elementwise(n: usize, device: &CudaDevice) -> LaunchConfig {
    grid(n.div_ceil(256).clamp(1, 16 * device.multiprocessors()), 256)
}

fn too_small(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{what}: a device buffer is smaller than the launch needs"
    ))
}

impl ForwardKernels {
    /// Compiles (once per process and head width) and loads the kernels for heads of
    /// `head_dim` values (even, at most [`MAX_HEAD_DIM`]).
    pub fn new(device: &CudaDevice, head_dim: usize) -> Result<Self> {
        if head_dim > MAX_HEAD_DIM || !head_dim.is_multiple_of(2) || head_dim == 0 {
            return Err(Error::InvalidArgument(format!(
                "GPU attention: head_dim {head_dim} must be even and at most {MAX_HEAD_DIM}"
            )));
        }
        let module = device.module(FORWARD, &[("HEAD_DIM", head_dim.to_string())])?;
        let f = |name: &str| CudaDevice::function(&module, name);
        Ok(ForwardKernels {
            head_dim,
            embed_f32: f("embed_f32")?,
            embed_bf16: f("embed_bf16")?,
            add_rms_norm: f("add_rms_norm")?,
            qkv_rope: f("qkv_rope")?,
            attention: f("attention")?,
            swiglu: f("swiglu")?,
            gather_rows: f("gather_rows")?,
            widen_bf16: f("widen_bf16")?,
            argmax_rows: f("argmax_rows")?,
        })
    }

    /// `x[t] = table[tokens[t]]` (f32 or bf16 table of `hidden`-wide rows), `tokens` ids.
    pub fn embed(
        &self,
        device: &CudaDevice,
        table: EmbeddingRef<'_>,
        tokens: &CudaView<'_, u32>,
        count: usize,
        hidden: usize,
        x: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if tokens.len() < count || x.len() < count * hidden {
            return Err(too_small("embedding"));
        }
        let mut args = device.args();
        let function = match table {
            EmbeddingRef::F32(t) => {
                args.ptr(t);
                &self.embed_f32
            }
            EmbeddingRef::Bf16(t) => {
                args.ptr(t);
                &self.embed_bf16
            }
        };
        args.ptr(tokens).i32(hidden as i32).ptr(x);
        let config = grid(count, ROW_THREADS);
        // SAFETY: matches embed_f32/embed_bf16 (table, tokens, hidden, x); tokens were checked
        // against the vocabulary on the host and x holds count * hidden values.
        unsafe {
            device.launch(
                function,
                config,
                &mut args,
                "launching the embedding gather",
            )
        }
    }

    /// For each of `rows` rows: when `delta` is given, `x += delta + bias`; then
    /// `out = rms_norm(x) * weight` in bf16.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rms_norm(
        &self,
        device: &CudaDevice,
        x: &mut CudaSlice<f32>,
        delta: Option<&CudaSlice<bf16>>,
        bias: Option<&CudaSlice<f32>>,
        weight: &CudaSlice<f32>,
        out: &mut CudaSlice<bf16>,
        [rows, hidden]: [usize; 2],
        eps: f32,
    ) -> Result<()> {
        let n = rows * hidden;
        if x.len() < n
            || out.len() < n
            || weight.len() < hidden
            || delta.is_some_and(|d| d.len() < n)
        {
            return Err(too_small("RMSNorm"));
        }
        let mut args = device.args();
        args.ptr(x)
            .ptr_or_null(delta)
            .ptr_or_null(bias)
            .ptr(weight)
            .ptr(out)
            .i32(hidden as i32)
            .f32(eps);
        let config = grid(rows, ROW_THREADS);
        // SAFETY: matches add_rms_norm (x, delta or null, bias or null, weight, out, hidden,
        // eps); every buffer holds rows * hidden values (checked above), the bias hidden.
        unsafe { device.launch(&self.add_rms_norm, config, &mut args, "launching RMSNorm") }
    }

    /// Bias, per-head norm and RoPE of q and k, and the cache append of k and v, for `tokens`
    /// tokens of layer `layer`; queries go to `q_out` (f32).
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope(
        &self,
        device: &CudaDevice,
        [q, k, v]: [&CudaView<'_, bf16>; 3],
        [q_stride, kv_stride]: [usize; 2],
        biases: [Option<&CudaSlice<f32>>; 3],
        norms: [Option<&CudaSlice<f32>>; 2],
        tables: &TokenTables<'_>,
        layer: usize,
        tokens: usize,
        shape: AttentionShape,
        eps: f32,
        q_out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let q_width = shape.heads * shape.head_dim;
        let kv_width = shape.kv_heads * shape.head_dim;
        let rows = |stride: usize, width: usize| (tokens.max(1) - 1) * stride + width;
        if q.len() < rows(q_stride, q_width)
            || k.len() < rows(kv_stride, kv_width)
            || v.len() < rows(kv_stride, kv_width)
            || q_stride < q_width
            || kv_stride < kv_width
            || q_out.len() < tokens * q_width
            || tables.seq_of.len() < tokens
            || tables.cos.len() < tokens * shape.head_dim / 2
        {
            return Err(too_small("q/k/v"));
        }
        let mut args = device.args();
        args.ptr(q)
            .ptr(k)
            .ptr(v)
            .i32(q_stride as i32)
            .i32(kv_stride as i32);
        for b in biases {
            args.ptr_or_null(b);
        }
        for n in norms {
            args.ptr_or_null(n);
        }
        args.ptr(tables.cos)
            .ptr(tables.sin)
            .ptr(tables.seq_of)
            .ptr(tables.position)
            .ptr(tables.kv_table);
        for i in [
            tables.sequences,
            layer,
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
        ] {
            args.i32(i as i32);
        }
        args.f32(eps).ptr(q_out);
        let config = grid(tokens, QKV_THREADS);
        // SAFETY: matches qkv_rope in forward.cu; the projection views hold `tokens` rows at
        // their strides and q_out `tokens` rows (checked above); the caches were grown on the
        // host to hold every position the tokens write, and head_dim <= MAX_HEAD_DIM was checked
        // when the model was uploaded.
        unsafe { device.launch(&self.qkv_rope, config, &mut args, "launching q/k/v RoPE") }
    }

    /// Causal attention of `tokens` queries over their sequences' caches (bf16 output).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        device: &CudaDevice,
        q: &CudaSlice<f32>,
        tables: &TokenTables<'_>,
        layer: usize,
        tokens: usize,
        shape: AttentionShape,
        scale: f32,
        out: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        let width = shape.heads * shape.head_dim;
        if shape.head_dim != self.head_dim {
            return Err(Error::InvalidArgument(format!(
                "attention kernels built for head_dim {}, called with {}",
                self.head_dim, shape.head_dim
            )));
        }
        if q.len() < tokens * width || out.len() < tokens * width || tables.seq_of.len() < tokens {
            return Err(too_small("attention"));
        }
        let mut args = device.args();
        args.ptr(q)
            .ptr(tables.kv_table)
            .i32(tables.sequences as i32)
            .i32(layer as i32)
            .ptr(tables.seq_of)
            .ptr(tables.position);
        for i in [shape.heads, shape.kv_heads, shape.head_dim] {
            args.i32(i as i32);
        }
        args.f32(scale).ptr(out);
        let config = LaunchConfig {
            grid_dim: (shape.heads as u32, tokens as u32, 1),
            block_dim: (ATT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches attention in forward.cu; q and out hold `tokens` rows (checked), every
        // position a token sees (0..=its position) was written to its cache by qkv_rope before.
        unsafe { device.launch(&self.attention, config, &mut args, "launching attention") }
    }

    /// `out = silu(gate + gate_bias) * (up + up_bias)` for `rows` rows of `width` values, the
    /// inputs' rows `stride` apart (out is packed).
    pub fn swiglu(
        &self,
        device: &CudaDevice,
        [gate, up]: [&CudaView<'_, bf16>; 2],
        [gate_bias, up_bias]: [Option<&CudaSlice<f32>>; 2],
        [rows, width, stride]: [usize; 3],
        out: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        let n = rows * width;
        let span = (rows.max(1) - 1) * stride + width;
        if gate.len() < span || up.len() < span || out.len() < n || stride < width {
            return Err(too_small("SwiGLU"));
        }
        let mut args = device.args();
        args.ptr(gate)
            .ptr(up)
            .ptr_or_null(gate_bias)
            .ptr_or_null(up_bias)
            .i64(n as i64)
            .i32(width as i32)
            .i32(stride as i32)
            .ptr(out);
        let config = elementwise(n, device);
        // SAFETY: matches swiglu (gate, up, biases or null, n, width, stride, out); the inputs
        // hold `rows` rows at `stride` and out n values (checked above).
        unsafe { device.launch(&self.swiglu, config, &mut args, "launching SwiGLU") }
    }

    /// `out[i] = src[rows[i]]` for `count` bf16 rows of `width` values.
    pub fn gather_rows(
        &self,
        device: &CudaDevice,
        src: &CudaSlice<bf16>,
        rows: &CudaView<'_, i32>,
        count: usize,
        width: usize,
        out: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        if rows.len() < count || out.len() < count * width {
            return Err(too_small("row gather"));
        }
        let mut args = device.args();
        args.ptr(src).ptr(rows).i32(width as i32).ptr(out);
        let config = grid(count, ROW_THREADS);
        // SAFETY: matches gather_rows; the row indices were built on the host below the rows
        // `src` holds, and out holds count * width values.
        unsafe {
            device.launch(
                &self.gather_rows,
                config,
                &mut args,
                "launching the row gather",
            )
        }
    }

    /// `out = src` widened from bf16 to f32, `n` values.
    pub fn widen(
        &self,
        device: &CudaDevice,
        src: &CudaSlice<bf16>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if src.len() < n || out.len() < n {
            return Err(too_small("widening"));
        }
        let mut args = device.args();
        args.ptr(src).i64(n as i64).ptr(out);
        let config = elementwise(n, device);
        // SAFETY: matches widen_bf16 (src, n, out); both hold n values.
        unsafe {
            device.launch(
                &self.widen_bf16,
                config,
                &mut args,
                "launching the widening",
            )
        }
    }

    /// `out[r]` = the index of the largest of the `width` values of row `r` of `logits`, the
    /// first on ties (the host's `argmax`); NaN never wins.
    pub fn argmax_rows(
        &self,
        device: &CudaDevice,
        logits: &CudaSlice<f32>,
        [rows, width]: [usize; 2],
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if logits.len() < rows * width || out.len() < rows || width > i32::MAX as usize {
            return Err(too_small("argmax"));
        }
        let mut args = device.args();
        args.ptr(logits).i32(width as i32).ptr(out);
        let config = grid(rows, ARGMAX_THREADS);
        // SAFETY: matches argmax_rows (logits, width, out); logits holds rows * width values
        // and out rows (checked above); one block per row.
        unsafe { device.launch(&self.argmax_rows, config, &mut args, "launching the argmax") }
    }
}

/// An embedding table on the device, as stored.
#[derive(Clone, Copy)]
pub enum EmbeddingRef<'a> {
    /// f32 rows.
    F32(&'a CudaSlice<f32>),
    /// bf16 rows.
    Bf16(&'a CudaSlice<bf16>),
}
