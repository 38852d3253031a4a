//! `switchyard bench MODEL --local --device gpu`: the model with every partition the
//! GPU supports placed on it (as the partitioner cuts them; the rest on the optimized
//! CPU kernels with `--threads`), timed end to end; then a profiled pass that splits
//! each GPU partition's time into upload, compute and readback (each submitted and
//! timed apart) and times every dispatch with timestamp queries where the adapter has
//! them, like the CPU bench's per-operator table. Also printed: compile time (the
//! pipeline cache's effect shows when run twice with `--gpu-cache DIR`), the dispatch
//! count after fusion, and the work counters per run (queue submits, uploads,
//! readbacks — the executor's hardware-independent targets).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use switchyard_delegates::{CpuResolver, GpuDelegate, GpuOptions, Precision};
use switchyard_interpreter::{Delegate, Interpreter, InterpreterOptions, Model, Tensor, npy};
use switchyard_scheduler::capability::Capability;
use switchyard_scheduler::graph::GraphInfo;
use switchyard_scheduler::partition::{partition, to_placed};

use super::bench::{BenchArgs, percentile, synthetic_input};

#[derive(Serialize)]
struct DispatchLine {
    label: String,
    shader: String,
    nodes: Vec<usize>,
    mean_us: f64,
}

#[derive(Serialize)]
struct PartitionLine {
    nodes: usize,
    first_node: usize,
    last_node: usize,
    dispatches: usize,
    pipelines: usize,
    compile_ms: f64,
    upload_us: f64,
    compute_us: f64,
    /// Sum of the dispatches' GPU timestamps.
    compute_gpu_us: Option<f64>,
    readback_us: f64,
    timestamps: bool,
    dispatch_profile: Vec<DispatchLine>,
}

#[derive(Serialize)]
struct OpTypeLine {
    label: String,
    count: usize,
    total_us: f64,
    percent: f64,
}

#[derive(Serialize)]
struct PerRun {
    queue_submits: f64,
    uploads: f64,
    readbacks: f64,
    command_buffers_recorded: f64,
    pipelines_created: u64,
    bind_groups_created: u64,
    buffers_created: u64,
}

#[derive(Serialize)]
struct GpuReport {
    model: String,
    device: &'static str,
    adapter: String,
    precision: &'static str,
    subgroups: bool,
    threads: usize,
    runs: usize,
    nodes: usize,
    /// Nodes that run per request (the others are folded at load, e.g. fp16 weights).
    runnable_nodes: usize,
    gpu_nodes: usize,
    load_ms: f64,
    gpu_compile_ms: f64,
    pipeline_cache_loaded_bytes: usize,
    pipeline_cache_saved_bytes: Option<usize>,
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    /// Dispatches per run over all GPU partitions, after fusion.
    dispatches: usize,
    per_run: PerRun,
    partitions: Vec<PartitionLine>,
    by_op: Vec<OpTypeLine>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let options = GpuOptions {
        subgroups: !args.no_subgroups,
        fp16: args.precision == "fp16",
        pipeline_cache_dir: args.gpu_cache.clone(),
        ..GpuOptions::default()
    };
    let fp32 = GpuDelegate::with_options(&options);
    if let Some(why) = fp32.unavailable_reason() {
        bail!("no GPU: {why}");
    }
    let gpu = match args.precision.as_str() {
        "fp32" => Arc::new(fp32),
        "fp16" => Arc::new(
            fp32.fp16_variant()
                .context("the adapter has no shader-f16 (fp16 unavailable)")?,
        ),
        other => bail!("--precision must be fp32 or fp16, not {other}"),
    };
    let load_start = Instant::now();
    let model = Arc::new(
        Model::from_path(&args.model)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let info = GraphInfo::analyse(model.clone()).context("analysing the model")?;
    let delegate: Arc<dyn Delegate> = gpu.clone();
    let caps: Vec<Box<dyn Capability>> = vec![Box::new(delegate)];
    let parts = partition(&info, &caps);
    let chosen: Vec<_> = parts.candidates.iter().collect();
    let placed = to_placed(&info, &chosen, &caps, None);
    let gpu_nodes: usize = placed.iter().map(|p| p.partition.nodes.len()).sum();
    let resolver = if args.reference {
        CpuResolver::reference()
    } else {
        CpuResolver::optimized()
    };
    let mut it = Interpreter::with_placement(
        model.clone(),
        Arc::new(resolver),
        InterpreterOptions {
            threads: args.threads.max(1),
            ..Default::default()
        },
        placed,
    )
    .context("preparing the model with its GPU partitions")?;
    let load = load_start.elapsed();
    if let Some(e) = it
        .partition_reports()
        .iter()
        .find_map(|r| r.compile_error.clone())
    {
        bail!("a GPU partition did not compile: {e}");
    }
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
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    for _ in 0..args.warmup {
        it.run(&views).context("warm-up run")?;
    }
    let failures =
        |it: &Interpreter| -> u64 { it.partition_reports().iter().map(|r| r.failures).sum() };
    if failures(&it) > 0 {
        bail!(
            "the GPU failed during warm-up: {:?}",
            it.partition_reports()
                .iter()
                .find_map(|r| r.last_error.clone())
        );
    }
    let before = gpu.counters();
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t0 = Instant::now();
        it.run(&views).context("timed run")?;
        times.push(t0.elapsed());
    }
    times.sort();
    let counters = gpu.counters().since(&before);
    if failures(&it) > 0 {
        bail!("the GPU failed during the timed runs: some ran on the CPU");
    }
    let runs = args.runs as f64;
    let per_run = PerRun {
        queue_submits: counters.queue_submits as f64 / runs,
        uploads: counters.uploads as f64 / runs,
        readbacks: counters.readbacks as f64 / runs,
        command_buffers_recorded: counters.command_buffers_recorded as f64 / runs,
        pipelines_created: counters.pipelines_created,
        bind_groups_created: counters.bind_groups_created,
        buffers_created: counters.buffers_created,
    };

    let mut partitions = Vec::new();
    let mut by_op = Vec::new();
    let profile_runs = if args.no_profile {
        0
    } else {
        args.runs.min(20)
    };
    gpu.set_profiling(profile_runs > 0);
    for _ in 0..profile_runs {
        it.run(&views).context("profiled run")?;
    }
    gpu.set_profiling(false);
    let profiles = gpu.partition_profiles();
    let mut sums: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for p in &profiles {
        let mut steps: Vec<DispatchLine> = p
            .steps
            .iter()
            .map(|s| DispatchLine {
                label: s.label.clone(),
                shader: s.shader.clone(),
                nodes: s.nodes.clone(),
                mean_us: us(s.mean),
            })
            .collect();
        for s in &steps {
            let e = sums.entry(s.label.clone()).or_default();
            e.0 += 1;
            e.1 += s.mean_us;
        }
        steps.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
        partitions.push(PartitionLine {
            nodes: p.nodes.len(),
            first_node: p.nodes.first().copied().unwrap_or(0),
            last_node: p.nodes.last().copied().unwrap_or(0),
            dispatches: p.dispatches,
            pipelines: p.pipelines,
            compile_ms: ms(p.compile),
            upload_us: us(p.upload),
            compute_us: us(p.compute),
            compute_gpu_us: p.compute_gpu.map(us),
            readback_us: us(p.readback),
            timestamps: p.timestamps,
            dispatch_profile: steps,
        });
    }
    let total: f64 = sums.values().map(|v| v.1).sum::<f64>().max(1e-12);
    by_op.extend(sums.into_iter().map(|(label, (count, t))| OpTypeLine {
        label,
        count,
        total_us: t,
        percent: 100.0 * t / total,
    }));
    by_op.sort_by(|a, b| b.total_us.total_cmp(&a.total_us));
    let saved = gpu
        .has_pipeline_cache()
        .then(|| gpu.shutdown(Duration::from_secs(5)).pipeline_cache_bytes)
        .flatten();

    let report = GpuReport {
        model: args.model.display().to_string(),
        device: "gpu",
        adapter: gpu.fingerprint(),
        precision: match gpu.precision() {
            Precision::F32 => "fp32",
            Precision::F16 => "fp16",
        },
        subgroups: gpu.uses_subgroups(),
        threads: args.threads.max(1),
        runs: args.runs,
        nodes: model.subgraphs[0].nodes.len(),
        runnable_nodes: info.run_nodes.len(),
        gpu_nodes,
        load_ms: ms(load),
        gpu_compile_ms: partitions.iter().map(|p| p.compile_ms).sum(),
        pipeline_cache_loaded_bytes: gpu.pipeline_cache_loaded_bytes(),
        pipeline_cache_saved_bytes: saved,
        median_ms: ms(percentile(&times, 0.5)),
        p90_ms: ms(percentile(&times, 0.9)),
        min_ms: ms(times[0]),
        dispatches: partitions.iter().map(|p| p.dispatches).sum(),
        per_run,
        partitions,
        by_op,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: gpu ({}, subgroups {}) on {}",
        report.model,
        report.precision,
        if report.subgroups { "on" } else { "off" },
        report.adapter
    );
    println!(
        "  {} of {} runnable nodes ({} in the model, the rest folded at load) in {} GPU partition(s), {} dispatches per run after fusion; CPU nodes on {} thread(s)",
        report.gpu_nodes,
        report.runnable_nodes,
        report.nodes,
        report.partitions.len(),
        report.dispatches,
        report.threads
    );
    println!(
        "  latency  median {:.3} ms  p90 {:.3} ms  min {:.3} ms  ({} runs)",
        report.median_ms, report.p90_ms, report.min_ms, report.runs
    );
    println!(
        "  load {:.1} ms, of which GPU compile {:.1} ms; pipeline cache: {} bytes loaded{}",
        report.load_ms,
        report.gpu_compile_ms,
        report.pipeline_cache_loaded_bytes,
        match report.pipeline_cache_saved_bytes {
            Some(b) => format!(", {b} bytes saved"),
            None => String::new(),
        }
    );
    let p = &report.per_run;
    println!(
        "  per run: {:.1} queue submits, {:.1} uploads, {:.1} readbacks, {:.1} command buffers; created after load: {} pipelines, {} bind groups, {} buffers",
        p.queue_submits,
        p.uploads,
        p.readbacks,
        p.command_buffers_recorded,
        p.pipelines_created,
        p.bind_groups_created,
        p.buffers_created
    );
    for (i, part) in report.partitions.iter().enumerate() {
        println!(
            "  partition {i}: nodes {}..={} ({}), {} dispatches, {} pipelines, compiled in {:.1} ms",
            part.first_node,
            part.last_node,
            part.nodes,
            part.dispatches,
            part.pipelines,
            part.compile_ms
        );
        println!(
            "    profiled (each phase submitted alone): upload {:.1} us  compute {:.1} us{}  readback {:.1} us",
            part.upload_us,
            part.compute_us,
            match part.compute_gpu_us {
                Some(g) => format!(" (GPU timestamps {g:.1} us)"),
                None => String::new(),
            },
            part.readback_us
        );
        let source = if part.timestamps {
            "GPU timestamps"
        } else {
            "wall time, one submission each (no timestamp queries)"
        };
        println!("    slowest dispatches ({source}):");
        for s in part.dispatch_profile.iter().take(15) {
            println!(
                "      {:>9.1} us  {:<28} {:<26} nodes {:?}",
                s.mean_us, s.label, s.shader, s.nodes
            );
        }
    }
    if !report.by_op.is_empty() {
        println!("  by dispatch (fused ops joined by +):");
        for s in &report.by_op {
            println!(
                "    {:<32} {:>4} x  {:>9.1} us  {:>5.1}%",
                s.label, s.count, s.total_us, s.percent
            );
        }
    }
    Ok(())
}
