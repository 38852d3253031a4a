//! Loads the example plugin (plugins/example-npu, built by `cargo build --workspace`)
//! and runs model partitions through it against the CPU reference.

use std::path::PathBuf;
use std::sync::Arc;

use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Delegate, Interpreter, InterpreterOptions, Model, NodeSupportCtx,
    OpKind, OpOptions, Partition, PartitionReport, PlacedPartition, ProcessorKind, Quant, Subgraph,
    Support, Tensor, TensorMeta,
};
use switchyard_testkit::random_tensor;

use super::*;
use crate::cpu::CpuResolver;

const LIB: &str = "libswitchyard_example_npu.so";

/// The example plugin next to this test binary: `target/<profile>/deps/` or its
/// parent, where `cargo build --workspace` puts cdylibs.
fn plugin_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_EXAMPLE_PLUGIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("test binary has a directory");
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let p = dir.join(LIB);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{LIB} not found in {} or its parent: build the example plugin first with \
         `cargo build --workspace` (or `cargo build -p switchyard-example-npu`), or point \
         SWITCHYARD_EXAMPLE_PLUGIN at it",
        deps.display()
    );
}

fn load() -> Arc<PluginDelegate> {
    Arc::new(PluginDelegate::load(plugin_path()).expect("example plugin loads"))
}

/// x -> ADD c (fused RELU) -> MUL x2 -> LOGISTIC -> SUB c -> y, float32, same shapes.
fn float_chain() -> Arc<Model> {
    let dims = [2, 3, 5];
    let n: usize = dims.iter().product();
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &dims);
    let x2 = sg.tensor("x2", DType::F32, &dims);
    let cv: Vec<f32> = (0..n).map(|i| (i as f32 - 12.0) * 0.25).collect();
    let c = sg.constant_f32("c", &dims, &cv);
    let a = sg.tensor("a", DType::F32, &dims);
    let m = sg.tensor("m", DType::F32, &dims);
    let l = sg.tensor("l", DType::F32, &dims);
    let y = sg.tensor("y", DType::F32, &dims);
    let b = |op| OpKind::Builtin(op);
    sg.op(
        b(BuiltinOp::Add),
        &[Some(x), Some(c)],
        &[a],
        OpOptions::Activation(Activation::Relu),
    );
    sg.op(
        b(BuiltinOp::Mul),
        &[Some(a), Some(x2)],
        &[m],
        OpOptions::Activation(Activation::None),
    );
    sg.op(b(BuiltinOp::Logistic), &[Some(m)], &[l], OpOptions::None);
    sg.op(
        b(BuiltinOp::Sub),
        &[Some(l), Some(c)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[x, x2]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).expect("valid model"))
}

fn meta<'a>(sg: &'a Subgraph, t: usize) -> TensorMeta<'a> {
    let def = &sg.tensors[t];
    TensorMeta {
        dtype: def.dtype,
        shape: &def.shape,
        quant: def.quant.as_ref(),
        data: def.data.as_ref().map(|d| d.as_slice()),
        name: &def.name,
    }
}

fn supports(d: &dyn Delegate, model: &Model, node: usize) -> Support {
    let sg = &model.subgraphs[0];
    let n = &sg.nodes[node];
    d.supports(&NodeSupportCtx {
        subgraph: sg,
        node: n,
        inputs: n.inputs.iter().map(|t| t.map(|t| meta(sg, t))).collect(),
        outputs: n.outputs.iter().map(|&t| meta(sg, t)).collect(),
    })
}

fn run(
    model: &Arc<Model>,
    placed: Option<(Arc<PluginDelegate>, Vec<usize>)>,
    inputs: &[Tensor],
) -> (Vec<Tensor>, Option<PartitionReport>) {
    let placements = placed
        .into_iter()
        .map(|(d, nodes)| PlacedPartition {
            partition: Partition::from_nodes(0, &model.subgraphs[0], nodes),
            delegate: d,
            timeout: None,
        })
        .collect();
    let mut it = Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
        placements,
    )
    .expect("placement is valid");
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    let out = it.run(&views).expect("request completes");
    (out, it.partition_reports().first().cloned())
}

fn inputs() -> Vec<Tensor> {
    vec![
        random_tensor(DType::F32, &[2, 3, 5], 1, -3.0, 3.0),
        random_tensor(DType::F32, &[2, 3, 5], 2, -2.0, 2.0),
    ]
}

#[test]
fn loads_and_describes_itself() {
    let d = load();
    assert_eq!(d.name(), "plugin:example-npu");
    assert_eq!(d.kind(), ProcessorKind::Npu);
    assert!(!d.is_emulated());
    let f = d.fingerprint();
    assert!(
        f.contains("example-npu driver 1.0.0") && f.contains("abi=v1"),
        "{f}"
    );
}

#[test]
fn partition_through_the_plugin_equals_the_cpu() {
    let model = float_chain();
    let d = load();
    for n in 0..4 {
        assert_eq!(
            supports(d.as_ref(), &model, n),
            Support::Supported,
            "node {n}"
        );
    }
    let x = inputs();
    let (cpu, _) = run(&model, None, &x);
    for nodes in [vec![0, 1, 2, 3], vec![1, 2], vec![3]] {
        let (out, r) = run(&model, Some((d.clone(), nodes.clone())), &x);
        let r = r.expect("one placement");
        assert_eq!(r.compile_error, None, "{nodes:?}");
        assert_eq!((r.runs, r.failures), (1, 0), "{nodes:?}: {r:?}");
        assert_eq!(out[0].data.as_slice(), cpu[0].data.as_slice(), "{nodes:?}");
    }
}

#[test]
fn plugin_reasons_reach_supports() {
    let d = load();
    // int8 ADD: the plugin's own reason comes back.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let a = sg.tensor("a", DType::I8, &[4]);
    let b = sg.tensor("b", DType::F32, &[1]);
    let y = sg.tensor("y", DType::I8, &[4]);
    let fy = sg.tensor("fy", DType::F32, &[4]);
    let fx = sg.tensor("fx", DType::F32, &[4]);
    for t in [a, y] {
        sg.set_quant(t, Quant::per_tensor(0.1, 0));
    }
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(a), Some(a)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    // Broadcasting float ADD.
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(fx), Some(b)],
        &[fy],
        OpOptions::Activation(Activation::None),
    );
    // An op with parameters ABI v1 cannot carry.
    let s = sg.tensor("s", DType::F32, &[4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Softmax),
        &[Some(fy)],
        &[s],
        OpOptions::Softmax { beta: 1.0 },
    );
    sg.set_inputs(&[a, fx, b]);
    sg.set_outputs(&[y, s]);
    let model = Model::from_bytes(&mb.finish()).expect("valid model");
    assert_eq!(
        supports(d.as_ref(), &model, 0),
        Support::Unsupported("example-npu runs float32 only, got dtype code 9".into())
    );
    assert_eq!(
        supports(d.as_ref(), &model, 1),
        Support::Unsupported("example-npu does not broadcast: shapes [1] and [4] differ".into())
    );
    assert_eq!(
        supports(d.as_ref(), &model, 2),
        Support::Unsupported("plugin ABI v1 cannot pass the parameters of SOFTMAX".into())
    );
}

#[test]
fn abi_version_mismatch_is_refused() {
    let err = PluginDelegate::load_as(&plugin_path(), 2).expect_err("v1 plugin, v2 host");
    let msg = err.to_string();
    assert!(
        msg.contains("implements plugin ABI v1") && msg.contains("this daemon speaks ABI v2"),
        "{msg}"
    );
    assert!(matches!(err, DelegateError::Unavailable { .. }));
}

#[test]
fn libraries_without_the_entry_symbol_are_refused() {
    // Any shared library that is not a plugin: the C library is always there.
    let err = PluginDelegate::load("libc.so.6").expect_err("libc is no plugin");
    assert!(
        err.to_string()
            .contains("does not export `switchyard_plugin_entry`"),
        "{err}"
    );
    let err = PluginDelegate::load("/nonexistent/libnothing.so").expect_err("no file");
    assert!(err.to_string().contains("cannot open the library"), "{err}");
}

#[test]
fn plugin_errors_fall_back_to_the_cpu() {
    let model = float_chain();
    let d = load();
    let mut x = inputs();
    // The example NPU traps on non-finite inputs.
    let mut v: Vec<f32> = x[1].view().f32s().expect("f32").to_vec();
    v[4] = f32::NAN;
    v[7] = f32::INFINITY;
    x[1] = Tensor::from_f32(vec![2, 3, 5], &v).expect("30 floats");
    let (cpu, _) = run(&model, None, &x);
    let (out, r) = run(&model, Some((d, vec![0, 1, 2, 3])), &x);
    let r = r.expect("one placement");
    assert_eq!((r.runs, r.failures), (0, 1), "{r:?}");
    let e = r.last_error.expect("error recorded");
    assert!(
        e.contains("plugin:example-npu") && e.contains("non-finite"),
        "{e}"
    );
    assert_eq!(out[0].data.as_slice(), cpu[0].data.as_slice());
}
