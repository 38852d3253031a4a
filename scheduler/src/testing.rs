//! Test doubles shared by the scheduler's tests: a fault-injecting delegate modelled
//! on TFLite's dummy_delegate (wrong results, hangs, errors, slowness) and a small
//! float model it can run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    BuiltinOp, CompiledPartition, DType, Delegate, DelegateError, ExecReport, Model,
    NodeSupportCtx, OpKind, OpOptions, PartitionCtx, ProcessorKind, Support, TensorView,
    TensorViewMut,
};

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// Reports a device time far above the CPU's.
    Slow,
    WrongResult,
    Hang,
    Error,
}

pub struct FaultDelegate {
    fault: Fault,
    fingerprint: String,
    pub compiles: AtomicUsize,
}

impl FaultDelegate {
    pub fn new(fault: Fault, fingerprint: &str) -> Arc<FaultDelegate> {
        Arc::new(FaultDelegate {
            fault,
            fingerprint: fingerprint.into(),
            compiles: AtomicUsize::new(0),
        })
    }
}

struct Compiled {
    fault: Fault,
    constants: Vec<Vec<f32>>,
}

impl CompiledPartition for Compiled {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let err = |what: String| DelegateError::Execute {
            delegate: "fault".into(),
            what,
        };
        match self.fault {
            Fault::Error => return Err(err("injected error".into())),
            Fault::Hang => {
                // A hung device: nothing comes back before the deadline.
                let until = deadline.ok_or_else(|| err("hang without a deadline".into()))?;
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                return Err(DelegateError::Timeout {
                    delegate: "fault".into(),
                    after: Duration::from_millis(20),
                });
            }
            _ => {}
        }
        let x = inputs[0].f32s().map_err(|e| err(e.to_string()))?;
        let out = outputs[0].f32s_mut().map_err(|e| err(e.to_string()))?;
        out.copy_from_slice(x);
        for c in &self.constants {
            for (o, v) in out.iter_mut().zip(c) {
                *o += v;
            }
        }
        if matches!(self.fault, Fault::WrongResult) {
            out[0] *= 1.5;
        }
        let device = match self.fault {
            Fault::Slow => Duration::from_secs(1),
            _ => Duration::from_nanos(1),
        };
        Ok(ExecReport {
            device_time: Some(device),
        })
    }
}

impl Delegate for FaultDelegate {
    fn name(&self) -> &str {
        "fault"
    }
    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Npu
    }
    fn is_emulated(&self) -> bool {
        true
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        if ctx.node.op == OpKind::Builtin(BuiltinOp::Add) {
            Support::Supported
        } else {
            Support::Unsupported("only ADD".into())
        }
    }
    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        self.compiles.fetch_add(1, Ordering::SeqCst);
        let mut constants = Vec::new();
        for &n in &ctx.partition.nodes {
            let c = ctx.subgraph.nodes[n].inputs[1]
                .and_then(|t| (ctx.constant)(t))
                .ok_or_else(|| DelegateError::Compile {
                    delegate: "fault".into(),
                    what: "second input must be constant".into(),
                })?;
            constants.push(bytemuck::cast_slice::<u8, f32>(c).to_vec());
        }
        Ok(Box::new(Compiled {
            fault: self.fault,
            constants,
        }))
    }
}

/// x -> +c1 -> +c2 -> y, float, 64 elements.
pub fn chain() -> Arc<Model> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[64]);
    let v1: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
    let v2: Vec<f32> = (0..64).map(|i| 3.0 - i as f32).collect();
    let c1 = sg.constant_f32("c1", &[64], &v1);
    let t = sg.tensor("t", DType::F32, &[64]);
    let c2 = sg.constant_f32("c2", &[64], &v2);
    let y = sg.tensor("y", DType::F32, &[64]);
    let add = OpKind::Builtin(BuiltinOp::Add);
    let act = OpOptions::Activation(Default::default());
    sg.op(add.clone(), &[Some(x), Some(c1)], &[t], act.clone());
    sg.op(add, &[Some(t), Some(c2)], &[y], act);
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    Arc::new(Model::from_bytes(&mb.finish()).unwrap())
}
