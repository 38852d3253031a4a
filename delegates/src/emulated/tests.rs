//! Emulated DSP/NPU against the CPU reference on models built here and on the real
//! int8 model: identical outputs, the refusals with their reasons, device time from
//! the profile's formula, and injected faults caught by the executor.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{DeviceProfile, DeviceProfiles, FaultInjection};
use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Delegate, Interpreter, InterpreterOptions, Model, NodeSupportCtx,
    OpKind, OpOptions, Partition, PartitionReport, PlacedPartition, Quant, Subgraph, Support,
    Tensor, TensorMeta,
};
use switchyard_testkit::random_tensor;

use super::*;
use crate::cpu::CpuResolver;

fn npu() -> DeviceProfile {
    DeviceProfiles::default().npu
}

fn dsp() -> DeviceProfile {
    DeviceProfiles::default().dsp
}

fn q(t: usize, sg: &mut switchyard_interpreter::builder::SubgraphBuilder, s: f32, z: i64) {
    sg.set_quant(t, Quant::per_tensor(s, z));
}

fn act() -> OpOptions {
    OpOptions::Activation(Activation::None)
}

/// x -> ADD c1 -> MUL c2 -> LOGISTIC -> y, all int8, `dims` elements each.
fn int8_chain(dims: &[usize]) -> Arc<Model> {
    let n: usize = dims.iter().product();
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::I8, dims);
    q(x, sg, 0.05, -3);
    let c1_data: Vec<u8> = (0..n)
        .map(|i| ((i * 37 % 255) as i32 - 127) as i8 as u8)
        .collect();
    let c1 = sg.constant("c1", DType::I8, dims, c1_data);
    q(c1, sg, 0.04, 5);
    let a = sg.tensor("a", DType::I8, dims);
    q(a, sg, 0.09, 2);
    let c2_data: Vec<u8> = (0..n)
        .map(|i| ((i * 53 % 200) as i32 - 90) as i8 as u8)
        .collect();
    let c2 = sg.constant("c2", DType::I8, dims, c2_data);
    q(c2, sg, 0.02, -1);
    let m = sg.tensor("m", DType::I8, dims);
    q(m, sg, 0.03, -7);
    let y = sg.tensor("y", DType::I8, dims);
    q(y, sg, 1.0 / 256.0, -128);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(c1)],
        &[a],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Mul),
        &[Some(a), Some(c2)],
        &[m],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Logistic),
        &[Some(m)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).expect("builder writes a valid model"))
}

/// The int8 chain followed by a QUANTIZE to uint8 (a DSP accepts it, the NPU does not).
fn int8_chain_to_uint8(dims: &[usize]) -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::I8, dims);
    q(x, sg, 0.05, -3);
    let b = sg.tensor("b", DType::I8, dims);
    q(b, sg, 0.07, 4);
    let a = sg.tensor("a", DType::I8, dims);
    q(a, sg, 0.1, 0);
    let l = sg.tensor("l", DType::I8, dims);
    q(l, sg, 1.0 / 256.0, -128);
    let y = sg.tensor("y", DType::U8, dims);
    q(y, sg, 1.0 / 256.0, 0);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(b)],
        &[a],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Logistic),
        &[Some(a)],
        &[l],
        OpOptions::None,
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Quantize),
        &[Some(l)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[x, b]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).expect("builder writes a valid model"))
}

/// One float ADD.
fn float_add() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[4]);
    let c = sg.constant_f32("c", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let y = sg.tensor("y", DType::F32, &[4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(c)],
        &[y],
        act(),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).expect("builder writes a valid model"))
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

fn support_ctx(sg: &Subgraph, node: usize) -> NodeSupportCtx<'_> {
    let node = &sg.nodes[node];
    NodeSupportCtx {
        subgraph: sg,
        node,
        inputs: node.inputs.iter().map(|t| t.map(|t| meta(sg, t))).collect(),
        outputs: node.outputs.iter().map(|&t| meta(sg, t)).collect(),
    }
}

fn supports(d: &EmulatedDelegate, model: &Model, sg: usize, node: usize) -> Support {
    d.supports(&support_ctx(&model.subgraphs[sg], node))
}

fn cpu_outputs(model: &Arc<Model>, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut it = Interpreter::new(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
    )
    .expect("CPU prepares the model");
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    it.run(&views).expect("CPU runs the model")
}

/// Runs `model` with `nodes` of subgraph 0 placed on `delegate`.
fn placed_run(
    model: &Arc<Model>,
    delegate: Arc<EmulatedDelegate>,
    nodes: Vec<usize>,
    timeout: Option<Duration>,
    validate: bool,
    runs: usize,
    inputs: &[Tensor],
) -> (Vec<Tensor>, PartitionReport) {
    let partition = Partition::from_nodes(0, &model.subgraphs[0], nodes);
    let mut it = Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
        vec![PlacedPartition {
            partition,
            delegate,
            timeout,
        }],
    )
    .expect("placement is valid");
    it.set_validation(validate);
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    let mut out = Vec::new();
    for _ in 0..runs {
        out = it.run(&views).expect("request completes");
    }
    (out, it.partition_reports()[0].clone())
}

fn bytes(ts: &[Tensor]) -> Vec<&[u8]> {
    ts.iter().map(|t| t.data.as_slice()).collect()
}

#[test]
fn npu_chain_is_bit_exact_with_the_cpu() {
    let dims = [1, 8, 8, 16];
    let model = int8_chain(&dims);
    let x = random_tensor(DType::I8, &dims, 7, -128.0, 127.0);
    let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
    let npu = Arc::new(EmulatedDelegate::npu(npu()));
    for n in 0..3 {
        assert_eq!(supports(&npu, &model, 0, n), Support::Supported, "node {n}");
    }
    let (out, r) = placed_run(&model, npu, vec![0, 1, 2], None, true, 2, &[x]);
    assert_eq!(r.compile_error, None);
    assert_eq!((r.runs, r.failures, r.validations), (2, 0, 2));
    assert_eq!(r.max_validation_error, 0.0);
    assert_eq!(bytes(&out), bytes(&cpu));
}

#[test]
fn dsp_runs_uint8_requantize_bit_exact_and_partial_placements_work() {
    let dims = [2, 5, 7];
    let model = int8_chain_to_uint8(&dims);
    let x = random_tensor(DType::I8, &dims, 3, -128.0, 127.0);
    let b = random_tensor(DType::I8, &dims, 4, -128.0, 127.0);
    let inputs = [x, b];
    let cpu = cpu_outputs(&model, &inputs);
    let dsp = Arc::new(EmulatedDelegate::dsp(dsp()));
    for n in 0..3 {
        assert_eq!(supports(&dsp, &model, 0, n), Support::Supported, "node {n}");
    }
    for nodes in [vec![0, 1, 2], vec![1, 2], vec![0], vec![2]] {
        let (out, r) = placed_run(&model, dsp.clone(), nodes.clone(), None, false, 1, &inputs);
        assert_eq!(r.compile_error, None, "{nodes:?}");
        assert_eq!((r.runs, r.failures), (1, 0), "{nodes:?}");
        assert_eq!(bytes(&out), bytes(&cpu), "{nodes:?}");
    }
    // The NPU refuses the uint8 requantize but takes the int8 part.
    let npu = EmulatedDelegate::npu(npu());
    assert_eq!(supports(&npu, &model, 0, 0), Support::Supported);
    let Support::Unsupported(why) = supports(&npu, &model, 0, 2) else {
        panic!("uint8 output accepted by the npu");
    };
    assert_eq!(why, "npu runs int8 only: QUANTIZE has uint8 outputs");
}

#[test]
fn float_ops_are_refused_with_the_reason() {
    let model = float_add();
    let dsp = EmulatedDelegate::dsp(dsp());
    assert_eq!(
        supports(&dsp, &model, 0, 0),
        Support::Unsupported("dsp runs quantized ops only: ADD has float32 inputs".into())
    );
    let npu = EmulatedDelegate::npu(npu());
    assert_eq!(
        supports(&npu, &model, 0, 0),
        Support::Unsupported("npu runs int8 only: ADD has float32 inputs".into())
    );
    // Placed anyway, compile refuses and the CPU runs it.
    let x = Tensor::from_f32(vec![4], &[0.5; 4]).expect("4 floats");
    let (out, r) = placed_run(
        &model,
        Arc::new(EmulatedDelegate::dsp(DeviceProfiles::default().dsp)),
        vec![0],
        None,
        false,
        1,
        &[x],
    );
    assert!(
        r.compile_error
            .as_deref()
            .is_some_and(|e| e.contains("float32")),
        "{r:?}"
    );
    assert_eq!(
        out[0].view().f32s().ok(),
        Some(&[1.5f32, 2.5, 3.5, 4.5][..])
    );
}

#[test]
fn ops_outside_the_subset_are_refused() {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::I8, &[4]);
    q(x, sg, 0.1, 0);
    let y = sg.tensor("y", DType::I8, &[4]);
    q(y, sg, 0.1, 0);
    sg.op(
        OpKind::Builtin(BuiltinOp::Tanh),
        &[Some(x)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    let model = Model::from_bytes(&mb.finish()).expect("valid model");
    // TANH is in the DSP's set, not in the NPU's smaller one.
    assert_eq!(
        supports(&EmulatedDelegate::dsp(dsp()), &model, 0, 0),
        Support::Supported
    );
    assert_eq!(
        supports(&EmulatedDelegate::npu(npu()), &model, 0, 0),
        Support::Unsupported("npu (emulated) does not run TANH".into())
    );
}

#[test]
fn npu_refuses_dynamic_shapes() {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::I8, &[1, 4]);
    q(x, sg, 0.1, 0);
    sg.set_signature(x, vec![-1, 4]);
    let y = sg.tensor("y", DType::I8, &[1, 4]);
    q(y, sg, 1.0 / 256.0, -128);
    sg.set_signature(y, vec![-1, 4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Logistic),
        &[Some(x)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    let model = Model::from_bytes(&mb.finish()).expect("valid model");
    assert_eq!(
        supports(&EmulatedDelegate::npu(npu()), &model, 0, 0),
        Support::Unsupported(
            "npu needs static shapes: LOGISTIC input `x` has dynamic shape [-1, 4]".into()
        )
    );
}

#[test]
fn npu_memory_limit_refuses_large_nodes_and_partitions() {
    let dims = [1, 16, 16, 8]; // 2048 bytes per int8 tensor
    let model = int8_chain(&dims);
    // ADD needs x + c1 + a = 6144 bytes; a 4 KiB device cannot hold it.
    let mut small = npu();
    small.on_chip_memory_bytes = 4096;
    let Support::Unsupported(why) = supports(&EmulatedDelegate::npu(small), &model, 0, 0) else {
        panic!("a node larger than on-chip memory was accepted");
    };
    assert!(
        why.contains("alone needs 6144 bytes") && why.contains("has 4096"),
        "{why}"
    );
    // 7 KiB holds any one node, but not the whole chain: 4096 bytes of weights plus
    // peak live activations of 4096 bytes.
    let mut medium = npu();
    medium.on_chip_memory_bytes = 7 * 1024;
    let medium = Arc::new(EmulatedDelegate::npu(medium));
    for n in 0..3 {
        assert_eq!(
            supports(&medium, &model, 0, n),
            Support::Supported,
            "node {n}"
        );
    }
    let x = random_tensor(DType::I8, &dims, 9, -128.0, 127.0);
    let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
    let (out, r) = placed_run(
        &model,
        medium.clone(),
        vec![0, 1, 2],
        None,
        false,
        1,
        std::slice::from_ref(&x),
    );
    let err = r.compile_error.expect("partition exceeds on-chip memory");
    assert!(
        err.contains("needs 8192 bytes of on-chip memory (4096 of weights + 4096 of live activations at peak)")
            && err.contains("the device has 7168"),
        "{err}"
    );
    assert_eq!(r.runs, 0);
    assert_eq!(bytes(&out), bytes(&cpu));
    // The last two nodes alone fit: 2048 of weights + 4096 of activations.
    let (out, r) = placed_run(&model, medium, vec![1, 2], None, false, 1, &[x]);
    assert_eq!(r.compile_error, None);
    assert_eq!(r.runs, 1);
    assert_eq!(bytes(&out), bytes(&cpu));
}

#[test]
fn device_time_follows_the_profile_formula() {
    let dims = [1, 8, 8, 16]; // 1024 elements
    let model = int8_chain(&dims);
    let profile = npu();
    let npu = Arc::new(EmulatedDelegate::npu(profile.clone()));
    let x = random_tensor(DType::I8, &dims, 5, -128.0, 127.0);
    let (_, r) = placed_run(&model, npu.clone(), vec![0, 1, 2], None, false, 3, &[x]);
    // Three elementwise nodes of 1024 outputs, no MACs, 1024 bytes in and 1024 out.
    let per_run = Duration::from_secs_f64(profile.estimate_seconds(0.0, 3072.0, 2048.0));
    // By hand: 120 us dispatch + 3072 / (64 * 800 MHz) + 2048 B / 4 GB/s.
    let by_hand = 120e-6 + 3072.0 / (64.0 * 800e6) + 2048.0 / 4e9;
    assert!((per_run.as_secs_f64() - by_hand).abs() < 1e-12);
    assert_eq!(r.runs, 3);
    assert_eq!(r.device_time, per_run * 3);
    assert_eq!(npu.device_clock(), per_run * 3);
}

/// With pacing on, an execution lasts its device time in wall time: a deadline shorter
/// than that device time cuts it off, while unpaced the device time is only reported.
#[test]
fn paced_executions_take_their_device_time() {
    let dims = [1, 8, 8, 16];
    let model = int8_chain(&dims);
    let mut profile = npu();
    profile.dispatch_overhead_us = 200_000.0;
    let x = random_tensor(DType::I8, &dims, 5, -128.0, 127.0);
    let deadline = Some(Duration::from_millis(5));
    let paced = Arc::new(EmulatedDelegate::npu(profile.clone()).with_time_scale(1.0));
    let (_, r) = placed_run(
        &model,
        paced,
        vec![0, 1, 2],
        deadline,
        false,
        1,
        std::slice::from_ref(&x),
    );
    assert_eq!((r.runs, r.failures), (0, 1), "{r:?}");
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{r:?}"
    );
    let unpaced = Arc::new(EmulatedDelegate::npu(profile));
    let (_, r) = placed_run(&model, unpaced, vec![0, 1, 2], None, false, 1, &[x]);
    assert_eq!((r.runs, r.failures), (1, 0), "{r:?}");
    assert!(r.device_time >= Duration::from_millis(200));
}

fn faulty(f: FaultInjection) -> DeviceProfile {
    let mut p = npu();
    p.fault = f;
    p
}

#[test]
fn wrong_results_are_caught_by_validation() {
    let dims = [1, 4, 4, 8];
    let model = int8_chain(&dims);
    let x = random_tensor(DType::I8, &dims, 11, -128.0, 127.0);
    let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
    let d = Arc::new(EmulatedDelegate::npu(faulty(FaultInjection {
        wrong_result_rate: 1.0,
        seed: 3,
        ..Default::default()
    })));
    assert!(
        d.fingerprint().contains("faults(wrong=1"),
        "{}",
        d.fingerprint()
    );
    let (out, r) = placed_run(&model, d, vec![0, 1, 2], None, true, 2, &[x]);
    assert_eq!(r.validations, 2);
    assert!(r.max_validation_error >= 1.0, "{r:?}");
    // Validation keeps the CPU's outputs.
    assert_eq!(bytes(&out), bytes(&cpu));
}

#[test]
fn hangs_time_out_and_the_request_completes_on_the_cpu() {
    let dims = [1, 4, 4, 8];
    let model = int8_chain(&dims);
    let x = random_tensor(DType::I8, &dims, 12, -128.0, 127.0);
    let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
    let d = Arc::new(EmulatedDelegate::npu(faulty(FaultInjection {
        hang_rate: 1.0,
        ..Default::default()
    })));
    let (out, r) = placed_run(
        &model,
        d,
        vec![0, 1, 2],
        Some(Duration::from_millis(20)),
        false,
        2,
        std::slice::from_ref(&x),
    );
    assert_eq!((r.runs, r.failures), (0, 2));
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{r:?}"
    );
    assert_eq!(bytes(&out), bytes(&cpu));

    // No deadline at all: the hang is still bounded.
    let d = Arc::new(
        EmulatedDelegate::npu(faulty(FaultInjection {
            hang_rate: 1.0,
            ..Default::default()
        }))
        .with_hang_limit(Duration::from_millis(10)),
    );
    let (out, r) = placed_run(&model, d, vec![0, 1, 2], None, false, 1, &[x]);
    assert_eq!(r.failures, 1);
    assert_eq!(bytes(&out), bytes(&cpu));
}

#[test]
fn injected_errors_fall_back_to_the_cpu_reproducibly() {
    let dims = [1, 4, 4, 8];
    let model = int8_chain(&dims);
    let x = random_tensor(DType::I8, &dims, 13, -128.0, 127.0);
    let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
    let f = FaultInjection {
        error_rate: 0.5,
        seed: 99,
        ..Default::default()
    };
    let run = || {
        let d = Arc::new(EmulatedDelegate::dsp(faulty(f.clone())));
        placed_run(
            &model,
            d,
            vec![0, 1, 2],
            None,
            false,
            20,
            std::slice::from_ref(&x),
        )
    };
    let (out, a) = run();
    let (_, b) = run();
    assert_eq!(bytes(&out), bytes(&cpu));
    assert_eq!(a.runs + a.failures, 20);
    assert!(a.failures > 0 && a.runs > 0, "{a:?}");
    assert!(
        a.last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected fault"))
    );
    // Same seed, same faults.
    assert_eq!((a.runs, a.failures), (b.runs, b.failures));
}

#[test]
fn names_and_fingerprints_say_emulated() {
    let d = EmulatedDelegate::dsp(dsp());
    let n = EmulatedDelegate::npu(npu());
    assert_eq!(d.name(), "dsp (emulated)");
    assert_eq!(n.name(), "npu (emulated)");
    assert!(d.is_emulated() && n.is_emulated());
    assert_eq!(d.kind(), switchyard_interpreter::ProcessorKind::Dsp);
    assert_eq!(n.kind(), switchyard_interpreter::ProcessorKind::Npu);
    for (dl, p) in [(&d, dsp()), (&n, npu())] {
        let f = dl.fingerprint();
        assert!(
            f.contains("emulated") && f.contains(&p.driver_version),
            "{f}"
        );
    }
    let mut profiles = DeviceProfiles::default();
    assert_eq!(EmulatedDelegate::from_profiles(&profiles).len(), 2);
    profiles.npu.enabled = false;
    let only = EmulatedDelegate::from_profiles(&profiles);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].name(), "dsp (emulated)");
    let mut newer = npu();
    newer.driver_version = "emulated-npu-2.0".into();
    assert_ne!(EmulatedDelegate::npu(newer).fingerprint(), n.fingerprint());
}

/// Contiguous runs (in node order) of nodes `d` supports, as partitions.
fn supported_runs(d: &EmulatedDelegate, model: &Model) -> Vec<Vec<usize>> {
    let sg = &model.subgraphs[0];
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    for n in 0..sg.nodes.len() {
        if supports(d, model, 0, n).is_supported() {
            current.push(n);
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

#[test]
fn okay_nabu_on_emulated_devices_matches_the_cpu() {
    let path = switchyard_testkit::models_dir().join("mww_okay_nabu.tflite");
    let model = Arc::new(Model::from_path(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/setup.sh to fetch the models)",
            path.display()
        )
    }));
    if let Err(e) = Interpreter::new(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
    ) {
        // The comparison needs the CPU reference first; say so instead of passing.
        eprintln!("SKIPPED: the CPU reference cannot run mww_okay_nabu yet: {e}");
        return;
    }
    let frames: Vec<Tensor> = (0..6)
        .map(|i| random_tensor(DType::I8, &[1, 3, 40], 100 + i, -128.0, 127.0))
        .collect();
    let mut cpu = Interpreter::new(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
    )
    .expect("checked above");
    let expected: Vec<Vec<Tensor>> = frames
        .iter()
        .map(|f| cpu.run(&[f.view()]).expect("CPU runs a frame"))
        .collect();
    let dsp = Arc::new(EmulatedDelegate::dsp(dsp()));
    let npu = Arc::new(EmulatedDelegate::npu(npu()));
    for d in [dsp, npu] {
        let runs = supported_runs(&d, &model);
        assert!(!runs.is_empty(), "{} supports no node", d.name());
        let placements = runs
            .iter()
            .map(|nodes| PlacedPartition {
                partition: Partition::from_nodes(0, &model.subgraphs[0], nodes.clone()),
                delegate: d.clone(),
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
        it.set_validation(true);
        for (f, want) in frames.iter().zip(&expected) {
            let got = it.run(&[f.view()]).expect("frame runs");
            assert_eq!(bytes(&got), bytes(want), "{}", d.name());
        }
        let reports = it.partition_reports();
        let ran: u64 = reports.iter().map(|r| r.runs).sum();
        assert!(
            ran > 0,
            "{}: no partition ran on the device: {reports:?}",
            d.name()
        );
        for r in reports {
            assert_eq!(r.failures, 0, "{r:?}");
            assert_eq!(r.max_validation_error, 0.0, "{r:?}");
        }
        assert!(d.device_clock() > Duration::ZERO);
    }
}

/// The real int8 model: the per-channel int8 convolutions go to both devices, the
/// variable plumbing to neither, SPLIT_V and the final uint8 QUANTIZE only to the DSP.
#[test]
fn okay_nabu_support_decisions() {
    let path = switchyard_testkit::models_dir().join("mww_okay_nabu.tflite");
    let model = Model::from_path(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/setup.sh to fetch the models)",
            path.display()
        )
    });
    let dsp = EmulatedDelegate::dsp(dsp());
    let npu = EmulatedDelegate::npu(npu());
    let both = [
        "RESHAPE",
        "CONCATENATION",
        "STRIDED_SLICE",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "LOGISTIC",
    ];
    let sg = &model.subgraphs[0];
    assert!(
        sg.tensors
            .iter()
            .any(|t| t.quant.as_ref().is_some_and(|q| q.is_per_channel())),
        "the model has per-channel weights"
    );
    for (n, node) in sg.nodes.iter().enumerate() {
        let op = node.op.to_string();
        let d = supports(&dsp, &model, 0, n);
        let p = supports(&npu, &model, 0, n);
        let on_dsp = both.contains(&op.as_str()) || op == "SPLIT_V" || op == "QUANTIZE";
        assert_eq!(d.is_supported(), on_dsp, "dsp, node {n} {op}: {d:?}");
        assert_eq!(
            p.is_supported(),
            both.contains(&op.as_str()),
            "npu, node {n} {op}: {p:?}"
        );
        match op.as_str() {
            "QUANTIZE" => assert_eq!(
                p,
                Support::Unsupported("npu runs int8 only: QUANTIZE has uint8 outputs".into())
            ),
            "SPLIT_V" => assert_eq!(
                p,
                Support::Unsupported("npu (emulated) does not run SPLIT_V".into())
            ),
            "READ_VARIABLE" => assert_eq!(
                d,
                Support::Unsupported("dsp (emulated) does not run READ_VARIABLE".into())
            ),
            _ => {}
        }
    }
}

/// One int8 op with per-channel int8 weights and int32 bias: `kind` is CONV_2D,
/// DEPTHWISE_CONV_2D or FULLY_CONNECTED. Returns the model and its MAC count.
fn int8_weighted(op: BuiltinOp) -> (Arc<Model>, f64) {
    use switchyard_interpreter::Padding;
    use switchyard_interpreter::ops::ConvOptions;
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let (x_shape, w_shape, y_shape, channels, macs): (
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        usize,
        f64,
    ) = match op {
        BuiltinOp::Conv2d => (
            vec![1, 6, 6, 3],
            vec![4, 3, 3, 3],
            vec![1, 6, 6, 4],
            4,
            144.0 * 27.0,
        ),
        BuiltinOp::DepthwiseConv2d => (
            vec![1, 6, 6, 4],
            vec![1, 3, 3, 4],
            vec![1, 6, 6, 4],
            4,
            144.0 * 9.0,
        ),
        _ => (vec![2, 12], vec![5, 12], vec![2, 5], 5, 10.0 * 12.0),
    };
    let x = sg.tensor("x", DType::I8, &x_shape);
    q(x, sg, 0.05, -4);
    let nw: usize = w_shape.iter().product();
    let w_data: Vec<u8> = (0..nw)
        .map(|i| ((i * 29 % 255) as i32 - 127) as i8 as u8)
        .collect();
    let w = sg.constant("w", DType::I8, &w_shape, w_data);
    let w_scales: Vec<f32> = (0..channels).map(|c| 0.01 + 0.003 * c as f32).collect();
    let axis = if op == BuiltinOp::DepthwiseConv2d {
        3
    } else {
        0
    };
    sg.set_quant(
        w,
        Quant {
            scale: w_scales.clone(),
            zero_point: vec![0; channels],
            axis,
        },
    );
    let bias: Vec<i32> = (0..channels as i32).map(|c| c * 37 - 50).collect();
    let b = sg.constant_i32("b", &[channels], &bias);
    sg.set_quant(
        b,
        Quant {
            scale: w_scales.iter().map(|s| s * 0.05).collect(),
            zero_point: vec![0; channels],
            axis: 0,
        },
    );
    let y = sg.tensor("y", DType::I8, &y_shape);
    q(y, sg, 0.2, 3);
    let options = match op {
        BuiltinOp::FullyConnected => OpOptions::FullyConnected {
            activation: Activation::Relu,
            keep_num_dims: false,
            weights_format: 0,
            asymmetric_quantize_inputs: false,
        },
        _ => OpOptions::Conv(ConvOptions {
            padding: Padding::Same,
            stride_w: 1,
            stride_h: 1,
            dilation_w: 1,
            dilation_h: 1,
            depth_multiplier: 1,
            activation: Activation::Relu6,
        }),
    };
    sg.op(
        OpKind::Builtin(op),
        &[Some(x), Some(w), Some(b)],
        &[y],
        options,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    let model = Arc::new(Model::from_bytes(&mb.finish()).expect("valid model"));
    (model, macs)
}

#[test]
fn weighted_int8_ops_are_bit_exact_and_count_macs() {
    for op in [
        BuiltinOp::Conv2d,
        BuiltinOp::DepthwiseConv2d,
        BuiltinOp::FullyConnected,
    ] {
        let (model, macs) = int8_weighted(op);
        let d = Arc::new(EmulatedDelegate::npu(npu()));
        assert_eq!(supports(&d, &model, 0, 0), Support::Supported, "{op:?}");
        let sg = &model.subgraphs[0];
        let x_shape = sg.tensors[sg.inputs[0]].shape.clone();
        let x = random_tensor(DType::I8, &x_shape, 21, -128.0, 127.0);
        if let Err(e) = Interpreter::new(
            model.clone(),
            Arc::new(CpuResolver::reference()),
            InterpreterOptions::default(),
        ) {
            eprintln!("SKIPPED {op:?}: the CPU reference cannot run it yet: {e}");
            continue;
        }
        let cpu = cpu_outputs(&model, std::slice::from_ref(&x));
        let (out, r) = placed_run(&model, d, vec![0], None, true, 1, &[x]);
        assert_eq!(r.compile_error, None, "{op:?}");
        assert_eq!((r.runs, r.max_validation_error), (1, 0.0), "{op:?}");
        assert_eq!(bytes(&out), bytes(&cpu), "{op:?}");
        let io = (x_shape.iter().product::<usize>() + out[0].data.len()) as f64;
        let expected = Duration::from_secs_f64(npu().estimate_seconds(macs, 0.0, io));
        assert_eq!(r.device_time, expected, "{op:?}");
    }
}
