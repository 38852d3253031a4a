//! "Can this processor run this node" has one answer per processor: for every node of
//! every model here, each delegate says it supports the node exactly when it compiles
//! that node as a one-node partition; the scheduler's profile rules (the op descriptors'
//! rules, switchyard-kernels) say what the emulated DSP and NPU say, and never claim a
//! node the GPU delegate refuses.
//!
//! The models: the real ones in models/ (float, and int8 mww_okay_nabu) and single-op
//! models built here for the ops the scheduler's old GPU list claimed before the GPU ran
//! them (SOFTMAX, BATCH_MATMUL, RESIZE_BILINEAR; the first and the last have GPU kernels
//! now), and elementwise ops at float32, int8 and uint8.

use std::sync::Arc;

use switchyard_config::DeviceProfiles;
use switchyard_delegates::{EmulatedDelegate, GpuDelegate};
use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Delegate, Model, OpKind, OpOptions, Partition, PartitionCtx,
    ProcessorKind, Quant,
};
use switchyard_scheduler::capability::{Capability, ProfileRules};
use switchyard_scheduler::graph::GraphInfo;

fn models_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn real_models() -> Vec<(String, Arc<Model>)> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(models_dir())
        .expect("models/ exists (scripts/setup.sh)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
        .collect();
    paths.sort();
    for p in paths {
        let model = Model::from_path(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p.display().to_string(), Arc::new(model)));
    }
    assert!(
        out.len() >= 10,
        "the ten models of models/ (scripts/setup.sh)"
    );
    out
}

fn quant(dtype: DType) -> Option<Quant> {
    match dtype {
        DType::I8 => Some(Quant::per_tensor(0.05, -3)),
        DType::U8 => Some(Quant::per_tensor(0.05, 125)),
        _ => None,
    }
}

fn tensor(
    sg: &mut switchyard_interpreter::builder::SubgraphBuilder,
    name: &str,
    dtype: DType,
    shape: &[usize],
) -> usize {
    let t = sg.tensor(name, dtype, shape);
    if let Some(q) = quant(dtype) {
        sg.set_quant(t, q);
    }
    t
}

/// One op over same-shaped inputs and output.
fn elementwise(op: BuiltinOp, inputs: usize, dtype: DType, options: OpOptions) -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let shape = [1, 4, 4, 8];
    let xs: Vec<usize> = (0..inputs)
        .map(|i| tensor(sg, &format!("x{i}"), dtype, &shape))
        .collect();
    let y = tensor(sg, "y", dtype, &shape);
    let ins: Vec<Option<usize>> = xs.iter().map(|&x| Some(x)).collect();
    sg.op(OpKind::Builtin(op), &ins, &[y], options);
    sg.set_inputs(&xs);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).expect("built model loads"))
}

fn synthetic_models() -> Vec<(String, Arc<Model>)> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::I8, DType::U8] {
        for op in [
            BuiltinOp::Add,
            BuiltinOp::Sub,
            BuiltinOp::Mul,
            BuiltinOp::Maximum,
        ] {
            out.push((
                format!("{op:?} {dtype}"),
                elementwise(op, 2, dtype, OpOptions::Activation(Activation::None)),
            ));
        }
        for op in [
            BuiltinOp::Relu,
            BuiltinOp::Relu6,
            BuiltinOp::Logistic,
            BuiltinOp::Tanh,
            BuiltinOp::HardSwish,
        ] {
            out.push((
                format!("{op:?} {dtype}"),
                elementwise(op, 1, dtype, OpOptions::None),
            ));
        }
        out.push((
            format!("Softmax {dtype}"),
            elementwise(
                BuiltinOp::Softmax,
                1,
                dtype,
                OpOptions::Softmax { beta: 1.0 },
            ),
        ));
    }
    // RESIZE_BILINEAR [1,4,4,8] -> [1,8,8,8], float32.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4, 4, 8]);
    let size = sg.constant_i32("size", &[2], &[8, 8]);
    let y = sg.tensor("y", DType::F32, &[1, 8, 8, 8]);
    sg.op(
        OpKind::Builtin(BuiltinOp::ResizeBilinear),
        &[Some(x), Some(size)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    out.push((
        "ResizeBilinear f32".into(),
        Arc::new(Model::from_bytes(&mb.finish()).expect("loads")),
    ));
    // BATCH_MATMUL [1,4,8] x [1,8,4], float32.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let a = sg.tensor("a", DType::F32, &[1, 4, 8]);
    let b = sg.tensor("b", DType::F32, &[1, 8, 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4, 4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::BatchMatmul),
        &[Some(a), Some(b)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[a, b]);
    sg.set_outputs(&[y]);
    out.push((
        "BatchMatmul f32".into(),
        Arc::new(Model::from_bytes(&mb.finish()).expect("loads")),
    ));
    out
}

/// Checks every run node of `model`; returns how many (node, delegate) pairs were
/// supported, so the caller can see the test exercised both answers.
fn check(
    name: &str,
    model: Arc<Model>,
    delegates: &[(Arc<dyn Delegate>, ProfileRules)],
) -> (usize, usize) {
    let info = match GraphInfo::analyse(model.clone()) {
        Ok(info) => info,
        Err(e) => {
            // Models other streams are adding (models/gen_*) may not prepare yet.
            eprintln!("{name}: not analysed ({e})");
            return (0, 0);
        }
    };
    let sg = &model.subgraphs[0];
    let (mut yes, mut no) = (0, 0);
    for &n in &info.run_nodes {
        let ctx = info.support_ctx(n).expect("node exists");
        let op = sg.nodes[n].op.to_string();
        for (d, rules) in delegates {
            let said = d.supports(&ctx);
            let partition = Partition::from_nodes(0, sg, vec![n]);
            let constant = |t: usize| info.value(t);
            let pctx = PartitionCtx {
                model: &model,
                subgraph: sg,
                partition: &partition,
                shapes: &info.shapes,
                constant: &constant,
            };
            let compiled = d.compile(&pctx);
            assert_eq!(
                said.is_supported(),
                compiled.is_ok(),
                "{name} node {n} ({op}) on {}: supports says {said:?}, compile says {:?}",
                d.name(),
                compiled.as_ref().err()
            );
            let profile_said = rules.supports(&ctx);
            if d.kind() == ProcessorKind::Gpu {
                // The GPU delegate answers from its own lowering checks (the `gpu` stream
                // extends them); the descriptors' GPU rules, which the scheduler uses for
                // a GPU without a delegate, must never claim a node it refuses.
                assert!(
                    !profile_said.is_supported() || said.is_supported(),
                    "{name} node {n} ({op}): the gpu profile rules claim it, the delegate says {said:?}"
                );
            } else {
                assert_eq!(
                    profile_said.is_supported(),
                    said.is_supported(),
                    "{name} node {n} ({op}): the {} profile rules say {profile_said:?}, the delegate {said:?}",
                    d.name()
                );
            }
            if said.is_supported() {
                yes += 1;
            } else {
                no += 1;
            }
        }
    }
    (yes, no)
}

#[test]
fn descriptors_delegates_and_profile_rules_agree() {
    let mut profiles = DeviceProfiles::default();
    // Compare op and dtype rules only: the NPU's on-chip memory is counted differently
    // per node (profile rules: weights) and per partition (the device: weights and
    // live activations).
    profiles.npu.on_chip_memory_bytes = 0;
    let mut delegates: Vec<(Arc<dyn Delegate>, ProfileRules)> = vec![
        (
            Arc::new(EmulatedDelegate::dsp(profiles.dsp.clone())),
            ProfileRules::new(ProcessorKind::Dsp, profiles.dsp.clone()),
        ),
        (
            Arc::new(EmulatedDelegate::npu(profiles.npu.clone())),
            ProfileRules::new(ProcessorKind::Npu, profiles.npu.clone()),
        ),
    ];
    let gpu = GpuDelegate::new();
    match gpu.unavailable_reason() {
        None => delegates.push((
            Arc::new(gpu),
            ProfileRules::new(ProcessorKind::Gpu, profiles.gpu.clone()),
        )),
        Some(why) => eprintln!("SKIPPED the GPU part: no Vulkan adapter ({why})"),
    }
    let mut per_kind = std::collections::HashMap::new();
    for (name, model) in real_models().into_iter().chain(synthetic_models()) {
        let (yes, no) = check(&name, model, &delegates);
        let e = per_kind.entry(name).or_insert((0, 0));
        e.0 += yes;
        e.1 += no;
    }
    let (yes, no) = per_kind
        .values()
        .fold((0, 0), |(a, b), (y, n)| (a + y, b + n));
    assert!(
        yes > 50 && no > 50,
        "both answers exercised: {yes} yes, {no} no"
    );
}

/// The processors' op sets come from the descriptors; the old copies disagreed (the
/// scheduler's DSP list had 17 ops where the emulated DSP ran 27, and its GPU list
/// claimed BATCH_MATMUL, which the GPU never lowered). SOFTMAX, TRANSPOSE_CONV and
/// RESIZE_BILINEAR have GPU kernels now, and so GPU rules in their descriptors.
#[test]
fn op_sets_per_processor_come_from_the_descriptors() {
    use switchyard_kernels::registry::ops_on;
    let names = |k| ops_on(k).map(|o| o.name()).collect::<Vec<_>>();
    let dsp = names(ProcessorKind::Dsp);
    assert_eq!(dsp.len(), 27, "{dsp:?}");
    let gpu = names(ProcessorKind::Gpu);
    assert!(
        !gpu.contains(&"BATCH_MATMUL"),
        "BATCH_MATMUL on the GPU: {gpu:?}"
    );
    for op in [
        "SOFTMAX",
        "TRANSPOSE_CONV",
        "Convolution2DTransposeBias",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "DEPTH_TO_SPACE",
    ] {
        assert!(gpu.contains(&op), "{op} not on the GPU: {gpu:?}");
    }
    let npu = names(ProcessorKind::Npu);
    assert!(
        npu.iter().all(|op| dsp.contains(op)),
        "{npu:?} within {dsp:?}"
    );
}
