//! `switchyard bench MODEL --local --threads N --runs K [--json]`: latency of a model in
//! this process (median and p90 over K runs after warm-up), load time, arena bytes, and a
//! per-operator profile in run order and summed by operator type. With `--device gpu`
//! the GPU takes every partition it supports (see `bench_gpu`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{DType, Interpreter, InterpreterOptions, Model, Tensor, npy};

#[derive(Args)]
pub struct BenchArgs {
    /// Path to a .tflite model.
    pub model: PathBuf,
    /// Run in this process (the only mode for now: the daemon adds its own overhead,
    /// measured separately by the daemon benchmark).
    #[arg(long)]
    pub local: bool,
    /// Kernel threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs (after warm-up).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Invokes per timed sample; the sample is their total time divided by this. For
    /// tiny models, so that the clock read per sample does not count (the LiteRT side of
    /// bench/compare_litert.py times the same batches, keeping Python's per-call
    /// overhead out of its figure too).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Input tensors as .npy files (comma separated); random inputs when omitted.
    #[arg(long, value_delimiter = ',')]
    pub inputs: Vec<PathBuf>,
    /// Shape for input 0 when the model's stored shape is a placeholder, e.g. 1,1760.
    #[arg(long, value_delimiter = ',')]
    pub input_shape: Vec<usize>,
    /// Use the reference kernels.
    #[arg(long)]
    pub reference: bool,
    /// Skip the per-operator profile (profiling adds a timer read per step).
    #[arg(long)]
    pub no_profile: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// `cpu`, or `gpu`: every partition the GPU supports runs there (the rest on the CPU
    /// kernels), with a per-dispatch GPU profile.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// GPU precision: `fp32`, or `fp16` (needs the adapter's `shader-f16`).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// GPU: force the subgroup operations off.
    #[arg(long)]
    pub no_subgroups: bool,
    /// GPU: persist compiled pipelines in this directory (run twice to see a reload).
    #[arg(long)]
    pub gpu_cache: Option<PathBuf>,
}

#[derive(Serialize)]
struct OpLine {
    node: usize,
    op: String,
    kernel: String,
    mean_us: f64,
}

#[derive(Serialize)]
struct OpSummary {
    op: String,
    count: usize,
    total_us: f64,
    percent: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: usize,
    runs: usize,
    batch: usize,
    kernels: &'static str,
    load_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    arena_bytes: usize,
    heap_bytes: usize,
    /// Peak resident memory of this process (Linux VmHWM) before loading the model and
    /// at the end, so that `peak - before` compares with other runtimes' processes.
    rss_before_load_bytes: Option<u64>,
    rss_peak_bytes: Option<u64>,
    steps: usize,
    /// Median run time over steps: the executor's per-node overhead on a chain of
    /// trivial nodes (`switchyard make-chain-model`).
    ns_per_step: f64,
    ops: Vec<OpLine>,
    by_op: Vec<OpSummary>,
}

/// Deterministic inputs for a model: floats in [-1, 1), integers over their range.
pub(crate) fn synthetic_input(dtype: DType, shape: &[usize], seed: u64) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bytes: Vec<u8> = match dtype {
        DType::F32 => (0..n)
            .flat_map(|_| ((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).to_le_bytes())
            .collect(),
        DType::I8 | DType::U8 | DType::Bool => (0..n).map(|_| next() as u8).collect(),
        DType::I32 => (0..n)
            .flat_map(|_| ((next() % 8) as i32).to_le_bytes())
            .collect(),
        other => bail!("cannot synthesise {other} inputs; pass --inputs"),
    };
    Ok(Tensor::from_bytes(dtype, shape.to_vec(), &bytes)?)
}

/// The process's peak resident set (VmHWM), where /proc provides it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.local {
        bail!("pass --local: `bench` measures the in-process interpreter");
    }
    match args.device.as_str() {
        "cpu" => {}
        "gpu" => return super::bench_gpu::run(args),
        other => bail!("--device must be cpu or gpu, not {other}"),
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let rss_before_load = peak_rss_bytes();
    let load_start = Instant::now();
    let model = Arc::new(
        Model::from_path(&args.model)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let resolver = if args.reference {
        CpuResolver::reference()
    } else {
        CpuResolver::optimized()
    };
    let options = InterpreterOptions {
        threads: args.threads.max(1),
        ..Default::default()
    };
    let mut it =
        Interpreter::new(model, Arc::new(resolver), options).context("preparing the model")?;
    if !args.input_shape.is_empty() {
        it.resize_input(0, args.input_shape.clone())
            .context("resizing input 0")?;
    }
    let load = load_start.elapsed();

    let inputs: Vec<Tensor> = if args.inputs.is_empty() {
        (0..it.input_count())
            .map(|i| {
                let (dtype, shape) = it.input_info(i)?;
                synthetic_input(dtype, &shape, i as u64 + 1)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        args.inputs
            .iter()
            .map(|p| npy::read(p).with_context(|| format!("reading {}", p.display())))
            .collect::<anyhow::Result<_>>()?
    };
    // Given inputs define the shapes to measure at (as LiteRT's resize_tensor_input does
    // in bench/compare_litert.py): resize explicitly, since runs are strict.
    for (i, t) in inputs.iter().enumerate() {
        if i < it.input_count() && it.input_info(i)?.1 != t.shape {
            it.resize_input(i, t.shape.clone())
                .with_context(|| format!("resizing input {i} to {:?}", t.shape))?;
        }
    }
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    for _ in 0..args.warmup {
        it.run(&views).context("warm-up run")?;
    }
    let mut times = Vec::with_capacity(args.runs);
    let batch = u32::try_from(args.batch).context("--batch is too large")?;
    for _ in 0..args.runs {
        let t0 = Instant::now();
        for _ in 0..batch {
            it.run(&views).context("timed run")?;
        }
        times.push(t0.elapsed() / batch);
    }
    times.sort();

    let (mut ops, mut by_op) = (Vec::new(), Vec::new());
    if !args.no_profile {
        it.set_profiling(true);
        let profile_runs = args.runs.min(20);
        for _ in 0..profile_runs {
            it.run(&views).context("profiled run")?;
        }
        let profile = it.profile();
        let total: f64 = profile
            .iter()
            .map(|p| p.total.as_secs_f64())
            .sum::<f64>()
            .max(1e-12);
        let mut sums: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for p in &profile {
            let mean_us = p.total.as_secs_f64() * 1e6 / p.count.max(1) as f64;
            ops.push(OpLine {
                node: p.node,
                op: p.op.clone(),
                kernel: p.kernel.clone(),
                mean_us,
            });
            let e = sums.entry(p.op.clone()).or_default();
            e.0 += 1;
            e.1 += p.total.as_secs_f64();
        }
        by_op = sums
            .into_iter()
            .map(|(op, (count, secs))| OpSummary {
                op,
                count,
                total_us: secs * 1e6 / profile_runs as f64,
                percent: 100.0 * secs / total,
            })
            .collect();
        by_op.sort_by(|a, b| b.total_us.total_cmp(&a.total_us));
    }

    let report = Report {
        model: args.model.display().to_string(),
        threads: args.threads.max(1),
        runs: args.runs,
        batch: args.batch,
        kernels: if args.reference {
            "reference"
        } else {
            "optimized"
        },
        load_ms: ms(load),
        median_ms: ms(percentile(&times, 0.5)),
        p90_ms: ms(percentile(&times, 0.9)),
        min_ms: ms(times[0]),
        arena_bytes: it.arena_bytes(),
        heap_bytes: it.heap_bytes(),
        rss_before_load_bytes: rss_before_load,
        rss_peak_bytes: peak_rss_bytes(),
        steps: it.step_count(),
        ns_per_step: ms(percentile(&times, 0.5)) * 1e6 / it.step_count().max(1) as f64,
        ops,
        by_op,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} kernels, {} thread(s), {} runs",
        report.model, report.kernels, report.threads, report.runs
    );
    println!(
        "  latency  median {:.3} ms  p90 {:.3} ms  min {:.3} ms",
        report.median_ms, report.p90_ms, report.min_ms
    );
    println!(
        "  load {:.2} ms, arena {} bytes, folded constants/heap {} bytes, {} steps per run \
         ({:.1} ns per step)",
        report.load_ms, report.arena_bytes, report.heap_bytes, report.steps, report.ns_per_step
    );
    if let (Some(before), Some(peak)) = (report.rss_before_load_bytes, report.rss_peak_bytes) {
        println!(
            "  peak RSS {:.1} MiB ({:.1} MiB above the process before loading the model)",
            peak as f64 / 1048576.0,
            peak.saturating_sub(before) as f64 / 1048576.0
        );
    }
    if !report.by_op.is_empty() {
        println!("  by operator type:");
        for s in &report.by_op {
            println!(
                "    {:<24} {:>4} nodes {:>10.1} us {:>5.1}%",
                s.op, s.count, s.total_us, s.percent
            );
        }
        println!("  in run order (mean per run):");
        for o in &report.ops {
            println!(
                "    node {:>4} {:<24} {:<28} {:>9.1} us",
                o.node, o.op, o.kernel, o.mean_us
            );
        }
    }
    Ok(())
}
