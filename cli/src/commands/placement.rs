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
use switchyard_scheduler::cost::{CostModel, Learning, partition_key};
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
    /// With --socket: wait until the daemon's background validation of the model has
    /// ended (a first load answers on the CPU plan before it), then print the final
    /// placement.
    #[arg(long, requires = "socket")]
    pub wait: bool,
    /// Also print the per-node table (one line per node with its full reason); by
    /// default nodes are grouped by partition and reason.
    #[arg(long)]
    pub nodes: bool,
}

/// One node as the grouped view needs it, from a local plan or the daemon's JSON.
struct Row {
    node: usize,
    op: String,
    processor: Option<String>,
    partition: Option<usize>,
    why: String,
}

/// A node's reason split into its per-processor clauses ("gpu: …", "dsp (emulated):
/// …"). A plain split at "; " would also cut inside tensor names and parentheses, so a
/// clause starts only where a processor label does.
fn clauses(why: &str) -> Vec<&str> {
    let is_label = |rest: &str| {
        let Some((head, _)) = rest.split_once(": ") else {
            return false;
        };
        let name = head.strip_suffix(" (emulated)").unwrap_or(head);
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(i) = why[search..].find("; ") {
        let at = search + i;
        if is_label(&why[at + 2..]) {
            out.push(&why[start..at]);
            start = at + 2;
        }
        search = at + 2;
    }
    out.push(&why[start..]);
    out
}

/// A node's reason without what is particular to the node — its op name ("CONV_2D has
/// float32 inputs" becomes "float32 inputs"), a tensor's name ("…: model/conv/BiasAdd
/// is int8" becomes "…: int8 tensors") — so nodes held back for the same reason group.
fn general_reason(op: &str, why: &str) -> String {
    clauses(why)
        .into_iter()
        .map(|c| {
            let c = c
                .replace(&format!("{op} has "), "")
                .replace(&format!("{op}: "), "");
            match (c.rfind(": "), c.rsplit_once(" is ")) {
                (Some(colon), Some((_, dtype)))
                    if !dtype.contains(' ') && c.len() - dtype.len() - 4 > colon =>
                {
                    format!("{}: {dtype} tensors", &c[..colon])
                }
                _ => c,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "2–5, 9, 11–14" over node indices, where a range runs over consecutive nodes of
/// `order` (folded nodes are not in it, so they do not break ranges).
fn ranges(nodes: &[usize], order: &[usize], limit: usize) -> String {
    let pos = |n: usize| order.iter().position(|&m| m == n);
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let mut j = i;
        while j + 1 < nodes.len() {
            match (pos(nodes[j]), pos(nodes[j + 1])) {
                (Some(a), Some(b)) if b == a + 1 => j += 1,
                _ if nodes[j + 1] == nodes[j] + 1 => j += 1,
                _ => break,
            }
        }
        parts.push(if i == j {
            nodes[i].to_string()
        } else {
            format!("{}–{}", nodes[i], nodes[j])
        });
        i = j + 1;
    }
    if parts.len() > limit {
        let more = parts.len() - limit;
        parts.truncate(limit);
        parts.push(format!("… ({more} more ranges)"));
    }
    parts.join(", ")
}

/// Nodes grouped by partition and by reason, in run order; folded nodes last.
fn grouped(rows: &[Row]) -> String {
    let mut o = String::new();
    let run: Vec<&Row> = rows.iter().filter(|r| r.partition.is_some()).collect();
    let order: Vec<usize> = run.iter().map(|r| r.node).collect();
    // (partition, processor, reason) and the nodes that share them.
    type Key = (Option<usize>, String, String);
    let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
    for r in &run {
        let key = (
            r.partition,
            r.processor.clone().unwrap_or_else(|| "-".into()),
            general_reason(&r.op, &r.why),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(r.node),
            None => groups.push((key, vec![r.node])),
        }
    }
    let _ = writeln!(
        o,
        "\nwhere and why (nodes by partition and reason; --nodes lists every node)"
    );
    for ((part, proc_, why), nodes) in &groups {
        let _ = writeln!(
            o,
            "  nodes {} ({} node{}) on {} (partition {})",
            ranges(nodes, &order, 12),
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            proc_,
            part.map_or("-".into(), |p| p.to_string())
        );
        for clause in clauses(why).into_iter().filter(|c| !c.is_empty()) {
            let _ = writeln!(o, "      {clause}");
        }
    }
    let folded: Vec<&Row> = rows.iter().filter(|r| r.partition.is_none()).collect();
    if !folded.is_empty() {
        let mut reasons: Vec<(String, Vec<usize>)> = Vec::new();
        for r in &folded {
            match reasons.iter_mut().find(|(w, _)| *w == r.why) {
                Some((_, v)) => v.push(r.node),
                None => reasons.push((r.why.clone(), vec![r.node])),
            }
        }
        for (why, nodes) in reasons {
            let _ = writeln!(
                o,
                "  nodes {} ({} nodes) not run: {why}",
                ranges(&nodes, &[], 6),
                nodes.len()
            );
        }
    }
    o
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
    let mut cost = CostModel::new(cfg.devices.clone(), Learning::from_config(&cfg.scheduler));
    // Timed as the daemon serves it: optimized kernels, its thread count, warm.
    let threads = cfg.daemon.kernel_threads.max(1);
    let measured = if args.no_measure {
        None
    } else {
        info.measure_cpu(3, threads)
    };
    if let Some(m) = &measured {
        cost.observe_cpu_profile(&info.sha256, &m.per_node_s);
    }
    let mut allowlist = if cfg.scheduler.allowlist_path.is_empty() {
        Allowlist::in_memory()
    } else {
        Allowlist::open(&cfg.scheduler.allowlist_path)?
    };
    if args.validate {
        decide(
            model,
            &delegates,
            &mut allowlist,
            &mut cost,
            &cfg.scheduler,
            threads,
        )
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
        print!("{}", text(&report, args.nodes));
    }
    Ok(())
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

fn text(r: &Report<'_>, per_node: bool) -> String {
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
    let rows: Vec<Row> = r
        .plan
        .nodes
        .iter()
        .map(|n| Row {
            node: n.node,
            op: n.op.clone(),
            processor: n.processor.map(|p| p.to_string()),
            partition: n.partition,
            why: n.why.clone(),
        })
        .collect();
    o.push_str(&grouped(&rows));
    if !per_node {
        return o;
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

/// Layered drawing: a node's row is one more than its deepest producer's. Nodes folded
/// at prepare (constants: weight DEQUANTIZE and the like) never run, so they are not
/// drawn — otherwise they all land in the first row and make the picture as wide as
/// the model has weights (checked in a real browser; docs/placement-face-detection.png).
fn svg(info: &GraphInfo, plan: &Plan) -> String {
    let sg = &info.model.subgraphs[0];
    let count = sg.nodes.len();
    let mut folded = vec![false; count];
    for n in &plan.nodes {
        if n.partition.is_none()
            && n.processor.is_none()
            && let Some(f) = folded.get_mut(n.node)
        {
            *f = true;
        }
    }
    let producers = |index: usize| -> Vec<usize> {
        sg.nodes[index]
            .inputs
            .iter()
            .flatten()
            .filter_map(|&t| info.producer.get(t).copied().flatten())
            .filter(|&p| p < count && !folded[p])
            .collect()
    };
    let mut layer = vec![0usize; count];
    for node in &sg.nodes {
        if folded[node.index] {
            continue;
        }
        layer[node.index] = producers(node.index)
            .into_iter()
            .map(|p| layer[p] + 1)
            .max()
            .unwrap_or(0);
    }
    let mut col_in_layer: HashMap<usize, usize> = HashMap::new();
    let mut pos = vec![(0usize, 0usize); count];
    for n in (0..count).filter(|&n| !folded[n]) {
        let c = col_in_layer.entry(layer[n]).or_default();
        pos[n] = (*c, layer[n]);
        *c += 1;
    }
    let (w, h, gx, gy) = (190usize, 26usize, 24usize, 22usize);
    let cols = col_in_layer.values().copied().max().unwrap_or(1);
    let rows = (0..count)
        .filter(|&n| !folded[n])
        .map(|n| layer[n])
        .max()
        .unwrap_or(0)
        + 1;
    let width = (cols * (w + gx) + gx).max(5 * 150 + 2 * gx);
    let height = rows * (h + gy) + gy + 60;
    let xy = |n: usize| (gx + pos[n].0 * (w + gx), 60 + gy + pos[n].1 * (h + gy));
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        o,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let mut lx = gx;
    for (name, p) in [
        ("cpu", Some(ProcessorKind::Cpu)),
        ("gpu", Some(ProcessorKind::Gpu)),
        ("dsp (emulated)", Some(ProcessorKind::Dsp)),
        ("npu (emulated)", Some(ProcessorKind::Npu)),
    ] {
        let _ = writeln!(
            o,
            r##"<rect x="{lx}" y="10" width="14" height="14" fill="{}" stroke="#333"/><text x="{}" y="21">{name}</text>"##,
            colour(p),
            lx + 18
        );
        lx += 150;
    }
    let n_folded = folded.iter().filter(|&&f| f).count();
    let _ = writeln!(
        o,
        r#"<text x="{gx}" y="44">{} nodes run in {} partition(s); {n_folded} constant nodes folded at load are not drawn. Hover a node for why it runs where it does.</text>"#,
        count - n_folded,
        plan.partitions.len()
    );
    for node in sg.nodes.iter().filter(|n| !folded[n.index]) {
        let (x2, y2) = xy(node.index);
        for p in producers(node.index) {
            let (x1, y1) = xy(p);
            let _ = writeln!(
                o,
                r##"<line x1="{}" y1="{}" x2="{}" y2="{y2}" stroke="#888" stroke-width="0.8"/>"##,
                x1 + w / 2,
                y1 + h,
                x2 + w / 2
            );
        }
    }
    for n in plan
        .nodes
        .iter()
        .filter(|n| !folded.get(n.node).copied().unwrap_or(true))
    {
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
            esc(&label.chars().take(28).collect::<String>())
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
        .load(&args.model)
        .with_context(|| format!("loading {} into the daemon", args.model.display()))?;
    let status = if args.wait {
        client.wait_placed(m.id(), std::time::Duration::from_secs(600))?
    } else {
        client.placement_status(m.id())?
    };
    let plan_json = status.plan_json;
    if args.json {
        println!("{plan_json}");
        return Ok(());
    }
    let plan: serde_json::Value = serde_json::from_str(&plan_json).context("daemon plan")?;
    println!(
        "{} (sha256 {}) as placed by the daemon",
        args.model.display(),
        m.meta().sha256
    );
    match status.validation.as_str() {
        "validating" => println!(
            "validating: {} (--wait prints the final placement)",
            status.validation_reason
        ),
        "" => {}
        v => println!("validation {v}: {}", status.validation_reason),
    }
    if plan.is_null() {
        if status.validation != "validating" {
            println!("every node runs on the cpu");
        }
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
    let rows: Vec<Row> = plan["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|n| Row {
            node: n["node"].as_u64().unwrap_or(0) as usize,
            op: n["op"].as_str().unwrap_or("").to_owned(),
            processor: n["processor"].as_str().map(str::to_owned),
            partition: n["partition"].as_u64().map(|p| p as usize),
            why: n["why"].as_str().unwrap_or("").to_owned(),
        })
        .collect();
    print!("{}", grouped(&rows));
    if !args.nodes {
        return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: usize, op: &str, part: Option<usize>, why: &str) -> Row {
        Row {
            node,
            op: op.into(),
            processor: part.map(|_| "cpu".into()),
            partition: part,
            why: why.into(),
        }
    }

    #[test]
    fn nodes_group_by_partition_and_reason_across_folded_ones() {
        let dsp = |op: &str| {
            format!(
                "dsp (emulated): unsupported: dsp runs quantized ops only: {op} has float32 inputs"
            )
        };
        let rows = vec![
            row(0, "DEQUANTIZE", None, "folded at prepare"),
            row(1, "CONV_2D", Some(0), &dsp("CONV_2D")),
            row(2, "DEQUANTIZE", None, "folded at prepare"),
            row(3, "RELU", Some(0), &dsp("RELU")),
            row(4, "ADD", Some(0), &dsp("ADD")),
            row(5, "CUSTOM", Some(0), "no kernel"),
        ];
        let g = grouped(&rows);
        assert!(
            g.contains("nodes 1–4 (3 nodes) on cpu (partition 0)"),
            "{g}"
        );
        assert!(
            g.contains("dsp runs quantized ops only: float32 inputs"),
            "{g}"
        );
        assert!(g.contains("nodes 5 (1 node) on cpu"), "{g}");
        assert!(
            g.contains("nodes 0, 2 (2 nodes) not run: folded at prepare"),
            "{g}"
        );
        assert_eq!(g.matches("float32 inputs").count(), 1, "{g}");
    }

    #[test]
    fn reasons_lose_tensor_names_and_keep_parentheses_whole() {
        let why = "gpu: unsupported: gpu runs float32 only: model_1/dense;model_1/bias is int8; \
                   dsp (emulated): not allowlisted: no dsp delegate (profile only; --assume-allowed plans as if validated)";
        assert_eq!(
            clauses(why),
            vec![
                "gpu: unsupported: gpu runs float32 only: model_1/dense;model_1/bias is int8",
                "dsp (emulated): not allowlisted: no dsp delegate (profile only; --assume-allowed plans as if validated)"
            ]
        );
        let other = why.replace("model_1/dense;model_1/bias", "model_1/conv");
        assert_eq!(
            general_reason("FULLY_CONNECTED", why),
            general_reason("CONV_2D", &other)
        );
        assert!(
            general_reason("X", why)
                .starts_with("gpu: unsupported: gpu runs float32 only: int8 tensors; dsp")
        );
    }
}
