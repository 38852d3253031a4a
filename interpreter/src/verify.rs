//! Graph checks made once at load, after every index is known to be in range: the
//! dataflow of each subgraph must be one a run can follow, and subgraph calls must not
//! recurse.
//!
//! - every tensor has at most one producer (a subgraph input counts as produced by the
//!   caller); a node never writes into a constant;
//! - a node reads only tensors produced before it (or constants, subgraph inputs and
//!   persistent variable tensors), so no kernel is handed a buffer nobody has written,
//!   at a size nobody planned;
//! - the subgraph call graph (IF, WHILE, CALL_ONCE) is acyclic. Preparation follows calls
//!   and the plan's shape cache locks per subgraph, so a cycle would be unbounded work
//!   at best and a deadlock at worst.

use crate::error::ModelError;
use crate::model::Subgraph;
use crate::ops::called_subgraphs;

/// Who writes a tensor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Producer {
    None,
    Input,
    Node(usize),
}

/// Checks one subgraph's dataflow.
pub(crate) fn check_dataflow(si: usize, sg: &Subgraph) -> Result<(), ModelError> {
    let mut producer = vec![Producer::None; sg.tensors.len()];
    for &t in &sg.inputs {
        if producer[t] == Producer::Input {
            return Err(ModelError::Invalid {
                subgraph: si,
                what: format!("tensor {t} is listed twice as a subgraph input"),
            });
        }
        producer[t] = Producer::Input;
    }
    let node_err = |node: &crate::model::Node, what: String| ModelError::Node {
        subgraph: si,
        node: node.index,
        op: node.op.to_string(),
        what,
    };
    for node in &sg.nodes {
        for &t in &node.outputs {
            if sg.tensors[t].is_const() {
                return Err(node_err(
                    node,
                    format!("writes into constant tensor {t} ({})", sg.tensors[t].name),
                ));
            }
            match producer[t] {
                Producer::None => producer[t] = Producer::Node(node.index),
                Producer::Input => {
                    return Err(node_err(
                        node,
                        format!("writes into tensor {t}, an input of the subgraph"),
                    ));
                }
                Producer::Node(other) => {
                    return Err(node_err(
                        node,
                        format!("writes tensor {t}, which node {other} also writes"),
                    ));
                }
            }
        }
    }
    for node in &sg.nodes {
        for &t in node.inputs.iter().flatten() {
            if let Producer::Node(p) = producer[t]
                && p >= node.index
            {
                return Err(node_err(
                    node,
                    format!("reads tensor {t} before node {p} writes it"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that no subgraph calls itself, directly or through others.
pub(crate) fn check_calls_acyclic(subgraphs: &[Subgraph]) -> Result<(), ModelError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let callees: Vec<Vec<usize>> = subgraphs
        .iter()
        .map(|sg| {
            let mut c: Vec<usize> = sg
                .nodes
                .iter()
                .flat_map(|n| called_subgraphs(&n.options))
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        })
        .collect();
    let mut mark = vec![Mark::New; subgraphs.len()];
    for root in 0..subgraphs.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (subgraph, next callee to visit).
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::Open;
        while let Some(&mut (s, ref mut next)) = stack.last_mut() {
            match callees[s].get(*next) {
                Some(&c) => {
                    *next += 1;
                    match mark.get(c).copied() {
                        Some(Mark::Open) => {
                            return Err(ModelError::Invalid {
                                subgraph: s,
                                what: format!(
                                    "calls subgraph {c}, which is already on the call path \
                                     (recursive subgraph calls are not supported)"
                                ),
                            });
                        }
                        Some(Mark::New) => {
                            mark[c] = Mark::Open;
                            stack.push((c, 0));
                        }
                        // Done, or out of range (reported by the loader with context).
                        _ => {}
                    }
                }
                None => {
                    mark[s] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::builder::ModelBuilder;
    use crate::model::Model;
    use crate::ops::{BuiltinOp, OpKind, OpOptions};
    use crate::tensor::DType;

    fn add() -> OpKind {
        OpKind::Builtin(BuiltinOp::Add)
    }

    fn act() -> OpOptions {
        OpOptions::Activation(Default::default())
    }

    fn load_err(mb: &ModelBuilder) -> String {
        match Model::from_bytes(&mb.finish()) {
            Ok(_) => panic!("the model was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn read_before_write_is_rejected() {
        // Node 0 reads `t`, which node 1 writes: node 0 would get an unwritten buffer.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let t = sg.tensor("t", DType::F32, &[4]);
        let y = sg.tensor("y", DType::F32, &[4]);
        sg.op(add(), &[Some(x), Some(t)], &[y], act());
        sg.op(add(), &[Some(x), Some(x)], &[t], act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = load_err(&mb);
        assert!(e.contains("reads tensor 1 before node 1 writes it"), "{e}");
    }

    /// The fuzzer's quantized ADD with a uint8 zero point of 2^40 overflowed the int32
    /// offset arithmetic; every kernel relies on zero points being values of the type.
    #[test]
    fn zero_points_outside_the_types_range_are_rejected() {
        for (dtype, zp, ok) in [
            (DType::U8, 256, false),
            (DType::U8, -1, false),
            (DType::U8, 255, true),
            (DType::I8, -129, false),
            (DType::I8, 1 << 40, false),
            (DType::I8, -128, true),
            (DType::I16, 40_000, false),
        ] {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", dtype, &[4]);
            let y = sg.tensor("y", dtype, &[4]);
            sg.set_quant(x, crate::tensor::Quant::per_tensor(0.5, zp));
            sg.set_quant(y, crate::tensor::Quant::per_tensor(0.5, 0));
            sg.op(add(), &[Some(x), Some(x)], &[y], act());
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            if ok {
                Model::from_bytes(&mb.finish()).expect("a zero point in range loads");
            } else {
                let e = load_err(&mb);
                assert!(e.contains(&format!("zero point {zp} outside")), "{e}");
            }
        }
    }

    #[test]
    fn a_node_reading_its_own_output_is_rejected() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let y = sg.tensor("y", DType::F32, &[4]);
        sg.op(add(), &[Some(x), Some(y)], &[y], act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        assert!(load_err(&mb).contains("before node 0 writes it"));
    }

    #[test]
    fn writes_into_constants_are_rejected() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let c = sg.constant_f32("c", &[4], &[1.0; 4]);
        sg.op(add(), &[Some(x), Some(x)], &[c], act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[c]);
        assert!(load_err(&mb).contains("writes into constant tensor 1"));
    }

    #[test]
    fn two_producers_are_rejected() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let y = sg.tensor("y", DType::F32, &[4]);
        sg.op(add(), &[Some(x), Some(x)], &[y], act());
        sg.op(add(), &[Some(x), Some(x)], &[y], act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        assert!(load_err(&mb).contains("which node 0 also writes"));
        // Writing a subgraph input counts as a second producer too.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        sg.op(add(), &[Some(x), Some(x)], &[x], act());
        sg.set_inputs(&[x]);
        sg.set_outputs(&[x]);
        assert!(load_err(&mb).contains("an input of the subgraph"));
    }

    #[test]
    fn recursive_subgraph_calls_are_rejected() {
        // Subgraph 1 calls itself through CALL_ONCE; subgraph 0 calls 1.
        let mut mb = ModelBuilder::new();
        let s1 = mb.add_subgraph();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::CallOnce),
            &[],
            &[],
            OpOptions::CallOnce { init_subgraph: s1 },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[x]);
        mb.subgraphs[s1].op(
            OpKind::Builtin(BuiltinOp::CallOnce),
            &[],
            &[],
            OpOptions::CallOnce { init_subgraph: s1 },
        );
        let e = load_err(&mb);
        assert!(e.contains("already on the call path"), "{e}");
    }
}
