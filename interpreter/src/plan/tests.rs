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

/// TestOps, plus MUL by a constant second operand that the kernel copies at prepare and
/// never reads again (as a convolution packs its filter).
struct PackingOps(TestOps);

struct PackedMul(Vec<f32>);

impl crate::kernel::OpKernel for PackedMul {
    fn eval(
        &self,
        inputs: &[Option<crate::TensorView<'_>>],
        outputs: &mut [crate::TensorViewMut<'_>],
    ) -> Result<(), crate::KernelError> {
        if inputs.get(1).is_some_and(Option::is_some) {
            return Err(crate::KernelError::invalid("the packed operand was passed"));
        }
        let x = crate::kernel::input(inputs, 0)?.f32s()?;
        for ((o, a), b) in outputs[0].f32s_mut()?.iter_mut().zip(x).zip(&self.0) {
            *o = a * b;
        }
        Ok(())
    }
    fn consumed_inputs(&self) -> &[usize] {
        &[1]
    }
    fn memory_bytes(&self) -> usize {
        self.0.len() * 4
    }
}

impl crate::OpResolver for PackingOps {
    fn prepare(
        &self,
        ctx: &crate::PrepareCtx<'_>,
    ) -> Result<crate::PreparedKernel, crate::KernelError> {
        if *ctx.op() != OpKind::Builtin(BuiltinOp::Mul) {
            return self.0.prepare(ctx);
        }
        let b = ctx.input(1)?;
        let packed = b
            .value()
            .ok_or_else(|| crate::KernelError::unsupported("operand not constant"))?
            .f32s()?
            .to_vec();
        Ok(crate::PreparedKernel::new(
            vec![ctx.input(0)?.shape.to_vec()],
            PackedMul(packed),
        ))
    }
}

#[test]
fn folded_values_only_a_packing_kernel_read_are_released_with_the_option() {
    // z = c + c is folded, feeds only the MUL, which packs it; v = c + c is folded and
    // read at run time by an ADD, so it stays.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[256]);
    let c = sg.constant_f32("c", &[256], &[1.5; 256]);
    let (z, v) = (
        sg.tensor("z", DType::F32, &[256]),
        sg.tensor("v", DType::F32, &[256]),
    );
    let (m, y) = (
        sg.tensor("m", DType::F32, &[256]),
        sg.tensor("y", DType::F32, &[256]),
    );
    let act = || OpOptions::Activation(Default::default());
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(c), Some(c)],
        &[z],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(c), Some(c)],
        &[v],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Mul),
        &[Some(x), Some(z)],
        &[m],
        act(),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(m), Some(v)],
        &[y],
        act(),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    let model = Arc::new(Model::from_bytes(&mb.finish()).unwrap());
    let x = Tensor::from_f32(vec![256], &[2.0; 256]).unwrap();
    for release in [false, true] {
        let options = PlanOptions {
            release_consumed: release,
            ..PlanOptions::default()
        };
        let plan = Plan::new(
            model.clone(),
            Arc::new(PackingOps(TestOps::default())),
            options,
        )
        .unwrap();
        // Packed copy 1 KiB, v 1 KiB, and z 1 KiB unless released.
        let expected = if release { 2048 } else { 3072 };
        assert_eq!(plan.shared_bytes(), expected, "release {release}");
        let mut s = plan.session(SessionLimits::default()).unwrap();
        let out = s.run(&[x.view()], &mut Budget::default()).unwrap();
        // 2 * 3 + 3, every element.
        assert!(out[0].view().f32s().unwrap().iter().all(|&y| y == 9.0));
    }
}
