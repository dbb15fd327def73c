//! The device buffers of a forward pass, kept between passes and grown (never shrunk) when a
//! pass has more tokens or sequences than any before: per-token tables uploaded from the host,
//! and the activations of one block (reused by every block).
//!
//! The tables travel in one copy per pass: they are packed for the pass's own sizes
//! ([`TableLayout`]) at the start of one pinned host buffer and one device buffer, so a pass copies
//! only what it uses however large earlier passes grew the buffers; the logits come back through a
//! pinned buffer too, so a decode step costs two copies and no staging of pageable memory. A
//! decode step of `b` sequences always has the same sizes, hence the same layout, which is what
//! lets one captured graph serve every later step.

use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
use half::bf16;

use super::device::{driver_error, CudaDevice};
use super::layers::Scratch;
use super::plan::Plan;
use super::scaled::{ScaledNeeds, ScaledScratch};
use crate::checkpoint::ModelConfig;
use crate::error::Result;

/// Buffers sized for `tokens` tokens and `sequences` sequences. Widths as in
/// `kernels/forward.cu`'s layout comment.
pub(super) struct Workspace {
    tokens_capacity: usize,
    sequences_capacity: usize,
    rows_capacity: usize,
    /// The tables on the host, pinned, packed by [`TableLayout`] for each pass's sizes.
    staging: PinnedHostSlice<u8>,
    /// The same on the device (as large as the largest layout the capacities allow).
    pub(super) tables: CudaSlice<u8>,
    /// Logits on their way back, pinned.
    logits_host: PinnedHostSlice<f32>,
    /// Greedy picks, one per logit row, and their way back.
    pub(super) picks: CudaSlice<u32>,
    picks_host: PinnedHostSlice<u32>,
    pub(super) x: CudaSlice<f32>,
    pub(super) h: CudaSlice<bf16>,
    pub(super) q: CudaSlice<bf16>,
    pub(super) k: CudaSlice<bf16>,
    pub(super) v: CudaSlice<bf16>,
    /// q, k and v side by side, from a stacked product.
    pub(super) qkv: CudaSlice<bf16>,
    pub(super) q_rot: CudaSlice<f32>,
    pub(super) attn: CudaSlice<bf16>,
    pub(super) proj: CudaSlice<bf16>,
    pub(super) gate: CudaSlice<bf16>,
    pub(super) up: CudaSlice<bf16>,
    /// gate and up side by side, from a stacked product.
    pub(super) gate_up: CudaSlice<bf16>,
    pub(super) inner: CudaSlice<bf16>,
    pub(super) selected: CudaSlice<bf16>,
    pub(super) logits_bf16: CudaSlice<bf16>,
    pub(super) logits: CudaSlice<f32>,
    /// Buffers the products share.
    pub(super) scratch: Scratch,
}

/// Byte offsets of one pass's tables inside one buffer (each 256-byte aligned): token ids
/// (u32), sequence and position of each token (i32), rows that get logits (i32), RoPE cos and
/// sin (f32, `[tokens, head_dim / 2]`) and the cache addresses (u64, `[layers][sequences][2]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct TableLayout {
    tokens: usize,
    seq_of: usize,
    position: usize,
    rows: usize,
    cos: usize,
    sin: usize,
    kv_table: usize,
    bytes: usize,
}

impl TableLayout {
    fn new(cfg: &ModelConfig, [tokens, sequences, rows]: [usize; 3]) -> Self {
        let half = cfg.head_dim / 2;
        let mut at = 0;
        let mut take = |bytes: usize| {
            let start = at;
            at = (at + bytes).next_multiple_of(256);
            start
        };
        TableLayout {
            tokens: take(4 * tokens),
            seq_of: take(4 * tokens),
            position: take(4 * tokens),
            rows: take(4 * rows),
            cos: take(4 * tokens * half),
            sin: take(4 * tokens * half),
            kv_table: take(8 * 2 * sequences * cfg.num_hidden_layers),
            bytes: at.max(256),
        }
    }
}

/// Typed views of the device tables of one pass.
pub(super) struct Tables<'a> {
    pub(super) tokens: CudaView<'a, u32>,
    pub(super) seq_of: CudaView<'a, i32>,
    pub(super) position: CudaView<'a, i32>,
    pub(super) rows: CudaView<'a, i32>,
    pub(super) cos: CudaView<'a, f32>,
    pub(super) sin: CudaView<'a, f32>,
    pub(super) kv_table: CudaView<'a, u64>,
}

fn zeros<T: DeviceRepr + ValidAsZeroBits>(device: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    device
        .stream()
        .alloc_zeros(n.max(1))
        .map_err(driver_error("allocating the forward workspace"))
}

impl Workspace {
    /// Buffers for passes of up to `tokens` tokens over `sequences` sequences with `rows` rows
    /// of logits, a dequantization buffer of `dequantized` values and the scratch of products
    /// with quantized activations (`scaled`).
    pub(super) fn new(
        device: &CudaDevice,
        cfg: &ModelConfig,
        [tokens, sequences, rows]: [usize; 3],
        (dequantized, scaled): (usize, ScaledNeeds),
    ) -> Result<Self> {
        let t = tokens;
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let q_width = cfg.num_attention_heads * cfg.head_dim;
        let kv_width = cfg.num_key_value_heads * cfg.head_dim;
        let layout = TableLayout::new(cfg, [tokens, sequences, rows]);
        // SAFETY: pinned host memory the workspace owns; it is written only in `upload`, after
        // the stream is synchronized, so no copy still reads it.
        let staging = unsafe { device.context().alloc_pinned::<u8>(layout.bytes) }.map_err(
            driver_error("allocating pinned memory for the pass's tables"),
        )?;
        // SAFETY: as above; it is read only in `download_logits`, after the stream is
        // synchronized, so the copy into it is complete.
        let logits_host = unsafe {
            device
                .context()
                .alloc_pinned::<f32>((rows * cfg.vocab_size).max(1))
        }
        .map_err(driver_error("allocating pinned memory for the logits"))?;
        // SAFETY: as above; read only in `download_picks`, after the stream is synchronized.
        let picks_host = unsafe { device.context().alloc_pinned::<u32>(rows.max(1)) }
            .map_err(driver_error("allocating pinned memory for the picks"))?;
        Ok(Workspace {
            tokens_capacity: tokens,
            sequences_capacity: sequences,
            rows_capacity: rows,
            staging,
            tables: zeros(device, layout.bytes)?,
            logits_host,
            picks: zeros(device, rows)?,
            picks_host,
            x: zeros(device, t * hidden)?,
            h: zeros(device, t * hidden)?,
            q: zeros(device, t * q_width)?,
            k: zeros(device, t * kv_width)?,
            v: zeros(device, t * kv_width)?,
            qkv: zeros(device, t * (q_width + 2 * kv_width))?,
            q_rot: zeros(device, t * q_width)?,
            attn: zeros(device, t * q_width)?,
            proj: zeros(device, t * hidden)?,
            gate: zeros(device, t * inter)?,
            up: zeros(device, t * inter)?,
            gate_up: zeros(device, 2 * t * inter)?,
            inner: zeros(device, t * inter)?,
            selected: zeros(device, rows * hidden)?,
            logits_bf16: zeros(device, rows * cfg.vocab_size)?,
            logits: zeros(device, rows * cfg.vocab_size)?,
            scratch: Scratch {
                dequantized: zeros(device, dequantized)?,
                scaled: ScaledScratch::new(device, tokens.max(rows), scaled)?,
            },
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
            &mut self.qkv,
            &mut self.gate_up,
            &mut self.inner,
            &mut self.selected,
            &mut self.logits_bf16,
            &mut self.scratch.dequantized,
        ] {
            device.poison(b)?;
        }
        Ok(())
    }

    /// Copies the pass's tables to the device (one copy from pinned memory).
    pub(super) fn upload(
        &mut self,
        device: &CudaDevice,
        cfg: &ModelConfig,
        plan: &Plan,
        sequences: usize,
        kv_table: &[u64],
    ) -> Result<()> {
        let layout = TableLayout::new(cfg, [plan.total, sequences, plan.rows.len()]);
        // lowbit turns cudarc's per-buffer events off (one stream), so pinned buffers are not
        // waited for on their own: the stream is idle after this, so the last upload from
        // `staging` is done before it is overwritten.
        device.synchronize()?;
        let staging = self
            .staging
            .as_mut_slice()
            .map_err(driver_error("reading pinned memory"))?;
        fn put<T: bytemuck::Pod>(dst: &mut [u8], at: usize, values: &[T]) {
            let bytes: &[u8] = bytemuck::cast_slice(values);
            dst[at..at + bytes.len()].copy_from_slice(bytes);
        }
        put(staging, layout.tokens, &plan.tokens);
        put(staging, layout.seq_of, &plan.seq_of);
        put(staging, layout.position, &plan.position);
        put(staging, layout.rows, &plan.rows);
        put(staging, layout.cos, &plan.cos);
        put(staging, layout.sin, &plan.sin);
        put(staging, layout.kv_table, kv_table);
        // Only the pass's own bytes travel. cudarc records no event for a plain slice source and
        // does not wait on it; the slice lies in pinned memory, so the copy stays asynchronous,
        // and the synchronization above keeps `staging` unwritten while an earlier copy reads it.
        device
            .stream()
            .memcpy_htod(
                &staging[..layout.bytes],
                &mut self.tables.slice_mut(..layout.bytes),
            )
            .map_err(driver_error("uploading the pass's tables"))
    }
}

impl<'a> Tables<'a> {
    /// Typed views of the device tables in `buffer`, as [`Workspace::upload`] packed them for
    /// a pass of `tokens` tokens, `sequences` sequences and `rows` logit rows.
    pub(super) fn new(
        buffer: &'a CudaSlice<u8>,
        [tokens, sequences, rows]: [usize; 3],
        cfg: &ModelConfig,
    ) -> Tables<'a> {
        let l = TableLayout::new(cfg, [tokens, sequences, rows]);
        let half = cfg.head_dim / 2;
        let view = |at: usize, bytes: usize| buffer.slice(at..at + bytes);
        // SAFETY: every table lies inside the buffer at a 256-byte aligned offset (TableLayout)
        // and holds plain integers or floats, valid for any bit pattern.
        unsafe {
            Tables {
                tokens: view(l.tokens, 4 * tokens)
                    .transmute(tokens)
                    .expect("in bounds"),
                seq_of: view(l.seq_of, 4 * tokens)
                    .transmute(tokens)
                    .expect("in bounds"),
                position: view(l.position, 4 * tokens)
                    .transmute(tokens)
                    .expect("in bounds"),
                rows: view(l.rows, 4 * rows).transmute(rows).expect("in bounds"),
                cos: view(l.cos, 4 * tokens * half)
                    .transmute(tokens * half)
                    .expect("in bounds"),
                sin: view(l.sin, 4 * tokens * half)
                    .transmute(tokens * half)
                    .expect("in bounds"),
                kv_table: view(l.kv_table, 16 * sequences * cfg.num_hidden_layers)
                    .transmute(2 * sequences * cfg.num_hidden_layers)
                    .expect("in bounds"),
            }
        }
    }
}

impl Workspace {
    /// Copies the first `n` logits back to the host (one copy into pinned memory) and returns
    /// them once they are there.
    pub(super) fn download_logits(&mut self, device: &CudaDevice, n: usize) -> Result<&[f32]> {
        download(device, &self.logits, &mut self.logits_host, n, "the logits")
    }

    /// Copies the first `n` greedy picks back to the host, as [`Workspace::download_logits`].
    pub(super) fn download_picks(&mut self, device: &CudaDevice, n: usize) -> Result<Vec<u32>> {
        download(
            device,
            &self.picks,
            &mut self.picks_host,
            n,
            "the greedy picks",
        )
        .map(<[u32]>::to_vec)
    }
}

/// Copies the first `n` values of `from` into the pinned `host` buffer and waits for them.
fn download<'h, T: DeviceRepr + ValidAsZeroBits + Default + Clone>(
    device: &CudaDevice,
    from: &CudaSlice<T>,
    host: &'h mut PinnedHostSlice<T>,
    n: usize,
    what: &str,
) -> Result<&'h [T]> {
    device
        .stream()
        .memcpy_dtoh(&from.slice(..n), host)
        .map_err(driver_error(&format!("reading {what}")))?;
    // The copy into pinned memory is asynchronous and no event tracks it (see `upload`).
    device.synchronize()?;
    let values = host
        .as_slice()
        .map_err(driver_error(&format!("waiting for {what}")))?;
    Ok(&values[..n])
}
