//! The allowlist against a fault-injecting delegate (modelled on TFLite's
//! dummy_delegate): wrong results, hangs and errors end up blocked; an accurate, fast
//! delegate is allowed; decisions survive a restart; a new driver is validated again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    BuiltinOp, CompiledPartition, DType, Delegate, DelegateError, ExecReport, NodeSupportCtx,
    OpKind, OpOptions, Partition, PartitionCtx, ProcessorKind, Support, TensorViewMut,
};

use super::*;

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Reports a device time far above the CPU's.
    Slow,
    WrongResult,
    Hang,
    Error,
}

struct FaultDelegate {
    fault: Fault,
    fingerprint: String,
    compiles: AtomicUsize,
}

impl FaultDelegate {
    fn new(fault: Fault, fingerprint: &str) -> Arc<FaultDelegate> {
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
fn chain() -> Arc<Model> {
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

fn placed(model: &Model, d: Arc<FaultDelegate>) -> PlacedPartition {
    PlacedPartition {
        partition: Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1]),
        delegate: d,
        timeout: Some(Duration::from_millis(20)),
    }
}

fn input() -> Vec<Tensor> {
    let v: Vec<f32> = (0..64).map(|i| (i as f32).sin()).collect();
    vec![Tensor::from_f32(vec![64], &v).unwrap()]
}

fn judge(fault: Fault) -> Entry {
    let model = chain();
    let p = placed(&model, FaultDelegate::new(fault, "fault-1"));
    validate_partition(model, p, &input(), 3, Tolerance::default()).unwrap()
}

#[test]
fn a_good_fast_delegate_is_allowed() {
    let e = judge(Fault::None);
    assert_eq!(e.verdict, Verdict::Allowed, "{}", e.reason);
    assert_eq!(e.max_error, 0.0);
    assert_eq!(e.runs, 3);
}

#[test]
fn wrong_results_are_blocked() {
    let e = judge(Fault::WrongResult);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert!(e.reason.contains("wrong results"), "{}", e.reason);
    assert!(e.max_error > 1e-3);
}

#[test]
fn hangs_are_blocked_as_timeouts() {
    let e = judge(Fault::Hang);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert_eq!(e.timeouts, 3, "{}", e.reason);
    assert!(e.reason.contains("timed out"), "{}", e.reason);
}

#[test]
fn errors_are_blocked() {
    let e = judge(Fault::Error);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert_eq!(e.failures, 3);
    assert!(e.reason.contains("injected error"), "{}", e.reason);
}

#[test]
fn accurate_but_slower_is_blocked() {
    let e = judge(Fault::Slow);
    assert_eq!(e.verdict, Verdict::Blocked);
    assert!(e.reason.contains("not faster"), "{}", e.reason);
}

#[test]
fn decisions_persist_and_a_new_fingerprint_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    let model = chain();
    let good = FaultDelegate::new(Fault::None, "drv-1");
    {
        let mut list = Allowlist::open(&path).unwrap();
        let e = check_or_validate(
            &mut list,
            "model-sha",
            model.clone(),
            placed(&model, good.clone()),
            &input(),
            2,
            Tolerance::default(),
        )
        .unwrap();
        assert_eq!(e.verdict, Verdict::Allowed);
    }
    assert_eq!(good.compiles.load(Ordering::SeqCst), 1);

    // Restart: the decision is reloaded, nothing runs again.
    let mut list = Allowlist::open(&path).unwrap();
    let k = key("model-sha", "fault");
    assert!(matches!(list.lookup(&k, "drv-1"), Lookup::Allowed(_)));
    check_or_validate(
        &mut list,
        "model-sha",
        model.clone(),
        placed(&model, good.clone()),
        &input(),
        2,
        Tolerance::default(),
    )
    .unwrap();
    assert_eq!(good.compiles.load(Ordering::SeqCst), 1);

    // A driver update that breaks results: stale, validated again, now blocked.
    let broken = FaultDelegate::new(Fault::WrongResult, "drv-2");
    assert!(matches!(list.lookup(&k, "drv-2"), Lookup::Stale(_)));
    let e = check_or_validate(
        &mut list,
        "model-sha",
        model.clone(),
        placed(&model, broken.clone()),
        &input(),
        2,
        Tolerance::default(),
    )
    .unwrap();
    assert_eq!(broken.compiles.load(Ordering::SeqCst), 1);
    assert_eq!(e.verdict, Verdict::Blocked);
    let reloaded = Allowlist::open(&path).unwrap();
    assert!(matches!(reloaded.lookup(&k, "drv-2"), Lookup::Blocked(_)));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|f| !f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")),
        "no temporary file left behind"
    );
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    std::fs::write(&path, b"{ not json").unwrap();
    let err = Allowlist::open(&path).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
}
