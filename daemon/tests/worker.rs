//! The worker process for real: `switchyard-worker` built from this crate, the example
//! vendor plugin (plugins/example-npu, built by `cargo build --workspace`) loaded in it,
//! and the plugin's injectable faults (SIGSEGV, abort, hang) taking workers down while
//! this process — standing in for the daemon — carries on.
//!
//! Each test sets the fault environment before the pool starts any worker; nextest runs
//! every test in its own process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::Config;
use switchyard_daemon::worker::{ValidationRequest, WorkerError, WorkerPool, WorkerValidator};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::example_models::four_op_chain;
use switchyard_interpreter::{
    DType, Delegate, Interpreter, InterpreterOptions, Model, Partition, PartitionReport,
    PlacedPartition, Tensor,
};
use switchyard_scheduler::allowlist::{Tolerance, Validator, Verdict};

const LIB: &str = "libswitchyard_example_npu.so";

fn plugin_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_EXAMPLE_PLUGIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [Some(deps), deps.parent()].into_iter().flatten() {
        let p = dir.join(LIB);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{LIB} not found next to {}: build it with `cargo build --workspace` (or \
         `cargo build -p switchyard-example-npu`)",
        deps.display()
    );
}

/// Sets the example plugin's fault for workers started from now on.
fn fault(kind: &str, after: u64) {
    // SAFETY: called at the start of a test, before this process starts any thread
    // that reads the environment (nextest runs each test in its own process).
    unsafe {
        std::env::set_var("SWITCHYARD_EXAMPLE_NPU_FAULT", kind);
        std::env::set_var("SWITCHYARD_EXAMPLE_NPU_FAULT_AFTER", after.to_string());
    }
}

fn config(validation_timeout_ms: u64) -> Config {
    let mut cfg = Config::default();
    cfg.daemon.worker.path = PathBuf::from(env!("CARGO_BIN_EXE_switchyard-worker"));
    cfg.daemon.worker.validation_timeout_ms = validation_timeout_ms;
    cfg.daemon.plugins = vec![plugin_path()];
    cfg
}

/// Every node of the chain runs on the example NPU.
fn float_chain() -> Arc<Model> {
    Arc::new(Model::from_bytes(&four_op_chain(&[2, 3, 5])).unwrap())
}

fn inputs(seed: u64) -> Vec<Tensor> {
    vec![
        switchyard_testkit::random_tensor(DType::F32, &[2, 3, 5], seed, -3.0, 3.0),
        switchyard_testkit::random_tensor(DType::F32, &[2, 3, 5], seed + 1, -2.0, 2.0),
    ]
}

fn placed(model: &Model, d: &Arc<dyn Delegate>) -> PlacedPartition {
    PlacedPartition {
        partition: Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1, 2, 3]),
        delegate: d.clone(),
        timeout: Some(Duration::from_secs(2)),
    }
}

fn interpreter(model: &Arc<Model>, placements: Vec<PlacedPartition>) -> Interpreter {
    Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
        placements,
    )
    .unwrap()
}

fn run(it: &mut Interpreter, x: &[Tensor]) -> Vec<f32> {
    let views: Vec<_> = x.iter().map(|t| t.view()).collect();
    it.run(&views).unwrap()[0].view().f32s().unwrap().to_vec()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

fn report(it: &Interpreter) -> PartitionReport {
    it.partition_reports()[0].clone()
}

fn validation<'a>(
    model: &'a Model,
    d: &'a Arc<dyn Delegate>,
    partition: &'a Partition,
    x: &'a [Tensor],
) -> ValidationRequest<'a> {
    ValidationRequest {
        model,
        delegate: d.as_ref(),
        partition,
        timeout: Some(Duration::from_secs(2)),
        inputs: x,
        runs: 3,
        tolerance: Tolerance::default(),
        // Any delegate is slower than a CPU that takes no time: the verdict is
        // "not faster", the measurements are what the tests look at.
        cpu_s: 0.0,
    }
}

#[test]
fn plugins_run_in_the_worker_and_match_the_cpu() {
    let pool = WorkerPool::new(&config(30_000));
    let delegates = pool.plugin_delegates();
    assert_eq!(
        delegates.len(),
        1,
        "the example plugin did not open in the worker"
    );
    let npu = &delegates[0];
    assert_eq!(npu.name(), "plugin:example-npu");
    let model = float_chain();
    let mut cpu = interpreter(&model, Vec::new());
    let mut it = interpreter(&model, vec![placed(&model, npu)]);
    for seed in 0..5 {
        let x = inputs(seed * 7);
        assert!(close(&run(&mut it, &x), &run(&mut cpu, &x)));
    }
    let r = report(&it);
    assert_eq!((r.runs, r.failures), (5, 0), "{r:?}");
    assert_eq!(r.compile_error, None);
    // Validation in the validation worker.
    let x = inputs(1);
    let p = placed(&model, npu).partition;
    let v = pool.validate(&validation(&model, npu, &p, &x)).unwrap();
    assert_eq!(v.entry.failures, 0, "{:?}", v.entry);
    assert!(v.entry.runs >= 3, "{:?}", v.entry);
    assert!(v.entry.max_error <= 1e-3, "{:?}", v.entry);
    let (validation_lane, plugin_lane) = pool.stats();
    assert_eq!((validation_lane.started, validation_lane.crashed), (1, 0));
    assert_eq!((plugin_lane.started, plugin_lane.crashed), (1, 0));
}

#[test]
fn a_validation_that_crashes_the_worker_blocks_the_candidate() {
    fault("segv", 0);
    let pool = WorkerPool::new(&config(30_000));
    let npu = pool.plugin_delegates().remove(0);
    let model = float_chain();
    let x = inputs(3);
    let p = placed(&model, &npu).partition;
    let e = pool
        .validate(&validation(&model, &npu, &p, &x))
        .unwrap_err();
    assert!(matches!(e, WorkerError::Crashed { .. }), "{e}");
    assert!(e.to_string().contains("SIGSEGV"), "{e}");
    // Through the scheduler's seam: an allowlist entry blocked with the reason.
    let entry = WorkerValidator(pool.clone())
        .validate(
            model.clone(),
            placed(&model, &npu),
            &x,
            3,
            Tolerance::default(),
            0.0,
        )
        .unwrap();
    assert_eq!(entry.verdict, Verdict::Blocked);
    assert!(entry.reason.contains("SIGSEGV"), "{}", entry.reason);
    assert_eq!(entry.fingerprint, npu.fingerprint());
    assert_eq!(pool.stats().0.crashed, 2);
}

#[test]
fn a_validation_that_aborts_or_hangs_is_stopped_in_time() {
    fault("abort", 0);
    let pool = WorkerPool::new(&config(1_500));
    let npu = pool.plugin_delegates().remove(0);
    let model = float_chain();
    let x = inputs(4);
    let p = placed(&model, &npu).partition;
    let e = pool
        .validate(&validation(&model, &npu, &p, &x))
        .unwrap_err();
    assert!(e.to_string().contains("SIGABRT"), "{e}");

    fault("hang", 0);
    let pool = WorkerPool::new(&config(1_500));
    let npu = pool.plugin_delegates().remove(0);
    let t = Instant::now();
    let e = pool
        .validate(&validation(&model, &npu, &p, &x))
        .unwrap_err();
    assert!(matches!(e, WorkerError::Hung { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let entry = WorkerValidator(pool.clone())
        .validate(
            model.clone(),
            placed(&model, &npu),
            &x,
            3,
            Tolerance::default(),
            0.0,
        )
        .unwrap();
    assert_eq!(entry.verdict, Verdict::Blocked);
    assert_eq!(entry.timeouts, 1);
}

#[test]
fn a_plugin_crashing_while_serving_costs_one_cpu_fallback_and_recovers() {
    // Two good executions per worker, then SIGSEGV.
    fault("segv", 2);
    let pool = WorkerPool::new(&config(30_000));
    let npu = pool.plugin_delegates().remove(0);
    let model = float_chain();
    let mut cpu = interpreter(&model, Vec::new());
    let mut it = interpreter(&model, vec![placed(&model, &npu)]);
    for seed in 0..6 {
        let x = inputs(100 + seed);
        // Every request gets the right answer, crash or not.
        assert!(
            close(&run(&mut it, &x), &run(&mut cpu, &x)),
            "request {seed}"
        );
    }
    let r = report(&it);
    // Executions 1-2 on the first worker, 3 crashes it (CPU fallback), 4-5 on a new
    // worker after compiling there again, 6 crashes that one.
    assert_eq!(r.failures, 2, "{r:?}");
    assert_eq!(r.runs, 4, "{r:?}");
    assert!(r.last_error.unwrap_or_default().contains("SIGSEGV"));
    let (_, plugins) = pool.stats();
    assert_eq!(plugins.crashed, 2);
}

#[test]
fn a_missing_worker_binary_is_an_error_not_a_blocked_candidate() {
    let mut cfg = config(30_000);
    cfg.daemon.worker.path = PathBuf::from("/nonexistent/switchyard-worker");
    cfg.daemon.plugins.clear();
    let pool = WorkerPool::new(&cfg);
    assert!(pool.plugin_delegates().is_empty());
    // A delegate the worker would validate: the emulated NPU.
    let npu: Arc<dyn Delegate> = Arc::new(switchyard_delegates::EmulatedDelegate::npu(
        cfg.devices.npu.clone(),
    ));
    let model = float_chain();
    let r = WorkerValidator(pool).validate(
        model.clone(),
        placed(&model, &npu),
        &inputs(5),
        1,
        Tolerance::default(),
        0.0,
    );
    assert!(
        r.is_err(),
        "a pool that cannot start must not record a verdict"
    );
}
