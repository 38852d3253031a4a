//! Single-op models for every operator × dtype combination the project cares about
//! (issue 12, point 3): the cases the LiteRT probe (`litert_probe` binary) asks LiteRT's
//! built-in resolver about, and that the coverage tests run in both kernel registries.
//!
//! A case is one small model of one node, built with the interpreter's own writer, plus
//! deterministic inputs. The dtype key names the node's kernel signature the way
//! `switchyard inspect --json` does: the activation dtype (`float32`, `int8`, ...),
//! `hybrid_int8` for float activations with int8 constant weights, and `a->b` for the
//! conversion ops. Quantization parameters are the ones LiteRT's kernels require where
//! they are fixed (LOGISTIC, TANH, SOFTMAX, ... outputs), otherwise ordinary values.

use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::ops::{ConvOptions, LstmOptions, MirrorPadMode, PoolOptions};
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, OpKind, OpOptions, Padding, Quant, Tensor,
};

use crate::random_tensor;

/// One single-op model and its inputs.
pub struct Case {
    pub op: BuiltinOp,
    /// The dtype key (see the module doc).
    pub dtype: String,
    /// What else distinguishes this case (e.g. "per-channel"), empty when nothing.
    pub variant: String,
    pub model: Vec<u8>,
    pub inputs: Vec<Tensor>,
}

/// The activation dtypes probed for every op; combinations an op cannot express are
/// simply not built.
pub const KEYS: [&str; 7] = [
    "float32", "int8", "uint8", "int16", "int32", "int64", "bool",
];

fn dtype_of(key: &str) -> DType {
    match key {
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "bool" => DType::Bool,
        _ => DType::F32,
    }
}

fn in_quant(dt: DType) -> Option<Quant> {
    match dt {
        DType::I8 => Some(Quant::per_tensor(0.05, 3)),
        DType::U8 => Some(Quant::per_tensor(0.05, 131)),
        DType::I16 => Some(Quant::per_tensor(1.0 / 2048.0, 0)),
        _ => None,
    }
}

fn out_quant(dt: DType) -> Option<Quant> {
    match dt {
        DType::I8 => Some(Quant::per_tensor(0.06, -2)),
        DType::U8 => Some(Quant::per_tensor(0.06, 126)),
        DType::I16 => Some(Quant::per_tensor(1.0 / 1024.0, 0)),
        _ => None,
    }
}

/// Output quantization LiteRT's kernels insist on for `op`, when it is fixed.
fn fixed_out_quant(op: BuiltinOp, dt: DType) -> Option<Quant> {
    use BuiltinOp as B;
    let q = Quant::per_tensor;
    Some(match (op, dt) {
        (B::Logistic | B::Softmax, DType::I8) => q(1.0 / 256.0, -128),
        (B::Logistic | B::Softmax, DType::U8) => q(1.0 / 256.0, 0),
        (B::Logistic | B::Softmax | B::Tanh, DType::I16) => q(1.0 / 32768.0, 0),
        (B::Tanh, DType::I8) => q(1.0 / 128.0, 0),
        (B::Tanh, DType::U8) => q(1.0 / 128.0, 128),
        (B::LogSoftmax, DType::I8) => q(16.0 / 256.0, 127),
        (B::LogSoftmax, DType::U8) => q(16.0 / 256.0, 255),
        (B::L2Normalization, DType::I8) => q(1.0 / 128.0, 0),
        (B::L2Normalization, DType::U8) => q(1.0 / 128.0, 128),
        _ => return None,
    })
}

/// Input value range per dtype: inside the domain of LOG/SQRT/RSQRT/POW when `positive`.
fn range(dt: DType, positive: bool) -> (f32, f32) {
    match dt {
        DType::F32 | DType::F16 if positive => (0.1, 4.0),
        DType::F32 | DType::F16 => (-4.0, 4.0),
        // Small enough that POW stays inside int32: LiteRT's overflow is not defined.
        DType::I32 | DType::I64 if positive => (1.0, 6.0),
        DType::I32 | DType::I64 => (-20.0, 20.0),
        DType::I8 if positive => (10.0, 127.0),
        DType::U8 if positive => (140.0, 255.0),
        DType::I16 if positive => (0.0, 32767.0),
        _ => (-32768.0, 32767.0),
    }
}

/// A model under construction with its graph inputs' values.
struct G {
    mb: ModelBuilder,
    inputs: Vec<usize>,
    values: Vec<Tensor>,
    seed: u64,
}

impl G {
    fn new(seed: u64) -> G {
        G {
            mb: ModelBuilder::new(),
            inputs: Vec::new(),
            values: Vec::new(),
            seed,
        }
    }

    fn tensor(&mut self, name: &str, dt: DType, shape: &[usize], q: Option<Quant>) -> usize {
        let sg = self.mb.main();
        let t = sg.tensor(name, dt, shape);
        if let Some(q) = q {
            sg.set_quant(t, q);
        }
        t
    }

    /// A graph input with random values in `range(dt, positive)`.
    fn input(&mut self, name: &str, dt: DType, shape: &[usize], positive: bool) -> usize {
        let t = self.tensor(name, dt, shape, in_quant(dt));
        let (lo, hi) = range(dt, positive);
        self.seed += 1;
        self.values
            .push(random_tensor(dt, shape, self.seed, lo, hi));
        self.inputs.push(t);
        t
    }

    fn constant(&mut self, name: &str, value: &Tensor, q: Option<Quant>) -> usize {
        let sg = self.mb.main();
        let t = sg.constant(
            name,
            value.dtype,
            &value.shape,
            value.data.as_slice().to_vec(),
        );
        if let Some(q) = q {
            sg.set_quant(t, q);
        }
        t
    }

    fn const_i32(&mut self, name: &str, shape: &[usize], v: &[i32]) -> usize {
        self.mb.main().constant_i32(name, shape, v)
    }

    fn finish(
        mut self,
        op: BuiltinOp,
        ins: &[Option<usize>],
        outs: &[usize],
        o: OpOptions,
    ) -> Built {
        // LiteRT registers BROADCAST_TO from version 2 on only.
        let version = if op == BuiltinOp::BroadcastTo { 2 } else { 1 };
        let sg = self.mb.main();
        sg.op_versioned(OpKind::Builtin(op), version, ins, outs, o);
        sg.set_inputs(&self.inputs);
        sg.set_outputs(outs);
        Built {
            model: self.mb.finish(),
            inputs: self.values,
        }
    }
}

struct Built {
    model: Vec<u8>,
    inputs: Vec<Tensor>,
}

const X: [usize; 4] = [1, 4, 4, 8];

fn unary(op: BuiltinOp, dt: DType, options: OpOptions) -> Built {
    use BuiltinOp as B;
    let positive = matches!(op, B::Log | B::Sqrt | B::Rsqrt);
    let mut g = G::new(op.code() as u64 * 100);
    let x = g.input("x", dt, &X, positive);
    let q = fixed_out_quant(op, dt).or_else(|| out_quant(dt));
    let out_dt = if op == B::LogicalNot { DType::Bool } else { dt };
    let y = g.tensor("y", out_dt, &X, q);
    g.finish(op, &[Some(x)], &[y], options)
}

fn binary(op: BuiltinOp, dt: DType, options: OpOptions) -> Built {
    use BuiltinOp as B;
    let compare = matches!(
        op,
        B::Equal | B::NotEqual | B::Less | B::LessEqual | B::Greater | B::GreaterEqual
    );
    // int16 ADD/SUB (power-of-two scales, LiteRT's default) needs an input scale equal
    // to the output's.
    let same_q = matches!(op, B::Maximum | B::Minimum)
        || (dt == DType::I16 && matches!(op, B::Add | B::Sub));
    let positive = matches!(op, B::Pow | B::FloorDiv | B::FloorMod | B::Div);
    let mut g = G::new(op.code() as u64 * 100);
    let a = g.input("a", dt, &X, false);
    let b = g.input("b", dt, &X, positive);
    let (out_dt, q) = if compare {
        (DType::Bool, None)
    } else if same_q {
        (dt, in_quant(dt))
    } else {
        (dt, out_quant(dt))
    };
    let y = g.tensor("y", out_dt, &X, q);
    g.finish(op, &[Some(a), Some(b)], &[y], options)
}

/// Ops that move or select values without arithmetic keep the input's quantization.
fn movement(op: BuiltinOp, dt: DType) -> Option<Built> {
    use BuiltinOp as B;
    let mut g = G::new(op.code() as u64 * 100);
    let q = in_quant(dt);
    let built = match op {
        B::Reshape => {
            let x = g.input("x", dt, &X, false);
            let s = g.const_i32("shape", &[2], &[4, 32]);
            let y = g.tensor("y", dt, &[4, 32], q);
            g.finish(
                op,
                &[Some(x), Some(s)],
                &[y],
                OpOptions::Reshape { new_shape: None },
            )
        }
        B::Squeeze => {
            let x = g.input("x", dt, &[1, 4, 1, 8], false);
            let y = g.tensor("y", dt, &[4, 8], q);
            g.finish(op, &[Some(x)], &[y], OpOptions::Squeeze { dims: vec![] })
        }
        B::ExpandDims => {
            let x = g.input("x", dt, &X, false);
            let a = g.const_i32("axis", &[], &[2]);
            let y = g.tensor("y", dt, &[1, 4, 1, 4, 8], q);
            g.finish(op, &[Some(x), Some(a)], &[y], OpOptions::None)
        }
        B::Transpose => {
            let x = g.input("x", dt, &X, false);
            let p = g.const_i32("perm", &[4], &[0, 3, 1, 2]);
            let y = g.tensor("y", dt, &[1, 8, 4, 4], q);
            g.finish(op, &[Some(x), Some(p)], &[y], OpOptions::None)
        }
        B::Slice => {
            let x = g.input("x", dt, &X, false);
            let b = g.const_i32("begin", &[4], &[0, 1, 0, 2]);
            let s = g.const_i32("size", &[4], &[1, 2, -1, 4]);
            let y = g.tensor("y", dt, &[1, 2, 4, 4], q);
            g.finish(op, &[Some(x), Some(b), Some(s)], &[y], OpOptions::None)
        }
        B::StridedSlice => {
            let x = g.input("x", dt, &X, false);
            let b = g.const_i32("begin", &[4], &[0, 1, 0, 0]);
            let e = g.const_i32("end", &[4], &[1, 4, 4, 8]);
            let s = g.const_i32("strides", &[4], &[1, 1, 2, 2]);
            let y = g.tensor("y", dt, &[1, 3, 2, 4], q);
            g.finish(
                op,
                &[Some(x), Some(b), Some(e), Some(s)],
                &[y],
                OpOptions::StridedSlice(Default::default()),
            )
        }
        B::Tile => {
            let x = g.input("x", dt, &[1, 2, 3, 4], false);
            let m = g.const_i32("multiples", &[4], &[1, 2, 1, 3]);
            let y = g.tensor("y", dt, &[1, 4, 3, 12], q);
            g.finish(op, &[Some(x), Some(m)], &[y], OpOptions::None)
        }
        B::Pad | B::PadV2 | B::MirrorPad => {
            let x = g.input("x", dt, &X, false);
            let p = g.const_i32("paddings", &[4, 2], &[0, 0, 1, 2, 2, 1, 0, 0]);
            let y = g.tensor("y", dt, &[1, 7, 7, 8], q.clone());
            let mut ins = vec![Some(x), Some(p)];
            if op == B::PadV2 {
                let zero = Tensor::from_bytes(dt, vec![1], &vec![0u8; dt.size()]).ok()?;
                ins.push(Some(g.constant("value", &zero, q)));
            }
            let o = if op == B::MirrorPad {
                OpOptions::MirrorPad {
                    mode: MirrorPadMode::Reflect,
                }
            } else {
                OpOptions::None
            };
            g.finish(op, &ins, &[y], o)
        }
        B::Concatenation => {
            let a = g.input("a", dt, &X, false);
            let b = g.input("b", dt, &X, false);
            let y = g.tensor("y", dt, &[1, 4, 4, 16], q);
            g.finish(
                op,
                &[Some(a), Some(b)],
                &[y],
                OpOptions::Concatenation {
                    axis: 3,
                    activation: Activation::None,
                },
            )
        }
        B::Pack => {
            let a = g.input("a", dt, &X, false);
            let b = g.input("b", dt, &X, false);
            let y = g.tensor("y", dt, &[1, 4, 2, 4, 8], q);
            g.finish(
                op,
                &[Some(a), Some(b)],
                &[y],
                OpOptions::Pack {
                    values_count: 2,
                    axis: 2,
                },
            )
        }
        B::Unpack => {
            let x = g.input("x", dt, &X, false);
            let outs: Vec<usize> = (0..4)
                .map(|i| g.tensor(&format!("y{i}"), dt, &[1, 4, 8], q.clone()))
                .collect();
            g.finish(op, &[Some(x)], &outs, OpOptions::Unpack { num: 4, axis: 1 })
        }
        B::Split => {
            let a = g.const_i32("axis", &[], &[3]);
            let x = g.input("x", dt, &X, false);
            let outs: Vec<usize> = (0..2)
                .map(|i| g.tensor(&format!("y{i}"), dt, &[1, 4, 4, 4], q.clone()))
                .collect();
            g.finish(
                op,
                &[Some(a), Some(x)],
                &outs,
                OpOptions::Split { num_splits: 2 },
            )
        }
        B::SplitV => {
            let x = g.input("x", dt, &X, false);
            let s = g.const_i32("sizes", &[3], &[2, 5, 1]);
            let a = g.const_i32("axis", &[], &[3]);
            let outs: Vec<usize> = [2usize, 5, 1]
                .iter()
                .enumerate()
                .map(|(i, &c)| g.tensor(&format!("y{i}"), dt, &[1, 4, 4, c], q.clone()))
                .collect();
            g.finish(
                op,
                &[Some(x), Some(s), Some(a)],
                &outs,
                OpOptions::Split { num_splits: 3 },
            )
        }
        B::Gather => {
            let x = g.input("x", dt, &X, false);
            let i = g.const_i32("indices", &[3], &[2, 0, 3]);
            let y = g.tensor("y", dt, &[1, 3, 4, 8], q);
            g.finish(
                op,
                &[Some(x), Some(i)],
                &[y],
                OpOptions::Gather {
                    axis: 1,
                    batch_dims: 0,
                },
            )
        }
        B::GatherNd => {
            let x = g.input("x", dt, &[4, 4, 8], false);
            let i = g.const_i32("indices", &[3, 2], &[0, 1, 3, 2, 1, 0]);
            let y = g.tensor("y", dt, &[3, 8], q);
            g.finish(op, &[Some(x), Some(i)], &[y], OpOptions::None)
        }
        B::SpaceToDepth => {
            let x = g.input("x", dt, &X, false);
            let y = g.tensor("y", dt, &[1, 2, 2, 32], q);
            g.finish(
                op,
                &[Some(x)],
                &[y],
                OpOptions::DepthToSpace { block_size: 2 },
            )
        }
        B::DepthToSpace => {
            let x = g.input("x", dt, &X, false);
            let y = g.tensor("y", dt, &[1, 8, 8, 2], q);
            g.finish(
                op,
                &[Some(x)],
                &[y],
                OpOptions::DepthToSpace { block_size: 2 },
            )
        }
        B::BroadcastTo => {
            let x = g.input("x", dt, &[1, 1, 4, 8], false);
            let s = g.const_i32("shape", &[4], &[1, 3, 4, 8]);
            let y = g.tensor("y", dt, &[1, 3, 4, 8], q);
            g.finish(op, &[Some(x), Some(s)], &[y], OpOptions::None)
        }
        B::ReverseV2 => {
            let x = g.input("x", dt, &X, false);
            let a = g.const_i32("axis", &[1], &[2]);
            let y = g.tensor("y", dt, &X, q);
            g.finish(op, &[Some(x), Some(a)], &[y], OpOptions::None)
        }
        B::MaxPool2d | B::AveragePool2d | B::L2Pool2d => {
            let x = g.input("x", dt, &X, false);
            let oq = if op == B::AveragePool2d || op == B::MaxPool2d {
                q
            } else {
                out_quant(dt)
            };
            let y = g.tensor("y", dt, &[1, 2, 2, 8], oq);
            g.finish(
                op,
                &[Some(x)],
                &[y],
                OpOptions::Pool(PoolOptions {
                    padding: Padding::Valid,
                    stride_w: 2,
                    stride_h: 2,
                    filter_w: 2,
                    filter_h: 2,
                    activation: Activation::None,
                }),
            )
        }
        B::ResizeBilinear | B::ResizeNearestNeighbor => {
            let x = g.input("x", dt, &X, false);
            let s = g.const_i32("size", &[2], &[7, 6]);
            let y = g.tensor("y", dt, &[1, 7, 6, 8], q);
            g.finish(
                op,
                &[Some(x), Some(s)],
                &[y],
                OpOptions::Resize {
                    align_corners: false,
                    half_pixel_centers: true,
                },
            )
        }
        B::SelectV2 | B::Select => {
            let a = g.input("a", dt, &X, false);
            let b = g.input("b", dt, &X, false);
            let c = if dt == DType::Bool {
                a
            } else {
                g.input("cond", DType::Bool, &X, false)
            };
            let y = g.tensor("y", dt, &X, q);
            g.finish(op, &[Some(c), Some(a), Some(b)], &[y], OpOptions::None)
        }
        _ => return None,
    };
    Some(built)
}

fn reduce(op: BuiltinOp, dt: DType) -> Built {
    use BuiltinOp as B;
    let mut g = G::new(op.code() as u64 * 100);
    let x = g.input("x", dt, &X, false);
    let a = g.const_i32("axis", &[2], &[1, 2]);
    let q = if matches!(op, B::ReduceMax | B::ReduceMin) {
        in_quant(dt)
    } else {
        out_quant(dt)
    };
    let y = g.tensor("y", dt, &[1, 1, 1, 8], q);
    g.finish(
        op,
        &[Some(x), Some(a)],
        &[y],
        OpOptions::Reducer { keep_dims: true },
    )
}

fn arg_min_max(op: BuiltinOp, dt: DType) -> Built {
    let mut g = G::new(op.code() as u64 * 100);
    let x = g.input("x", dt, &X, false);
    let a = g.const_i32("axis", &[1], &[3]);
    let y = g.tensor("y", DType::I32, &[1, 4, 4], None);
    g.finish(
        op,
        &[Some(x), Some(a)],
        &[y],
        OpOptions::ArgMinMax {
            output_type: DType::I32,
        },
    )
}

fn topk(dt: DType) -> Built {
    let mut g = G::new(4800);
    let x = g.input("x", dt, &[4, 16], false);
    let k = g.const_i32("k", &[], &[3]);
    let v = g.tensor("values", dt, &[4, 3], in_quant(dt));
    let i = g.tensor("indices", DType::I32, &[4, 3], None);
    g.finish(
        BuiltinOp::TopkV2,
        &[Some(x), Some(k)],
        &[v, i],
        OpOptions::None,
    )
}

/// Converts between the key's dtype and each other dtype.
fn conversion(op: BuiltinOp, from: DType, to: DType) -> Option<Built> {
    use BuiltinOp as B;
    let mut g = G::new(op.code() as u64 * 100 + from.schema_code() as u64);
    let x = g.input("x", from, &X, false);
    let oq = match op {
        B::Cast => None,
        _ => out_quant(to),
    };
    if op == B::Cast {
        let sg = g.mb.main();
        sg.spec_mut(x).quant = None;
    }
    let y = g.tensor("y", to, &X, oq);
    let o = if op == B::Cast {
        OpOptions::Cast {
            in_type: from,
            out_type: to,
        }
    } else {
        OpOptions::None
    };
    Some(g.finish(op, &[Some(x)], &[y], o))
}

/// Deterministic weights of `dt` and `shape`: int8 in [-127, 127], floats in [-1, 1].
fn weights(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    match dt {
        DType::I8 => random_tensor(dt, shape, seed, -127.0, 127.0),
        DType::U8 => random_tensor(dt, shape, seed, 0.0, 255.0),
        _ => random_tensor(DType::F32, shape, seed, -1.0, 1.0),
    }
}

fn bias(act: DType, n: usize, seed: u64) -> (Tensor, DType) {
    match act {
        DType::I8 | DType::U8 => (
            random_tensor(DType::I32, &[n], seed, -300.0, 300.0),
            DType::I32,
        ),
        DType::I16 => (
            random_tensor(DType::I64, &[n], seed, -300.0, 300.0),
            DType::I64,
        ),
        _ => (random_tensor(DType::F32, &[n], seed, -1.0, 1.0), DType::F32),
    }
}

/// The weighted ops: `act` is the activation dtype, `hybrid` puts int8 weights under float
/// activations; quantized weights are per-channel where LiteRT allows it (per-tensor for
/// uint8 and for FULLY_CONNECTED).
fn weighted(op: BuiltinOp, key: &str) -> Option<Built> {
    use BuiltinOp as B;
    let hybrid = key == "hybrid_int8";
    let act = if hybrid { DType::F32 } else { dtype_of(key) };
    if !matches!(act, DType::F32 | DType::I8 | DType::U8 | DType::I16) {
        return None;
    }
    let wdt = match act {
        DType::F32 if hybrid => DType::I8,
        DType::F32 => DType::F32,
        DType::U8 => DType::U8,
        _ => DType::I8,
    };
    let (cin, cout) = (8usize, 6usize);
    let mut g = G::new(op.code() as u64 * 100 + u64::from(hybrid));
    let per_channel = |n: usize, axis: usize| {
        if wdt == DType::U8 {
            Quant::per_tensor(0.02, 120)
        } else {
            Quant {
                scale: (0..n).map(|i| 0.01 + 0.002 * i as f32).collect(),
                zero_point: vec![0; n],
                axis,
            }
        }
    };
    let wq = |n: usize, axis: usize| (wdt != DType::F32).then(|| per_channel(n, axis));
    let bias_q = |n: usize, wq: &Option<Quant>| -> Option<Quant> {
        let in_scale = in_quant(act)?.scale[0];
        let wq = wq.as_ref()?;
        let scales = (0..n)
            .map(|i| in_scale * wq.scale.get(i).copied().unwrap_or(wq.scale[0]))
            .collect();
        Some(Quant {
            scale: scales,
            zero_point: vec![0; n],
            axis: 0,
        })
    };
    let built = match op {
        B::Conv2d | B::DepthwiseConv2d | B::TransposeConv => {
            let x = g.input("x", act, &X, false);
            let (wshape, n, axis) = match op {
                B::DepthwiseConv2d => (vec![1, 3, 3, cin], cin, 3),
                _ => (vec![cout, 3, 3, cin], cout, 0),
            };
            let wquant = wq(n, axis);
            let w = g.constant("w", &weights(wdt, &wshape, 7), wquant.clone());
            let (bv, _) = bias(act, n, 8);
            let bq = bias_q(n, &wquant);
            let b = (!hybrid || op != B::TransposeConv).then(|| g.constant("b", &bv, bq));
            let o = OpOptions::Conv(ConvOptions {
                padding: Padding::Same,
                stride_w: 1,
                stride_h: 1,
                activation: Activation::None,
                dilation_w: 1,
                dilation_h: 1,
                depth_multiplier: 1,
            });
            let y = g.tensor("y", act, &[1, 4, 4, n], out_quant(act));
            if op == B::TransposeConv {
                let s = g.const_i32("output_shape", &[4], &[1, 4, 4, n as i32]);
                g.finish(op, &[Some(s), Some(w), Some(x), b], &[y], o)
            } else {
                g.finish(op, &[Some(x), Some(w), b], &[y], o)
            }
        }
        B::FullyConnected => {
            let x = g.input("x", act, &[2, 16], false);
            let wquant = (wdt != DType::F32).then(|| {
                if wdt == DType::U8 {
                    Quant::per_tensor(0.02, 120)
                } else {
                    Quant::per_tensor(0.015, 0)
                }
            });
            let w = g.constant("w", &weights(wdt, &[cout, 16], 7), wquant.clone());
            let (bv, _) = bias(act, cout, 8);
            let bq = bias_q(cout, &wquant);
            let b = g.constant("b", &bv, bq);
            let y = g.tensor("y", act, &[2, cout], out_quant(act));
            g.finish(
                op,
                &[Some(x), Some(w), Some(b)],
                &[y],
                OpOptions::FullyConnected {
                    activation: Activation::None,
                    keep_num_dims: false,
                    weights_format: 0,
                    asymmetric_quantize_inputs: false,
                },
            )
        }
        B::BatchMatmul => {
            let x = g.input("x", act, &[2, 3, 16], false);
            let w = if hybrid {
                g.constant(
                    "w",
                    &weights(wdt, &[16, 5], 7),
                    Some(Quant::per_tensor(0.015, 0)),
                )
            } else {
                g.input("w", act, &[2, 16, 5], false)
            };
            let y = g.tensor("y", act, &[2, 3, 5], out_quant(act));
            g.finish(
                op,
                &[Some(x), Some(w)],
                &[y],
                OpOptions::BatchMatmul {
                    adj_x: false,
                    adj_y: false,
                    asymmetric_quantize_inputs: false,
                },
            )
        }
        B::Prelu => {
            let x = g.input("x", act, &X, false);
            let alpha = weights(wdt, &[8], 9);
            let aq = (wdt != DType::F32).then(|| Quant::per_tensor(0.004, 0));
            let a = g.constant("alpha", &alpha, aq);
            let y = g.tensor("y", act, &X, out_quant(act));
            g.finish(op, &[Some(x), Some(a)], &[y], OpOptions::None)
        }
        B::UnidirectionalSequenceLstm if act == DType::F32 => lstm(&mut g, hybrid),
        B::UnidirectionalSequenceLstm if matches!(act, DType::I8 | DType::I16) => {
            let spec = IntegerLstm {
                activation: act,
                ..IntegerLstm::default()
            };
            let (model, inputs) = integer_lstm(&spec, &[op.code() as u64 * 100]);
            Built { model, inputs }
        }
        _ => return None,
    };
    Some(built)
}

/// A float or hybrid LSTM without peepholes or projection: batch 1, 5 steps, 6 inputs,
/// 4 units. (Integer LSTMs: [`integer_lstm`].)
fn lstm(g: &mut G, hybrid: bool) -> Built {
    let (steps, n_in, units) = (5usize, 6usize, 4usize);
    let x = g.input("x", DType::F32, &[1, steps, n_in], false);
    let mut ins = vec![Some(x)];
    let wq = || hybrid.then(|| Quant::per_tensor(0.01, 0));
    let wdt = if hybrid { DType::I8 } else { DType::F32 };
    for k in 0..4u64 {
        let t = g.constant(
            &format!("w_in{k}"),
            &weights(wdt, &[units, n_in], 10 + k),
            wq(),
        );
        ins.push(Some(t));
    }
    for k in 0..4u64 {
        let t = g.constant(
            &format!("w_rec{k}"),
            &weights(wdt, &[units, units], 20 + k),
            wq(),
        );
        ins.push(Some(t));
    }
    ins.extend([None, None, None]); // peepholes
    for k in 0..4u64 {
        let t = g.constant(
            &format!("bias{k}"),
            &random_tensor(DType::F32, &[units], 30 + k, -0.5, 0.5),
            None,
        );
        ins.push(Some(t));
    }
    ins.extend([None, None]); // projection
    let h = g.tensor("h_state", DType::F32, &[1, units], None);
    let c = g.tensor("c_state", DType::F32, &[1, units], None);
    {
        let sg = g.mb.main();
        sg.set_variable(h);
        sg.set_variable(c);
    }
    ins.extend([Some(h), Some(c)]);
    ins.extend([None, None, None, None]); // layer norm
    let y = g.tensor("y", DType::F32, &[1, steps, units], None);
    let o = OpOptions::Lstm(LstmOptions {
        activation: Activation::Tanh,
        cell_clip: 0.0,
        proj_clip: 0.0,
        time_major: false,
        asymmetric_quantize_inputs: false,
    });
    let taken = std::mem::replace(g, G::new(0));
    taken.finish(BuiltinOp::UnidirectionalSequenceLstm, &ins, &[y], o)
}

/// An integer UNIDIRECTIONAL_SEQUENCE_LSTM ("8x8→16": int8 activations, int16 cell
/// state; or int16 activations, "16x8") with every optional part switchable, for the
/// single-op cases and the LSTM kernel's own tests. Scales are what a calibrated model
/// has in kind: int8 weights with one scale each, int32 biases, a power-of-two cell
/// state scale, int16 peephole and layer-norm weights, and the five intermediate tensors
/// LiteRT's integer kernel reads (gate matmul scales, used under layer norm, and the
/// hidden state's scale and zero point).
#[derive(Clone, Debug)]
pub struct IntegerLstm {
    /// int8 (8x8→16) or int16 (16x8) activations.
    pub activation: DType,
    pub batch: usize,
    pub time: usize,
    pub n_input: usize,
    pub n_cell: usize,
    /// Some(n): a projection to `n` outputs, with a bias.
    pub projection: Option<usize>,
    pub cifg: bool,
    pub peephole: bool,
    pub layer_norm: bool,
    pub time_major: bool,
    pub cell_clip: f32,
    pub proj_clip: f32,
    /// log2 of the cell state's scale.
    pub cell_scale_log2: i32,
}

impl Default for IntegerLstm {
    fn default() -> IntegerLstm {
        IntegerLstm {
            activation: DType::I8,
            batch: 2,
            time: 4,
            n_input: 6,
            n_cell: 4,
            projection: None,
            cifg: false,
            peephole: false,
            layer_norm: false,
            time_major: false,
            cell_clip: 0.0,
            proj_clip: 0.0,
            cell_scale_log2: -11,
        }
    }
}

/// The model of `spec` and one input tensor per `seeds` entry (successive invokes).
pub fn integer_lstm(spec: &IntegerLstm, seeds: &[u64]) -> (Vec<u8>, Vec<Tensor>) {
    let act = spec.activation;
    let (nb, nt, ni, nc) = (spec.batch, spec.time, spec.n_input, spec.n_cell);
    let no = spec.projection.unwrap_or(nc);
    let in_shape = if spec.time_major {
        [nt, nb, ni]
    } else {
        [nb, nt, ni]
    };
    let (in_q, out_q, hidden_q) = if act == DType::I16 {
        (
            Quant::per_tensor(1.0 / 4096.0, 0),
            Quant::per_tensor(1.0 / 32768.0, 0),
            Quant::per_tensor(1.0 / 32768.0, 0),
        )
    } else {
        (
            Quant::per_tensor(0.05, 3),
            Quant::per_tensor(0.008, -2),
            // With a projection the hidden state has its own scale; without, it is the
            // output's.
            if spec.projection.is_some() {
                Quant::per_tensor(0.007, 1)
            } else {
                Quant::per_tensor(0.008, -2)
            },
        )
    };
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", act, &in_shape);
    sg.set_quant(x, in_q);
    let mut seed = 7_000 + ni as u64 * 31 + nc as u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let constant = |sg: &mut switchyard_interpreter::builder::SubgraphBuilder,
                    name: &str,
                    t: Tensor,
                    q: Quant| {
        let c = sg.constant(name, t.dtype, &t.shape, t.data.as_slice().to_vec());
        sg.set_quant(c, q);
        c
    };
    let gates = ["input", "forget", "cell", "output"];
    let mut ins: Vec<Option<usize>> = vec![Some(x)];
    for (k, gate) in gates.iter().enumerate() {
        ins.push((k > 0 || !spec.cifg).then(|| {
            let w = random_tensor(DType::I8, &[nc, ni], next(), -80.0, 80.0);
            constant(
                sg,
                &format!("w_{gate}"),
                w,
                Quant::per_tensor(0.004 + 0.001 * k as f32, 0),
            )
        }));
    }
    for (k, gate) in gates.iter().enumerate() {
        ins.push((k > 0 || !spec.cifg).then(|| {
            let w = random_tensor(DType::I8, &[nc, no], next(), -90.0, 90.0);
            constant(
                sg,
                &format!("r_{gate}"),
                w,
                Quant::per_tensor(0.005 + 0.001 * k as f32, 0),
            )
        }));
    }
    for (k, gate) in ["input", "forget", "output"].iter().enumerate() {
        ins.push((spec.peephole && (k > 0 || !spec.cifg)).then(|| {
            let w = random_tensor(DType::I16, &[nc], next(), -3000.0, 3000.0);
            constant(sg, &format!("p_{gate}"), w, Quant::per_tensor(0.0001, 0))
        }));
    }
    for (k, gate) in gates.iter().enumerate() {
        ins.push((k > 0 || !spec.cifg).then(|| {
            let b = random_tensor(DType::I32, &[nc], next(), -3000.0, 3000.0);
            constant(sg, &format!("b_{gate}"), b, Quant::per_tensor(0.0002, 0))
        }));
    }
    ins.push(spec.projection.map(|_| {
        let w = random_tensor(DType::I8, &[no, nc], next(), -100.0, 100.0);
        constant(sg, "proj_w", w, Quant::per_tensor(0.006, 0))
    }));
    ins.push(spec.projection.map(|_| {
        let b = random_tensor(DType::I32, &[no], next(), -2000.0, 2000.0);
        constant(sg, "proj_b", b, Quant::per_tensor(0.00004, 0))
    }));
    let h = sg.tensor("h_state", act, &[nb, no]);
    sg.set_quant(h, out_q.clone());
    sg.set_variable(h);
    let c = sg.tensor("c_state", DType::I16, &[nb, nc]);
    sg.set_quant(c, Quant::per_tensor(2f32.powi(spec.cell_scale_log2), 0));
    sg.set_variable(c);
    ins.extend([Some(h), Some(c)]);
    for (k, gate) in gates.iter().enumerate() {
        ins.push((spec.layer_norm && (k > 0 || !spec.cifg)).then(|| {
            let w = random_tensor(DType::I16, &[nc], next(), 12000.0, 20000.0);
            constant(
                sg,
                &format!("ln_{gate}"),
                w,
                Quant::per_tensor(1.0 / 16384.0, 0),
            )
        }));
    }
    let mut intermediates = Vec::new();
    for gate in gates {
        let t = sg.tensor(&format!("{gate}_intermediate"), DType::I16, &[0]);
        sg.set_quant(t, Quant::per_tensor(0.0005, 0));
        intermediates.push(t);
    }
    let hidden = sg.tensor("hidden_intermediate", act, &[0]);
    sg.set_quant(hidden, hidden_q);
    intermediates.push(hidden);
    let y = sg.tensor("y", act, &[in_shape[0], in_shape[1], no]);
    sg.set_quant(y, out_q);
    sg.op(
        OpKind::Builtin(BuiltinOp::UnidirectionalSequenceLstm),
        &ins,
        &[y],
        OpOptions::Lstm(LstmOptions {
            activation: Activation::Tanh,
            cell_clip: spec.cell_clip,
            proj_clip: spec.proj_clip,
            time_major: spec.time_major,
            asymmetric_quantize_inputs: false,
        }),
    );
    sg.set_intermediates(&intermediates);
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    let (lo, hi) = if act == DType::I16 {
        (-8000.0, 8000.0)
    } else {
        (-128.0, 127.0)
    };
    let inputs = seeds
        .iter()
        .map(|&s| random_tensor(act, &in_shape, s, lo, hi))
        .collect();
    (mb.finish(), inputs)
}

/// Every op the probe and the coverage tests consider: the benchmark set's ops and the
/// list in issue 12, point 3.
pub const OPS: &[BuiltinOp] = {
    use BuiltinOp as B;
    &[
        B::Abs,
        B::Neg,
        B::Exp,
        B::Log,
        B::Sqrt,
        B::Rsqrt,
        B::Square,
        B::Sin,
        B::Cos,
        B::Ceil,
        B::Floor,
        B::Round,
        B::Logistic,
        B::Tanh,
        B::Relu,
        B::Relu6,
        B::ReluN1To1,
        B::Elu,
        B::HardSwish,
        B::Gelu,
        B::LeakyRelu,
        B::L2Normalization,
        B::LocalResponseNormalization,
        B::Softmax,
        B::LogSoftmax,
        B::LogicalNot,
        B::ZerosLike,
        B::Add,
        B::Sub,
        B::Mul,
        B::Div,
        B::Maximum,
        B::Minimum,
        B::SquaredDifference,
        B::Pow,
        B::FloorDiv,
        B::FloorMod,
        B::Equal,
        B::NotEqual,
        B::Less,
        B::LessEqual,
        B::Greater,
        B::GreaterEqual,
        B::LogicalAnd,
        B::LogicalOr,
        B::Reshape,
        B::Squeeze,
        B::ExpandDims,
        B::Transpose,
        B::Slice,
        B::StridedSlice,
        B::Tile,
        B::Pad,
        B::PadV2,
        B::MirrorPad,
        B::Concatenation,
        B::Pack,
        B::Unpack,
        B::Split,
        B::SplitV,
        B::Gather,
        B::GatherNd,
        B::SpaceToDepth,
        B::DepthToSpace,
        B::BroadcastTo,
        B::ReverseV2,
        B::MaxPool2d,
        B::AveragePool2d,
        B::L2Pool2d,
        B::ResizeBilinear,
        B::ResizeNearestNeighbor,
        B::SelectV2,
        B::Select,
        B::Mean,
        B::Sum,
        B::ReduceMax,
        B::ReduceMin,
        B::ReduceProd,
        B::ReduceAny,
        B::ArgMax,
        B::ArgMin,
        B::TopkV2,
        B::Cast,
        B::Quantize,
        B::Dequantize,
        B::Conv2d,
        B::DepthwiseConv2d,
        B::TransposeConv,
        B::FullyConnected,
        B::BatchMatmul,
        B::Prelu,
        B::UnidirectionalSequenceLstm,
    ]
};

/// All cases of `op`.
pub fn cases(op: BuiltinOp) -> Vec<Case> {
    use BuiltinOp as B;
    let mut out = Vec::new();
    let mut push = |dtype: String, variant: &str, b: Option<Built>| {
        if let Some(b) = b {
            out.push(Case {
                op,
                dtype,
                variant: variant.to_string(),
                model: b.model,
                inputs: b.inputs,
            });
        }
    };
    let unary_options = |op: BuiltinOp| match op {
        B::Softmax => OpOptions::Softmax { beta: 1.0 },
        B::LeakyRelu => OpOptions::LeakyRelu { alpha: 0.2 },
        B::Gelu => OpOptions::Gelu { approximate: false },
        B::L2Normalization => OpOptions::Activation(Activation::None),
        B::LocalResponseNormalization => OpOptions::LocalResponseNorm {
            radius: 2,
            bias: 1.0,
            alpha: 0.5,
            beta: 0.75,
        },
        _ => OpOptions::None,
    };
    let binary_options = |op: BuiltinOp| match op {
        B::Add | B::Sub | B::Mul | B::Div => OpOptions::Activation(Activation::None),
        _ => OpOptions::None,
    };
    for key in KEYS {
        let dt = dtype_of(key);
        let b = match op {
            B::Abs
            | B::Neg
            | B::Exp
            | B::Log
            | B::Sqrt
            | B::Rsqrt
            | B::Square
            | B::Sin
            | B::Cos
            | B::Ceil
            | B::Floor
            | B::Round
            | B::Logistic
            | B::Tanh
            | B::Relu
            | B::Relu6
            | B::ReluN1To1
            | B::Elu
            | B::HardSwish
            | B::Gelu
            | B::LeakyRelu
            | B::L2Normalization
            | B::LocalResponseNormalization
            | B::Softmax
            | B::LogSoftmax
            | B::LogicalNot
            | B::ZerosLike => Some(unary(op, dt, unary_options(op))),
            B::Add
            | B::Sub
            | B::Mul
            | B::Div
            | B::Maximum
            | B::Minimum
            | B::SquaredDifference
            | B::Pow
            | B::FloorDiv
            | B::FloorMod
            | B::Equal
            | B::NotEqual
            | B::Less
            | B::LessEqual
            | B::Greater
            | B::GreaterEqual
            | B::LogicalAnd
            | B::LogicalOr => Some(binary(op, dt, binary_options(op))),
            B::Mean | B::Sum | B::ReduceMax | B::ReduceMin | B::ReduceProd | B::ReduceAny => {
                Some(reduce(op, dt))
            }
            B::ArgMax | B::ArgMin => Some(arg_min_max(op, dt)),
            B::TopkV2 => Some(topk(dt)),
            B::Cast => {
                for to in KEYS.iter().filter(|&&k| k != key) {
                    let to_dt = dtype_of(to);
                    push(format!("{key}->{to}"), "", conversion(op, dt, to_dt));
                }
                None
            }
            B::Quantize => {
                let targets: &[&str] = match key {
                    "float32" | "int8" | "uint8" | "int16" => &["int8", "uint8", "int16"],
                    _ => &[],
                };
                for to in targets {
                    push(format!("{key}->{to}"), "", conversion(op, dt, dtype_of(to)));
                }
                None
            }
            B::Dequantize => {
                if matches!(key, "int8" | "uint8" | "int16") {
                    push(
                        format!("{key}->float32"),
                        "",
                        conversion(op, dt, DType::F32),
                    );
                }
                None
            }
            B::Conv2d
            | B::DepthwiseConv2d
            | B::TransposeConv
            | B::FullyConnected
            | B::BatchMatmul
            | B::Prelu
            | B::UnidirectionalSequenceLstm => weighted(op, key),
            _ => movement(op, dt),
        };
        push(key.to_string(), "", b);
    }
    if matches!(
        op,
        B::Conv2d
            | B::DepthwiseConv2d
            | B::TransposeConv
            | B::FullyConnected
            | B::BatchMatmul
            | B::UnidirectionalSequenceLstm
    ) {
        push("hybrid_int8".to_string(), "", weighted(op, "hybrid_int8"));
    }
    if op == B::Dequantize {
        let mut g = G::new(600);
        let w = g.constant("w", &random_tensor(DType::F16, &X, 601, -2.0, 2.0), None);
        let x = g.input("x", DType::F32, &X, false);
        let d = g.tensor("d", DType::F32, &X, None);
        let y = g.tensor("y", DType::F32, &X, None);
        let sg = g.mb.main();
        sg.op(
            OpKind::Builtin(B::Dequantize),
            &[Some(w)],
            &[d],
            OpOptions::None,
        );
        let built = g.finish(
            B::Add,
            &[Some(x), Some(d)],
            &[y],
            OpOptions::Activation(Activation::None),
        );
        push(
            "float16->float32".to_string(),
            "constant weights, then ADD",
            Some(built),
        );
    }
    out
}

/// Every case of every op in [`OPS`].
pub fn all_cases() -> Vec<Case> {
    OPS.iter().flat_map(|&op| cases(op)).collect()
}

/// Writes `cases` into `dir` (`case_<i>.tflite`, `case_<i>_in<j>.npy`, `manifest.json`)
/// and runs `scripts/probe_litert.py` over them, which writes its report to `out` and,
/// with `save_outputs`, LiteRT's outputs as `case_<i>_out<j>.npy`.
pub fn probe_litert(
    cases: &[Case],
    dir: &std::path::Path,
    out: &std::path::Path,
    save_outputs: bool,
) -> Result<(), String> {
    use switchyard_interpreter::npy;
    let mut manifest = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let model = format!("case_{i}.tflite");
        std::fs::write(dir.join(&model), &case.model).map_err(|e| e.to_string())?;
        let mut inputs = Vec::new();
        for (j, t) in case.inputs.iter().enumerate() {
            let name = format!("case_{i}_in{j}.npy");
            npy::write(dir.join(&name), t.dtype, &t.shape, t.data.as_slice())
                .map_err(|e| e.to_string())?;
            inputs.push(format!("\"{name}\""));
        }
        manifest.push(format!(
            "{{\"op\": \"{}\", \"dtype\": \"{}\", \"variant\": \"{}\", \"model\": \"{model}\", \"inputs\": [{}]}}",
            case.op.name(),
            case.dtype,
            case.variant,
            inputs.join(", ")
        ));
    }
    std::fs::write(
        dir.join("manifest.json"),
        format!("[\n{}\n]\n", manifest.join(",\n")),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(crate::python());
    cmd.arg(crate::repo_root().join("scripts/probe_litert.py"))
        .arg(dir)
        .arg(out);
    if save_outputs {
        cmd.arg("--save-outputs");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start Python: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("scripts/probe_litert.py failed: {status}"))
    }
}
