//! What the scheduler needs to know about a model before it can partition or cost it.
//!
//! A CPU interpreter is prepared once: that resolves every tensor's shape (including
//! shapes computed from constant shape tensors), folds nodes whose inputs are all
//! constant (fp16 weight DEQUANTIZE, DENSIFY, shape arithmetic) and so tells which nodes
//! really run per invoke. Folded nodes never need a processor; their outputs count as
//! constants (weights a delegate uploads once, not tensors it receives per run).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{
    BuiltinOp, DType, Interpreter, InterpreterOptions, Model, NodeSupportCtx, OpKind, Tensor,
    TensorMeta, TensorView,
};

use crate::SchedError;

/// Nodes one measurement or validation run at load time may execute, loop iterations
/// included. Real models run a few thousand; a hostile one (nested control flow) ran
/// 50 million inside a load, for 25 s of CPU before the load could answer (issue 10,
/// defect 4). Past it the measurement is skipped or the candidate denied.
pub const LOAD_RUN_MAX_NODES: u64 = 1_000_000;

/// Work of one node, the inputs of a device profile's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    /// Multiply-accumulates (convolutions, matrix products).
    pub macs: f64,
    /// Simple element operations (elementwise, pooling, copies).
    pub elements: f64,
}

impl std::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        self.macs += o.macs;
        self.elements += o.elements;
    }
}

/// Real CPU timings of one model.
#[derive(Clone, Debug)]
pub struct CpuMeasurement {
    /// Mean seconds per invoke.
    pub total_s: f64,
    /// Mean seconds per node (profiled), `None` for folded nodes.
    pub per_node_s: Vec<Option<f64>>,
}

/// A model prepared on the CPU, seen by the scheduler (subgraph 0, the entry point).
pub struct GraphInfo {
    pub model: Arc<Model>,
    interp: Option<Interpreter>,
    /// Where the shapes came from: the CPU interpreter, or the model's stored shapes
    /// when some op has no CPU kernel yet.
    pub shape_source: String,
    known: Vec<bool>,
    /// Hex sha256 of the model file: the allowlist's key for a whole model.
    pub sha256: String,
    pub shapes: Vec<Vec<usize>>,
    /// Nodes that run per invoke, in run order.
    pub run_nodes: Vec<usize>,
    /// Per node: folded at prepare (constant inputs).
    pub folded: Vec<bool>,
    /// Per tensor: the node producing it, if any.
    pub producer: Vec<Option<usize>>,
    /// Per node: its work from resolved shapes.
    pub work: Vec<Work>,
}

impl GraphInfo {
    /// Prepares `model` on the CPU (optimized kernels) and records what it resolved.
    pub fn analyse(model: Arc<Model>) -> Result<GraphInfo, SchedError> {
        if model.subgraphs.is_empty() {
            return Err(SchedError::NotPrepared(0));
        }
        let prepared = Interpreter::new(
            model.clone(),
            Arc::new(CpuResolver::optimized()),
            InterpreterOptions::default(),
        );
        let sg = &model.subgraphs[0];
        let (interp, shapes, folded, shape_source) = match prepared {
            Ok(interp) => {
                let shapes = interp
                    .tensor_shapes(0)
                    .ok_or(SchedError::NotPrepared(0))?
                    .to_vec();
                let run_nodes = interp.run_nodes(0).ok_or(SchedError::NotPrepared(0))?;
                let mut folded = vec![true; sg.nodes.len()];
                for &n in &run_nodes {
                    if let Some(f) = folded.get_mut(n) {
                        *f = false;
                    }
                }
                (Some(interp), shapes, folded, "cpu interpreter".to_string())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cpu prepare failed; partitioning from stored shapes");
                let shapes = sg.tensors.iter().map(|t| t.shape.clone()).collect();
                (
                    None,
                    shapes,
                    fold_by_walking(&model),
                    format!("stored shapes (cpu prepare failed: {e})"),
                )
            }
        };
        let run_nodes = (0..sg.nodes.len()).filter(|&n| !folded[n]).collect();
        let mut producer = vec![None; sg.tensors.len()];
        for node in &sg.nodes {
            for &t in &node.outputs {
                if let Some(p) = producer.get_mut(t) {
                    *p = Some(node.index);
                }
            }
        }
        let known = (0..sg.tensors.len())
            .map(|t| {
                sg.tensors[t].is_const()
                    || producer[t].is_some_and(|p: usize| folded.get(p).copied().unwrap_or(false))
            })
            .collect();
        let sha256 = hex(&Sha256::digest(model.bytes()));
        let mut info = GraphInfo {
            model,
            interp,
            shape_source,
            sha256,
            shapes,
            run_nodes,
            folded,
            producer,
            known,
            work: Vec::new(),
        };
        info.work = (0..sg_len(&info)).map(|n| info.node_work(n)).collect();
        Ok(info)
    }

    /// The CPU interpreter prepared for this model, when every op has a CPU kernel.
    pub fn interpreter(&self) -> Option<&Interpreter> {
        self.interp.as_ref()
    }

    /// Times the model on the real CPU the way the daemon serves it: optimized kernels,
    /// `threads` intra-op threads, warm (one untimed run first), on the model's real
    /// input shapes with varied values; `runs` timed runs, each node profiled. This is
    /// what the cost model, admission control and the allowlist's "faster than the
    /// CPU" compare against. `None` when some op has no CPU kernel yet.
    pub fn measure_cpu(&self, runs: u32, threads: usize) -> Option<CpuMeasurement> {
        self.interp.as_ref()?;
        let mut it = Interpreter::new(
            self.model.clone(),
            Arc::new(CpuResolver::optimized()),
            InterpreterOptions {
                threads: threads.max(1),
                max_nodes_per_run: LOAD_RUN_MAX_NODES,
                ..InterpreterOptions::default()
            },
        )
        .ok()?;
        let inputs = crate::decide::validation_inputs(self)?;
        let views: Vec<TensorView<'_>> = inputs.iter().map(Tensor::view).collect();
        it.run(&views).ok()?;
        it.set_profiling(true);
        let runs = runs.max(1);
        let started = std::time::Instant::now();
        for _ in 0..runs {
            it.run(&views).ok()?;
        }
        let total_s = started.elapsed().as_secs_f64() / f64::from(runs);
        let mut per_node_s = vec![None; self.node_count()];
        for p in it.profile() {
            if p.subgraph == 0
                && let Some(slot) = per_node_s.get_mut(p.node)
            {
                *slot = Some(p.total.as_secs_f64() / p.count.max(1) as f64);
            }
        }
        Some(CpuMeasurement {
            total_s,
            per_node_s,
        })
    }

    pub fn node_count(&self) -> usize {
        sg_len(self)
    }

    /// True when tensor `t`'s value is known at prepare (constant or folded).
    pub fn is_known(&self, t: usize) -> bool {
        self.known.get(t).copied().unwrap_or(false)
    }

    /// The value of a known tensor, when available (always for model constants).
    pub fn value(&self, t: usize) -> Option<&[u8]> {
        match &self.interp {
            Some(it) => it.prepared_value(0, t),
            None => self.model.subgraphs[0]
                .tensors
                .get(t)?
                .data
                .as_ref()
                .map(|d| d.as_slice()),
        }
    }

    /// Bytes of tensor `t` at its resolved shape.
    pub fn tensor_bytes(&self, t: usize) -> usize {
        let sg = &self.model.subgraphs[0];
        let (Some(def), Some(shape)) = (sg.tensors.get(t), self.shapes.get(t)) else {
            return 0;
        };
        shape.iter().product::<usize>() * def.dtype.size()
    }

    /// Short label for `switchyard placement`: the op name.
    pub fn op_name(&self, n: usize) -> String {
        self.model.subgraphs[0]
            .nodes
            .get(n)
            .map_or_else(|| "?".into(), |node| node.op.to_string())
    }

    /// The context a delegate's `supports` sees for node `n`.
    pub fn support_ctx(&self, n: usize) -> Option<NodeSupportCtx<'_>> {
        let sg = &self.model.subgraphs[0];
        let node = sg.nodes.get(n)?;
        let meta = |t: usize| -> Option<TensorMeta<'_>> {
            let def = sg.tensors.get(t)?;
            Some(TensorMeta {
                dtype: def.dtype,
                shape: self.shapes.get(t)?.as_slice(),
                quant: def.quant.as_ref(),
                data: self.value(t),
                name: &def.name,
            })
        };
        Some(NodeSupportCtx {
            subgraph: sg,
            node,
            inputs: node.inputs.iter().map(|t| t.and_then(meta)).collect(),
            outputs: node.outputs.iter().filter_map(|&t| meta(t)).collect(),
        })
    }

    /// Tensors a set of nodes reads per run from outside (not constants, not folded),
    /// and tensors it produces that something outside (or the graph output) needs.
    pub fn boundary(&self, nodes: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let sg = &self.model.subgraphs[0];
        let inside = |n: usize| nodes.contains(&n);
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for &n in nodes {
            let Some(node) = sg.nodes.get(n) else {
                continue;
            };
            for &t in node.inputs.iter().flatten() {
                let from_inside = self.producer.get(t).copied().flatten().is_some_and(inside);
                if !from_inside && !self.is_known(t) && !ins.contains(&t) {
                    ins.push(t);
                }
            }
            for &t in &node.outputs {
                let used_outside = self
                    .run_nodes
                    .iter()
                    .any(|&m| !inside(m) && sg.nodes[m].inputs.iter().flatten().any(|&x| x == t));
                if (used_outside || sg.outputs.contains(&t)) && !outs.contains(&t) {
                    outs.push(t);
                }
            }
        }
        (ins, outs)
    }

    /// Largest dtype class a node touches: used to pick the validation tolerance.
    pub fn is_quantized(&self, nodes: &[usize]) -> bool {
        let sg = &self.model.subgraphs[0];
        nodes.iter().all(|&n| {
            sg.nodes.get(n).is_some_and(|node| {
                node.outputs
                    .iter()
                    .all(|&t| sg.tensors[t].dtype.is_quantized_int())
            })
        })
    }

    fn node_work(&self, n: usize) -> Work {
        let sg = &self.model.subgraphs[0];
        if self.folded.get(n).copied().unwrap_or(true) {
            return Work::default();
        }
        let node = &sg.nodes[n];
        let shape = |t: Option<usize>| -> &[usize] {
            t.and_then(|t| self.shapes.get(t))
                .map_or(&[][..], |s| s.as_slice())
        };
        let elems = |s: &[usize]| s.iter().product::<usize>() as f64;
        let out = elems(shape(node.outputs.first().copied()));
        // MACs (and pooling taps) from the op's descriptor, the estimate the emulated
        // devices count too.
        let shapes = |t: usize| self.shapes.get(t).cloned().unwrap_or_default();
        let op_work = switchyard_kernels::node_work(node, &shapes);
        let macs = op_work.macs;
        // Element work: the descriptor's count (output elements, pooling taps), or the
        // runtime inputs read when those are more (reductions, gathers).
        let elements = if macs > 0.0 {
            out
        } else {
            let inputs: f64 = node
                .inputs
                .iter()
                .flatten()
                .filter(|&&t| !self.is_known(t))
                .map(|&t| elems(shape(Some(t))))
                .sum();
            op_work.elements.max(inputs)
        };
        Work { macs, elements }
    }
}

/// Nodes the executor would fold, found without kernels: every input constant or
/// itself folded, and no control flow or variables.
fn fold_by_walking(model: &Model) -> Vec<bool> {
    let sg = &model.subgraphs[0];
    let mut known: Vec<bool> = sg.tensors.iter().map(|t| t.is_const()).collect();
    let mut folded = vec![false; sg.nodes.len()];
    for node in &sg.nodes {
        let stateful = matches!(
            node.builtin(),
            Some(
                BuiltinOp::If
                    | BuiltinOp::While
                    | BuiltinOp::CallOnce
                    | BuiltinOp::VarHandle
                    | BuiltinOp::ReadVariable
                    | BuiltinOp::AssignVariable
            )
        ) || !matches!(node.op, OpKind::Builtin(_));
        let all_known = node
            .inputs
            .iter()
            .flatten()
            .all(|&t| known.get(t).copied().unwrap_or(false));
        let has_input = node.inputs.iter().flatten().next().is_some();
        if !stateful && has_input && all_known {
            folded[node.index] = true;
            for &t in &node.outputs {
                if let Some(k) = known.get_mut(t) {
                    *k = true;
                }
            }
        }
    }
    folded
}

fn sg_len(info: &GraphInfo) -> usize {
    info.model.subgraphs[0].nodes.len()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Dtype of a node's first output (for capability rules).
pub fn output_dtype(ctx: &NodeSupportCtx<'_>) -> Option<DType> {
    ctx.outputs.first().map(|m| m.dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(stem: &str) -> Option<Arc<Model>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(format!("{stem}.tflite"));
        if !path.exists() {
            eprintln!(
                "skipping: {} missing (run scripts/setup.sh)",
                path.display()
            );
            return None;
        }
        Some(Arc::new(Model::from_path(path).unwrap()))
    }

    #[test]
    fn face_detection_folds_weight_dequantize_and_counts_macs() {
        let Some(m) = model("mp_face_detection_short_range") else {
            return;
        };
        let info = GraphInfo::analyse(m).unwrap();
        let sg = &info.model.subgraphs[0];
        let deq = sg
            .nodes
            .iter()
            .filter(|n| n.op == OpKind::Builtin(BuiltinOp::Dequantize))
            .count();
        assert_eq!(deq, 74);
        assert_eq!(info.run_nodes.len(), 164 - 74);
        let macs: f64 = info.work.iter().map(|w| w.macs).sum();
        // A 128x128 BlazeFace runs tens of millions of MACs, not thousands or billions.
        assert!(macs > 1e7 && macs < 1e9, "{macs}");
        assert_eq!(info.sha256.len(), 64);
    }
}
