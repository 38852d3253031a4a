//! Hostile `.tflite` files, one per attack of issue 10: each is a small, valid
//! flatbuffer that a local user could hand the daemon. Control-flow and op models are
//! written with the interpreter's `ModelBuilder`; sparse tensors (which it does not
//! write) with the small writer at the bottom of this file.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{Activation, BuiltinOp, DType, OpKind, OpOptions};

fn b(op: BuiltinOp) -> OpKind {
    OpKind::Builtin(op)
}

const NO_ACT: OpOptions = OpOptions::Activation(Activation::None);

/// Defect 3: WHILE inside WHILE. Each loop runs `n` times (the input, e.g. 999,999, under
/// the per-loop cap of 1M), so one request asks for n² iterations.
pub fn nested_while() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let (cond_outer, body_outer, cond_inner, body_inner) = (1, 2, 3, 4);
    for _ in 0..4 {
        mb.add_subgraph();
    }
    // cond(i, n) = i < n, for both loops.
    for si in [cond_outer, cond_inner] {
        let sg = &mut mb.subgraphs[si];
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let go = sg.tensor("go", DType::Bool, &[1]);
        sg.op(
            b(BuiltinOp::Less),
            &[Some(i), Some(n)],
            &[go],
            OpOptions::None,
        );
        sg.set_inputs(&[i, n]);
        sg.set_outputs(&[go]);
    }
    // body_inner(j, n) = (j + 1, n)
    {
        let sg = &mut mb.subgraphs[body_inner];
        let j = sg.tensor("j", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let one = sg.constant_i32("one", &[1], &[1]);
        let j2 = sg.tensor("j2", DType::I32, &[1]);
        sg.op(b(BuiltinOp::Add), &[Some(j), Some(one)], &[j2], NO_ACT);
        sg.set_inputs(&[j, n]);
        sg.set_outputs(&[j2, n]);
    }
    // body_outer(i, n) = (i + 1 after an inner loop of n iterations, n)
    {
        let sg = &mut mb.subgraphs[body_outer];
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let zero = sg.constant_i32("zero", &[1], &[0]);
        let one = sg.constant_i32("one", &[1], &[1]);
        let j_end = sg.tensor("j_end", DType::I32, &[1]);
        let n_end = sg.tensor("n_end", DType::I32, &[1]);
        sg.op(
            b(BuiltinOp::While),
            &[Some(zero), Some(n)],
            &[j_end, n_end],
            OpOptions::While {
                cond_subgraph: cond_inner,
                body_subgraph: body_inner,
            },
        );
        let i2 = sg.tensor("i2", DType::I32, &[1]);
        let i_next = sg.tensor("i_next", DType::I32, &[1]);
        // i2 = i + 1; i_next = i2 + j_end * 0 keeps the inner loop's result live.
        sg.op(b(BuiltinOp::Add), &[Some(i), Some(one)], &[i2], NO_ACT);
        let zero2 = sg.constant_i32("zero2", &[1], &[0]);
        let dead = sg.tensor("dead", DType::I32, &[1]);
        sg.op(
            b(BuiltinOp::Mul),
            &[Some(j_end), Some(zero2)],
            &[dead],
            NO_ACT,
        );
        sg.op(
            b(BuiltinOp::Add),
            &[Some(i2), Some(dead)],
            &[i_next],
            NO_ACT,
        );
        sg.set_inputs(&[i, n]);
        sg.set_outputs(&[i_next, n]);
    }
    {
        let sg = mb.main();
        let n = sg.tensor("n", DType::I32, &[1]);
        let zero = sg.constant_i32("zero", &[1], &[0]);
        let i_end = sg.tensor("i_end", DType::I32, &[1]);
        let n_end = sg.tensor("n_end", DType::I32, &[1]);
        sg.op(
            b(BuiltinOp::While),
            &[Some(zero), Some(n)],
            &[i_end, n_end],
            OpOptions::While {
                cond_subgraph: cond_outer,
                body_subgraph: body_outer,
            },
        );
        sg.set_inputs(&[n]);
        sg.set_outputs(&[i_end]);
    }
    mb.finish()
}

/// Defect 4: `depth` nested subgraphs, each with `fanout` IF nodes calling the next one
/// with input shapes that alternate between [1] and [2]. A prepare that keeps one
/// prepared shape set per subgraph re-prepares the next level at every IF: fanout^depth
/// prepares at load time, from a file of a few KB.
pub fn exponential_if(depth: usize, fanout: usize) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    for _ in 0..depth {
        mb.add_subgraph();
    }
    // Subgraph k (1..=depth) takes (c: bool[1], x: f32[?]) and returns x + x; all but
    // the last also call k+1 `fanout` times.
    for k in 0..=depth {
        let sg = &mut mb.subgraphs[k];
        let c = sg.tensor("c", DType::Bool, &[1]);
        let x = sg.tensor("x", DType::F32, &[1]);
        let mut outputs = Vec::new();
        if k < depth {
            for f in 0..fanout {
                let len = 1 + f % 2;
                let arg = sg.constant_f32(&format!("k{f}"), &[len], &vec![1.0; len]);
                let out = sg.tensor(&format!("o{f}"), DType::F32, &[len]);
                sg.op(
                    b(BuiltinOp::If),
                    &[Some(c), Some(c), Some(arg)],
                    &[out],
                    OpOptions::If {
                        then_subgraph: k + 1,
                        else_subgraph: k + 1,
                    },
                );
                outputs.push(out);
            }
        }
        let y = sg.tensor("y", DType::F32, &[1]);
        sg.op(b(BuiltinOp::Add), &[Some(x), Some(x)], &[y], NO_ACT);
        if k == 0 {
            sg.set_inputs(&[c, x]);
            outputs.insert(0, y);
            sg.set_outputs(&outputs);
        } else {
            sg.set_inputs(&[c, x]);
            sg.set_outputs(&[y]);
        }
    }
    mb.finish()
}

/// Defect 2: y = PAD(PAD(x, p), p) with the paddings `p` ([1, 2] int32) from the
/// client, so the client picks the size of two heap tensors at run time.
pub fn client_sized_pad() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1]);
    let p = sg.tensor("paddings", DType::I32, &[1, 2]);
    let y1 = sg.tensor("y1", DType::F32, &[1]);
    let y2 = sg.tensor("y2", DType::F32, &[1]);
    sg.op(
        b(BuiltinOp::Pad),
        &[Some(x), Some(p)],
        &[y1],
        OpOptions::None,
    );
    sg.op(
        b(BuiltinOp::Pad),
        &[Some(y1), Some(p)],
        &[y2],
        OpOptions::None,
    );
    sg.set_inputs(&[x, p]);
    sg.set_outputs(&[y2]);
    mb.finish()
}

/// Defect 7: y = x + x over a float input whose first dimension is dynamic (-1 in the
/// shape signature), so a client may resize it at run time.
pub fn dynamic_batch_add(width: usize) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, width]);
    sg.set_signature(x, vec![-1, width as i32]);
    let y = sg.tensor("y", DType::F32, &[1, width]);
    sg.set_signature(y, vec![-1, width as i32]);
    sg.op(b(BuiltinOp::Add), &[Some(x), Some(x)], &[y], NO_ACT);
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// Defect 11: node 0 reads `t`, which node 1 writes later.
pub fn read_before_write() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    let t = sg.tensor("t", DType::F32, &[1, 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    sg.op(b(BuiltinOp::Add), &[Some(t), Some(x)], &[y], NO_ACT);
    sg.op(b(BuiltinOp::Add), &[Some(x), Some(x)], &[t], NO_ACT);
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// Defect 11: a node writes its output into a constant tensor.
pub fn write_into_constant() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    let c = sg.constant_f32("c", &[1, 4], &[1.0; 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    sg.op(b(BuiltinOp::Add), &[Some(x), Some(x)], &[c], NO_ACT);
    sg.op(b(BuiltinOp::Add), &[Some(c), Some(x)], &[y], NO_ACT);
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// Defects 12 and 13: y = FLOOR_DIV(a, b) and z = FLOOR_MOD(a, b) over int64 inputs; the
/// client sends a = i64::MIN, b = -1.
pub fn int64_floor_div_mod() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let a = sg.tensor("a", DType::I64, &[1]);
    let d = sg.tensor("b", DType::I64, &[1]);
    let q = sg.tensor("q", DType::I64, &[1]);
    let r = sg.tensor("r", DType::I64, &[1]);
    sg.op(
        b(BuiltinOp::FloorDiv),
        &[Some(a), Some(d)],
        &[q],
        OpOptions::None,
    );
    sg.op(
        b(BuiltinOp::FloorMod),
        &[Some(a), Some(d)],
        &[r],
        OpOptions::None,
    );
    sg.set_inputs(&[a, d]);
    sg.set_outputs(&[q, r]);
    mb.finish()
}

/// A one-op model `y = x + c` over [1, 4] float32; distinct `c` give distinct bytes.
pub use switchyard_interpreter::example_models::add_constant as add_model;

/// One level of a sparse tensor's traversal: dense with a size, or CSR with int32
/// segment and index vectors.
#[derive(Clone, Debug)]
pub enum SparseLevel {
    Dense(i32),
    Csr(Vec<i32>, Vec<i32>),
}

/// Defect 1: a sparse constant whose `block_map` has `blocks` entries. Densify recursed
/// once per traversal level (rank + block dimensions), so a long block map overflowed
/// the stack: about 30 bytes of file per level.
pub fn deep_sparse(blocks: usize) -> Vec<u8> {
    let rank = 1usize;
    let levels = rank + blocks;
    let traversal: Vec<i32> = (0..levels as i32).collect();
    let block_map = vec![0i32; blocks];
    let dims = vec![SparseLevel::Dense(1); levels];
    sparse_model(&[1], &traversal, &block_map, &dims, &[0u8; 4])
}

/// Defect 5: a sparse constant of 1x1x1 floats whose dense levels claim 2^31-1 entries
/// each around an empty innermost level; `dense_size` was never checked against the
/// shape, so densify looped ~2^62 times over nothing.
pub fn spinning_sparse() -> Vec<u8> {
    let dims = vec![
        SparseLevel::Dense(i32::MAX),
        SparseLevel::Dense(i32::MAX),
        SparseLevel::Dense(0),
    ];
    sparse_model(&[1, 1, 1], &[0, 1, 2], &[], &dims, &[0u8; 4])
}

fn slot(i: u16) -> flatbuffers::VOffsetT {
    4 + 2 * i
}

/// A model whose only subgraph passes its float input `x` (shape `shape`) straight to
/// its output and also holds a sparse float constant of the same shape with the given
/// sparsity parameters and stored `values`. Densifying happens when the file is loaded,
/// so nothing needs to run it.
pub fn sparse_model(
    shape: &[i32],
    traversal: &[i32],
    block_map: &[i32],
    dims: &[SparseLevel],
    values: &[u8],
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(1024 + 16 * dims.len());
    let mut dim_tables = Vec::with_capacity(dims.len());
    for d in dims {
        let (segments, indices) = match d {
            SparseLevel::Csr(s, i) => {
                let vec_table = |fbb: &mut FlatBufferBuilder<'_>, v: &[i32]| {
                    let values = fbb.create_vector(v);
                    let start = fbb.start_table();
                    fbb.push_slot_always(slot(0), values);
                    fbb.end_table(start)
                };
                (Some(vec_table(&mut fbb, s)), Some(vec_table(&mut fbb, i)))
            }
            SparseLevel::Dense(_) => (None, None),
        };
        let start = fbb.start_table();
        match d {
            SparseLevel::Dense(size) => {
                fbb.push_slot::<i8>(slot(0), 0, 0);
                fbb.push_slot_always::<i32>(slot(1), *size);
            }
            SparseLevel::Csr(..) => {
                fbb.push_slot_always::<i8>(slot(0), 1);
                if let (Some(s), Some(i)) = (segments, indices) {
                    fbb.push_slot_always::<u8>(slot(2), 1);
                    fbb.push_slot_always(slot(3), s);
                    fbb.push_slot_always::<u8>(slot(4), 1);
                    fbb.push_slot_always(slot(5), i);
                }
            }
        }
        dim_tables.push(fbb.end_table(start));
    }
    let dim_vec = fbb.create_vector(&dim_tables);
    let traversal_v = fbb.create_vector(traversal);
    let block_map_v = fbb.create_vector(block_map);
    let sparsity = {
        let start = fbb.start_table();
        fbb.push_slot_always(slot(0), traversal_v);
        fbb.push_slot_always(slot(1), block_map_v);
        fbb.push_slot_always(slot(2), dim_vec);
        fbb.end_table(start)
    };
    let tensor =
        |fbb: &mut FlatBufferBuilder<'_>,
         name: &str,
         buffer: u32,
         sparsity: Option<WIPOffset<flatbuffers::TableFinishedWIPOffset>>| {
            let shape_v = fbb.create_vector(shape);
            let name_v = fbb.create_string(name);
            let start = fbb.start_table();
            fbb.push_slot_always(slot(0), shape_v);
            fbb.push_slot::<i8>(slot(1), 0, 0); // float32
            fbb.push_slot::<u32>(slot(2), buffer, 0);
            fbb.push_slot_always(slot(3), name_v);
            if let Some(s) = sparsity {
                fbb.push_slot_always(slot(6), s);
            }
            fbb.end_table(start)
        };
    let w = tensor(&mut fbb, "w", 1, Some(sparsity));
    let x = tensor(&mut fbb, "x", 0, None);
    let tensors = fbb.create_vector(&[w, x]);
    let io = fbb.create_vector(&[1i32]);
    let ops = fbb.create_vector::<WIPOffset<flatbuffers::TableFinishedWIPOffset>>(&[]);
    let sg_name = fbb.create_string("main");
    let subgraph = {
        let start = fbb.start_table();
        fbb.push_slot_always(slot(0), tensors);
        fbb.push_slot_always(slot(1), io);
        fbb.push_slot_always(slot(2), io);
        fbb.push_slot_always(slot(3), ops);
        fbb.push_slot_always(slot(4), sg_name);
        fbb.end_table(start)
    };
    let data = fbb.create_vector(values);
    let empty = {
        let start = fbb.start_table();
        fbb.end_table(start)
    };
    let full = {
        let start = fbb.start_table();
        fbb.push_slot_always(slot(0), data);
        fbb.end_table(start)
    };
    let buffers = fbb.create_vector(&[empty, full]);
    let subgraphs = fbb.create_vector(&[subgraph]);
    let opcodes = fbb.create_vector::<WIPOffset<flatbuffers::TableFinishedWIPOffset>>(&[]);
    let description = fbb.create_string("hostile sparse tensor");
    let root = {
        let start = fbb.start_table();
        fbb.push_slot::<u32>(slot(0), 3, 0);
        fbb.push_slot_always(slot(1), opcodes);
        fbb.push_slot_always(slot(2), subgraphs);
        fbb.push_slot_always(slot(3), description);
        fbb.push_slot_always(slot(4), buffers);
        fbb.end_table(start)
    };
    fbb.finish(root, Some("TFL3"));
    fbb.finished_data().to_vec()
}
