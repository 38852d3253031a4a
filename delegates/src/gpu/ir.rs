//! What lowering produces: values (partition inputs, constants, intermediates) and the
//! compute dispatches over them, each with an epilogue that fusion extends.
//!
//! Every shader writes its output through `epilogue(i, v)`, where `i` is the output
//! element's flat (NHWC, dense) index. The epilogue is generated WGSL: the op's own
//! fused clamp, then any elementwise consumers fusion moved in (activations, and binary
//! ops whose other operand is read at `i`, at the channel `i % EPI_C`, or at 0).

use std::collections::HashMap;
use std::fmt::Write;

use switchyard_interpreter::PartitionCtx;

use super::pipelines::{Constants, Shader};

pub(crate) type ValueId = usize;

#[derive(Debug)]
pub(crate) enum ValueKind {
    /// Partition input at this position, uploaded at every execution.
    Input(usize),
    /// Constant values, uploaded once at compile in the partition's precision.
    Const(Vec<f32>),
    Intermediate,
}

#[derive(Debug)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub kind: ValueKind,
}

impl Value {
    pub fn elems(&self) -> usize {
        match &self.kind {
            ValueKind::Const(v) => v.len(),
            _ => self.shape.iter().product(),
        }
    }
}

/// How many threads a dispatch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grid {
    /// One thread per element; workgroups of `WORKGROUP_SIZE`, folded into two
    /// dimensions when one would exceed the limit (`flat_id` undoes the fold).
    Threads(u32),
    /// Explicit workgroup counts for tiled shaders.
    Groups([u32; 3]),
}

/// How a fused binary operand lines up with the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bcast {
    /// Same shape: read at the output index.
    Full,
    /// One value per channel (last dimension), every other dimension 1.
    Channel,
    /// A single value.
    Scalar,
}

/// One step of an epilogue, applied to the value a shader computed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EpiOp {
    /// TFLite's fused activation codes 1..=3 (relu, relu_n1_to_1, relu6).
    Clamp(u32),
    /// `unary_op` in the prelude.
    Unary { op: u32, alpha: f32 },
    /// `binary_op` in the prelude, with the computed value on the left unless
    /// `operand_first`.
    Binary {
        op: u32,
        operand: ValueId,
        bcast: Bcast,
        operand_first: bool,
    },
}

/// What fusion may move into the producer of its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Elementwise {
    Unary { op: u32, alpha: f32, x: ValueId },
    Binary { op: u32, a: ValueId, b: ValueId },
}

/// One compute dispatch.
pub(crate) struct Dispatch {
    /// The nodes it runs: the producer first, then fused consumers.
    pub nodes: Vec<usize>,
    /// Their operator names, for profiles.
    pub ops: Vec<String>,
    pub shader: &'static Shader,
    pub constants: Constants,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    pub params: Vec<u32>,
    pub grid: Grid,
    pub epilogue: Vec<EpiOp>,
    pub fusable: Option<Elementwise>,
}

impl Dispatch {
    pub fn new(
        shader: &'static Shader,
        inputs: Vec<ValueId>,
        output: ValueId,
        params: Vec<u32>,
        grid: Grid,
    ) -> Dispatch {
        Dispatch {
            nodes: Vec::new(),
            ops: Vec::new(),
            shader,
            constants: Vec::new(),
            inputs,
            output,
            params,
            grid,
            epilogue: Vec::new(),
            fusable: None,
        }
    }

    pub fn constant(mut self, name: &'static str, value: u32) -> Dispatch {
        self.constants.push((name, value));
        self
    }

    /// Applies the node's fused clamp activation (code 0 is none).
    pub fn clamp(mut self, activation: u32) -> Dispatch {
        if activation != 0 {
            self.epilogue.push(EpiOp::Clamp(activation));
        }
        self
    }

    pub fn label(&self) -> String {
        self.ops.join("+")
    }

    /// Values the epilogue reads, in binding order.
    pub fn epilogue_operands(&self) -> Vec<ValueId> {
        self.epilogue
            .iter()
            .filter_map(|e| match e {
                EpiOp::Binary { operand, .. } => Some(*operand),
                _ => None,
            })
            .collect()
    }

    /// Every value the dispatch reads.
    pub fn reads(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().copied().chain(self.epilogue_operands())
    }

    /// The epilogue as WGSL, its bindings numbered after the shader's own (inputs,
    /// output, parameters).
    pub fn epilogue_code(&self) -> String {
        let mut s = String::new();
        let first = self.inputs.len() as u32 + 2;
        let mut k = 0u32;
        for e in &self.epilogue {
            if matches!(e, EpiOp::Binary { .. }) {
                let _ = writeln!(
                    s,
                    "@group(0) @binding({}) var<storage, read> e{k}: array<S>;",
                    first + k
                );
                k += 1;
            }
        }
        s.push_str("fn epilogue(i: u32, v_in: f32) -> f32 {\n    var v = v_in;\n");
        let mut k = 0u32;
        for e in &self.epilogue {
            match e {
                EpiOp::Clamp(code) => {
                    let _ = writeln!(s, "    v = clamp_act({code}u, v);");
                }
                EpiOp::Unary { op, alpha } => {
                    let _ = writeln!(
                        s,
                        "    v = unary_op({op}u, v, bitcast<f32>({}u));",
                        alpha.to_bits()
                    );
                }
                EpiOp::Binary {
                    op,
                    bcast,
                    operand_first,
                    ..
                } => {
                    let index = match bcast {
                        Bcast::Full => "i",
                        Bcast::Channel => "i % EPI_C",
                        Bcast::Scalar => "0u",
                    };
                    let w = format!("f32(e{k}[{index}])");
                    let (x, y) = if *operand_first {
                        (w.as_str(), "v")
                    } else {
                        ("v", w.as_str())
                    };
                    let _ = writeln!(s, "    v = binary_op({op}u, {x}, {y});");
                    k += 1;
                }
            }
        }
        s.push_str("    return v;\n}\n");
        s
    }
}

/// What an op's `lower` appends to.
pub(crate) struct Lowering<'a, 'c> {
    pub(crate) ctx: &'a PartitionCtx<'c>,
    pub(crate) node_inputs: Vec<Option<usize>>,
    pub(crate) node_outputs: Vec<usize>,
    pub(crate) values: &'a mut Vec<Value>,
    pub(crate) tensor_value: &'a mut HashMap<usize, ValueId>,
    pub(crate) dispatches: &'a mut Vec<Dispatch>,
    pub(crate) node: usize,
    pub(crate) op_name: String,
}

/// Float values of constant bytes (float32, little-endian).
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Lowering<'_, '_> {
    fn tensor_of_input(&self, i: usize) -> Result<usize, String> {
        self.node_inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input {i}"))
    }

    /// The value holding node input `i` (a constant is uploaded on first use).
    pub fn input(&mut self, i: usize) -> Result<ValueId, String> {
        let t = self.tensor_of_input(i)?;
        if let Some(&v) = self.tensor_value.get(&t) {
            return Ok(v);
        }
        let data = (self.ctx.constant)(t).ok_or_else(|| {
            format!("tensor {t} is neither a partition input nor computed before this node")
        })?;
        let shape = self.ctx.shapes.get(t).cloned().unwrap_or_default();
        let v = push_value(self.values, shape, ValueKind::Const(f32s(data)));
        self.tensor_value.insert(t, v);
        Ok(v)
    }

    /// The values of constant node input `i` (weights to repack).
    pub fn const_input(&self, i: usize) -> Result<Vec<f32>, String> {
        let t = self.tensor_of_input(i)?;
        let data = (self.ctx.constant)(t)
            .ok_or_else(|| format!("input {i} must be a constant on the GPU"))?;
        Ok(f32s(data))
    }

    /// A new value for node output `i`.
    pub fn output(&mut self, i: usize) -> Result<ValueId, String> {
        let t = *self
            .node_outputs
            .get(i)
            .ok_or_else(|| format!("missing output {i}"))?;
        let shape = self
            .ctx
            .shapes
            .get(t)
            .cloned()
            .ok_or_else(|| format!("tensor {t} has no resolved shape"))?;
        let v = push_value(self.values, shape, ValueKind::Intermediate);
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

    /// A constant made by the lowering itself (a zero bias, repacked weights).
    pub fn constant(&mut self, values: Vec<f32>) -> ValueId {
        let shape = vec![values.len()];
        push_value(self.values, shape, ValueKind::Const(values))
    }

    pub fn dispatch(&mut self, mut d: Dispatch) {
        d.nodes = vec![self.node];
        d.ops = vec![self.op_name.clone()];
        self.dispatches.push(d);
    }
}

pub(crate) fn push_value(values: &mut Vec<Value>, shape: Vec<usize>, kind: ValueKind) -> ValueId {
    values.push(Value { shape, kind });
    values.len() - 1
}
