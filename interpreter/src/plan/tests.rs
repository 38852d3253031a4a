//! The plan's shape cache and what a plan holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::builder::ModelBuilder;
use crate::control::Budget;
use crate::session::SessionLimits;
use crate::session::tests::TestOps;
use crate::tensor::Tensor;

/// y = x + x over a [-1, 4] input stored as [1, 4], plus a folded constant z = c + c.
fn model() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    sg.set_signature(x, vec![-1, 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    let c = sg.constant_f32("c", &[256], &[1.0; 256]);
    let z = sg.tensor("z", DType::F32, &[256]);
    let w = sg.tensor("w", DType::F32, &[256]);
    let add = || OpKind::Builtin(BuiltinOp::Add);
    let act = || OpOptions::Activation(Default::default());
    sg.op(add(), &[Some(x), Some(x)], &[y], act());
    sg.op(add(), &[Some(c), Some(c)], &[z], act());
    sg.op(add(), &[Some(z), Some(c)], &[w], act());
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y, w]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}

#[test]
fn folded_constants_are_held_once_by_the_plan() {
    let plan = Plan::new(
        model(),
        Arc::new(TestOps::default()),
        PlanOptions::default(),
    )
    .unwrap();
    // z = c + c is folded (1 KiB); w is a subgraph output, so it is computed per run.
    assert_eq!(plan.shared_bytes(), 1024);
    let s = plan.session(SessionLimits::default()).unwrap();
    assert_eq!(s.heap_bytes(), 1024);
    assert!(s.memory_bytes() < 4096);
}

#[test]
fn the_shape_cache_is_bounded_and_reprepares_evicted_shapes() {
    let ops = Arc::new(TestOps::default());
    let options = PlanOptions {
        prepare: PrepareLimits {
            max_shape_sets: 2,
            ..PrepareLimits::default()
        },
        ..PlanOptions::default()
    };
    let plan = Plan::new(model(), ops.clone(), options).unwrap();
    let mut s = plan.session(SessionLimits::default()).unwrap();
    for rows in [2usize, 3, 4, 2] {
        let x = Tensor::from_f32(vec![rows, 4], &vec![1.0; rows * 4]).unwrap();
        let out = s.run(&[x.view()], &mut Budget::default()).unwrap();
        assert_eq!(out[0].shape, vec![rows, 4]);
        assert!(plan.cached().len() <= 2);
    }
    // Three prepares per shape set (two kernels plus the folded one), five sets prepared
    // in all: [1, 4], [2, 4], [3, 4], [4, 4] and [2, 4] again after its eviction.
    assert_eq!(ops.prepares.load(Ordering::Relaxed), 3 * 5);
}
