//! What running vendor plugins and validations out of process costs (issue 10): the
//! same example-NPU plugin (plugins/example-npu) executing the same partition loaded in
//! this process and in a `switchyard-worker` process, and the same candidate validated
//! in process and in the validation worker.
//!
//! ```sh
//! cargo build --release -p switchyard-example-npu   # the plugin .so
//! cargo bench -p switchyard-daemon --bench worker
//! ```
//!
//! Each figure is the median of many warm runs; the first validation in the worker also
//! shows the process start it includes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::Config;
use switchyard_daemon::worker::{WorkerPool, WorkerValidator};
use switchyard_delegates::{CpuResolver, PluginDelegate};
use switchyard_interpreter::example_models::four_op_chain;
use switchyard_interpreter::{
    DType, Delegate, Interpreter, InterpreterOptions, Model, Partition, PlacedPartition, Tensor,
};
use switchyard_scheduler::allowlist::{InProcess, Tolerance, Validator};

const LIB: &str = "libswitchyard_example_npu.so";

fn plugin_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWITCHYARD_EXAMPLE_PLUGIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(LIB))
        .find(|p| p.exists())
}

/// One run is one plugin execute call: every node of the chain runs on the example NPU.
fn float_chain(dims: &[usize]) -> Arc<Model> {
    Arc::new(Model::from_bytes(&four_op_chain(dims)).expect("the bench model loads"))
}

fn placed(model: &Model, d: &Arc<dyn Delegate>) -> PlacedPartition {
    PlacedPartition {
        partition: Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1, 2, 3]),
        delegate: d.clone(),
        timeout: Some(Duration::from_secs(5)),
    }
}

fn interpreter(model: &Arc<Model>, placements: Vec<PlacedPartition>) -> Interpreter {
    Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::optimized()),
        InterpreterOptions::default(),
        placements,
    )
    .expect("the bench model prepares")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of one run, after a warm-up.
fn time_runs(it: &mut Interpreter, x: &[Tensor], runs: usize) -> f64 {
    let views: Vec<_> = x.iter().map(|t| t.view()).collect();
    for _ in 0..runs / 10 + 1 {
        it.run(&views).expect("warm-up run");
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                it.run(&views).expect("bench run");
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let Some(lib) = plugin_path() else {
        eprintln!(
            "{LIB} not found next to the bench: run `cargo build --release -p \
             switchyard-example-npu` first (or set SWITCHYARD_EXAMPLE_PLUGIN)"
        );
        std::process::exit(2);
    };
    let worker_exe = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("switchyard-worker")))
        .filter(|p| p.exists());
    let Some(worker_exe) = worker_exe else {
        eprintln!("switchyard-worker not found: run `cargo build --release -p switchyard-daemon`");
        std::process::exit(2);
    };
    let mut cfg = Config::default();
    cfg.daemon.worker.path = worker_exe;
    cfg.daemon.plugins = vec![lib.clone()];
    let pool = WorkerPool::new(&cfg);
    let out_of_process = pool
        .plugin_delegates()
        .into_iter()
        .next()
        .expect("the example plugin opens in the worker");
    let in_process: Arc<dyn Delegate> =
        Arc::new(PluginDelegate::load(&lib).expect("the example plugin loads in process"));

    println!("## plugin execute: one partition of 4 nodes, in this process vs in the worker");
    println!(
        "| tensor | elements | CPU kernels µs | plugin in process µs | plugin in worker µs | worker cost µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, dims, runs) in [
        ("1 KiB", vec![2usize, 8, 16], 4000),
        ("64 KiB", vec![1, 128, 128], 2000),
        ("1 MiB", vec![1, 512, 512], 300),
    ] {
        let model = float_chain(&dims);
        let n: usize = dims.iter().product();
        let x = vec![
            switchyard_testkit::random_tensor(DType::F32, &dims, 1, -3.0, 3.0),
            switchyard_testkit::random_tensor(DType::F32, &dims, 2, -2.0, 2.0),
        ];
        let cpu = time_runs(&mut interpreter(&model, Vec::new()), &x, runs);
        let local = time_runs(
            &mut interpreter(&model, vec![placed(&model, &in_process)]),
            &x,
            runs,
        );
        let remote = time_runs(
            &mut interpreter(&model, vec![placed(&model, &out_of_process)]),
            &x,
            runs,
        );
        println!(
            "| {label} | {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
            cpu * 1e6,
            local * 1e6,
            remote * 1e6,
            (remote - local) * 1e6
        );
    }

    println!();
    println!("## validation of one candidate partition (example NPU, 1 KiB, 3 runs)");
    let dims = [2usize, 8, 16];
    let model = float_chain(&dims);
    let x = vec![
        switchyard_testkit::random_tensor(DType::F32, &dims, 1, -3.0, 3.0),
        switchyard_testkit::random_tensor(DType::F32, &dims, 2, -2.0, 2.0),
    ];
    let validate = |v: &dyn Validator| {
        let t = Instant::now();
        v.validate(
            model.clone(),
            placed(&model, &in_process),
            &x,
            3,
            Tolerance::default(),
            0.0,
        )
        .expect("validation");
        t.elapsed().as_secs_f64()
    };
    let in_process_s = median((0..30).map(|_| validate(&InProcess)).collect());
    // A fresh pool: its first validation starts the validation worker.
    let worker = WorkerValidator(WorkerPool::new(&cfg));
    let first = validate(&worker);
    let warm = median((0..30).map(|_| validate(&worker)).collect());
    println!("| where | ms |");
    println!("|---|---:|");
    println!("| in process (median of 30) | {:.2} |", in_process_s * 1e3);
    println!(
        "| worker, first (starts the process) | {:.2} |",
        first * 1e3
    );
    println!("| worker, warm (median of 30) | {:.2} |", warm * 1e3);
    println!(
        "worker cost per validation: {:.2} ms warm, {:.2} ms with the process start",
        (warm - in_process_s) * 1e3,
        (first - in_process_s) * 1e3
    );
}
