//! `switchyard placement MODEL [--json|--svg] [--config FILE]`: where each node of a
//! model would run and why — processor, partition, expected and measured latency, and
//! the reason (unsupported op, not allowlisted, cost).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use switchyard_config::Config;
use switchyard_interpreter::{Model, ProcessorKind};
use switchyard_scheduler::allowlist::{Allowlist, Lookup};
use switchyard_scheduler::cost::{CostModel, partition_key};
use switchyard_scheduler::decide::decide;
use switchyard_scheduler::graph::GraphInfo;
use switchyard_scheduler::partition::partition;
use switchyard_scheduler::placement::{Permission, Plan, plan};

#[derive(Args)]
pub struct PlacementArgs {
    /// Path to a .tflite model.
    pub model: PathBuf,
    /// Print JSON.
    #[arg(long, conflicts_with = "svg")]
    pub json: bool,
    /// Print an SVG drawing of the graph coloured by processor.
    #[arg(long)]
    pub svg: bool,
    /// Configuration file (device profiles, allowlist path); embedded defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Treat candidates the allowlist has not judged yet (and processors known only by
    /// their profile) as allowed: a what-if plan, as the simulator makes, instead of
    /// keeping them on the CPU.
    #[arg(long)]
    pub assume_allowed: bool,
    /// Skip timing the model on the CPU (the "measured" column stays empty).
    #[arg(long)]
    pub no_measure: bool,
    /// Validate every candidate of the real delegates (GPU, emulated DSP/NPU) against the
    /// CPU reference now, as the daemon does on first load, and record the decisions
    /// in the allowlist (persisted when `scheduler.allowlist_path` is set).
    #[arg(long)]
    pub validate: bool,
    /// Ask the daemon on this socket for the placement it actually uses (loads the
    /// model there, so the decision is the daemon's, validated and allowlisted).
    #[arg(long, conflicts_with_all = ["svg", "config", "assume_allowed"])]
    pub socket: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report<'a> {
    model: String,
    sha256: &'a str,
    shape_source: &'a str,
    processors: Vec<ProcessorLine>,
    cpu_measured_ms: Option<f64>,
    #[serde(flatten)]
    plan: &'a Plan,
}

#[derive(Serialize)]
struct ProcessorLine {
    name: String,
    kind: String,
    emulated: bool,
    has_delegate: bool,
    fingerprint: String,
}

pub fn run(args: PlacementArgs) -> anyhow::Result<()> {
    if let Some(socket) = &args.socket {
        return from_daemon(socket, &args);
    }
    let cfg = match &args.config {
        Some(p) => Config::from_path(p).with_context(|| format!("config {}", p.display()))?,
        None => Config::embedded_defaults(),
    };
    let model = Arc::new(
        Model::from_path(&args.model)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let info = GraphInfo::analyse(model.clone()).context("analysing the model")?;
    let (delegates, caps) = switchyard_scheduler::capability::for_config(&cfg);
    let parts = partition(&info, &caps);
    let mut cost = CostModel::new(cfg.devices.clone(), cfg.scheduler.ewma_alpha);
    let measured = if args.no_measure {
        None
    } else {
        info.measure_cpu(3)
    };
    if let Some(m) = &measured {
        let prior = cost
            .estimate(&info, &info.run_nodes, ProcessorKind::Cpu)
            .prior_s;
        cost.calibrate(ProcessorKind::Cpu, m.total_s / prior);
    }
    let mut allowlist = if cfg.scheduler.allowlist_path.is_empty() {
        Allowlist::in_memory()
    } else {
        Allowlist::open(&cfg.scheduler.allowlist_path)?
    };
    if args.validate {
        decide(model, &delegates, &mut allowlist, &mut cost, &cfg.scheduler)
            .context("validating the delegates' partitions")?;
    }
    let assume = args.assume_allowed;
    let permission = |c: &switchyard_scheduler::partition::Candidate| -> Permission {
        let Some(cap) = caps.get(c.processor) else {
            return Permission::Denied("unknown processor".into());
        };
        if cap.delegate().is_none() {
            return if assume {
                Permission::Allowed
            } else {
                Permission::Denied(format!(
                    "no {} delegate in this build (profile only; --assume-allowed plans as if validated)",
                    cap.name()
                ))
            };
        }
        let k = switchyard_scheduler::allowlist::key(
            &partition_key(&info.sha256, &c.nodes),
            cap.name(),
        );
        match allowlist.lookup(&k, &cap.fingerprint()) {
            Lookup::Allowed(_) => Permission::Allowed,
            Lookup::Blocked(e) => Permission::Denied(format!("blocked: {}", e.reason)),
            Lookup::Stale(_) => Permission::Denied("driver changed: awaiting re-validation".into()),
            Lookup::Unknown if assume => Permission::Allowed,
            Lookup::Unknown => Permission::Denied(
                "not yet validated on this device (--validate does it; --assume-allowed plans as if validated)"
                    .into(),
            ),
        }
    };
    let mut the_plan = plan(&info, &parts, &caps, &cost, &permission);
    if let Some(m) = &measured {
        for n in &mut the_plan.nodes {
            if n.processor == Some(ProcessorKind::Cpu) {
                n.measured_s = m.per_node_s.get(n.node).copied().flatten();
            }
        }
    }
    let report = Report {
        model: args.model.display().to_string(),
        sha256: &info.sha256,
        shape_source: &info.shape_source,
        processors: caps
            .iter()
            .map(|c| ProcessorLine {
                name: c.name().to_string(),
                kind: c.kind().to_string(),
                emulated: matches!(c.kind(), ProcessorKind::Dsp | ProcessorKind::Npu),
                has_delegate: c.delegate().is_some(),
                fingerprint: c.fingerprint(),
            })
            .collect(),
        cpu_measured_ms: measured.as_ref().map(|m| m.total_s * 1e3),
        plan: &the_plan,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.svg {
        print!("{}", svg(&info, &the_plan));
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

fn text(r: &Report<'_>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "model   {} (sha256 {})", r.model, &r.sha256[..16]);
    let _ = writeln!(o, "shapes  from {}", r.shape_source);
    for p in &r.processors {
        let _ = writeln!(
            o,
            "proc    {:<16} {}{}",
            p.name,
            if p.has_delegate {
                "delegate"
            } else {
                "profile only"
            },
            if p.emulated { ", emulated" } else { "" }
        );
    }
    let _ = writeln!(
        o,
        "plan    expected {} ms (all-cpu {} ms){}",
        ms(r.plan.expected_total_s),
        ms(r.plan.all_cpu_s),
        r.cpu_measured_ms
            .map(|m| format!(", cpu measured {m:.3} ms"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "\npartitions");
    for p in &r.plan.partitions {
        let _ = writeln!(
            o,
            "  #{:<3} {:<16} {:>4} nodes  expected {:>8} ms  transfer {:>7} ms  cpu {:>8} ms",
            p.id,
            p.delegate,
            p.nodes.len(),
            ms(p.expected_s),
            ms(p.transfer_s),
            ms(p.cpu_s)
        );
    }
    let _ = writeln!(
        o,
        "\n{:>5}  {:<22} {:<5} {:>4} {:>10} {:>10}  why",
        "node", "op", "proc", "part", "expect ms", "meas ms"
    );
    for n in &r.plan.nodes {
        let _ = writeln!(
            o,
            "{:>5}  {:<22} {:<5} {:>4} {:>10} {:>10}  {}",
            n.node,
            n.op,
            n.processor.map_or("-".into(), |p| p.to_string()),
            n.partition.map_or("-".into(), |p| p.to_string()),
            ms(n.expected_s),
            n.measured_s.map_or("-".into(), ms),
            n.why
        );
    }
    o
}

fn colour(p: Option<ProcessorKind>) -> &'static str {
    match p {
        Some(ProcessorKind::Cpu) => "#9ecae1",
        Some(ProcessorKind::Gpu) => "#a1d99b",
        Some(ProcessorKind::Dsp) => "#fdae6b",
        Some(ProcessorKind::Npu) => "#bcbddc",
        None => "#eeeeee",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Layered drawing: a node's row is one more than its deepest producer's.
fn svg(info: &GraphInfo, plan: &Plan) -> String {
    let sg = &info.model.subgraphs[0];
    let mut layer = vec![0usize; sg.nodes.len()];
    for node in &sg.nodes {
        let deepest = node
            .inputs
            .iter()
            .flatten()
            .filter_map(|&t| info.producer.get(t).copied().flatten())
            .map(|p| layer[p] + 1)
            .max()
            .unwrap_or(0);
        layer[node.index] = deepest;
    }
    let mut col_in_layer: HashMap<usize, usize> = HashMap::new();
    let mut pos = vec![(0usize, 0usize); sg.nodes.len()];
    for n in 0..sg.nodes.len() {
        let c = col_in_layer.entry(layer[n]).or_default();
        pos[n] = (*c, layer[n]);
        *c += 1;
    }
    let (w, h, gx, gy) = (150usize, 26usize, 20usize, 24usize);
    let cols = col_in_layer.values().copied().max().unwrap_or(1);
    let rows = layer.iter().copied().max().unwrap_or(0) + 1;
    let width = cols * (w + gx) + gx;
    let height = rows * (h + gy) + gy + 40;
    let xy = |n: usize| (gx + pos[n].0 * (w + gx), 40 + gy + pos[n].1 * (h + gy));
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let mut lx = gx;
    for (name, p) in [
        ("cpu", Some(ProcessorKind::Cpu)),
        ("gpu", Some(ProcessorKind::Gpu)),
        ("dsp (emulated)", Some(ProcessorKind::Dsp)),
        ("npu (emulated)", Some(ProcessorKind::Npu)),
        ("folded", None),
    ] {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="10" width="14" height="14" fill="{}"/><text x="{}" y="21">{name}</text>"#,
            colour(p),
            lx + 18
        );
        lx += 130;
    }
    for node in &sg.nodes {
        let (x2, y2) = xy(node.index);
        for &t in node.inputs.iter().flatten() {
            if let Some(p) = info.producer.get(t).copied().flatten() {
                let (x1, y1) = xy(p);
                let _ = writeln!(
                    o,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{y2}" stroke="#888" stroke-width="0.7"/>"##,
                    x1 + w / 2,
                    y1 + h,
                    x2 + w / 2
                );
            }
        }
    }
    for n in &plan.nodes {
        let (x, y) = xy(n.node);
        let label = match n.partition {
            Some(p) => format!("{} {} #{p}", n.node, n.op),
            None => format!("{} {}", n.node, n.op),
        };
        let _ = writeln!(
            o,
            r##"<g><title>{}</title><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{}" stroke="#333"/><text x="{}" y="{}">{}</text></g>"##,
            esc(&n.why),
            colour(n.processor),
            x + 5,
            y + 17,
            esc(&label.chars().take(22).collect::<String>())
        );
    }
    o.push_str("</svg>\n");
    o
}

/// The daemon's own decision: load the model there (shared with other tenants by
/// sha256) and print the plan it placed the model's interpreters with.
fn from_daemon(socket: &std::path::Path, args: &PlacementArgs) -> anyhow::Result<()> {
    let mut client = super::daemon::connect(socket)?;
    let m = client
        .load_model_file(&args.model)
        .with_context(|| format!("loading {} into the daemon", args.model.display()))?;
    let plan_json = client.placement(&m.id)?;
    if args.json {
        println!("{plan_json}");
        return Ok(());
    }
    let plan: serde_json::Value = serde_json::from_str(&plan_json).context("daemon plan")?;
    println!(
        "{} (sha256 {}) as placed by the daemon",
        args.model.display(),
        m.sha256
    );
    if plan.is_null() {
        println!("no delegates configured: every node runs on the cpu");
        return Ok(());
    }
    let empty = Vec::new();
    for p in plan["partitions"].as_array().unwrap_or(&empty) {
        let ms = |v: &serde_json::Value| v.as_f64().map(|s| format!("{:.3} ms", s * 1e3));
        println!(
            "partition {:>2}  {:<5} {:<18} {:>3} nodes  expected {}  measured {}",
            p["id"],
            p["processor"].as_str().unwrap_or("?"),
            p["delegate"].as_str().unwrap_or(""),
            p["nodes"].as_array().map_or(0, Vec::len),
            ms(&p["expected_s"]).unwrap_or_else(|| "-".into()),
            ms(&p["measured_s"]).unwrap_or_else(|| "-".into()),
        );
    }
    for n in plan["nodes"].as_array().unwrap_or(&empty) {
        println!(
            "  node {:>3} {:<24} {:<5} {}",
            n["node"],
            n["op"].as_str().unwrap_or(""),
            n["processor"].as_str().unwrap_or("-"),
            n["why"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
