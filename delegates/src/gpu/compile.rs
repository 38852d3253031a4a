//! Partition → GPU plan.
//!
//! Compile lowers every node to compute dispatches over *values* (a partition input, a
//! constant uploaded once, or an intermediate); reshape-like nodes add no dispatch, their
//! output is the same value as their input. Fusion then moves elementwise dispatches
//! into their producers. Inputs and intermediates get buffer slots by lifetime: a value
//! takes a free slot whose last use is strictly before its first, so no dispatch ever
//! binds one buffer for reading and writing at once.
//!
//! Everything an execution does not change is built here, once: constants in the
//! partition's precision, parameter buffers, pipelines and their bind-group layouts,
//! and the first resident buffer set (slots, staging buffer, bind groups, the recorded
//! command buffer); see `execute`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use switchyard_interpreter::{DType, DelegateError, PartitionCtx, TensorMeta};

use super::context::{Counters, GpuContext, GpuFailure};
use super::execute::{Binding, GpuPartition, InputIo, OutputIo, PartitionCore, Step};
use super::fuse::fuse;
use super::ir::{Dispatch, Grid, Lowering, Value, ValueId, ValueKind, f32s, push_value};
use super::ops::{self, NodeView};
use super::pipelines::{MAX_WORKGROUPS_PER_DIMENSION, WORKGROUP_SIZE, assemble};
use super::types::Precision;

/// Copies and mappings work in 4-byte words; mapped ranges start at 8-byte offsets.
pub(crate) const COPY_ALIGN: u64 = 8;

fn tensor_shape(ctx: &PartitionCtx<'_>, t: usize) -> Result<Vec<usize>, String> {
    let shape = ctx
        .shapes
        .get(t)
        .ok_or_else(|| format!("tensor {t} has no resolved shape"))?;
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| format!("tensor {t} of shape {shape:?} is too large"))?;
    Ok(shape.clone())
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
pub(crate) struct Live {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

/// Gives every live value a buffer slot, sharing slots between values whose lifetimes
/// do not meet: a slot is free for a value only when its previous occupant's last step
/// is strictly before the value's first (so no dispatch reads and writes one buffer).
/// Best fit among free slots that are large enough, else the largest free slot grows,
/// else a new slot. Returns slot sizes and each value's slot.
pub(crate) fn assign_slots(live: &[Option<Live>]) -> (Vec<usize>, Vec<Option<usize>>) {
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

/// Workgroup counts covering `invocations` threads, folded into two dimensions when one
/// would exceed the limit (`flat_id` in the prelude undoes the fold).
fn thread_groups(invocations: u32) -> Result<[u32; 3], String> {
    let groups = invocations.div_ceil(WORKGROUP_SIZE).max(1);
    if groups <= MAX_WORKGROUPS_PER_DIMENSION {
        return Ok([groups, 1, 1]);
    }
    let y = groups.div_ceil(MAX_WORKGROUPS_PER_DIMENSION);
    if y > MAX_WORKGROUPS_PER_DIMENSION {
        return Err(format!("{invocations} invocations exceed one dispatch"));
    }
    Ok([MAX_WORKGROUPS_PER_DIMENSION, y, 1])
}

fn compile_err(delegate: &str, what: impl Into<String>) -> DelegateError {
    DelegateError::Compile {
        delegate: delegate.into(),
        what: what.into(),
    }
}

/// A device failure during compile: a lost or out-of-memory device is unavailable (and
/// blocked), anything else fails this partition only.
fn device_err(delegate: &str, what: &str, e: GpuFailure) -> DelegateError {
    match e {
        GpuFailure::Unavailable(_) | GpuFailure::OutOfMemory(_) => DelegateError::Unavailable {
            delegate: delegate.into(),
            what: format!("{what}: {e}"),
        },
        _ => compile_err(delegate, format!("{what}: {e}")),
    }
}

/// Where a partition output comes from, as planned.
enum PlannedOutput {
    Value(ValueId),
    Const(Vec<u8>),
}

/// Values and dispatches of a partition, fused.
struct Lowered {
    values: Vec<Value>,
    dispatches: Vec<Dispatch>,
    outputs: Vec<PlannedOutput>,
}

fn lower(
    ctx: &PartitionCtx<'_>,
    delegate: &str,
    max_bindings: usize,
) -> Result<Lowered, DelegateError> {
    let part = ctx.partition;
    let sg = ctx.subgraph;
    let err = |what: String| compile_err(delegate, what);
    let mut values: Vec<Value> = Vec::new();
    let mut tensor_value: HashMap<usize, ValueId> = HashMap::new();
    let mut dispatches: Vec<Dispatch> = Vec::new();
    for (pos, &t) in part.inputs.iter().enumerate() {
        let def = sg
            .tensors
            .get(t)
            .ok_or_else(|| err(format!("partition input {t} does not exist")))?;
        // Values the interpreter folded at prepare (fp16 weights dequantized, shape
        // arithmetic) come in as partition inputs but never change: uploaded once, as
        // constants; non-float ones are read by the lowering from their known values.
        if let Some(data) = (ctx.constant)(t) {
            if def.dtype == DType::F32 {
                let shape = tensor_shape(ctx, t).map_err(err)?;
                let v = push_value(&mut values, shape, ValueKind::Const(f32s(data)));
                tensor_value.insert(t, v);
            }
            continue;
        }
        if def.dtype != DType::F32 {
            return Err(err(format!(
                "partition input {t} is {}; the GPU runs float32 only",
                def.dtype
            )));
        }
        let shape = tensor_shape(ctx, t).map_err(err)?;
        let v = push_value(&mut values, shape, ValueKind::Input(pos));
        tensor_value.insert(t, v);
    }
    for &n in &part.nodes {
        let node = sg
            .nodes
            .get(n)
            .ok_or_else(|| err(format!("node {n} does not exist")))?;
        let node_err = |e: String| err(format!("node {n} ({}): {e}", node.op));
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
            op_name: node.op.to_string(),
        };
        ops::lower(&view, &mut l).map_err(node_err)?;
    }
    let mut outputs = Vec::new();
    let mut output_values = Vec::new();
    for &t in &part.outputs {
        // A folded constant the rest of the graph reads: hand back its known value.
        if let Some(data) = (ctx.constant)(t) {
            outputs.push(PlannedOutput::Const(data.to_vec()));
            continue;
        }
        let v = *tensor_value.get(&t).ok_or_else(|| {
            err(format!(
                "partition output {t} is not computed by the partition"
            ))
        })?;
        if let ValueKind::Const(data) = &values[v].kind {
            outputs.push(PlannedOutput::Const(bytemuck::cast_slice(data).to_vec()));
            continue;
        }
        let def = &sg.tensors[t];
        if def.dtype != DType::F32 {
            return Err(err(format!("partition output {t} is {}", def.dtype)));
        }
        outputs.push(PlannedOutput::Value(v));
        output_values.push(v);
    }
    let dispatches = fuse(dispatches, &values, &output_values, max_bindings);
    Ok(Lowered {
        values,
        dispatches,
        outputs,
    })
}

/// Constant values as stored on the device.
pub(crate) fn stored_bytes(precision: Precision, values: &[f32]) -> Vec<u8> {
    let mut bytes: Vec<u8> = match precision {
        Precision::F32 => bytemuck::cast_slice(values).to_vec(),
        Precision::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    };
    bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
    bytes
}

/// Lowers, fuses, plans and uploads a partition, and makes its first resident set.
pub(crate) fn compile(
    gpu: &Arc<GpuContext>,
    delegate: &str,
    precision: Precision,
    ctx: &PartitionCtx<'_>,
) -> Result<GpuPartition, DelegateError> {
    let started = Instant::now();
    let max_bindings = gpu.limits.max_storage_buffers_per_shader_stage as usize;
    let Lowered {
        values,
        dispatches,
        outputs: planned,
    } = lower(ctx, delegate, max_bindings)?;
    let err = |what: String| compile_err(delegate, what);
    let elem = precision.size();
    let max_binding = gpu.limits.max_storage_buffer_binding_size;
    if let Some(v) = values
        .iter()
        .find(|v| (v.elems() * elem) as u64 > max_binding)
    {
        return Err(err(format!(
            "a {}-element tensor exceeds the device's {max_binding}-byte storage binding limit",
            v.elems()
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
    for (step, d) in dispatches.iter().enumerate() {
        for v in d.reads().chain(std::iter::once(d.output)) {
            first[v] = first[v].min(step);
            last[v] = last[v].max(step);
        }
    }
    for o in &planned {
        if let PlannedOutput::Value(v) = *o {
            first[v] = first[v].min(end);
            last[v] = end + 1;
        }
    }
    let live: Vec<Option<Live>> = (0..values.len())
        .map(|v| {
            (!matches!(values[v].kind, ValueKind::Const(_)) && first[v] != usize::MAX).then(|| {
                Live {
                    bytes: (values[v].elems() * elem).next_multiple_of(4),
                    first: first[v],
                    last: last[v],
                }
            })
        })
        .collect();
    let (slot_sizes, slot_of) = assign_slots(&live);
    let device = &gpu.device;
    // Constants, once per partition.
    let mut const_index: HashMap<ValueId, usize> = HashMap::new();
    let mut const_data: Vec<Vec<u8>> = Vec::new();
    for (v, value) in values.iter().enumerate() {
        if let ValueKind::Const(data) = &value.kind {
            const_index.insert(v, const_data.len());
            const_data.push(stored_bytes(precision, data));
        }
    }
    let consts = gpu
        .checked(|| {
            const_data
                .iter()
                .map(|bytes| {
                    wgpu::util::DeviceExt::create_buffer_init(
                        device,
                        &wgpu::util::BufferInitDescriptor {
                            label: Some("constant"),
                            contents: bytes,
                            usage: wgpu::BufferUsages::STORAGE,
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .map_err(|e| device_err(delegate, "uploading constants", e))?;
    Counters::add(&gpu.counters.buffers_created, consts.len() as u64);
    let binding_of = |v: ValueId| -> Result<Binding, DelegateError> {
        if let Some(&c) = const_index.get(&v) {
            return Ok(Binding::Const(c));
        }
        slot_of
            .get(v)
            .copied()
            .flatten()
            .map(Binding::Slot)
            .ok_or_else(|| err(format!("value {v} has no buffer")))
    };
    let mut steps = Vec::with_capacity(dispatches.len());
    let mut params = Vec::with_capacity(dispatches.len());
    let mut distinct = std::collections::HashSet::new();
    for d in &dispatches {
        let label = d.label();
        let bindings_needed = d.inputs.len() + 2 + d.epilogue_operands().len();
        if bindings_needed > max_bindings {
            return Err(err(format!(
                "{label}: {bindings_needed} bindings exceed the device's {max_bindings}"
            )));
        }
        let source = assemble(d.shader, precision, gpu.subgroups, &d.epilogue_code());
        let mut constants = d.constants.clone();
        constants.sort_unstable();
        let pipeline = gpu
            .pipelines
            .get(gpu, d.shader.name, &source, &constants)
            .map_err(|e| device_err(delegate, &label, e))?;
        distinct.insert(Arc::as_ptr(&pipeline) as usize);
        let mut words = d.params.clone();
        if words.is_empty() {
            words.push(0);
        }
        let (param_buffer, layout) = gpu
            .checked(|| {
                let buffer = wgpu::util::DeviceExt::create_buffer_init(
                    device,
                    &wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: bytemuck::cast_slice(&words),
                        usage: wgpu::BufferUsages::STORAGE,
                    },
                );
                (buffer, pipeline.get_bind_group_layout(0))
            })
            .map_err(|e| device_err(delegate, &label, e))?;
        Counters::add(&gpu.counters.buffers_created, 1);
        let mut bindings = Vec::with_capacity(bindings_needed);
        for &v in &d.inputs {
            bindings.push(binding_of(v)?);
        }
        bindings.push(binding_of(d.output)?);
        bindings.push(Binding::Params(params.len()));
        for v in d.epilogue_operands() {
            bindings.push(binding_of(v)?);
        }
        let workgroups = match d.grid {
            Grid::Threads(n) => thread_groups(n).map_err(err)?,
            Grid::Groups(g) => {
                if g.iter().any(|&x| x > MAX_WORKGROUPS_PER_DIMENSION) {
                    return Err(err(format!(
                        "{label}: {g:?} workgroups exceed one dispatch"
                    )));
                }
                g
            }
        };
        params.push(param_buffer);
        steps.push(Step {
            pipeline,
            layout,
            bindings,
            workgroups,
            label,
            shader: d.shader.name,
            nodes: d.nodes.clone(),
        });
    }
    // Per partition input: its slot, or none for a folded constant.
    let mut input_io: Vec<Option<InputIo>> = ctx.partition.inputs.iter().map(|_| None).collect();
    for (v, value) in values.iter().enumerate() {
        if let ValueKind::Input(pos) = value.kind {
            let slot = slot_of[v].ok_or_else(|| err(format!("input value {v} has no buffer")))?;
            if let Some(io) = input_io.get_mut(pos) {
                *io = Some(InputIo {
                    slot,
                    elems: value.elems(),
                });
            }
        }
    }
    let mut output_io = Vec::with_capacity(planned.len());
    let mut staging_size = 0u64;
    for o in planned {
        match o {
            PlannedOutput::Value(v) => {
                let slot =
                    slot_of[v].ok_or_else(|| err(format!("output value {v} has no buffer")))?;
                let elems = values[v].elems();
                let bytes = ((elems * elem) as u64).next_multiple_of(4);
                output_io.push(OutputIo::Device {
                    slot,
                    elems,
                    offset: staging_size,
                    bytes,
                });
                staging_size += bytes.max(4).next_multiple_of(COPY_ALIGN);
            }
            PlannedOutput::Const(data) => output_io.push(OutputIo::Const(data)),
        }
    }
    let core = PartitionCore::build(
        gpu.clone(),
        delegate.to_string(),
        precision,
        ctx.partition.nodes.clone(),
        steps,
        slot_sizes.iter().map(|&s| s as u64).collect(),
        consts,
        params,
        input_io,
        output_io,
        staging_size,
        distinct.len(),
        started,
    )?;
    if let Some(d) = &gpu.disk_cache
        && let Err(e) = d.save()
    {
        tracing::warn!(error = %e, "saving the pipeline cache");
    }
    Ok(core)
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
