//! Partition → GPU plan, and running it.
//!
//! Compile lowers every node to compute dispatches over *values* (a partition input, a
//! constant uploaded once, or an intermediate). Reshape-like nodes add no dispatch: their
//! output is the same value as their input. Intermediates and inputs then get buffers by
//! lifetime: a value takes a free buffer whose last use is strictly before its first, so
//! no dispatch ever binds one buffer for reading and writing at once.
//!
//! Execute uploads the partition inputs, records all dispatches in one compute pass of
//! one command encoder, copies only the partition outputs to a staging buffer, and waits
//! for it until the caller's deadline.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_interpreter::{
    CompiledPartition, DType, DelegateError, ExecReport, PartitionCtx, TensorMeta, TensorView,
    TensorViewMut,
};

use super::DELEGATE_NAME;
use super::context::GpuContext;
use super::ops::{self, NodeView};
use super::pipelines::{
    Constants, MAX_STORAGE_BINDINGS, MAX_WORKGROUPS_PER_DIMENSION, Shader, WORKGROUP_SIZE,
};

/// How long an execution without a deadline may wait for the device before it is
/// declared hung.
pub(crate) const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

/// Copies and mappings work in 4-byte words; mapped ranges start at 8-byte offsets.
const COPY_ALIGN: u64 = 8;

pub(crate) type ValueId = usize;

#[derive(Debug)]
enum ValueKind {
    /// Partition input at this position, uploaded at every execution.
    Input(usize),
    /// Constant bytes uploaded at compile time.
    Const(Vec<u8>),
    Intermediate,
}

#[derive(Debug)]
struct Value {
    bytes: usize,
    kind: ValueKind,
}

/// One compute dispatch: `invocations` threads of `shader` reading `inputs` and writing
/// `output`, with `params` as the shader's parameter words.
pub(crate) struct Dispatch {
    pub shader: &'static Shader,
    pub constants: Constants,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    pub params: Vec<u32>,
    pub invocations: u32,
}

/// What an op's `lower` appends to.
pub(crate) struct Lowering<'a, 'c> {
    ctx: &'a PartitionCtx<'c>,
    node_inputs: Vec<Option<usize>>,
    node_outputs: Vec<usize>,
    values: &'a mut Vec<Value>,
    tensor_value: &'a mut HashMap<usize, ValueId>,
    dispatches: &'a mut Vec<(usize, Dispatch)>,
    node: usize,
}

impl Lowering<'_, '_> {
    /// The value holding node input `i` (a constant is uploaded on first use).
    pub fn input(&mut self, i: usize) -> Result<ValueId, String> {
        let t = self
            .node_inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input {i}"))?;
        if let Some(&v) = self.tensor_value.get(&t) {
            return Ok(v);
        }
        let data = (self.ctx.constant)(t).ok_or_else(|| {
            format!("tensor {t} is neither a partition input nor computed before this node")
        })?;
        let v = push_value(self.values, data.len(), ValueKind::Const(data.to_vec()));
        self.tensor_value.insert(t, v);
        Ok(v)
    }

    /// A new value for node output `i`.
    pub fn output(&mut self, i: usize) -> Result<ValueId, String> {
        let t = *self
            .node_outputs
            .get(i)
            .ok_or_else(|| format!("missing output {i}"))?;
        let bytes = tensor_bytes(self.ctx, t)?;
        let v = push_value(self.values, bytes, ValueKind::Intermediate);
        self.tensor_value.insert(t, v);
        Ok(v)
    }

    /// Makes node output `i` the very same buffer as `value` (RESHAPE and friends).
    pub fn alias_output(&mut self, i: usize, value: ValueId) -> Result<(), String> {
        let t = *self
            .node_outputs
            .get(i)
            .ok_or_else(|| format!("missing output {i}"))?;
        self.tensor_value.insert(t, value);
        Ok(())
    }

    /// A constant made by the lowering itself (a zero bias, say).
    pub fn constant_f32(&mut self, values: &[f32]) -> ValueId {
        push_value(
            self.values,
            values.len() * 4,
            ValueKind::Const(bytemuck::cast_slice(values).to_vec()),
        )
    }

    pub fn dispatch(&mut self, d: Dispatch) {
        self.dispatches.push((self.node, d));
    }
}

fn push_value(values: &mut Vec<Value>, bytes: usize, kind: ValueKind) -> ValueId {
    values.push(Value { bytes, kind });
    values.len() - 1
}

fn tensor_bytes(ctx: &PartitionCtx<'_>, t: usize) -> Result<usize, String> {
    let shape = ctx
        .shapes
        .get(t)
        .ok_or_else(|| format!("tensor {t} has no resolved shape"))?;
    let def = ctx
        .subgraph
        .tensors
        .get(t)
        .ok_or_else(|| format!("tensor {t} does not exist"))?;
    shape
        .iter()
        .try_fold(def.dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor {t} of shape {shape:?} is too large"))
}

/// What `supports` and compile know about tensor `t`.
fn meta<'a>(ctx: &'a PartitionCtx<'_>, t: usize) -> Option<TensorMeta<'a>> {
    let def = ctx.subgraph.tensors.get(t)?;
    Some(TensorMeta {
        dtype: def.dtype,
        shape: ctx.shapes.get(t)?,
        quant: def.quant.as_ref(),
        data: (ctx.constant)(t),
        name: &def.name,
    })
}

/// A non-constant value to place in a buffer: its size and the first and last dispatch
/// steps (inclusive) that touch it.
#[derive(Clone, Copy, Debug)]
struct Live {
    bytes: usize,
    first: usize,
    last: usize,
}

/// Gives every live value a buffer slot, sharing slots between values whose lifetimes
/// do not meet: a slot is free for a value only when its previous occupant's last step
/// is strictly before the value's first (so no dispatch reads and writes one buffer).
/// Best fit among free slots that are large enough, else the largest free slot grows,
/// else a new slot. Returns slot sizes and each value's slot.
fn assign_slots(live: &[Option<Live>]) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut order: Vec<usize> = (0..live.len()).filter(|&v| live[v].is_some()).collect();
    order.sort_by_key(|&v| live[v].map(|l| (l.first, usize::MAX - l.bytes)));
    // (size, last step of the value currently in it)
    let mut slots: Vec<(usize, usize)> = Vec::new();
    let mut slot_of: Vec<Option<usize>> = vec![None; live.len()];
    for v in order {
        let Some(l) = live[v] else { continue };
        let need = l.bytes.max(4);
        let free = |s: &(usize, usize)| s.1 < l.first;
        let fit = (0..slots.len())
            .filter(|&s| free(&slots[s]) && slots[s].0 >= need)
            .min_by_key(|&s| slots[s].0);
        let chosen = fit.or_else(|| {
            (0..slots.len())
                .filter(|&s| free(&slots[s]))
                .max_by_key(|&s| slots[s].0)
        });
        let s = match chosen {
            Some(s) => {
                slots[s] = (slots[s].0.max(need), l.last);
                s
            }
            None => {
                slots.push((need, l.last));
                slots.len() - 1
            }
        };
        slot_of[v] = Some(s);
    }
    (slots.into_iter().map(|(size, _)| size).collect(), slot_of)
}

/// A dispatch with its pipeline and bindings made.
struct Encoded {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: (u32, u32),
}

/// Workgroup counts covering `invocations` threads, folded into two dimensions when one
/// would exceed the limit (`flat_id` in the prelude undoes the fold).
fn workgroups(invocations: u32) -> Result<(u32, u32), String> {
    let groups = invocations.div_ceil(WORKGROUP_SIZE).max(1);
    if groups <= MAX_WORKGROUPS_PER_DIMENSION {
        return Ok((groups, 1));
    }
    let y = groups.div_ceil(MAX_WORKGROUPS_PER_DIMENSION);
    if y > MAX_WORKGROUPS_PER_DIMENSION {
        return Err(format!("{invocations} invocations exceed one dispatch"));
    }
    Ok((MAX_WORKGROUPS_PER_DIMENSION, y))
}

/// Where a partition output comes from, as planned.
enum PlannedOutput {
    Value(ValueId, usize),
    Const(Vec<u8>),
}

/// Where execute finds each partition output.
enum OutputSource {
    /// Copied from `buffer` to the staging buffer at `offset`.
    Device {
        buffer: Arc<wgpu::Buffer>,
        bytes: usize,
        offset: u64,
    },
    /// A folded constant: its value is known since compile.
    Const(Vec<u8>),
}

impl OutputSource {
    fn bytes(&self) -> usize {
        match self {
            OutputSource::Device { bytes, .. } => *bytes,
            OutputSource::Const(data) => data.len(),
        }
    }
}

/// Mutable per-execution state; the lock also serialises executions, which share the
/// intermediate buffers.
struct ExecState {
    /// The staging map of an execution that timed out, still owed by the device.
    pending: Option<mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>>,
}

/// A partition compiled for the GPU.
pub(crate) struct GpuPartition {
    ctx: Arc<GpuContext>,
    steps: Vec<Encoded>,
    /// Buffer and byte size of each partition input.
    inputs: Vec<(Arc<wgpu::Buffer>, usize)>,
    outputs: Vec<OutputSource>,
    staging: wgpu::Buffer,
    state: Mutex<ExecState>,
    /// Kept alive for the bind groups: constants and parameter words.
    _constants: Vec<wgpu::Buffer>,
}

fn compile_err(what: impl Into<String>) -> DelegateError {
    DelegateError::Compile {
        delegate: DELEGATE_NAME.into(),
        what: what.into(),
    }
}

fn exec_err(what: impl Into<String>) -> DelegateError {
    DelegateError::Execute {
        delegate: DELEGATE_NAME.into(),
        what: what.into(),
    }
}

/// Lowers and uploads a partition.
pub(crate) fn compile(
    gpu: &Arc<GpuContext>,
    ctx: &PartitionCtx<'_>,
) -> Result<GpuPartition, DelegateError> {
    let part = ctx.partition;
    let sg = ctx.subgraph;
    let mut values: Vec<Value> = Vec::new();
    let mut tensor_value: HashMap<usize, ValueId> = HashMap::new();
    let mut dispatches: Vec<(usize, Dispatch)> = Vec::new();
    for (pos, &t) in part.inputs.iter().enumerate() {
        let def = sg
            .tensors
            .get(t)
            .ok_or_else(|| compile_err(format!("partition input {t} does not exist")))?;
        if def.dtype != DType::F32 {
            return Err(compile_err(format!(
                "partition input {t} is {}; the GPU runs float32 only",
                def.dtype
            )));
        }
        let bytes = tensor_bytes(ctx, t).map_err(compile_err)?;
        let v = push_value(&mut values, bytes, ValueKind::Input(pos));
        tensor_value.insert(t, v);
    }
    for &n in &part.nodes {
        let node = sg
            .nodes
            .get(n)
            .ok_or_else(|| compile_err(format!("node {n} does not exist")))?;
        let node_err = |e: String| compile_err(format!("node {n} ({}): {e}", node.op));
        // Folded at prepare (fp16 weight DEQUANTIZE, shape arithmetic): consumers read
        // the folded value as a constant.
        if !node.outputs.is_empty() && node.outputs.iter().all(|&t| (ctx.constant)(t).is_some()) {
            continue;
        }
        let inputs: Vec<Option<TensorMeta<'_>>> = node
            .inputs
            .iter()
            .map(|t| t.and_then(|t| meta(ctx, t)))
            .collect();
        let outputs: Vec<TensorMeta<'_>> = node
            .outputs
            .iter()
            .map(|&t| meta(ctx, t).ok_or_else(|| node_err(format!("output {t} is unknown"))))
            .collect::<Result<_, _>>()?;
        let view = NodeView {
            node,
            inputs: &inputs,
            outputs: &outputs,
        };
        let mut l = Lowering {
            ctx,
            node_inputs: node.inputs.clone(),
            node_outputs: node.outputs.clone(),
            values: &mut values,
            tensor_value: &mut tensor_value,
            dispatches: &mut dispatches,
            node: n,
        };
        ops::lower(&view, &mut l).map_err(node_err)?;
    }
    let mut output_values = Vec::new();
    for &t in &part.outputs {
        let bytes = tensor_bytes(ctx, t).map_err(compile_err)?;
        // A folded constant the rest of the graph reads: hand back its known value.
        if let Some(data) = (ctx.constant)(t) {
            output_values.push(PlannedOutput::Const(data.to_vec()));
            continue;
        }
        let v = *tensor_value.get(&t).ok_or_else(|| {
            compile_err(format!(
                "partition output {t} is not computed by the partition"
            ))
        })?;
        if let ValueKind::Const(data) = &values[v].kind {
            output_values.push(PlannedOutput::Const(data.clone()));
            continue;
        }
        let def = &sg.tensors[t];
        if def.dtype != DType::F32 {
            return Err(compile_err(format!(
                "partition output {t} is {}",
                def.dtype
            )));
        }
        output_values.push(PlannedOutput::Value(v, bytes));
    }
    upload(gpu, values, dispatches, output_values)
}

/// Plans buffers by lifetime, uploads constants, builds pipelines and bind groups.
fn upload(
    gpu: &Arc<GpuContext>,
    values: Vec<Value>,
    dispatches: Vec<(usize, Dispatch)>,
    output_values: Vec<PlannedOutput>,
) -> Result<GpuPartition, DelegateError> {
    let max_binding = gpu.limits.max_storage_buffer_binding_size;
    if let Some(v) = values.iter().find(|v| v.bytes as u64 > max_binding) {
        return Err(compile_err(format!(
            "a {}-byte tensor exceeds the device's {max_binding}-byte storage binding limit",
            v.bytes
        )));
    }
    // Lifetimes in dispatch steps; inputs are written before step 0 and outputs read
    // after the last step.
    let end = dispatches.len();
    let mut first = vec![usize::MAX; values.len()];
    let mut last = vec![0usize; values.len()];
    for (v, value) in values.iter().enumerate() {
        if matches!(value.kind, ValueKind::Input(_)) {
            first[v] = 0;
        }
    }
    for (step, (_, d)) in dispatches.iter().enumerate() {
        for &v in d.inputs.iter().chain(std::iter::once(&d.output)) {
            first[v] = first[v].min(step);
            last[v] = last[v].max(step);
        }
    }
    for o in &output_values {
        if let PlannedOutput::Value(v, _) = *o {
            first[v] = first[v].min(end);
            last[v] = end + 1;
        }
    }
    let live: Vec<Option<Live>> = (0..values.len())
        .map(|v| {
            (!matches!(values[v].kind, ValueKind::Const(_)) && first[v] != usize::MAX).then(|| {
                Live {
                    bytes: values[v].bytes,
                    first: first[v],
                    last: last[v],
                }
            })
        })
        .collect();
    let (slots, slot_of) = assign_slots(&live);
    let device = &gpu.device;
    let made = gpu
        .checked(|| {
            let slot_buffers: Vec<Arc<wgpu::Buffer>> = slots
                .iter()
                .enumerate()
                .map(|(i, &size)| {
                    Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("slot {i}")),
                        size: (size as u64).next_multiple_of(4),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    }))
                })
                .collect();
            let mut const_buffers: HashMap<ValueId, wgpu::Buffer> = HashMap::new();
            for (v, value) in values.iter().enumerate() {
                if let ValueKind::Const(bytes) = &value.kind {
                    let mut padded = bytes.clone();
                    padded.resize(bytes.len().max(4).next_multiple_of(4), 0);
                    const_buffers.insert(
                        v,
                        wgpu::util::DeviceExt::create_buffer_init(
                            device,
                            &wgpu::util::BufferInitDescriptor {
                                label: Some("constant"),
                                contents: &padded,
                                usage: wgpu::BufferUsages::STORAGE,
                            },
                        ),
                    );
                }
            }
            (slot_buffers, const_buffers)
        })
        .map_err(|e| compile_err(format!("allocating buffers: {e}")))?;
    let (slot_buffers, const_buffers) = made;
    let buffer_of = |v: ValueId| -> Result<&wgpu::Buffer, DelegateError> {
        if let Some(b) = const_buffers.get(&v) {
            return Ok(b);
        }
        slot_of[v]
            .and_then(|s| slot_buffers.get(s))
            .map(|b| b.as_ref())
            .ok_or_else(|| compile_err(format!("value {v} has no buffer")))
    };
    let mut steps = Vec::with_capacity(dispatches.len());
    let mut param_buffers = Vec::new();
    for (node, d) in &dispatches {
        if d.inputs.len() + 2 > MAX_STORAGE_BINDINGS as usize {
            return Err(compile_err(format!(
                "node {node}: {} inputs exceed the bindings of one dispatch",
                d.inputs.len()
            )));
        }
        let pipeline = gpu
            .pipelines
            .get(gpu, d.shader, "main", &d.constants)
            .map_err(|e| compile_err(format!("node {node}: {e}")))?;
        let mut params = d.params.clone();
        if params.is_empty() {
            params.push(0);
        }
        let made = gpu
            .checked(|| {
                let param_buffer = wgpu::util::DeviceExt::create_buffer_init(
                    device,
                    &wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: bytemuck::cast_slice(&params),
                        usage: wgpu::BufferUsages::STORAGE,
                    },
                );
                (param_buffer, ())
            })
            .map_err(|e| compile_err(format!("node {node}: {e}")))?;
        let param_buffer = made.0;
        let mut bound: Vec<&wgpu::Buffer> = Vec::new();
        for &v in &d.inputs {
            bound.push(buffer_of(v)?);
        }
        bound.push(buffer_of(d.output)?);
        bound.push(&param_buffer);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bound
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = gpu
            .checked(|| {
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.shader.name),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            })
            .map_err(|e| compile_err(format!("node {node}: binding {}: {e}", d.shader.name)))?;
        steps.push(Encoded {
            pipeline,
            bind_group,
            workgroups: workgroups(d.invocations).map_err(compile_err)?,
        });
        param_buffers.push(param_buffer);
    }
    let slot_arc = |v: ValueId| -> Result<Arc<wgpu::Buffer>, DelegateError> {
        slot_of[v]
            .and_then(|s| slot_buffers.get(s))
            .cloned()
            .ok_or_else(|| compile_err(format!("value {v} has no buffer")))
    };
    let mut inputs = Vec::new();
    for (v, value) in values.iter().enumerate() {
        if let ValueKind::Input(pos) = value.kind {
            inputs.push((pos, v));
        }
    }
    inputs.sort_unstable();
    let mut input_buffers = Vec::new();
    for (_, v) in inputs {
        // Inputs are live from step 0, so every one has a slot.
        input_buffers.push((slot_arc(v)?, values[v].bytes));
    }
    let mut outputs = Vec::new();
    let mut staging_size = 0u64;
    for o in output_values {
        match o {
            PlannedOutput::Value(v, bytes) => {
                outputs.push(OutputSource::Device {
                    buffer: slot_arc(v)?,
                    bytes,
                    offset: staging_size,
                });
                staging_size += (bytes.max(4) as u64).next_multiple_of(COPY_ALIGN);
            }
            PlannedOutput::Const(data) => outputs.push(OutputSource::Const(data)),
        }
    }
    let staging = gpu
        .checked(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: staging_size.max(COPY_ALIGN),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .map_err(compile_err)?;
    let mut keep: Vec<wgpu::Buffer> = const_buffers.into_values().collect();
    keep.extend(param_buffers);
    Ok(GpuPartition {
        ctx: gpu.clone(),
        steps,
        inputs: input_buffers,
        outputs,
        staging,
        state: Mutex::new(ExecState { pending: None }),
        _constants: keep,
    })
}

impl GpuPartition {
    /// Waits for the map of an execution that timed out, so the staging buffer can be
    /// used again.
    fn settle_pending(
        &self,
        state: &mut ExecState,
        deadline: Instant,
    ) -> Result<(), DelegateError> {
        let Some(rx) = state.pending.take() else {
            return Ok(());
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _ = self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(timeout),
        });
        match rx.try_recv() {
            Ok(Ok(())) => {
                self.staging.unmap();
                Ok(())
            }
            Ok(Err(_)) | Err(mpsc::TryRecvError::Disconnected) => Ok(()),
            Err(mpsc::TryRecvError::Empty) => {
                state.pending = Some(rx);
                Err(DelegateError::Timeout {
                    delegate: DELEGATE_NAME.into(),
                    after: Duration::ZERO,
                })
            }
        }
    }
}

impl CompiledPartition for GpuPartition {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let started = Instant::now();
        let deadline = deadline.unwrap_or(started + DEFAULT_MAX_WAIT);
        let timeout = || DelegateError::Timeout {
            delegate: DELEGATE_NAME.into(),
            after: started.elapsed(),
        };
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        if let Some(lost) = self.ctx.lost() {
            return Err(DelegateError::Unavailable {
                delegate: DELEGATE_NAME.into(),
                what: lost,
            });
        }
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(exec_err(format!(
                "expected {} inputs and {} outputs, got {} and {}",
                self.inputs.len(),
                self.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (i, (t, (_, bytes))) in inputs.iter().zip(&self.inputs).enumerate() {
            if t.dtype != DType::F32 || t.bytes.len() != *bytes {
                return Err(exec_err(format!(
                    "input {i} is {} with {} bytes; compiled for float32 with {bytes}",
                    t.dtype,
                    t.bytes.len()
                )));
            }
        }
        for (i, (t, source)) in outputs.iter().zip(&self.outputs).enumerate() {
            let bytes = source.bytes();
            if t.bytes.len() != bytes {
                return Err(exec_err(format!(
                    "output {i} has {} bytes; compiled for {bytes}",
                    t.bytes.len()
                )));
            }
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| exec_err("execution state lock poisoned"))?;
        self.settle_pending(&mut state, deadline)?;
        let gpu = &self.ctx;
        let submission = gpu
            .checked(|| {
                for (t, (buffer, _)) in inputs.iter().zip(&self.inputs) {
                    if !t.bytes.is_empty() {
                        gpu.queue.write_buffer(buffer, 0, t.bytes);
                    }
                }
                let mut encoder =
                    gpu.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("partition"),
                        });
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("partition"),
                        timestamp_writes: None,
                    });
                    for s in &self.steps {
                        pass.set_pipeline(&s.pipeline);
                        pass.set_bind_group(0, &s.bind_group, &[]);
                        pass.dispatch_workgroups(s.workgroups.0, s.workgroups.1, 1);
                    }
                }
                for source in &self.outputs {
                    if let OutputSource::Device {
                        buffer,
                        bytes,
                        offset,
                    } = source
                    {
                        let len = (*bytes as u64).next_multiple_of(4);
                        if len > 0 {
                            encoder.copy_buffer_to_buffer(buffer, 0, &self.staging, *offset, len);
                        }
                    }
                }
                gpu.queue.submit([encoder.finish()])
            })
            .map_err(exec_err)?;
        let (tx, rx) = mpsc::channel();
        gpu.checked(|| {
            self.staging
                .slice(..)
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                })
        })
        .map_err(exec_err)?;
        let wait = gpu.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(deadline.saturating_duration_since(Instant::now())),
        });
        match wait {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                state.pending = Some(rx);
                return Err(timeout());
            }
            Err(e) => return Err(exec_err(format!("waiting for the device: {e}"))),
        }
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(exec_err(format!("reading results back: {e}"))),
            Err(_) => {
                state.pending = Some(rx);
                return Err(timeout());
            }
        }
        let copied = match self.staging.slice(..).get_mapped_range() {
            Ok(view) => outputs
                .iter_mut()
                .zip(&self.outputs)
                .try_for_each(|(out, source)| {
                    let src = match source {
                        OutputSource::Device { bytes, offset, .. } => {
                            let start = *offset as usize;
                            view.get(start..start + bytes)
                                .ok_or_else(|| exec_err("staging buffer too small"))?
                        }
                        OutputSource::Const(data) => data.as_slice(),
                    };
                    out.bytes.copy_from_slice(src);
                    Ok(())
                }),
            Err(e) => Err(exec_err(format!("mapping results: {e}"))),
        };
        self.staging.unmap();
        copied?;
        Ok(ExecReport { device_time: None })
    }
}

#[cfg(test)]
mod slot_tests {
    use super::{Live, assign_slots};

    fn live(bytes: usize, first: usize, last: usize) -> Option<Live> {
        Some(Live { bytes, first, last })
    }

    #[test]
    fn values_alive_at_different_times_share_a_slot() {
        let (slots, of) = assign_slots(&[live(100, 0, 1), live(80, 2, 3), None]);
        assert_eq!(slots, vec![100]);
        assert_eq!(of, vec![Some(0), Some(0), None]);
    }

    #[test]
    fn a_dispatch_never_reads_and_writes_one_slot() {
        // The first value is last read at step 1, where the second is written.
        let (slots, of) = assign_slots(&[live(64, 0, 1), live(64, 1, 2)]);
        assert_eq!(slots.len(), 2);
        assert_ne!(of[0], of[1]);
    }

    #[test]
    fn overlapping_values_never_share_and_slots_fit() {
        let values: Vec<Option<Live>> = (0..40)
            .map(|i| live(16 + (i * 37) % 300, i % 9, i % 9 + i % 4))
            .collect();
        let (slots, of) = assign_slots(&values);
        for a in 0..values.len() {
            let (la, sa) = (values[a].unwrap(), of[a].unwrap());
            assert!(slots[sa] >= la.bytes);
            for b in a + 1..values.len() {
                let lb = values[b].unwrap();
                let overlap = la.first <= lb.last && lb.first <= la.last;
                assert!(
                    !overlap || of[b] != of[a],
                    "values {a} and {b} share a slot"
                );
            }
        }
        assert!(slots.len() < values.len(), "some reuse happens");
    }
}
