//! The device buffers of a forward pass, kept between passes and grown (never shrunk) when a
//! pass has more tokens or sequences than any before: per-token tables uploaded from the host,
//! and the activations of one block (reused by every block).

use cudarc::driver::{CudaSlice, DeviceRepr, DriverError, ValidAsZeroBits};
use half::bf16;

use super::device::{driver_error, CudaDevice};
use super::model::Plan;
use crate::checkpoint::ModelConfig;
use crate::error::Result;

/// Buffers sized for `tokens` tokens and `sequences` sequences. Widths as in
/// `kernels/forward.cu`'s layout comment.
pub(super) struct Workspace {
    tokens_capacity: usize,
    sequences_capacity: usize,
    rows_capacity: usize,
    pub(super) tokens: CudaSlice<u32>,
    pub(super) seq_of: CudaSlice<i32>,
    pub(super) position: CudaSlice<i32>,
    pub(super) cos: CudaSlice<f32>,
    pub(super) sin: CudaSlice<f32>,
    pub(super) rows: CudaSlice<i32>,
    pub(super) kv_table: CudaSlice<u64>,
    pub(super) x: CudaSlice<f32>,
    pub(super) h: CudaSlice<bf16>,
    pub(super) q: CudaSlice<bf16>,
    pub(super) k: CudaSlice<bf16>,
    pub(super) v: CudaSlice<bf16>,
    pub(super) q_rot: CudaSlice<f32>,
    pub(super) attn: CudaSlice<bf16>,
    pub(super) proj: CudaSlice<bf16>,
    pub(super) gate: CudaSlice<bf16>,
    pub(super) up: CudaSlice<bf16>,
    pub(super) inner: CudaSlice<bf16>,
    pub(super) selected: CudaSlice<bf16>,
    pub(super) logits_bf16: CudaSlice<bf16>,
    pub(super) logits: CudaSlice<f32>,
    pub(super) dequantized: CudaSlice<bf16>,
}

fn zeros<T: DeviceRepr + ValidAsZeroBits>(device: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    device
        .stream()
        .alloc_zeros(n.max(1))
        .map_err(driver_error("allocating the forward workspace"))
}

impl Workspace {
    /// Buffers for passes of up to `tokens` tokens over `sequences` sequences with `rows` rows
    /// of logits, and a dequantization buffer of `dequantized` values.
    pub(super) fn new(
        device: &CudaDevice,
        cfg: &ModelConfig,
        [tokens, sequences, rows]: [usize; 3],
        dequantized: usize,
    ) -> Result<Self> {
        let t = tokens;
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let q_width = cfg.num_attention_heads * cfg.head_dim;
        let kv_width = cfg.num_key_value_heads * cfg.head_dim;
        Ok(Workspace {
            tokens_capacity: tokens,
            sequences_capacity: sequences,
            rows_capacity: rows,
            tokens: zeros(device, t)?,
            seq_of: zeros(device, t)?,
            position: zeros(device, t)?,
            cos: zeros(device, t * cfg.head_dim / 2)?,
            sin: zeros(device, t * cfg.head_dim / 2)?,
            rows: zeros(device, rows)?,
            kv_table: zeros(device, 2 * sequences * cfg.num_hidden_layers)?,
            x: zeros(device, t * hidden)?,
            h: zeros(device, t * hidden)?,
            q: zeros(device, t * q_width)?,
            k: zeros(device, t * kv_width)?,
            v: zeros(device, t * kv_width)?,
            q_rot: zeros(device, t * q_width)?,
            attn: zeros(device, t * q_width)?,
            proj: zeros(device, t * hidden)?,
            gate: zeros(device, t * inter)?,
            up: zeros(device, t * inter)?,
            inner: zeros(device, t * inter)?,
            selected: zeros(device, rows * hidden)?,
            logits_bf16: zeros(device, rows * cfg.vocab_size)?,
            logits: zeros(device, rows * cfg.vocab_size)?,
            dequantized: zeros(device, dequantized)?,
        })
    }

    /// Whether a pass of this size fits; otherwise the capacities to allocate (each at least
    /// doubled, so a growing workload reallocates rarely).
    pub(super) fn grown(
        ws: Option<&Workspace>,
        [tokens, sequences, rows]: [usize; 3],
    ) -> Option<[usize; 3]> {
        let (t, s, r) = ws.map_or((0, 0, 0), |w| {
            (w.tokens_capacity, w.sequences_capacity, w.rows_capacity)
        });
        if tokens <= t && sequences <= s && rows <= r {
            return None;
        }
        let grow = |need: usize, have: usize| {
            if need <= have {
                have
            } else {
                need.max(2 * have)
            }
        };
        Some([grow(tokens, t), grow(sequences, s), grow(rows, r)])
    }

    /// Fills the activations and logits with NaN (see [`CudaDevice::poison`]).
    pub(super) fn poison(&mut self, device: &CudaDevice) -> Result<()> {
        device.poison(&mut self.x)?;
        device.poison(&mut self.q_rot)?;
        device.poison(&mut self.logits)?;
        for b in [
            &mut self.h,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.attn,
            &mut self.proj,
            &mut self.gate,
            &mut self.up,
            &mut self.inner,
            &mut self.selected,
            &mut self.logits_bf16,
            &mut self.dequantized,
        ] {
            device.poison(b)?;
        }
        Ok(())
    }

    /// Copies the pass's tables to the device.
    pub(super) fn upload(
        &mut self,
        device: &CudaDevice,
        plan: &Plan,
        kv_table: &[u64],
    ) -> Result<()> {
        let stream = device.stream();
        let up = |e: DriverError| driver_error("uploading the pass's tables")(e);
        let n = plan.total;
        stream
            .memcpy_htod(&plan.tokens, &mut self.tokens.slice_mut(..n))
            .map_err(&up)?;
        stream
            .memcpy_htod(&plan.seq_of, &mut self.seq_of.slice_mut(..n))
            .map_err(&up)?;
        stream
            .memcpy_htod(&plan.position, &mut self.position.slice_mut(..n))
            .map_err(&up)?;
        stream
            .memcpy_htod(&plan.cos, &mut self.cos.slice_mut(..plan.cos.len()))
            .map_err(&up)?;
        stream
            .memcpy_htod(&plan.sin, &mut self.sin.slice_mut(..plan.sin.len()))
            .map_err(&up)?;
        stream
            .memcpy_htod(&plan.rows, &mut self.rows.slice_mut(..plan.rows.len()))
            .map_err(&up)?;
        stream
            .memcpy_htod(kv_table, &mut self.kv_table.slice_mut(..kv_table.len()))
            .map_err(&up)?;
        Ok(())
    }
}
