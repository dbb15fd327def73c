//! The whole decoder on the GPU: [`CudaModel`] uploads a [`Model`] once and runs its forward pass
//! over a ragged batch with per-sequence KV caches on the device ([`CudaKvCache`]), returning
//! logits to the host. It implements [`Decoder`], so generation, scoring and benchmarks run on it
//! unchanged.
//!
//! Precision: the residual stream, q after RoPE, the KV cache, softmax and logits are f32; the
//! inputs and outputs of the projections (norm outputs, q/k/v, attention output, SwiGLU) are
//! bf16, as the quantized kernels and cuBLAS take them. Quantized projections run the fused
//! kernels for up to `GEMV_MAX_TOKENS` tokens and dequantize-then-cuBLAS above; dense ones are
//! bf16 through cuBLAS. The step order is the CPU's (`src/model/forward.rs`).
//!
//! Decode steps (one new token per sequence, logits of the last) are captured in a CUDA graph
//! per batch size on first use and replayed after: each step's tables (tokens, positions, RoPE
//! angles, cache addresses) are uploaded to fixed workspace buffers before the replay, and the
//! kernels read lengths and addresses from there, so one graph serves every later step. Graphs
//! are dropped whenever the workspace is reallocated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaEvent, CudaGraph, CudaSlice};
use half::bf16;

use super::blas::Blas;
use super::device::{driver_error, CudaDevice};
use super::kv_cache::CudaKvCache;
use super::layers::{biases, upload_f32, DeviceLinear, DeviceWeight, Stacked};
use super::layout::TILE_ROWS;
use super::linear::GEMV_MAX_TOKENS;
use super::ops::{AttentionShape, EmbeddingRef, ForwardKernels, TokenTables, MAX_HEAD_DIM};
use super::plan::{validate, Plan};
use super::scaled::ScaledNeeds;
use super::workspace::{Tables, Workspace};
use crate::checkpoint::Dtype;
use crate::error::{Error, Result};
use crate::model::rope::Rope;
use crate::model::{Cache, Decoder, Logits, Model};

struct DeviceBlock {
    input_norm: CudaSlice<f32>,
    post_attention_norm: CudaSlice<f32>,
    q_norm: Option<CudaSlice<f32>>,
    k_norm: Option<CudaSlice<f32>>,
    /// q, k, v projections and their biases.
    qkv: Stacked,
    qkv_bias: Vec<Option<CudaSlice<f32>>>,
    o_proj: DeviceLinear,
    /// gate and up projections and their biases.
    gate_up: Stacked,
    gate_up_bias: Vec<Option<CudaSlice<f32>>>,
    down_proj: DeviceLinear,
}

enum DeviceEmbedding {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

/// A value a [`CudaModel`] borrows, or shares when it must outlive its caller's scope (the C
/// API keeps the GPU copy in the model handle).
enum Held<'a, T> {
    Borrowed(&'a T),
    Shared(Arc<T>),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Borrowed(r) => r,
            Held::Shared(a) => a,
        }
    }
}

/// A model uploaded to one GPU.
pub struct CudaModel<'a> {
    model: Held<'a, Model>,
    device: Held<'a, CudaDevice>,
    blas: Blas,
    kernels: ForwardKernels,
    embedding: DeviceEmbedding,
    blocks: Vec<DeviceBlock>,
    final_norm: CudaSlice<f32>,
    lm_head: DeviceLinear,
    rope: Rope,
    /// Largest quantized weight, in values: the dequantization buffer's size.
    dequant_values: usize,
    /// What the scratch of products with quantized activations must hold.
    scaled_needs: ScaledNeeds,
    state: Mutex<State>,
    graphs_enabled: bool,
    /// Whether a stacked quantized gate/up product of a few tokens writes the SwiGLU itself
    /// (see `set_fused_swiglu`).
    fused_swiglu: bool,
    /// A stage left out of every pass, for timing only (see `set_timing_skip`).
    timing_skip: Option<&'static str>,
    device_bytes: usize,
}

/// The stages [`CudaModel::set_timing_skip`] can leave out.
pub const SKIPPABLE_STAGES: [&str; 9] = [
    "norm",
    "qkv",
    "qkv_rope",
    "attention",
    "o_proj",
    "gate_up_swiglu",
    "down",
    "gather",
    "lm_head",
];

/// The buffers of a pass and the decode graphs captured over them.
#[derive(Default)]
struct State {
    workspace: Option<Workspace>,
    /// By batch size.
    graphs: HashMap<usize, Graph>,
    /// Events recorded after each stage of each pass while profiling is on.
    profile: Option<Vec<(&'static str, CudaEvent)>>,
}

/// GPU time of one stage of the forward pass over the passes profiled
/// ([`CudaModel::take_profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StageTime {
    /// The stage: `embed`, `norm`, `qkv`, `qkv_rope`, `attention`, `o_proj`, `gate_up`,
    /// `swiglu`, `down`, `gather`, `lm_head`.
    pub stage: &'static str,
    /// Seconds, summed over every launch of the stage.
    pub seconds: f64,
    /// How many times the stage ran.
    pub launches: usize,
}

/// The label of the event recorded before a pass's first stage.
const PASS_START: &str = "start";

/// A captured decode graph.
struct Graph(CudaGraph);

// SAFETY: a CUDA graph and its executable are driver objects of the model's context, usable
// from any thread that makes the context current (cudarc's launch does); the graphs live in
// `State`, behind the model's mutex, so one thread at a time launches or drops them.
unsafe impl Send for Graph {}

impl<'a> CudaModel<'a> {
    /// Uploads every weight of `model` to `device`. Errors: [`Error::Device`] when the GPU
    /// fails; [`Error::InvalidArgument`] for shapes or schemes the kernels do not take (head_dim
    /// over 256 or not a multiple of 4, quantized activations, ...).
    pub fn new(model: &'a Model, device: &'a CudaDevice) -> Result<Self> {
        Self::build(Held::Borrowed(model), Held::Borrowed(device))
    }

    /// [`CudaModel::new`] for a model and device shared with the caller, so the GPU copy can be
    /// kept as long as wanted (the C API keeps it in the model handle).
    pub fn new_shared(model: Arc<Model>, device: Arc<CudaDevice>) -> Result<CudaModel<'static>> {
        CudaModel::build(Held::Shared(model), Held::Shared(device))
    }

    fn build(held_model: Held<'a, Model>, held_device: Held<'a, CudaDevice>) -> Result<Self> {
        let (model, device): (&Model, &CudaDevice) = (&held_model, &held_device);
        let cfg = model.config();
        let hd = cfg.head_dim;
        if hd > MAX_HEAD_DIM || !hd.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "GPU attention: head_dim {hd} must be a multiple of 4 and at most {MAX_HEAD_DIM}"
            )));
        }
        if cfg.num_key_value_heads == 0
            || !cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads)
        {
            return Err(Error::InvalidArgument(format!(
                "GPU attention: {} query heads are not a multiple of {} key/value heads",
                cfg.num_attention_heads, cfg.num_key_value_heads
            )));
        }
        if model.lm_head().bias.is_some() {
            return Err(Error::InvalidArgument("GPU: an LM head with bias".into()));
        }
        let blas = Blas::new(device)?;
        let kernels = ForwardKernels::new(device, hd)?;
        let embed = model.embed_tokens();
        let embedding = match embed.dtype() {
            Dtype::BF16 => DeviceEmbedding::Bf16(
                device
                    .stream()
                    .clone_htod(
                        embed
                            .as_bf16()
                            .ok_or_else(|| Error::invalid("embedding: misaligned bf16 tensor"))?,
                    )
                    .map_err(driver_error("uploading the embedding"))?,
            ),
            _ => DeviceEmbedding::F32(upload_f32(device, &embed.to_f32_vec(), "the embedding")?),
        };
        let mut blocks = Vec::with_capacity(model.blocks().len());
        for (i, b) in model.blocks().iter().enumerate() {
            let p = format!("model.layers.{i}");
            let opt = |v: &Option<Vec<f32>>| -> Result<Option<CudaSlice<f32>>> {
                v.as_ref().map(|v| upload_f32(device, v, &p)).transpose()
            };
            let named = |l, n: &str| (l, format!("{p}.{n}"));
            let qkv = [
                named(&b.q_proj, "self_attn.q_proj"),
                named(&b.k_proj, "self_attn.k_proj"),
                named(&b.v_proj, "self_attn.v_proj"),
            ];
            let gate_up = [
                named(&b.gate_proj, "mlp.gate_proj"),
                named(&b.up_proj, "mlp.up_proj"),
            ];
            blocks.push(DeviceBlock {
                input_norm: upload_f32(device, &b.input_norm, &p)?,
                post_attention_norm: upload_f32(device, &b.post_attention_norm, &p)?,
                q_norm: opt(&b.q_norm)?,
                k_norm: opt(&b.k_norm)?,
                qkv: Stacked::new(device, &qkv)?,
                qkv_bias: biases(device, &qkv)?,
                o_proj: DeviceLinear::new(device, &b.o_proj, &format!("{p}.self_attn.o_proj"))?,
                gate_up: Stacked::new(device, &gate_up)?,
                gate_up_bias: biases(device, &gate_up)?,
                down_proj: DeviceLinear::new(device, &b.down_proj, &format!("{p}.mlp.down_proj"))?,
            });
        }
        let lm_head = DeviceLinear::new(device, model.lm_head(), "lm_head")?;
        let linears: Vec<&DeviceLinear> = blocks
            .iter()
            .flat_map(|b| {
                let mut v = b.qkv.linears();
                v.extend(b.gate_up.linears());
                v.extend([&b.o_proj, &b.down_proj]);
                v
            })
            .chain([&lm_head])
            .collect();
        let dequant_values = linears
            .iter()
            .map(|l| l.dequantized_values())
            .max()
            .unwrap_or(0);
        let scaled_needs = linears
            .iter()
            .fold(ScaledNeeds::default(), |n, l| n.max(l.scaled_needs()));
        let weight_bytes: usize = linears.iter().map(|l| l.bytes()).sum();
        let final_norm = upload_f32(device, model.final_norm(), "model.norm")?;
        let device_bytes = weight_bytes
            + match &embedding {
                DeviceEmbedding::F32(e) => e.len() * 4,
                DeviceEmbedding::Bf16(e) => e.len() * 2,
            };
        device.synchronize()?;
        let rope = Rope::new(cfg);
        Ok(CudaModel {
            model: held_model,
            device: held_device,
            blas,
            kernels,
            embedding,
            blocks,
            final_norm,
            lm_head,
            rope,
            dequant_values,
            scaled_needs,
            state: Mutex::new(State::default()),
            graphs_enabled: true,
            fused_swiglu: true,
            timing_skip: None,
            device_bytes,
        })
    }

    /// Whether decode steps run as CUDA graphs (on by default; off, every kernel is launched
    /// from the host each step, for comparison).
    pub fn set_graphs(&mut self, enabled: bool) {
        self.graphs_enabled = enabled;
        if let Ok(state) = self.state.get_mut() {
            state.graphs.clear();
        }
    }

    /// Whether a stacked, quantized gate/up product of up to 16 tokens writes the SwiGLU of
    /// its halves itself ([`CudaQuantLinear::forward_swiglu`](super::linear::CudaQuantLinear::forward_swiglu):
    /// the product's sums rounded to bf16 and the SwiGLU as the separate kernel computes them,
    /// one launch less per block) (on by default; off, the separate kernel runs, for
    /// comparison).
    pub fn set_fused_swiglu(&mut self, enabled: bool) {
        self.fused_swiglu = enabled;
        if let Ok(state) = self.state.get_mut() {
            state.graphs.clear();
        }
    }

    /// Leaves every launch of one stage (one of [`SKIPPABLE_STAGES`]) out of every pass, or
    /// none. **For timing only: the logits are then wrong.** A graph-replayed step without a
    /// stage, against one with it, gives what that stage costs inside a graph with
    /// programmatic dependent launch, which the per-stage profile (no graphs) cannot show.
    pub fn set_timing_skip(&mut self, stage: Option<&str>) -> Result<()> {
        self.timing_skip = match stage {
            None => None,
            Some(name) => Some(*SKIPPABLE_STAGES.iter().find(|s| **s == name).ok_or_else(
                || {
                    Error::InvalidArgument(format!(
                        "unknown stage {name:?}; stages: {}",
                        SKIPPABLE_STAGES.join(", ")
                    ))
                },
            )?),
        };
        if let Ok(state) = self.state.get_mut() {
            state.graphs.clear();
        }
        Ok(())
    }

    /// Turns per-stage timing on (an event is recorded after every stage of every pass, and
    /// passes run without graphs) or off. The times include the gaps between kernels, which
    /// graphs and programmatic dependent launch otherwise shrink, so they add up to more than
    /// a graph-replayed step; they show where a step's time goes.
    pub fn set_profiling(&self, on: bool) -> Result<()> {
        self.lock()?.profile = on.then(Vec::new);
        Ok(())
    }

    /// The time of each stage over the passes since profiling was turned on or last taken, in
    /// the order the stages first ran; empty when profiling is off. Waits for the GPU.
    pub fn take_profile(&self) -> Result<Vec<StageTime>> {
        let mut state = self.lock()?;
        let Some(events) = state.profile.as_mut() else {
            return Ok(Vec::new());
        };
        self.device.synchronize()?;
        let mut stages: Vec<StageTime> = Vec::new();
        for pair in events.windows(2) {
            let (stage, end) = (pair[1].0, &pair[1].1);
            if stage == PASS_START {
                continue;
            }
            let ms = pair[0]
                .1
                .elapsed_ms(end)
                .map_err(driver_error("reading profile events"))?;
            match stages.iter_mut().find(|s| s.stage == stage) {
                Some(s) => {
                    s.seconds += f64::from(ms) / 1e3;
                    s.launches += 1;
                }
                None => stages.push(StageTime {
                    stage,
                    seconds: f64::from(ms) / 1e3,
                    launches: 1,
                }),
            }
        }
        events.clear();
        Ok(stages)
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// Bytes of weights on the device (projections as packed, the embedding, the LM head).
    pub fn device_bytes(&self) -> usize {
        self.device_bytes
    }

    /// Fills every activation buffer and the logits of the workspace with NaN, so that a
    /// value the next pass should write but does not is seen (checks call this before a pass).
    pub fn poison_workspace(&self) -> Result<()> {
        let mut state = self.lock()?;
        if let Some(ws) = state.workspace.as_mut() {
            ws.poison(&self.device)?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Device("the forward workspace lock is poisoned".into()))
    }

    /// A new, empty GPU cache for one sequence.
    pub fn new_device_cache(&self) -> CudaKvCache {
        let cfg = self.model.config();
        CudaKvCache::new(
            self.device.stream(),
            cfg.num_hidden_layers,
            cfg.num_key_value_heads * cfg.head_dim,
        )
    }

    /// The forward pass over a ragged batch (see [`Model::forward_batch`]) with GPU caches.
    pub fn forward_device(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut CudaKvCache],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.model.config().vocab_size;
        self.pass(inputs, caches, which, |ws, plan| {
            let logits = ws.download_logits(&self.device, plan.rows.len() * vocab)?;
            Ok(match which {
                Logits::Last => logits.chunks_exact(vocab).map(|c| c.to_vec()).collect(),
                Logits::All => plan
                    .lengths
                    .iter()
                    .enumerate()
                    .map(|(s, &len)| {
                        logits[plan.starts[s] * vocab..(plan.starts[s] + len) * vocab].to_vec()
                    })
                    .collect(),
            })
        })
    }

    /// The forward pass over a ragged batch with GPU caches, and the greedy next token of each
    /// sequence picked on the GPU (the first of the largest logits, as the host's `argmax`), so
    /// only one id per sequence comes back instead of its logits.
    pub fn greedy_device(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut CudaKvCache],
    ) -> Result<Vec<u32>> {
        let vocab = self.model.config().vocab_size;
        self.pass(inputs, caches, Logits::Last, |ws, plan| {
            let rows = plan.rows.len();
            self.kernels
                .argmax_rows(&self.device, &ws.logits, [rows, vocab], &mut ws.picks)?;
            ws.download_picks(&self.device, rows)
        })
    }

    /// Runs a pass (its graph for a decode step) and reads its result with `read`, then moves
    /// the caches past the inputs.
    fn pass<R>(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut CudaKvCache],
        which: Logits,
        read: impl FnOnce(&mut Workspace, &Plan) -> Result<R>,
    ) -> Result<R> {
        let cfg = self.model.config();
        validate(&self.model, inputs, caches)?;
        let plan = Plan::new(&self.rope, inputs, caches, which, cfg.head_dim);
        for (cache, seq) in caches.iter_mut().zip(inputs) {
            cache.reserve(cache.len() + seq.len())?;
        }
        let mut guard = self.lock()?;
        let state = &mut *guard;
        if let Some(sizes) = Workspace::grown(
            state.workspace.as_ref(),
            [plan.total, inputs.len(), plan.rows.len()],
        ) {
            // Graphs hold the old buffers' addresses.
            state.graphs.clear();
            state.workspace = None;
            state.workspace = Some(Workspace::new(
                &self.device,
                cfg,
                sizes,
                (self.dequant_values, self.scaled_needs),
            )?);
        }
        let ws = state.workspace.as_mut().expect("allocated above");
        let mut kv_table = vec![0u64; cfg.num_hidden_layers * inputs.len() * 2];
        for layer in 0..cfg.num_hidden_layers {
            for (s, cache) in caches.iter().enumerate() {
                let at = 2 * (layer * inputs.len() + s);
                kv_table[at..at + 2].copy_from_slice(&cache.addresses(layer));
            }
        }
        ws.upload(&self.device, cfg, &plan, inputs.len(), &kv_table)?;
        let decode = which == Logits::Last && plan.total == inputs.len();
        if let Some(events) = state.profile.as_mut() {
            self.run(ws, &plan, inputs.len(), which, Some(events))?;
        } else if self.graphs_enabled && decode {
            let batch = inputs.len();
            if let std::collections::hash_map::Entry::Vacant(slot) = state.graphs.entry(batch) {
                slot.insert(Graph(self.capture(ws, &plan, batch)?));
            }
            state.graphs[&batch]
                .0
                .launch()
                .map_err(driver_error("replaying the decode graph"))?;
        } else {
            self.run(ws, &plan, inputs.len(), which, None)?;
        }
        let out = read(ws, &plan)?;
        for (cache, seq) in caches.iter_mut().zip(inputs) {
            cache.advance(seq.len());
        }
        Ok(out)
    }

    /// Records a decode step of `batch` sequences as a graph (nothing runs while capturing).
    fn capture(&self, ws: &mut Workspace, plan: &Plan, batch: usize) -> Result<CudaGraph> {
        let stream = self.device.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver_error("starting a graph capture"))?;
        let recorded = self.run(ws, plan, batch, Logits::Last, None);
        // The capture is ended whatever happened, so the stream is usable again.
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        recorded?;
        graph
            .map_err(driver_error("capturing the decode graph"))?
            .ok_or_else(|| Error::Device("the decode graph captured nothing".into()))
    }

    /// Queues the pass's kernels; the workspace holds the uploaded tables. With `profile`, an
    /// event is recorded before the pass and after each stage.
    fn run(
        &self,
        ws: &mut Workspace,
        plan: &Plan,
        sequences: usize,
        which: Logits,
        mut profile: Option<&mut Vec<(&'static str, CudaEvent)>>,
    ) -> Result<()> {
        let mut mark = |stage: &'static str| -> Result<()> {
            if let Some(events) = profile.as_deref_mut() {
                let event = self
                    .device
                    .stream()
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(driver_error("recording a profile event"))?;
                events.push((stage, event));
            }
            Ok(())
        };
        mark(PASS_START)?;
        let skip = self.timing_skip;
        let run = |stage: &str| skip != Some(stage);
        let cfg = self.model.config();
        let device: &CudaDevice = &self.device;
        let k = &self.kernels;
        let blas = &self.blas;
        let total = plan.total;
        let (hidden, inter, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let eps = cfg.rms_norm_eps as f32;
        let shape = AttentionShape {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let Workspace {
            tables: table_buffer,
            x,
            h,
            q,
            k: key,
            v,
            qkv: qkv_out,
            q_rot,
            attn,
            proj,
            gate,
            up,
            gate_up: gate_up_out,
            inner,
            selected,
            logits_bf16,
            logits,
            scratch,
            ..
        } = ws;
        let views = Tables::new(table_buffer, [total, sequences, plan.rows.len()], cfg);
        let tables = TokenTables {
            seq_of: &views.seq_of,
            position: &views.position,
            cos: &views.cos,
            sin: &views.sin,
            kv_table: &views.kv_table,
            sequences,
        };
        let embedding = match &self.embedding {
            DeviceEmbedding::F32(t) => EmbeddingRef::F32(t),
            DeviceEmbedding::Bf16(t) => EmbeddingRef::Bf16(t),
        };
        k.embed(device, embedding, &views.tokens, total, hidden, x)?;
        mark("embed")?;
        let first_norm = self
            .blocks
            .first()
            .map_or(&self.final_norm, |b| &b.input_norm);
        if run("norm") {
            k.add_rms_norm(device, x, None, None, first_norm, h, [total, hidden], eps)?;
        }
        mark("norm")?;
        for (layer, b) in self.blocks.iter().enumerate() {
            let (q_width, kv_width) = (
                shape.heads * shape.head_dim,
                shape.kv_heads * shape.head_dim,
            );
            let (q_view, k_view, v_view, strides) = match &b.qkv {
                Stacked::One(l) => {
                    if run("qkv") {
                        l.forward(device, blas, h, total, qkv_out, scratch)?;
                    }
                    let row = q_width + 2 * kv_width;
                    (
                        qkv_out.slice(..),
                        qkv_out.slice(q_width..),
                        qkv_out.slice(q_width + kv_width..),
                        [row, row],
                    )
                }
                Stacked::Each(ls) => {
                    if run("qkv") {
                        ls[0].forward(device, blas, h, total, q, scratch)?;
                        ls[1].forward(device, blas, h, total, key, scratch)?;
                        ls[2].forward(device, blas, h, total, v, scratch)?;
                    }
                    (q.slice(..), key.slice(..), v.slice(..), [q_width, kv_width])
                }
            };
            mark("qkv")?;
            if run("qkv_rope") {
                k.qkv_rope(
                    device,
                    [&q_view, &k_view, &v_view],
                    strides,
                    [
                        b.qkv_bias[0].as_ref(),
                        b.qkv_bias[1].as_ref(),
                        b.qkv_bias[2].as_ref(),
                    ],
                    [b.q_norm.as_ref(), b.k_norm.as_ref()],
                    &tables,
                    layer,
                    total,
                    shape,
                    eps,
                    q_rot,
                )?;
            }
            mark("qkv_rope")?;
            if run("attention") {
                k.attention(device, q_rot, &tables, layer, total, shape, scale, attn)?;
            }
            mark("attention")?;
            if run("o_proj") {
                b.o_proj.forward(device, blas, attn, total, proj, scratch)?;
            }
            mark("o_proj")?;
            if run("norm") {
                k.add_rms_norm(
                    device,
                    x,
                    Some(proj),
                    b.o_proj.bias.as_ref(),
                    &b.post_attention_norm,
                    h,
                    [total, hidden],
                    eps,
                )?;
            }
            mark("norm")?;
            // A stacked, quantized gate/up product of a few tokens writes the SwiGLU of its
            // two halves itself: one launch less per block.
            let no_bias = b.gate_up_bias.iter().all(Option::is_none);
            let fused = match &b.gate_up {
                Stacked::One(l) if self.fused_swiglu && no_bias && total <= GEMV_MAX_TOKENS => {
                    match &l.weight {
                        DeviceWeight::Quantized(q) if (q.rows() / 2).is_multiple_of(TILE_ROWS) => {
                            if run("gate_up_swiglu") {
                                q.forward_swiglu(device, h, total, inner)?;
                            }
                            mark("gate_up_swiglu")?;
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if !fused {
                let (gate_view, up_view, stride) = match &b.gate_up {
                    Stacked::One(l) => {
                        l.forward(device, blas, h, total, gate_up_out, scratch)?;
                        (gate_up_out.slice(..), gate_up_out.slice(inter..), 2 * inter)
                    }
                    Stacked::Each(ls) => {
                        ls[0].forward(device, blas, h, total, gate, scratch)?;
                        ls[1].forward(device, blas, h, total, up, scratch)?;
                        (gate.slice(..), up.slice(..), inter)
                    }
                };
                mark("gate_up")?;
                k.swiglu(
                    device,
                    [&gate_view, &up_view],
                    [b.gate_up_bias[0].as_ref(), b.gate_up_bias[1].as_ref()],
                    [total, inter, stride],
                    inner,
                )?;
                mark("swiglu")?;
            }
            if run("down") {
                b.down_proj
                    .forward(device, blas, inner, total, proj, scratch)?;
            }
            mark("down")?;
            let next_norm = self
                .blocks
                .get(layer + 1)
                .map_or(&self.final_norm, |n| &n.input_norm);
            if run("norm") {
                k.add_rms_norm(
                    device,
                    x,
                    Some(proj),
                    b.down_proj.bias.as_ref(),
                    next_norm,
                    h,
                    [total, hidden],
                    eps,
                )?;
            }
            mark("norm")?;
        }
        let count = plan.rows.len();
        let head_input = if which == Logits::All {
            &*h
        } else {
            if run("gather") {
                k.gather_rows(device, h, &views.rows, count, hidden, selected)?;
            }
            mark("gather")?;
            &*selected
        };
        match &self.lm_head.weight {
            _ if !run("lm_head") => {}
            DeviceWeight::Dense(w) => {
                self.blas
                    .linear_f32_out(head_input, w, logits, [count, vocab, hidden])?
            }
            DeviceWeight::Quantized(_) | DeviceWeight::Scaled(_) => {
                self.lm_head
                    .forward(device, blas, head_input, count, logits_bf16, scratch)?;
                k.widen(device, logits_bf16, count * vocab, logits)?;
            }
        }
        mark("lm_head")?;
        Ok(())
    }
}

impl Decoder for CudaModel<'_> {
    fn model(&self) -> &Model {
        &self.model
    }

    fn new_cache(&self) -> Result<Cache> {
        Ok(Cache::new(self.new_device_cache()))
    }

    fn forward_batch(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut Cache],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        let mut own = caches
            .iter_mut()
            .map(|c| c.downcast_mut::<CudaKvCache>())
            .collect::<Result<Vec<_>>>()?;
        self.forward_device(inputs, &mut own, which)
    }

    fn greedy_batch(&self, inputs: &[&[u32]], caches: &mut [&mut Cache]) -> Result<Vec<u32>> {
        let mut own = caches
            .iter_mut()
            .map(|c| c.downcast_mut::<CudaKvCache>())
            .collect::<Result<Vec<_>>>()?;
        self.greedy_device(inputs, &mut own)
    }
}

// The C API shares a GPU copy between threads (passes take the workspace lock).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CudaModel<'static>>();
};
