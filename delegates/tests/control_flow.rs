//! Multi-subgraph models run by the executor itself: IF, WHILE, CALL_ONCE with resource
//! variables, and signatures. Each model is built here, run by LiteRT's builtin kernels
//! and by Switchyard on the CPU, and the outputs compared; stateful models are invoked
//! several times in a row on one interpreter on both sides.

use std::sync::Arc;

use switchyard_delegates::cpu::CpuResolver;
use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Interpreter, InterpreterOptions, Model, OpKind, OpOptions,
    OpResolver, RunError, Tensor,
};
use switchyard_testkit::{
    LiteRtKernels, Tolerance, assert_matches_litert, assert_matches_litert_seq, compare,
    litert_run_seq, random_tensor,
};

fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
    vec![
        ("reference", Arc::new(CpuResolver::reference())),
        ("optimized", Arc::new(CpuResolver::optimized())),
    ]
}

fn op(b: BuiltinOp) -> OpKind {
    OpKind::Builtin(b)
}

fn no_act() -> OpOptions {
    OpOptions::Activation(Activation::None)
}

fn f32s(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), values).unwrap()
}

fn i32s(shape: &[usize], values: &[i32]) -> Tensor {
    Tensor::from_bytes(DType::I32, shape.to_vec(), bytemuck::cast_slice(values)).unwrap()
}

/// y = IF(a > 0, then: x + 10, else: x * -2). Both branches are data-dependent on `a`.
fn if_model() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let then_sg = mb.add_subgraph();
    let else_sg = mb.add_subgraph();
    {
        let sg = &mut mb.subgraphs[then_sg];
        sg.name = "then".into();
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let c = sg.constant_f32("ten", &[1], &[10.0]);
        let y = sg.tensor("y", DType::F32, &[2, 3]);
        sg.op(op(BuiltinOp::Add), &[Some(x), Some(c)], &[y], no_act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
    }
    {
        let sg = &mut mb.subgraphs[else_sg];
        sg.name = "else".into();
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let c = sg.constant_f32("minus_two", &[1], &[-2.0]);
        let y = sg.tensor("y", DType::F32, &[2, 3]);
        sg.op(op(BuiltinOp::Mul), &[Some(x), Some(c)], &[y], no_act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
    }
    let sg = mb.main();
    sg.name = "main".into();
    let a = sg.tensor("a", DType::F32, &[1]);
    let x = sg.tensor("x", DType::F32, &[2, 3]);
    let zero = sg.constant_f32("zero", &[1], &[0.0]);
    let cond = sg.tensor("cond", DType::Bool, &[1]);
    let y = sg.tensor("y", DType::F32, &[2, 3]);
    sg.op(
        op(BuiltinOp::Greater),
        &[Some(a), Some(zero)],
        &[cond],
        OpOptions::None,
    );
    sg.op(
        op(BuiltinOp::If),
        &[Some(cond), Some(x)],
        &[y],
        OpOptions::If {
            then_subgraph: then_sg,
            else_subgraph: else_sg,
        },
    );
    sg.set_inputs(&[a, x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[test]
fn if_takes_both_branches_like_litert() {
    let model = if_model();
    let x = random_tensor(DType::F32, &[2, 3], 3, -4.0, 4.0);
    for (a, expect_then) in [(1.5f32, true), (-0.5, false)] {
        let inputs = [f32s(&[1], &[a]), x.clone()];
        assert_matches_litert(&format!("IF a={a}"), &model, &inputs, &resolvers(), None);
        // Not only equal to LiteRT: the branch really is the one the condition picks.
        let mut it = Interpreter::new(
            Arc::new(Model::from_bytes(&model).unwrap()),
            Arc::new(CpuResolver::reference()),
            InterpreterOptions::default(),
        )
        .unwrap();
        let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
        let y = it.run(&views).unwrap();
        let xs = x.view().f32s().unwrap().to_vec();
        let want: Vec<f32> = xs
            .iter()
            .map(|v| if expect_then { v + 10.0 } else { v * -2.0 })
            .collect();
        assert_eq!(y[0].view().f32s().unwrap(), want.as_slice());
    }
    // Alternating branches on one interpreter.
    let invokes: Vec<Vec<Tensor>> = [1.0f32, -1.0, -3.0, 2.0]
        .iter()
        .map(|&a| vec![f32s(&[1], &[a]), x.clone()])
        .collect();
    assert_matches_litert_seq("IF alternating", &model, &invokes, &resolvers(), None);
}

/// State (i, n, acc, x) -> (i + 1, n, acc + x, x) while i < n; outputs (i, acc).
/// `body_increments` false makes a loop that never ends.
fn while_model(body_increments: bool) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let cond_sg = mb.add_subgraph();
    let body_sg = mb.add_subgraph();
    {
        let sg = &mut mb.subgraphs[cond_sg];
        sg.name = "cond".into();
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let acc = sg.tensor("acc", DType::F32, &[3]);
        let x = sg.tensor("x", DType::F32, &[3]);
        let go = sg.tensor("go", DType::Bool, &[1]);
        sg.op(
            op(BuiltinOp::Less),
            &[Some(i), Some(n)],
            &[go],
            OpOptions::None,
        );
        sg.set_inputs(&[i, n, acc, x]);
        sg.set_outputs(&[go]);
    }
    {
        let sg = &mut mb.subgraphs[body_sg];
        sg.name = "body".into();
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let acc = sg.tensor("acc", DType::F32, &[3]);
        let x = sg.tensor("x", DType::F32, &[3]);
        let step = sg.constant_i32("step", &[1], &[i32::from(body_increments)]);
        let i2 = sg.tensor("i_next", DType::I32, &[1]);
        let acc2 = sg.tensor("acc_next", DType::F32, &[3]);
        sg.op(op(BuiltinOp::Add), &[Some(i), Some(step)], &[i2], no_act());
        sg.op(op(BuiltinOp::Add), &[Some(acc), Some(x)], &[acc2], no_act());
        sg.set_inputs(&[i, n, acc, x]);
        sg.set_outputs(&[i2, n, acc2, x]);
    }
    let sg = mb.main();
    sg.name = "main".into();
    let n = sg.tensor("n", DType::I32, &[1]);
    let x = sg.tensor("x", DType::F32, &[3]);
    let i0 = sg.constant_i32("i0", &[1], &[0]);
    let acc0 = sg.constant_f32("acc0", &[3], &[0.5, -1.0, 2.0]);
    let i_out = sg.tensor("i_out", DType::I32, &[1]);
    let n_out = sg.tensor("n_out", DType::I32, &[1]);
    let acc_out = sg.tensor("acc_out", DType::F32, &[3]);
    let x_out = sg.tensor("x_out", DType::F32, &[3]);
    sg.op(
        op(BuiltinOp::While),
        &[Some(i0), Some(n), Some(acc0), Some(x)],
        &[i_out, n_out, acc_out, x_out],
        OpOptions::While {
            cond_subgraph: cond_sg,
            body_subgraph: body_sg,
        },
    );
    sg.set_inputs(&[n, x]);
    sg.set_outputs(&[i_out, acc_out]);
    mb.finish()
}

#[test]
fn while_counts_a_data_dependent_number_of_times_like_litert() {
    let model = while_model(true);
    let x = f32s(&[3], &[1.0, 0.25, -3.0]);
    for n in [0, 1, 5, 17] {
        let inputs = [i32s(&[1], &[n]), x.clone()];
        assert_matches_litert(&format!("WHILE n={n}"), &model, &inputs, &resolvers(), None);
        let mut it = Interpreter::new(
            Arc::new(Model::from_bytes(&model).unwrap()),
            Arc::new(CpuResolver::reference()),
            InterpreterOptions::default(),
        )
        .unwrap();
        let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
        let out = it.run(&views).unwrap();
        assert_eq!(out[0].view().i32s().unwrap(), &[n]);
        let nf = n as f32;
        let want = [0.5 + nf, -1.0 + 0.25 * nf, 2.0 - 3.0 * nf];
        compare(&out[1], &f32s(&[3], &want), Tolerance::Float { rel: 1e-6 }).unwrap();
    }
    // Different trip counts one after another on one interpreter.
    let invokes: Vec<Vec<Tensor>> = [3, 0, 8, 2]
        .iter()
        .map(|&n| vec![i32s(&[1], &[n]), x.clone()])
        .collect();
    assert_matches_litert_seq("WHILE sequence", &model, &invokes, &resolvers(), None);
}

#[test]
fn endless_while_stops_at_the_iteration_limit_with_an_error() {
    let model = Arc::new(Model::from_bytes(&while_model(false)).unwrap());
    let options = InterpreterOptions {
        max_while_iterations: 1000,
        ..InterpreterOptions::default()
    };
    let mut it = Interpreter::new(model, Arc::new(CpuResolver::reference()), options).unwrap();
    let n = i32s(&[1], &[1]);
    let x = f32s(&[3], &[1.0, 2.0, 3.0]);
    let err = it.run(&[n.view(), x.view()]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RunError::Node { .. }) && msg.contains("1000 iterations"),
        "{msg}"
    );
    // The interpreter stays usable: a loop that ends runs afterwards (n = 0 never enters
    // the body).
    let zero = i32s(&[1], &[0]);
    let out = it.run(&[zero.view(), x.view()]).unwrap();
    assert_eq!(out[0].view().i32s().unwrap(), &[0]);
}

/// A running sum kept in a resource variable, initialised by a CALL_ONCE subgraph (the
/// pattern of streaming models such as mww_okay_nabu): y = state + x; state = y.
fn accumulator_model() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let init_sg = mb.add_subgraph();
    let var = || OpOptions::VarHandle {
        container: String::new(),
        shared_name: "acc_state".into(),
    };
    {
        let sg = &mut mb.subgraphs[init_sg];
        sg.name = "init".into();
        let h = sg.tensor("h", DType::Resource, &[]);
        let start = sg.constant_f32("start", &[2, 2], &[1.0, -1.0, 0.5, 4.0]);
        sg.op(op(BuiltinOp::VarHandle), &[], &[h], var());
        sg.op(
            op(BuiltinOp::AssignVariable),
            &[Some(h), Some(start)],
            &[],
            OpOptions::None,
        );
        sg.set_inputs(&[]);
        sg.set_outputs(&[]);
    }
    let sg = mb.main();
    sg.name = "main".into();
    let x = sg.tensor("x", DType::F32, &[2, 2]);
    let h = sg.tensor("h", DType::Resource, &[]);
    let state = sg.tensor("state", DType::F32, &[2, 2]);
    let y = sg.tensor("y", DType::F32, &[2, 2]);
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
    mb.finish()
}

#[test]
fn call_once_and_variables_keep_state_across_invokes_like_litert() {
    let model = accumulator_model();
    let invokes: Vec<Vec<Tensor>> = (0..5)
        .map(|k| vec![random_tensor(DType::F32, &[2, 2], 100 + k, -1.0, 1.0)])
        .collect();
    assert_matches_litert_seq(
        "CALL_ONCE accumulator",
        &model,
        &invokes,
        &resolvers(),
        None,
    );
    // The state really accumulates: invoke k returns start + x_0 + ... + x_k.
    let mut it = Interpreter::new(
        Arc::new(Model::from_bytes(&model).unwrap()),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
    )
    .unwrap();
    let mut want = [1.0f32, -1.0, 0.5, 4.0];
    for inputs in &invokes {
        let out = it.run(&[inputs[0].view()]).unwrap();
        for (w, v) in want.iter_mut().zip(inputs[0].view().f32s().unwrap()) {
            *w += v;
        }
        compare(
            &out[0],
            &f32s(&[2, 2], &want),
            Tolerance::Float { rel: 1e-6 },
        )
        .unwrap();
    }
}

#[test]
fn real_streaming_model_keeps_state_like_litert() {
    // mww_okay_nabu: CALL_ONCE initialises six streaming buffers held in variables.
    let path = switchyard_testkit::models_dir().join("mww_okay_nabu.tflite");
    let model = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/setup.sh", path.display()));
    let invokes: Vec<Vec<Tensor>> = (0..6)
        .map(|k| vec![random_tensor(DType::I8, &[1, 3, 40], 7 + k, -128.0, 127.0)])
        .collect();
    assert_matches_litert_seq("mww_okay_nabu stream", &model, &invokes, &resolvers(), None);
}

/// Two entry points: "add" (subgraph 0: sum = a + b) and "scale" (subgraph 1: y = 3x).
fn signature_model() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let scale_sg = mb.add_subgraph();
    let (x, y) = {
        let sg = &mut mb.subgraphs[scale_sg];
        sg.name = "scale".into();
        let x = sg.tensor("scale_x", DType::F32, &[4]);
        let three = sg.constant_f32("three", &[1], &[3.0]);
        let y = sg.tensor("scale_y", DType::F32, &[4]);
        sg.op(op(BuiltinOp::Mul), &[Some(x), Some(three)], &[y], no_act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        (x, y)
    };
    let sg = mb.main();
    sg.name = "add".into();
    let a = sg.tensor("add_a", DType::F32, &[4]);
    let b = sg.tensor("add_b", DType::F32, &[4]);
    let sum = sg.tensor("add_sum", DType::F32, &[4]);
    sg.op(op(BuiltinOp::Add), &[Some(a), Some(b)], &[sum], no_act());
    sg.set_inputs(&[a, b]);
    sg.set_outputs(&[sum]);
    // Names sort in subgraph input order, the order LiteRT's runner is fed in.
    mb.add_signature("add", 0, &[("a", a), ("b", b)], &[("sum", sum)]);
    mb.add_signature("scale", scale_sg, &[("x", x)], &[("y", y)]);
    mb.finish()
}

#[test]
fn signatures_run_like_litert_signature_runners() {
    let model = signature_model();
    let m = Arc::new(Model::from_bytes(&model).unwrap());
    let a = random_tensor(DType::F32, &[4], 1, -2.0, 2.0);
    let b = random_tensor(DType::F32, &[4], 2, -2.0, 2.0);
    for (name, resolver) in resolvers() {
        let mut it = Interpreter::new(m.clone(), resolver, InterpreterOptions::default()).unwrap();
        assert_eq!(it.signature_keys(), vec!["add", "scale"]);
        for (key, inputs) in [
            ("add", vec![("a", a.clone()), ("b", b.clone())]),
            ("scale", vec![("x", a.clone())]),
        ] {
            let tensors: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
            let expected = litert_run_seq(&model, &[tensors], LiteRtKernels::Builtin, Some(key))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let views: Vec<_> = inputs.iter().map(|(n, t)| (*n, t.view())).collect();
            let mut actual = it
                .run_signature(key, &views)
                .unwrap_or_else(|e| panic!("{key} [{name}]: {e}"));
            actual.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(actual.len(), expected[0].len(), "{key} [{name}]");
            for ((out, got), want) in actual.iter().zip(&expected[0]) {
                compare(got, want, Tolerance::Float { rel: 1e-6 })
                    .unwrap_or_else(|e| panic!("{key} [{name}] {out}: {e}"));
            }
        }
        // Bad calls are errors, not panics.
        assert!(it.run_signature("nope", &[]).is_err());
        assert!(it.run_signature("add", &[("a", a.view())]).is_err());
        assert!(
            it.run_signature("add", &[("a", a.view()), ("c", b.view())])
                .is_err()
        );
        let wrong = Tensor::from_bytes(DType::I32, vec![4], &[0; 16]).unwrap();
        assert!(it.run_signature("scale", &[("x", wrong.view())]).is_err());
    }
}

/// WHILE whose body holds an IF: acc += x on even i, acc -= x on odd i; and whose then
/// branch reshapes, so the IF's output shape depends on the branch taken (dynamic).
fn nested_model() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let cond_sg = mb.add_subgraph();
    let body_sg = mb.add_subgraph();
    let plus_sg = mb.add_subgraph();
    let minus_sg = mb.add_subgraph();
    for (sgi, b) in [(plus_sg, BuiltinOp::Add), (minus_sg, BuiltinOp::Sub)] {
        let sg = &mut mb.subgraphs[sgi];
        let acc = sg.tensor("acc", DType::F32, &[4]);
        let x = sg.tensor("x", DType::F32, &[4]);
        let y = sg.tensor("y", DType::F32, &[4]);
        sg.op(op(b), &[Some(acc), Some(x)], &[y], no_act());
        sg.set_inputs(&[acc, x]);
        sg.set_outputs(&[y]);
    }
    {
        let sg = &mut mb.subgraphs[cond_sg];
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let acc = sg.tensor("acc", DType::F32, &[4]);
        let x = sg.tensor("x", DType::F32, &[4]);
        let go = sg.tensor("go", DType::Bool, &[1]);
        sg.op(
            op(BuiltinOp::Less),
            &[Some(i), Some(n)],
            &[go],
            OpOptions::None,
        );
        sg.set_inputs(&[i, n, acc, x]);
        sg.set_outputs(&[go]);
    }
    {
        let sg = &mut mb.subgraphs[body_sg];
        let i = sg.tensor("i", DType::I32, &[1]);
        let n = sg.tensor("n", DType::I32, &[1]);
        let acc = sg.tensor("acc", DType::F32, &[4]);
        let x = sg.tensor("x", DType::F32, &[4]);
        let one = sg.constant_i32("one", &[1], &[1]);
        let two = sg.constant_i32("two", &[1], &[2]);
        let zero = sg.constant_i32("zero", &[1], &[0]);
        let parity = sg.tensor("parity", DType::I32, &[1]);
        let even = sg.tensor("even", DType::Bool, &[1]);
        let acc2 = sg.tensor("acc_next", DType::F32, &[4]);
        let i2 = sg.tensor("i_next", DType::I32, &[1]);
        sg.op(
            op(BuiltinOp::FloorMod),
            &[Some(i), Some(two)],
            &[parity],
            OpOptions::None,
        );
        sg.op(
            op(BuiltinOp::Equal),
            &[Some(parity), Some(zero)],
            &[even],
            OpOptions::None,
        );
        sg.op(
            op(BuiltinOp::If),
            &[Some(even), Some(acc), Some(x)],
            &[acc2],
            OpOptions::If {
                then_subgraph: plus_sg,
                else_subgraph: minus_sg,
            },
        );
        sg.op(op(BuiltinOp::Add), &[Some(i), Some(one)], &[i2], no_act());
        sg.set_inputs(&[i, n, acc, x]);
        sg.set_outputs(&[i2, n, acc2, x]);
    }
    let sg = mb.main();
    let n = sg.tensor("n", DType::I32, &[1]);
    let x = sg.tensor("x", DType::F32, &[4]);
    let i0 = sg.constant_i32("i0", &[1], &[0]);
    let acc0 = sg.constant_f32("acc0", &[4], &[0.0; 4]);
    let outs: Vec<usize> = [
        ("i_out", DType::I32, 1),
        ("n_out", DType::I32, 1),
        ("acc_out", DType::F32, 4),
        ("x_out", DType::F32, 4),
    ]
    .iter()
    .map(|&(name, dt, len)| sg.tensor(name, dt, &[len]))
    .collect();
    sg.op(
        op(BuiltinOp::While),
        &[Some(i0), Some(n), Some(acc0), Some(x)],
        &outs,
        OpOptions::While {
            cond_subgraph: cond_sg,
            body_subgraph: body_sg,
        },
    );
    sg.set_inputs(&[n, x]);
    sg.set_outputs(&[outs[0], outs[2]]);
    mb.finish()
}

#[test]
fn if_nested_in_while_matches_litert() {
    let model = nested_model();
    let x = random_tensor(DType::F32, &[4], 9, -3.0, 3.0);
    let invokes: Vec<Vec<Tensor>> = [0, 1, 4, 7]
        .iter()
        .map(|&n| vec![i32s(&[1], &[n]), x.clone()])
        .collect();
    assert_matches_litert_seq("IF in WHILE", &model, &invokes, &resolvers(), None);
}

/// IF whose branches return different shapes: then = x (shape [2, 3]), else = x
/// reshaped to [3, 2]. The IF output's shape is only known at run time.
fn dynamic_if_model() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let then_sg = mb.add_subgraph();
    let else_sg = mb.add_subgraph();
    {
        let sg = &mut mb.subgraphs[then_sg];
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let two = sg.constant_f32("two", &[1], &[2.0]);
        let y = sg.tensor("y", DType::F32, &[2, 3]);
        sg.op(op(BuiltinOp::Mul), &[Some(x), Some(two)], &[y], no_act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
    }
    {
        let sg = &mut mb.subgraphs[else_sg];
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let shape = sg.constant_i32("shape", &[2], &[3, 2]);
        let y = sg.tensor("y", DType::F32, &[3, 2]);
        sg.op(
            op(BuiltinOp::Reshape),
            &[Some(x), Some(shape)],
            &[y],
            OpOptions::Reshape {
                new_shape: Some(vec![3, 2]),
            },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
    }
    let sg = mb.main();
    let c = sg.tensor("c", DType::Bool, &[1]);
    let x = sg.tensor("x", DType::F32, &[2, 3]);
    let y = sg.tensor("y", DType::F32, &[2, 3]);
    sg.set_signature(y, vec![-1, -1]);
    sg.op(
        op(BuiltinOp::If),
        &[Some(c), Some(x)],
        &[y],
        OpOptions::If {
            then_subgraph: then_sg,
            else_subgraph: else_sg,
        },
    );
    sg.set_inputs(&[c, x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[test]
fn if_with_branch_dependent_output_shape_matches_litert() {
    let model = dynamic_if_model();
    let x = random_tensor(DType::F32, &[2, 3], 4, -1.0, 1.0);
    let cond = |v: bool| Tensor::from_bytes(DType::Bool, vec![1], &[u8::from(v)]).unwrap();
    let invokes: Vec<Vec<Tensor>> = [true, false, false, true]
        .iter()
        .map(|&c| vec![cond(c), x.clone()])
        .collect();
    assert_matches_litert_seq("IF dynamic shape", &model, &invokes, &resolvers(), None);
}

#[test]
fn self_recursive_control_flow_is_an_error_not_a_hang() {
    // IF in subgraph 0 whose branches call subgraph 0 again.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let c = sg.tensor("c", DType::Bool, &[1]);
    let x = sg.tensor("x", DType::F32, &[2]);
    let y = sg.tensor("y", DType::F32, &[2]);
    sg.op(
        op(BuiltinOp::If),
        &[Some(c), Some(c), Some(x)],
        &[y],
        OpOptions::If {
            then_subgraph: 0,
            else_subgraph: 0,
        },
    );
    sg.set_inputs(&[c, x]);
    sg.set_outputs(&[y]);
    // Refused when the model is loaded, before anything is prepared.
    let e = Model::from_bytes(&mb.finish())
        .expect_err("a subgraph that calls itself must be rejected")
        .to_string();
    assert!(e.contains("recursive subgraph calls"), "{e}");
}
