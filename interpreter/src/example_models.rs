//! The smallest real models, built in memory.
//!
//! Tests and benches of the registry, quotas, deduplication and the wire need valid
//! `.tflite` bytes that differ per call and cost nothing to run; writing the same
//! builder calls in each of them drifted, so they live here once.

use crate::builder::ModelBuilder;
use crate::{Activation, BuiltinOp, DType, OpKind, OpOptions};

/// `y = x + c` over one `[1, 4]` float tensor. Distinct `c` give distinct bytes, hence a
/// distinct sha256: what a test needs to load "another model" without another file.
pub fn add_constant(c: f32) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4]);
    let k = sg.constant_f32("c", &[1, 4], &[c; 4]);
    let y = sg.tensor("y", DType::F32, &[1, 4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(k)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// `y = SUB(LOGISTIC(MUL(RELU(ADD(x, c)), x2)), c)` over float32 `dims`, inputs `x` and
/// `x2`: four elementwise ops that every delegate (the example vendor plugin
/// included) runs, so the whole graph is one partition. `c` cycles through
/// -3.0..=3.0 in steps of 0.25.
pub fn four_op_chain(dims: &[usize]) -> Vec<u8> {
    let n: usize = dims.iter().product();
    let cv: Vec<f32> = (0..n).map(|i| ((i % 25) as f32 - 12.0) * 0.25).collect();
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, dims);
    let x2 = sg.tensor("x2", DType::F32, dims);
    let c = sg.constant_f32("c", dims, &cv);
    let a = sg.tensor("a", DType::F32, dims);
    let m = sg.tensor("m", DType::F32, dims);
    let l = sg.tensor("l", DType::F32, dims);
    let y = sg.tensor("y", DType::F32, dims);
    let b = OpKind::Builtin;
    let act = OpOptions::Activation;
    sg.op(
        b(BuiltinOp::Add),
        &[Some(x), Some(c)],
        &[a],
        act(Activation::Relu),
    );
    sg.op(
        b(BuiltinOp::Mul),
        &[Some(a), Some(x2)],
        &[m],
        act(Activation::None),
    );
    sg.op(b(BuiltinOp::Logistic), &[Some(m)], &[l], OpOptions::None);
    sg.op(
        b(BuiltinOp::Sub),
        &[Some(l), Some(c)],
        &[y],
        act(Activation::None),
    );
    sg.set_inputs(&[x, x2]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn distinct_constants_give_distinct_valid_models() {
        let (a, b) = (add_constant(1.0), add_constant(2.0));
        assert_ne!(a, b);
        for bytes in [a, b] {
            Model::from_bytes(&bytes).expect("a valid model");
        }
    }
}
