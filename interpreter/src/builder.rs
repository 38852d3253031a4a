//! Writes `.tflite` files: used to build the single-op models of the per-op tests (which
//! LiteRT also runs, so both runtimes see the very same file) and malformed variants for
//! the loader's fuzz-style tests.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::ops::{OpKind, OpOptions, OptionField, encode_options};
use crate::schema::slot;
use crate::tensor::{DType, Quant};

/// A tensor to write.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub shape_signature: Option<Vec<i32>>,
    pub data: Option<Vec<u8>>,
    pub quant: Option<Quant>,
    pub is_variable: bool,
    /// Sparsity parameters: `data` then holds only the stored values.
    pub sparsity: Option<SparsitySpec>,
}

/// Sparsity parameters to write (TFLite `SparsityParameters`), indices as int32 vectors.
#[derive(Clone, Debug, Default)]
pub struct SparsitySpec {
    pub traversal_order: Vec<i32>,
    pub block_map: Vec<i32>,
    pub dims: Vec<SparseDimSpec>,
}

/// One traversal level: dense with a size, or CSR with segments and indices.
#[derive(Clone, Debug)]
pub enum SparseDimSpec {
    Dense(i32),
    Csr {
        segments: Vec<i32>,
        indices: Vec<i32>,
    },
}

#[derive(Clone, Debug)]
struct OpSpec {
    op: OpKind,
    version: i32,
    inputs: Vec<i32>,
    outputs: Vec<i32>,
    intermediates: Vec<i32>,
    options: OpOptions,
}

/// One subgraph under construction.
#[derive(Clone, Debug, Default)]
pub struct SubgraphBuilder {
    pub name: String,
    tensors: Vec<TensorSpec>,
    ops: Vec<OpSpec>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

impl SubgraphBuilder {
    /// Adds an activation tensor and returns its index.
    pub fn tensor(&mut self, name: &str, dtype: DType, shape: &[usize]) -> usize {
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            shape_signature: None,
            data: None,
            quant: None,
            is_variable: false,
            sparsity: None,
        });
        self.tensors.len() - 1
    }

    /// Adds a constant tensor holding `data` (raw little-endian bytes).
    pub fn constant(&mut self, name: &str, dtype: DType, shape: &[usize], data: Vec<u8>) -> usize {
        let t = self.tensor(name, dtype, shape);
        self.tensors[t].data = Some(data);
        t
    }

    /// Adds a float32 constant.
    pub fn constant_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> usize {
        self.constant(
            name,
            DType::F32,
            shape,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// Adds an int32 constant.
    pub fn constant_i32(&mut self, name: &str, shape: &[usize], values: &[i32]) -> usize {
        self.constant(
            name,
            DType::I32,
            shape,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    pub fn set_quant(&mut self, t: usize, quant: Quant) {
        self.tensors[t].quant = Some(quant);
    }

    pub fn set_signature(&mut self, t: usize, signature: Vec<i32>) {
        self.tensors[t].shape_signature = Some(signature);
    }

    /// Makes `t` a sparse constant: `values` are its stored (non-zero) elements.
    pub fn set_sparsity(&mut self, t: usize, sparsity: SparsitySpec, values: Vec<u8>) {
        self.tensors[t].sparsity = Some(sparsity);
        self.tensors[t].data = Some(values);
    }

    pub fn set_variable(&mut self, t: usize) {
        self.tensors[t].is_variable = true;
    }

    pub fn spec_mut(&mut self, t: usize) -> &mut TensorSpec {
        &mut self.tensors[t]
    }

    /// Appends a node; `None` inputs are written as -1 (omitted optional input).
    pub fn op(
        &mut self,
        op: OpKind,
        inputs: &[Option<usize>],
        outputs: &[usize],
        options: OpOptions,
    ) {
        self.op_versioned(op, 1, inputs, outputs, options);
    }

    pub fn op_versioned(
        &mut self,
        op: OpKind,
        version: i32,
        inputs: &[Option<usize>],
        outputs: &[usize],
        options: OpOptions,
    ) {
        self.ops.push(OpSpec {
            op,
            version,
            inputs: inputs.iter().map(|t| t.map_or(-1, |t| t as i32)).collect(),
            outputs: outputs.iter().map(|&t| t as i32).collect(),
            intermediates: Vec::new(),
            options,
        });
    }

    /// Gives the node added last its intermediate tensors (quantization parameters an
    /// integer LSTM reads at prepare).
    pub fn set_intermediates(&mut self, intermediates: &[usize]) {
        if let Some(op) = self.ops.last_mut() {
            op.intermediates = intermediates.iter().map(|&t| t as i32).collect();
        }
    }

    pub fn set_inputs(&mut self, inputs: &[usize]) {
        self.inputs = inputs.to_vec();
    }

    pub fn set_outputs(&mut self, outputs: &[usize]) {
        self.outputs = outputs.to_vec();
    }
}

/// A named entry point to write (`SignatureDef`): tensors of `subgraph` by name.
#[derive(Clone, Debug, Default)]
pub struct SignatureSpec {
    pub key: String,
    pub subgraph: usize,
    pub inputs: Vec<(String, usize)>,
    pub outputs: Vec<(String, usize)>,
}

/// Builds a whole model; subgraph 0 is the entry point.
#[derive(Clone, Debug, Default)]
pub struct ModelBuilder {
    pub subgraphs: Vec<SubgraphBuilder>,
    pub signatures: Vec<SignatureSpec>,
    pub description: String,
}

impl ModelBuilder {
    pub fn new() -> ModelBuilder {
        ModelBuilder {
            subgraphs: vec![SubgraphBuilder::default()],
            signatures: Vec::new(),
            description: "switchyard test model".into(),
        }
    }

    pub fn main(&mut self) -> &mut SubgraphBuilder {
        &mut self.subgraphs[0]
    }

    /// Adds a subgraph and returns its index.
    pub fn add_subgraph(&mut self) -> usize {
        self.subgraphs.push(SubgraphBuilder::default());
        self.subgraphs.len() - 1
    }

    /// Adds a signature: `inputs` and `outputs` name tensors of `subgraph`.
    pub fn add_signature(
        &mut self,
        key: &str,
        subgraph: usize,
        inputs: &[(&str, usize)],
        outputs: &[(&str, usize)],
    ) {
        let named = |v: &[(&str, usize)]| v.iter().map(|&(n, t)| (n.to_string(), t)).collect();
        self.signatures.push(SignatureSpec {
            key: key.to_string(),
            subgraph,
            inputs: named(inputs),
            outputs: named(outputs),
        });
    }

    /// Serialises the model to `.tflite` bytes.
    pub fn finish(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(1024);
        // Buffer 0 is the empty sentinel; every constant gets its own buffer.
        let mut buffer_data: Vec<Option<&[u8]>> = vec![None];
        let mut opcodes: Vec<(OpKind, i32)> = Vec::new();
        let mut subgraph_offsets = Vec::new();
        for sg in &self.subgraphs {
            let mut tensor_offsets = Vec::new();
            for t in &sg.tensors {
                let buffer = match &t.data {
                    Some(d) => {
                        buffer_data.push(Some(d));
                        buffer_data.len() - 1
                    }
                    None => 0,
                };
                tensor_offsets.push(write_tensor(&mut fbb, t, buffer as u32));
            }
            let mut op_offsets = Vec::new();
            for op in &sg.ops {
                let key = (op.op.clone(), op.version);
                let opcode_index = match opcodes.iter().position(|k| *k == key) {
                    Some(i) => i,
                    None => {
                        opcodes.push(key);
                        opcodes.len() - 1
                    }
                };
                op_offsets.push(write_op(&mut fbb, op, opcode_index as u32));
            }
            let tensors = fbb.create_vector(&tensor_offsets);
            let ops = fbb.create_vector(&op_offsets);
            let inputs: Vec<i32> = sg.inputs.iter().map(|&i| i as i32).collect();
            let outputs: Vec<i32> = sg.outputs.iter().map(|&i| i as i32).collect();
            let inputs = fbb.create_vector(&inputs);
            let outputs = fbb.create_vector(&outputs);
            let name = fbb.create_string(&sg.name);
            let start = fbb.start_table();
            fbb.push_slot_always(slot(0), tensors);
            fbb.push_slot_always(slot(1), inputs);
            fbb.push_slot_always(slot(2), outputs);
            fbb.push_slot_always(slot(3), ops);
            fbb.push_slot_always(slot(4), name);
            subgraph_offsets.push(fbb.end_table(start));
        }
        let mut buffer_offsets = Vec::new();
        for data in &buffer_data {
            let vec = data.map(|d| fbb.create_vector(d));
            let start = fbb.start_table();
            if let Some(v) = vec {
                fbb.push_slot_always(slot(0), v);
            }
            buffer_offsets.push(fbb.end_table(start));
        }
        let mut opcode_offsets = Vec::new();
        for (op, version) in &opcodes {
            let (code, custom) = match op {
                OpKind::Builtin(b) => (b.code(), None),
                OpKind::UnknownBuiltin(c) => (*c, None),
                OpKind::Custom(name) => (32, Some(fbb.create_string(name))),
            };
            let start = fbb.start_table();
            fbb.push_slot::<i8>(slot(0), code.min(127) as i8, 0);
            if let Some(c) = custom {
                fbb.push_slot_always(slot(1), c);
            }
            fbb.push_slot::<i32>(slot(2), *version, 1);
            fbb.push_slot::<i32>(slot(3), code, 0);
            opcode_offsets.push(fbb.end_table(start));
        }
        let mut signature_offsets = Vec::new();
        for sig in &self.signatures {
            let mut maps = |v: &[(String, usize)]| {
                let tables: Vec<_> = v
                    .iter()
                    .map(|(name, t)| {
                        let name = fbb.create_string(name);
                        let start = fbb.start_table();
                        fbb.push_slot_always(slot(0), name);
                        fbb.push_slot::<u32>(slot(1), *t as u32, 0);
                        fbb.end_table(start)
                    })
                    .collect();
                fbb.create_vector(&tables)
            };
            let inputs = maps(&sig.inputs);
            let outputs = maps(&sig.outputs);
            let key = fbb.create_string(&sig.key);
            let start = fbb.start_table();
            fbb.push_slot_always(slot(0), inputs);
            fbb.push_slot_always(slot(1), outputs);
            fbb.push_slot_always(slot(2), key);
            fbb.push_slot::<u32>(slot(4), sig.subgraph as u32, 0);
            signature_offsets.push(fbb.end_table(start));
        }
        let signatures_v =
            (!signature_offsets.is_empty()).then(|| fbb.create_vector(&signature_offsets));
        let opcodes_v = fbb.create_vector(&opcode_offsets);
        let subgraphs_v = fbb.create_vector(&subgraph_offsets);
        let buffers_v = fbb.create_vector(&buffer_offsets);
        let description = fbb.create_string(&self.description);
        let start = fbb.start_table();
        fbb.push_slot::<u32>(slot(0), 3, 0);
        fbb.push_slot_always(slot(1), opcodes_v);
        fbb.push_slot_always(slot(2), subgraphs_v);
        fbb.push_slot_always(slot(3), description);
        fbb.push_slot_always(slot(4), buffers_v);
        if let Some(v) = signatures_v {
            fbb.push_slot_always(slot(7), v);
        }
        let root = fbb.end_table(start);
        fbb.finish(root, Some("TFL3"));
        fbb.finished_data().to_vec()
    }
}

/// A chain of `nodes` float32 ADD nodes over `elements`-element tensors, each adding the
/// same constant. With one element the kernels do almost nothing, so its run time per
/// node is the executor's own overhead (the benchmark of `switchyard make-chain-model`).
pub fn add_chain(nodes: usize, elements: usize) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    mb.description = format!("chain of {nodes} float32 ADD nodes of {elements} elements");
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[elements]);
    let c = sg.constant_f32("c", &[elements], &vec![1.0; elements]);
    let mut prev = x;
    for k in 0..nodes {
        let t = sg.tensor(&format!("t{k}"), DType::F32, &[elements]);
        sg.op(
            OpKind::Builtin(crate::ops::BuiltinOp::Add),
            &[Some(prev), Some(c)],
            &[t],
            OpOptions::Activation(Default::default()),
        );
        prev = t;
    }
    sg.set_inputs(&[x]);
    sg.set_outputs(&[prev]);
    mb.finish()
}

fn write_tensor<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    t: &TensorSpec,
    buffer: u32,
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let shape: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
    let shape = fbb.create_vector(&shape);
    let signature = t.shape_signature.as_ref().map(|s| fbb.create_vector(s));
    let name = fbb.create_string(&t.name);
    let sparsity = t.sparsity.as_ref().map(|sp| write_sparsity(fbb, sp));
    let quant = t.quant.as_ref().map(|q| {
        let scale = fbb.create_vector(&q.scale);
        let zp = fbb.create_vector(&q.zero_point);
        let start = fbb.start_table();
        fbb.push_slot_always(slot(2), scale);
        fbb.push_slot_always(slot(3), zp);
        fbb.push_slot::<i32>(slot(6), q.axis as i32, 0);
        fbb.end_table(start)
    });
    let start = fbb.start_table();
    fbb.push_slot_always(slot(0), shape);
    fbb.push_slot::<i8>(slot(1), t.dtype.schema_code(), 0);
    fbb.push_slot::<u32>(slot(2), buffer, 0);
    fbb.push_slot_always(slot(3), name);
    if let Some(q) = quant {
        fbb.push_slot_always(slot(4), q);
    }
    fbb.push_slot::<bool>(slot(5), t.is_variable, false);
    if let Some(sp) = sparsity {
        fbb.push_slot_always(slot(6), sp);
    }
    if let Some(s) = signature {
        fbb.push_slot_always(slot(7), s);
    }
    fbb.end_table(start)
}

fn write_index_vector<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    values: &[i32],
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let values = fbb.create_vector(values);
    let start = fbb.start_table();
    fbb.push_slot_always(slot(0), values);
    fbb.end_table(start)
}

fn write_sparsity<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    sp: &SparsitySpec,
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let mut dims = Vec::with_capacity(sp.dims.len());
    for d in &sp.dims {
        dims.push(match d {
            SparseDimSpec::Dense(size) => {
                let start = fbb.start_table();
                fbb.push_slot::<i8>(slot(0), 0, 0);
                fbb.push_slot::<i32>(slot(1), *size, 0);
                fbb.end_table(start)
            }
            SparseDimSpec::Csr { segments, indices } => {
                let segments = write_index_vector(fbb, segments);
                let indices = write_index_vector(fbb, indices);
                let start = fbb.start_table();
                fbb.push_slot::<i8>(slot(0), 1, 0);
                fbb.push_slot::<u8>(slot(2), 1, 0);
                fbb.push_slot_always(slot(3), segments);
                fbb.push_slot::<u8>(slot(4), 1, 0);
                fbb.push_slot_always(slot(5), indices);
                fbb.end_table(start)
            }
        });
    }
    let dims = fbb.create_vector(&dims);
    let order = fbb.create_vector(&sp.traversal_order);
    let block_map = fbb.create_vector(&sp.block_map);
    let start = fbb.start_table();
    fbb.push_slot_always(slot(0), order);
    fbb.push_slot_always(slot(1), block_map);
    fbb.push_slot_always(slot(2), dims);
    fbb.end_table(start)
}

fn write_op<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    op: &OpSpec,
    opcode_index: u32,
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let inputs = fbb.create_vector(&op.inputs);
    let outputs = fbb.create_vector(&op.outputs);
    let intermediates =
        (!op.intermediates.is_empty()).then(|| fbb.create_vector(&op.intermediates));
    let encoded = op.op.builtin().and_then(|b| encode_options(b, &op.options));
    let options = encoded.as_ref().map(|e| {
        let mut strings = Vec::new();
        let mut vectors = Vec::new();
        for (id, f) in &e.fields {
            match f {
                OptionField::Str(s) => strings.push((*id, fbb.create_string(s))),
                OptionField::VecI32(v) => vectors.push((*id, fbb.create_vector(v))),
                _ => {}
            }
        }
        let start = fbb.start_table();
        for (id, f) in &e.fields {
            match f {
                OptionField::I8(v) => fbb.push_slot_always::<i8>(slot(*id), *v),
                OptionField::I32(v) => fbb.push_slot_always::<i32>(slot(*id), *v),
                OptionField::F32(v) => fbb.push_slot_always::<f32>(slot(*id), *v),
                OptionField::Bool(v) => fbb.push_slot_always::<bool>(slot(*id), *v),
                OptionField::Str(_) | OptionField::VecI32(_) => {}
            }
        }
        for (id, s) in strings {
            fbb.push_slot_always(slot(id), s);
        }
        for (id, v) in vectors {
            fbb.push_slot_always(slot(id), v);
        }
        (e.union_type, fbb.end_table(start))
    });
    let custom = match &op.options {
        OpOptions::Custom(bytes) => Some(fbb.create_vector(bytes)),
        _ => None,
    };
    let start = fbb.start_table();
    fbb.push_slot::<u32>(slot(0), opcode_index, 0);
    fbb.push_slot_always(slot(1), inputs);
    fbb.push_slot_always(slot(2), outputs);
    if let Some((ty, table)) = options {
        fbb.push_slot::<u8>(slot(3), ty, 0);
        fbb.push_slot_always(slot(4), table);
    }
    if let Some(c) = custom {
        fbb.push_slot_always(slot(5), c);
    }
    if let Some(v) = intermediates {
        fbb.push_slot_always(slot(8), v);
    }
    fbb.end_table(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::ops::{Activation, BuiltinOp, ConvOptions, Padding};

    #[test]
    fn written_model_loads_back() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4, 4, 2]);
        let w = sg.constant_f32("w", &[3, 1, 1, 2], &[1.0; 6]);
        let y = sg.tensor("y", DType::F32, &[1, 4, 4, 3]);
        let conv = OpOptions::Conv(ConvOptions {
            padding: Padding::Valid,
            stride_w: 1,
            stride_h: 1,
            dilation_w: 1,
            dilation_h: 1,
            depth_multiplier: 1,
            activation: Activation::Relu6,
        });
        sg.op(
            OpKind::Builtin(BuiltinOp::Conv2d),
            &[Some(x), Some(w), None],
            &[y],
            conv.clone(),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let bytes = mb.finish();
        let m = Model::from_bytes(&bytes).unwrap();
        let sg = &m.subgraphs[0];
        assert_eq!(sg.nodes[0].options, conv);
        assert_eq!(sg.nodes[0].inputs, vec![Some(0), Some(1), None]);
        assert_eq!(sg.tensors[1].data.as_ref().unwrap().as_slice().len(), 24);
    }

    #[test]
    fn intermediates_and_lstm_options_round_trip() {
        use crate::ops::LstmOptions;
        use crate::tensor::Quant;
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 2]);
        let y = sg.tensor("y", DType::F32, &[1, 2]);
        let gate = sg.tensor("gate_scale", DType::I16, &[0]);
        sg.set_quant(gate, Quant::per_tensor(0.25, 3));
        let o = OpOptions::Lstm(LstmOptions {
            activation: Activation::Tanh,
            cell_clip: 0.5,
            proj_clip: 0.0,
            time_major: true,
            asymmetric_quantize_inputs: true,
        });
        sg.op(
            OpKind::Builtin(BuiltinOp::UnidirectionalSequenceLstm),
            &[Some(x)],
            &[y],
            o.clone(),
        );
        sg.set_intermediates(&[gate]);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let m = Model::from_bytes(&mb.finish()).unwrap();
        let sg = &m.subgraphs[0];
        assert_eq!(sg.nodes[0].options, o);
        assert_eq!(sg.nodes[0].intermediates, vec![gate]);
        let q = sg.tensors[gate].quant.as_ref().unwrap();
        assert_eq!((q.scale_at(0), q.zero_point_at(0)), (0.25, 3));
        let metas = crate::kernel::intermediate_metas(sg, &sg.nodes[0]);
        assert_eq!(metas.len(), 1);
        assert!(metas[0].data.is_none() && metas[0].quant.is_some());
    }

    #[test]
    fn out_of_range_intermediate_is_a_load_error() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1]);
        let y = sg.tensor("y", DType::F32, &[1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Relu),
            &[Some(x)],
            &[y],
            OpOptions::None,
        );
        sg.set_intermediates(&[99]);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let Err(err) = Model::from_bytes(&mb.finish()) else {
            panic!("an out-of-range intermediate was accepted");
        };
        assert!(err.to_string().contains("intermediate"), "{err}");
    }

    #[test]
    fn pack_unpack_mirror_pad_options_round_trip() {
        use crate::ops::MirrorPadMode;
        let cases = [
            (
                BuiltinOp::Pack,
                OpOptions::Pack {
                    values_count: 3,
                    axis: -2,
                },
            ),
            (BuiltinOp::Unpack, OpOptions::Unpack { num: 4, axis: 1 }),
            (
                BuiltinOp::MirrorPad,
                OpOptions::MirrorPad {
                    mode: MirrorPadMode::Symmetric,
                },
            ),
            (
                BuiltinOp::MirrorPad,
                OpOptions::MirrorPad {
                    mode: MirrorPadMode::Reflect,
                },
            ),
        ];
        for (op, options) in cases {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[2]);
            let y = sg.tensor("y", DType::F32, &[2]);
            sg.op(OpKind::Builtin(op), &[Some(x)], &[y], options.clone());
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let m = Model::from_bytes(&mb.finish()).unwrap();
            assert_eq!(m.subgraphs[0].nodes[0].options, options);
        }
    }

    #[test]
    fn signatures_round_trip() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[2]);
        let y = sg.tensor("y", DType::F32, &[2]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Relu),
            &[Some(x)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.add_signature("serving_default", 0, &[("in", x)], &[("out", y)]);
        let m = Model::from_bytes(&mb.finish()).unwrap();
        assert_eq!(m.signatures.len(), 1);
        let s = &m.signatures[0];
        assert_eq!(s.key, "serving_default");
        assert_eq!(s.subgraph, 0);
        assert_eq!(s.inputs, vec![("in".to_string(), x)]);
        assert_eq!(s.outputs, vec![("out".to_string(), y)]);
        // A signature naming a tensor out of range is rejected at load.
        mb.add_signature("bad", 0, &[("in", 99)], &[]);
        assert!(Model::from_bytes(&mb.finish()).is_err());
    }
}
