//! Session tests over small models built in place, with a test resolver that counts
//! its prepares (to prove what is prepared once and what is not).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::builder::ModelBuilder;
use crate::control::{Budget, BudgetExceeded};
use crate::delegate::{
    CompiledPartition, Delegate, DelegateError, ExecReport, NodeSupportCtx, Partition,
    PartitionCtx, PlacedPartition, ProcessorKind, Support,
};
use crate::error::KernelError;
use crate::interpreter::{Interpreter, InterpreterOptions};
use crate::kernel::{FnKernel, OpResolver, PrepareCtx, PreparedKernel};
use crate::model::Model;
use crate::ops::{BuiltinOp, OpKind, OpOptions};
use crate::plan::{Plan, PlanOptions, PrepareLimits};
use crate::tensor::{DType, Tensor, TensorView, TensorViewMut};

/// ADD (float32 or int32, the second operand the same shape or one element), LESS
/// (int32 against one element, bool out) and FILL (shape from a runtime value): enough
/// to exercise the executor. Counts every prepare call.
#[derive(Default)]
pub(crate) struct TestOps {
    pub prepares: AtomicUsize,
}

fn op(b: BuiltinOp) -> OpKind {
    OpKind::Builtin(b)
}

fn no_act() -> OpOptions {
    OpOptions::Activation(Default::default())
}

fn add_into(a: &[f32], b: &[f32], out: &mut [f32], bias: f32) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y + bias;
    }
}

impl OpResolver for TestOps {
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
        self.prepares.fetch_add(1, Ordering::Relaxed);
        match ctx.op() {
            OpKind::Builtin(BuiltinOp::Add) => {
                let (a, b) = (ctx.input(0)?, ctx.input(1)?);
                if a.dtype != b.dtype
                    || (b.element_count() != a.element_count() && b.element_count() != 1)
                {
                    return Err(KernelError::shape("ADD operands do not match"));
                }
                let shape = a.shape.to_vec();
                Ok(PreparedKernel::new(
                    vec![shape],
                    FnKernel::new("add", |ins, outs| {
                        let a = crate::kernel::input(ins, 0)?;
                        let b = crate::kernel::input(ins, 1)?;
                        match a.dtype {
                            DType::F32 => {
                                let (x, y) = (a.f32s()?, b.f32s()?);
                                let out = outs[0].f32s_mut()?;
                                if y.len() == 1 {
                                    for (o, v) in out.iter_mut().zip(x) {
                                        *o = v + y[0];
                                    }
                                } else {
                                    add_into(x, y, out, 0.0);
                                }
                            }
                            _ => {
                                let (x, y) = (a.i32s()?, b.i32s()?);
                                let out = outs[0].i32s_mut()?;
                                for (k, (o, v)) in out.iter_mut().zip(x).enumerate() {
                                    *o = v.wrapping_add(y[if y.len() == 1 { 0 } else { k }]);
                                }
                            }
                        }
                        Ok(())
                    }),
                ))
            }
            OpKind::Builtin(BuiltinOp::Less) => {
                let a = ctx.input(0)?;
                Ok(PreparedKernel::new(
                    vec![a.shape.to_vec()],
                    FnKernel::new("less", |ins, outs| {
                        let a = crate::kernel::input(ins, 0)?.i32s()?;
                        let b = crate::kernel::input(ins, 1)?.i32s()?;
                        let limit = *b.first().ok_or_else(|| KernelError::invalid("empty"))?;
                        for (o, &v) in outs[0].bytes.iter_mut().zip(a) {
                            *o = u8::from(v < limit);
                        }
                        Ok(())
                    }),
                ))
            }
            OpKind::Builtin(BuiltinOp::Fill) => {
                let dims = ctx.input(0)?.value().ok_or(KernelError::NeedsValues)?;
                let shape = dims
                    .to_i64_vec()?
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| KernelError::shape("negative")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(PreparedKernel::new(
                    vec![shape],
                    FnKernel::new("fill", |ins, outs| {
                        let v = crate::kernel::input(ins, 1)?.f32s()?[0];
                        outs[0].f32s_mut()?.fill(v);
                        Ok(())
                    }),
                ))
            }
            other => Err(KernelError::unsupported(other.to_string())),
        }
    }
}

fn resolver() -> Arc<TestOps> {
    Arc::new(TestOps::default())
}

#[derive(Clone, Copy)]
enum Behaviour {
    Correct,
    Fail,
    OffByOne,
    /// Writes 999 into every output, then fails.
    ScribbleThenFail,
}

struct TestDelegate(Behaviour);

struct Compiled {
    behaviour: Behaviour,
    /// (node's two input positions in the partition, or a constant) per node: the
    /// test graph is a chain x -> +c1 -> +c2, so the partition computes x + c1 + c2.
    constants: Vec<Vec<f32>>,
}

impl CompiledPartition for Compiled {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        _deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let err = |what: String| DelegateError::Execute {
            delegate: "test".into(),
            what,
        };
        match self.behaviour {
            Behaviour::Fail => Err(err("injected failure".into())),
            Behaviour::ScribbleThenFail => {
                for o in outputs.iter_mut() {
                    o.bytes.fill(0x44);
                }
                Err(err("scribbled, then failed".into()))
            }
            b => {
                let x = inputs[0].f32s().map_err(|e| err(e.to_string()))?;
                let out = outputs[0].f32s_mut().map_err(|e| err(e.to_string()))?;
                out.copy_from_slice(x);
                for c in &self.constants {
                    for (o, v) in out.iter_mut().zip(c) {
                        *o += v;
                    }
                }
                if matches!(b, Behaviour::OffByOne) {
                    out.iter_mut().for_each(|o| *o += 1.0);
                }
                Ok(ExecReport {
                    device_time: Some(Duration::from_micros(5)),
                })
            }
        }
    }
}

impl Delegate for TestDelegate {
    fn name(&self) -> &str {
        "test"
    }
    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Npu
    }
    fn fingerprint(&self) -> String {
        "test-1".into()
    }
    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        if ctx.node.op == OpKind::Builtin(BuiltinOp::Add) {
            Support::Supported
        } else {
            Support::Unsupported("only ADD".into())
        }
    }
    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let mut constants = Vec::new();
        for &n in &ctx.partition.nodes {
            let c = ctx.subgraph.nodes[n].inputs[1]
                .and_then(|t| (ctx.constant)(t))
                .ok_or_else(|| DelegateError::Compile {
                    delegate: "test".into(),
                    what: "second input must be constant".into(),
                })?;
            constants.push(bytemuck::cast_slice::<u8, f32>(c).to_vec());
        }
        Ok(Box::new(Compiled {
            behaviour: self.0,
            constants,
        }))
    }
}

fn chain_model() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[4]);
    let c1 = sg.constant_f32("c1", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let t = sg.tensor("t", DType::F32, &[4]);
    let c2 = sg.constant_f32("c2", &[4], &[10.0, 20.0, 30.0, 40.0]);
    let y = sg.tensor("y", DType::F32, &[4]);
    let add = OpKind::Builtin(BuiltinOp::Add);
    sg.op(
        add.clone(),
        &[Some(x), Some(c1)],
        &[t],
        OpOptions::Activation(Default::default()),
    );
    sg.op(
        add,
        &[Some(t), Some(c2)],
        &[y],
        OpOptions::Activation(Default::default()),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

fn run_placed(b: Behaviour, validate: bool) -> (Vec<f32>, PartitionReport) {
    let model = chain_model();
    let partition = Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1]);
    assert_eq!(partition.inputs, vec![0]);
    assert_eq!(partition.outputs, vec![4]);
    let placed = PlacedPartition {
        partition,
        delegate: Arc::new(TestDelegate(b)),
        timeout: None,
    };
    let mut it = Interpreter::with_placement(
        model,
        Arc::new(TestOps::default()),
        InterpreterOptions::default(),
        vec![placed],
    )
    .unwrap();
    it.set_validation(validate);
    let x = Tensor::from_f32(vec![4], &[0.5, 0.5, 0.5, 0.5]).unwrap();
    let out = it.run(&[x.view()]).unwrap();
    (
        out[0].view().f32s().unwrap().to_vec(),
        it.partition_reports()[0].clone(),
    )
}

const EXPECTED: [f32; 4] = [11.5, 22.5, 33.5, 44.5];

#[test]
fn cpu_only_runs_the_chain() {
    let mut it = Interpreter::new(
        chain_model(),
        Arc::new(TestOps::default()),
        InterpreterOptions::default(),
    )
    .unwrap();
    let x = Tensor::from_f32(vec![4], &[0.5; 4]).unwrap();
    let out = it.run(&[x.view()]).unwrap();
    assert_eq!(out[0].view().f32s().unwrap(), &EXPECTED);
    assert_eq!(it.step_count(), 2);
}

#[test]
fn delegate_runs_the_partition() {
    let (y, r) = run_placed(Behaviour::Correct, false);
    assert_eq!(y, EXPECTED);
    assert_eq!((r.runs, r.failures), (1, 0));
    assert_eq!(r.device_time, Duration::from_micros(5));
}

#[test]
fn failing_delegate_falls_back_to_cpu() {
    let (y, r) = run_placed(Behaviour::Fail, false);
    assert_eq!(y, EXPECTED);
    assert_eq!(r.failures, 1);
    assert!(r.last_error.unwrap().contains("injected failure"));
}

#[test]
fn validation_catches_wrong_results_and_keeps_cpu_outputs() {
    let (y, r) = run_placed(Behaviour::OffByOne, true);
    assert_eq!(y, EXPECTED);
    assert_eq!(r.validations, 1);
    assert!(r.max_validation_error > 0.02, "{}", r.max_validation_error);
    let (_, ok) = run_placed(Behaviour::Correct, true);
    assert_eq!(ok.max_validation_error, 0.0);
}

#[test]
fn invalid_placements_are_rejected() {
    let model = chain_model();
    let bad = PlacedPartition {
        partition: Partition {
            subgraph: 0,
            nodes: vec![7],
            inputs: vec![],
            outputs: vec![],
        },
        delegate: Arc::new(TestDelegate(Behaviour::Correct)),
        timeout: None,
    };
    assert!(
        Interpreter::with_placement(
            model,
            Arc::new(TestOps::default()),
            InterpreterOptions::default(),
            vec![bad]
        )
        .is_err()
    );
}

#[test]
fn wrong_input_size_is_an_error_not_a_panic() {
    let mut it = Interpreter::new(
        chain_model(),
        Arc::new(TestOps::default()),
        InterpreterOptions::default(),
    )
    .unwrap();
    assert!(it.set_input(0, &[0u8; 3]).is_err());
    assert!(it.set_input(5, &[0u8; 16]).is_err());
    // A different rank cannot be a resize of a model without a shape signature.
    let x = Tensor::from_f32(vec![2, 2], &[0.0; 4]).unwrap();
    assert!(it.run(&[x.view()]).is_err());
    let i = Tensor::from_bytes(DType::I32, vec![4], &[0; 16]).unwrap();
    assert!(it.run(&[i.view()]).is_err());
    assert!(it.run(&[]).is_err());
}

// ---- plan / session ----------------------------------------------------------------

/// A running sum kept in a resource variable, initialised to zero by a CALL_ONCE
/// subgraph (the pattern of streaming models): y = state + x; state = y.
fn accumulator_model() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let init_sg = mb.add_subgraph();
    let var = || OpOptions::VarHandle {
        container: String::new(),
        shared_name: "acc".into(),
    };
    {
        let sg = &mut mb.subgraphs[init_sg];
        let h = sg.tensor("h", DType::Resource, &[]);
        let zero = sg.constant_f32("zero", &[4], &[0.0; 4]);
        sg.op(op(BuiltinOp::VarHandle), &[], &[h], var());
        sg.op(
            op(BuiltinOp::AssignVariable),
            &[Some(h), Some(zero)],
            &[],
            OpOptions::None,
        );
    }
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[4]);
    let h = sg.tensor("h", DType::Resource, &[]);
    let state = sg.tensor("state", DType::F32, &[4]);
    let y = sg.tensor("y", DType::F32, &[4]);
    sg.op(
        op(BuiltinOp::CallOnce),
        &[],
        &[],
        OpOptions::CallOnce {
            init_subgraph: init_sg,
        },
    );
    sg.op(op(BuiltinOp::VarHandle), &[], &[h], var());
    sg.op(
        op(BuiltinOp::ReadVariable),
        &[Some(h)],
        &[state],
        OpOptions::None,
    );
    sg.op(op(BuiltinOp::Add), &[Some(state), Some(x)], &[y], no_act());
    sg.op(
        op(BuiltinOp::AssignVariable),
        &[Some(h), Some(y)],
        &[],
        OpOptions::None,
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

fn f32x4(v: f32) -> Tensor {
    Tensor::from_f32(vec![4], &[v; 4]).unwrap()
}

fn first(out: &[Tensor]) -> f32 {
    out[0].view().f32s().unwrap()[0]
}

fn budget() -> Budget {
    Budget::nodes(1_000_000)
}

#[test]
fn sessions_of_one_plan_keep_separate_state() {
    let plan = Plan::new(accumulator_model(), resolver(), PlanOptions::default()).unwrap();
    assert!(plan.is_stateful());
    assert!(
        !Plan::new(chain_model(), resolver(), PlanOptions::default())
            .unwrap()
            .is_stateful()
    );
    let mut a = plan.session(SessionLimits::default()).unwrap();
    let mut b = plan.session(SessionLimits::default()).unwrap();
    for k in 1..=3 {
        let out = a.run(&[f32x4(1.0).view()], &mut budget()).unwrap();
        assert_eq!(first(&out), k as f32);
    }
    // B starts its own stream from zero, whatever A accumulated.
    let out = b.run(&[f32x4(0.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 0.0);
    let out = b.run(&[f32x4(10.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 10.0);
    let out = a.run(&[f32x4(1.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 4.0);
    // Reset starts a fresh stream.
    a.reset();
    let out = a.run(&[f32x4(2.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 2.0);
}

#[test]
fn opening_a_session_prepares_nothing() {
    let ops = resolver();
    let plan = Plan::new(chain_model(), ops.clone(), PlanOptions::default()).unwrap();
    let after_plan = ops.prepares.load(Ordering::Relaxed);
    assert_eq!(after_plan, 2);
    let sessions: Vec<Session> = (0..16)
        .map(|_| plan.session(SessionLimits::default()).unwrap())
        .collect();
    assert_eq!(ops.prepares.load(Ordering::Relaxed), after_plan);
    assert_eq!(sessions[15].memory_bytes(), plan.session_bytes_estimate());
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let out = s.run(&[f32x4(0.5).view()], &mut budget()).unwrap();
    assert_eq!(out[0].view().f32s().unwrap(), &EXPECTED);
    assert_eq!(ops.prepares.load(Ordering::Relaxed), after_plan);
}

/// y = x + x over a [-1, 4] input stored as [1, 4].
fn dynamic_model() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    sg.set_signature(x, vec![-1, 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    sg.op(op(BuiltinOp::Add), &[Some(x), Some(x)], &[y], no_act());
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

#[test]
fn concurrent_sessions_prepare_a_new_shape_once() {
    let ops = resolver();
    let plan = Plan::new(dynamic_model(), ops.clone(), PlanOptions::default()).unwrap();
    assert_eq!(ops.prepares.load(Ordering::Relaxed), 1);
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (plan, barrier) = (plan.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = plan.session(SessionLimits::default()).unwrap();
                barrier.wait();
                let x = Tensor::from_f32(vec![3, 4], &[1.5; 12]).unwrap();
                let out = s.run(&[x.view()], &mut Budget::default()).unwrap();
                assert_eq!(out[0].shape, vec![3, 4]);
                assert_eq!(out[0].view().f32s().unwrap(), &[3.0; 12]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ops.prepares.load(Ordering::Relaxed), 2);
}

#[test]
fn a_differing_static_shape_is_refused_unless_resized_explicitly() {
    // Chain model: [4], no signature.
    let plan = Plan::new(chain_model(), resolver(), PlanOptions::default()).unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let x = Tensor::from_f32(vec![1, 4], &[0.0; 4]).unwrap();
    let e = s.run(&[x.view()], &mut budget()).unwrap_err();
    assert!(
        matches!(&e, RunError::InputShape { index: 0, expected, got } if expected == &[4] && got == &[1, 4]),
        "{e}"
    );
    assert!(e.to_string().contains("[1, 4]") && e.to_string().contains("[4]"));
    // The dynamic dimension of a signature may change; a static one may not.
    let plan = Plan::new(dynamic_model(), resolver(), PlanOptions::default()).unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let x = Tensor::from_f32(vec![2, 4], &[1.0; 8]).unwrap();
    assert_eq!(
        s.run(&[x.view()], &mut budget()).unwrap()[0].shape,
        vec![2, 4]
    );
    assert_eq!(s.input_shape(0).unwrap(), &[2, 4]);
    let x = Tensor::from_f32(vec![2, 2], &[1.0; 4]).unwrap();
    assert!(matches!(
        s.run(&[x.view()], &mut budget()),
        Err(RunError::InputShape { .. })
    ));
    // An explicit resize is checked against the signature too.
    assert!(s.resize_input(0, &[2, 2]).is_err());
    s.resize_input(0, &[5, 4]).unwrap();
    let x = Tensor::from_f32(vec![5, 4], &[1.0; 20]).unwrap();
    assert_eq!(
        s.run(&[x.view()], &mut budget()).unwrap()[0].shape,
        vec![5, 4]
    );
    // The facade is strict the same way.
    let mut it = Interpreter::new(
        chain_model(),
        Arc::new(TestOps::default()),
        InterpreterOptions::default(),
    )
    .unwrap();
    let x = Tensor::from_f32(vec![2], &[0.0; 2]).unwrap();
    assert!(matches!(
        it.run(&[x.view()]),
        Err(RunError::InputShape { .. })
    ));
}

/// A WHILE loop counting `i` to `limit` around a body that runs an inner WHILE loop
/// counting `j` to `limit`: limit² iterations in all, each loop within its own cap.
fn nested_while_model(limit: i32) -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let cond = mb.add_subgraph();
    let inner_body = mb.add_subgraph();
    let outer_body = mb.add_subgraph();
    {
        let sg = &mut mb.subgraphs[cond];
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.constant_i32("n", &[1], &[limit]);
        let go = sg.tensor("go", DType::Bool, &[1]);
        sg.op(
            op(BuiltinOp::Less),
            &[Some(i), Some(n)],
            &[go],
            OpOptions::None,
        );
        sg.set_inputs(&[i]);
        sg.set_outputs(&[go]);
    }
    {
        let sg = &mut mb.subgraphs[inner_body];
        let j = sg.tensor("j", DType::I32, &[1]);
        let one = sg.constant_i32("one", &[1], &[1]);
        let j2 = sg.tensor("j2", DType::I32, &[1]);
        sg.op(op(BuiltinOp::Add), &[Some(j), Some(one)], &[j2], no_act());
        sg.set_inputs(&[j]);
        sg.set_outputs(&[j2]);
    }
    {
        let sg = &mut mb.subgraphs[outer_body];
        let i = sg.tensor("i", DType::I32, &[1]);
        let zero = sg.constant_i32("zero", &[1], &[0]);
        let j_end = sg.tensor("j_end", DType::I32, &[1]);
        let one = sg.constant_i32("one", &[1], &[1]);
        let i2 = sg.tensor("i2", DType::I32, &[1]);
        sg.op(
            op(BuiltinOp::While),
            &[Some(zero)],
            &[j_end],
            OpOptions::While {
                cond_subgraph: cond,
                body_subgraph: inner_body,
            },
        );
        sg.op(op(BuiltinOp::Add), &[Some(i), Some(one)], &[i2], no_act());
        sg.set_inputs(&[i]);
        sg.set_outputs(&[i2]);
    }
    let sg = mb.main();
    let start = sg.tensor("start", DType::I32, &[1]);
    let end = sg.tensor("end", DType::I32, &[1]);
    sg.op(
        op(BuiltinOp::While),
        &[Some(start)],
        &[end],
        OpOptions::While {
            cond_subgraph: cond,
            body_subgraph: outer_body,
        },
    );
    sg.set_inputs(&[start]);
    sg.set_outputs(&[end]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

#[test]
fn nested_loops_are_bounded_by_the_total_node_budget() {
    // 10^5 iterations per loop (under the per-loop cap), 10^10 in all.
    let plan = Plan::new(
        nested_while_model(100_000),
        resolver(),
        PlanOptions::default(),
    )
    .unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let zero = Tensor::from_bytes(DType::I32, vec![1], &[0; 4]).unwrap();
    let started = Instant::now();
    let e = s
        .run(&[zero.view()], &mut Budget::nodes(20_000))
        .unwrap_err();
    assert!(
        matches!(e, RunError::Budget(BudgetExceeded::Nodes { limit: 20_000 })),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A deadline and a cancellation flag stop it too, between nodes.
    let e = s
        .run(
            &[zero.view()],
            &mut Budget::nodes(u64::MAX).with_timeout(Duration::from_millis(50)),
        )
        .unwrap_err();
    assert!(
        matches!(e, RunError::Budget(BudgetExceeded::Deadline { .. })),
        "{e}"
    );
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let e = s
        .run(
            &[zero.view()],
            &mut Budget::nodes(u64::MAX).with_cancel(flag),
        )
        .unwrap_err();
    assert!(matches!(e, RunError::Cancelled), "{e}");
    // The session stays usable: a small loop completes and counts its iterations.
    let plan = Plan::new(nested_while_model(3), resolver(), PlanOptions::default()).unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let out = s.run(&[zero.view()], &mut budget()).unwrap();
    assert_eq!(out[0].view().i32s().unwrap(), &[3]);
    // Outer: 3 iterations + 4 cond runs (1 node) + 3 bodies (inner loop: 3 iterations,
    // 4 conds, 3 adds; then the WHILE node and an add) + the outer WHILE node.
    assert_eq!(s.executed(), 3 + 4 + 3 * (3 + 4 + 3 + 2) + 1);
}

#[test]
fn memory_past_the_session_limit_is_refused_with_the_figures() {
    let plan = Plan::new(dynamic_model(), resolver(), PlanOptions::default()).unwrap();
    // The stored shape needs two 16-byte tensors in a 128-byte arena.
    assert!(matches!(
        plan.session(SessionLimits { max_bytes: 64 }),
        Err(RunError::Memory { .. })
    ));
    let mut s = plan.session(SessionLimits { max_bytes: 4096 }).unwrap();
    assert_eq!(s.memory_bytes(), 128);
    // A resize whose arena would not fit is refused, and the session keeps its shapes.
    let e = s.resize_input(0, &[1000, 4]).unwrap_err();
    match &e {
        RunError::Memory {
            requested, limit, ..
        } => {
            assert_eq!(*limit, 4096);
            assert_eq!(*requested, 32_000);
        }
        other => panic!("{other}"),
    }
    assert_eq!(s.input_shape(0).unwrap(), &[1, 4]);
    assert_eq!(s.memory_bytes(), 128);
    let x = Tensor::from_f32(vec![1, 4], &[1.0; 4]).unwrap();
    assert_eq!(
        s.run(&[x.view()], &mut budget()).unwrap()[0].shape,
        vec![1, 4]
    );
    // The same through an implicit (dynamic-dimension) resize in `run`.
    let big = Tensor::from_f32(vec![1000, 4], &[1.0; 4000]).unwrap();
    assert!(matches!(
        s.run(&[big.view()], &mut budget()),
        Err(RunError::Memory { .. })
    ));
    assert_eq!(s.memory_bytes(), 128);
}

/// FILL with dims from a client input: the output's size is only known at run time.
fn fill_model() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let dims = sg.tensor("dims", DType::I32, &[2]);
    let v = sg.constant_f32("v", &[], &[2.5]);
    let y = sg.tensor("y", DType::F32, &[1, 1]);
    sg.op(
        op(BuiltinOp::Fill),
        &[Some(dims), Some(v)],
        &[y],
        OpOptions::None,
    );
    sg.set_inputs(&[dims]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

#[test]
fn heap_tensors_count_against_the_session_limit() {
    let plan = Plan::new(fill_model(), resolver(), PlanOptions::default()).unwrap();
    let mut s = plan.session(SessionLimits { max_bytes: 1 << 20 }).unwrap();
    let dims = |a: i32, b: i32| {
        Tensor::from_bytes(DType::I32, vec![2], bytemuck::cast_slice(&[a, b])).unwrap()
    };
    let out = s.run(&[dims(3, 5).view()], &mut budget()).unwrap();
    assert_eq!(out[0].shape, vec![3, 5]);
    assert_eq!(out[0].view().f32s().unwrap(), &[2.5; 15]);
    // 16k x 16k floats = 1 GiB: under the per-tensor cap, far over the session's.
    let e = s
        .run(&[dims(16384, 16384).view()], &mut budget())
        .unwrap_err();
    assert!(
        matches!(e, RunError::Memory { requested, .. } if requested > 1 << 29),
        "{e}"
    );
    assert!(s.memory_bytes() < 1 << 20);
    let out = s.run(&[dims(2, 2).view()], &mut budget()).unwrap();
    assert_eq!(out[0].shape, vec![2, 2]);
}

/// Subgraph k (1..=depth) takes one input and holds two IF nodes calling subgraph k+1
/// with a [2] and a [3] constant: before the shape cache, preparing subgraph 1 prepared
/// subgraph k 2^k times.
fn alternating_if_model(depth: usize) -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let first = mb.subgraphs.len();
    for _ in 0..depth {
        mb.add_subgraph();
    }
    for k in 0..depth {
        let si = first + k;
        let sg = &mut mb.subgraphs[si];
        let x = sg.tensor("x", DType::F32, &[2]);
        sg.set_signature(x, vec![-1]);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[x]);
        if k + 1 < depth {
            let c = sg.constant("c", DType::Bool, &[1], vec![1]);
            for (n, len) in [2usize, 3].into_iter().enumerate() {
                let a = sg.constant_f32(&format!("a{n}"), &[len], &vec![1.0; len]);
                let y = sg.tensor(&format!("y{n}"), DType::F32, &[len]);
                sg.op(
                    op(BuiltinOp::If),
                    &[Some(c), Some(a)],
                    &[y],
                    OpOptions::If {
                        then_subgraph: si + 1,
                        else_subgraph: si + 1,
                    },
                );
            }
        }
    }
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[2]);
    let c = sg.constant("c", DType::Bool, &[1], vec![1]);
    let y = sg.tensor("y", DType::F32, &[2]);
    sg.op(
        op(BuiltinOp::If),
        &[Some(c), Some(x)],
        &[y],
        OpOptions::If {
            then_subgraph: first,
            else_subgraph: first,
        },
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

#[test]
fn prepare_is_linear_in_alternating_branch_shapes() {
    let started = Instant::now();
    let plan = Plan::new(alternating_if_model(15), resolver(), PlanOptions::default()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Two shape sets per subgraph, each prepared once.
    assert!(plan.cached().len() <= 2 * 15 + 1, "{}", plan.cached().len());
    // Running it is 2^15 subgraph calls: the run budget stops it.
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let x = Tensor::from_f32(vec![2], &[1.0; 2]).unwrap();
    assert!(matches!(
        s.run(&[x.view()], &mut Budget::nodes(10_000)),
        Err(RunError::Budget(BudgetExceeded::Nodes { .. }))
    ));
}

#[test]
fn prepare_has_a_budget() {
    let options = PlanOptions {
        prepare: PrepareLimits {
            max_nodes: 10,
            ..PrepareLimits::default()
        },
        ..PlanOptions::default()
    };
    let e = Plan::new(alternating_if_model(15), resolver(), options).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::Budget(BudgetExceeded::PrepareNodes { limit: 10 })
        ),
        "{e}"
    );
    let options = PlanOptions {
        prepare: PrepareLimits {
            max_shape_sets: 8,
            ..PrepareLimits::default()
        },
        ..PlanOptions::default()
    };
    // More shape sets than the cache holds, all in preparation at once: refused.
    let e = Plan::new(alternating_if_model(15), resolver(), options).unwrap_err();
    assert!(
        matches!(e, RunError::Budget(BudgetExceeded::ShapeSets { limit: 8 })),
        "{e}"
    );
}

fn placed_chain(b: Behaviour) -> Arc<Plan> {
    let model = chain_model();
    let partition = Partition::from_nodes(0, &model.subgraphs[0], vec![1]);
    let placed = PlacedPartition {
        partition,
        delegate: Arc::new(TestDelegate(b)),
        timeout: None,
    };
    Plan::with_placement(model, resolver(), PlanOptions::default(), vec![placed]).unwrap()
}

#[test]
fn stages_run_in_order_on_their_processor_or_forced_onto_the_cpu() {
    let plan = placed_chain(Behaviour::Correct);
    let mut s = plan.session(SessionLimits::default()).unwrap();
    let stages = s.stages();
    assert_eq!(
        stages,
        vec![
            StageInfo {
                processor: ProcessorKind::Cpu,
                delegate: "cpu".into(),
                nodes: vec![0],
            },
            StageInfo {
                processor: ProcessorKind::Npu,
                delegate: "test".into(),
                nodes: vec![1],
            },
        ]
    );
    for target in [StageTarget::Planned, StageTarget::Cpu] {
        s.set_input(0, bytemuck::cast_slice(&[0.5f32; 4])).unwrap();
        let r0 = s.run_stage(0, target, &mut budget()).unwrap();
        assert_eq!(
            (r0.processor, r0.fell_back, r0.executed),
            (ProcessorKind::Cpu, false, 1)
        );
        // Out of order is refused.
        assert!(s.run_stage(0, target, &mut budget()).is_ok());
        let r1 = s.run_stage(1, target, &mut budget()).unwrap();
        let want = match target {
            StageTarget::Planned => (ProcessorKind::Npu, false),
            StageTarget::Cpu => (ProcessorKind::Cpu, true),
        };
        assert_eq!((r1.processor, r1.fell_back), want);
        assert_eq!(s.output(0).unwrap().f32s().unwrap(), &EXPECTED);
        assert!(s.run_stage(1, target, &mut budget()).is_err());
    }
    assert_eq!(s.partition_reports()[0].runs, 1);
    assert_eq!(plan.partition_reports()[0].runs, 1);
}

#[test]
fn rebind_moves_a_stream_onto_another_plan_of_the_same_model() {
    let model = accumulator_model();
    let cpu = Plan::new(model.clone(), resolver(), PlanOptions::default()).unwrap();
    let other = Plan::new(model, resolver(), PlanOptions::default()).unwrap();
    let mut s = cpu.session(SessionLimits::default()).unwrap();
    s.run(&[f32x4(2.0).view()], &mut budget()).unwrap();
    s.rebind(other.clone()).unwrap();
    assert!(Arc::ptr_eq(s.plan(), &other));
    let out = s.run(&[f32x4(1.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 3.0);
    let unrelated = Plan::new(chain_model(), resolver(), PlanOptions::default()).unwrap();
    assert!(s.rebind(unrelated).is_err());
    let out = s.run(&[f32x4(1.0).view()], &mut budget()).unwrap();
    assert_eq!(first(&out), 4.0);
}

#[test]
fn plan_and_session_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Plan>();
    send::<Session>();
}

#[test]
fn a_partition_recomputing_a_folded_value_leaves_it_intact() {
    // f = c + c is folded at prepare; the partition [0, 1] recomputes it (and y), and
    // z = y + f reads f outside the partition.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[4]);
    let c = sg.constant_f32("c", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let f = sg.tensor("f", DType::F32, &[4]);
    let y = sg.tensor("y", DType::F32, &[4]);
    let z = sg.tensor("z", DType::F32, &[4]);
    sg.op(op(BuiltinOp::Add), &[Some(c), Some(c)], &[f], no_act());
    sg.op(op(BuiltinOp::Add), &[Some(x), Some(f)], &[y], no_act());
    sg.op(op(BuiltinOp::Add), &[Some(y), Some(f)], &[z], no_act());
    sg.set_inputs(&[x]);
    sg.set_outputs(&[z]);
    let model = Arc::new(Model::from_bytes(&mb.finish()).unwrap());
    let partition = Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1]);
    assert_eq!(partition.outputs, vec![f, y]);
    let placed = PlacedPartition {
        partition,
        delegate: Arc::new(TestDelegate(Behaviour::ScribbleThenFail)),
        timeout: None,
    };
    let plan =
        Plan::with_placement(model, resolver(), PlanOptions::default(), vec![placed]).unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    for _ in 0..2 {
        let out = s.run(&[f32x4(0.5).view()], &mut budget()).unwrap();
        assert_eq!(out[0].view().f32s().unwrap(), &[4.5, 8.5, 12.5, 16.5]);
    }
    assert_eq!(s.partition_reports()[0].failures, 2);
}
