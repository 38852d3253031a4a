//! The plan: the cheapest allowed placement of every candidate partition, and the
//! reason for every node's processor.
//!
//! Greedy over savings: each candidate's saving is its CPU time minus its time on the
//! processor and the transfers in and out. Candidates are taken best saving first, when
//! allowed, saving something and not overlapping a taken one. The CPU keeps whatever is
//! left, and every partition keeps the CPU as its fallback.

use serde::Serialize;
use switchyard_interpreter::ProcessorKind;

use crate::capability::Capability;
use crate::cost::CostModel;
use crate::graph::GraphInfo;
use crate::partition::{Candidate, Partitioning};

/// Whether a candidate may be placed, as the allowlist says.
#[derive(Clone, Debug, PartialEq)]
pub enum Permission {
    Allowed,
    /// Not allowed, with the reason (blocked by validation, no delegate to run it, ...).
    Denied(String),
}

/// One partition of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedPartition {
    pub id: usize,
    #[serde(serialize_with = "crate::ser_kind")]
    pub processor: ProcessorKind,
    pub delegate: String,
    pub nodes: Vec<usize>,
    pub expected_s: f64,
    pub measured_s: Option<f64>,
    pub transfer_s: f64,
    /// The same nodes on the CPU.
    pub cpu_s: f64,
    /// Index of the candidate it came from, `None` for CPU stretches.
    #[serde(skip)]
    pub candidate: Option<usize>,
}

/// Why one node runs where it does.
#[derive(Clone, Debug, Serialize)]
pub struct NodeExplanation {
    pub node: usize,
    pub op: String,
    #[serde(serialize_with = "crate::ser_opt_kind")]
    pub processor: Option<ProcessorKind>,
    pub partition: Option<usize>,
    pub expected_s: f64,
    pub measured_s: Option<f64>,
    pub why: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Partitions in run order (CPU stretches included), the stages of a request.
    pub partitions: Vec<PlannedPartition>,
    pub nodes: Vec<NodeExplanation>,
    pub expected_total_s: f64,
    pub all_cpu_s: f64,
}

impl Plan {
    /// Candidates the plan placed on accelerators.
    pub fn chosen<'a>(&self, parts: &'a Partitioning) -> Vec<&'a Candidate> {
        self.partitions
            .iter()
            .filter_map(|p| p.candidate.and_then(|c| parts.candidates.get(c)))
            .collect()
    }
}

/// Bytes crossing into and out of a candidate per run.
fn boundary_bytes(info: &GraphInfo, nodes: &[usize]) -> usize {
    let (ins, outs) = info.boundary(nodes);
    ins.iter().chain(&outs).map(|&t| info.tensor_bytes(t)).sum()
}

/// Builds the plan from candidates, the cost model and the allowlist's answers.
pub fn plan(
    info: &GraphInfo,
    parts: &Partitioning,
    caps: &[Box<dyn Capability>],
    cost: &CostModel,
    permission: &dyn Fn(&Candidate) -> Permission,
) -> Plan {
    let n_nodes = info.node_count();
    let mut scored: Vec<(usize, f64, f64, f64, Option<f64>)> = Vec::new();
    let mut denied: Vec<Option<String>> = vec![None; parts.candidates.len()];
    for (ci, c) in parts.candidates.iter().enumerate() {
        let cpu = cost.estimate(info, &c.nodes, ProcessorKind::Cpu).seconds;
        let dev = cost.estimate(info, &c.nodes, c.kind);
        let transfer =
            cost.transfer_seconds(boundary_bytes(info, &c.nodes), ProcessorKind::Cpu, c.kind);
        match permission(c) {
            Permission::Allowed => {}
            Permission::Denied(why) => {
                denied[ci] = Some(why);
                continue;
            }
        }
        scored.push((
            ci,
            cpu - dev.seconds - transfer,
            dev.seconds,
            transfer,
            dev.measured.map(|m| m.mean_s),
        ));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut owner: Vec<Option<usize>> = vec![None; n_nodes];
    let mut taken: Vec<(usize, f64, f64, Option<f64>)> = Vec::new();
    let mut too_slow: Vec<Option<f64>> = vec![None; parts.candidates.len()];
    for (ci, saving, dev_s, transfer, measured) in scored {
        let c = &parts.candidates[ci];
        if saving <= 0.0 {
            too_slow[ci] = Some(-saving);
            continue;
        }
        if c.nodes.iter().any(|&n| owner[n].is_some()) {
            continue;
        }
        for &n in &c.nodes {
            owner[n] = Some(ci);
        }
        taken.push((ci, dev_s, transfer, measured));
    }

    // Stages in run order: accelerator partitions at their first node, CPU stretches
    // between them.
    let mut partitions: Vec<PlannedPartition> = Vec::new();
    let mut cpu_run: Vec<usize> = Vec::new();
    let flush_cpu = |run: &mut Vec<usize>, out: &mut Vec<PlannedPartition>| {
        if run.is_empty() {
            return;
        }
        let nodes = std::mem::take(run);
        let e = cost.estimate(info, &nodes, ProcessorKind::Cpu);
        out.push(PlannedPartition {
            id: out.len(),
            processor: ProcessorKind::Cpu,
            delegate: "cpu".into(),
            cpu_s: e.seconds,
            expected_s: e.seconds,
            measured_s: e.measured.map(|m| m.mean_s),
            transfer_s: 0.0,
            nodes,
            candidate: None,
        });
    };
    for &n in &info.run_nodes {
        match owner[n] {
            None => cpu_run.push(n),
            Some(ci) => {
                if partitions.iter().any(|p| p.candidate == Some(ci)) {
                    continue;
                }
                flush_cpu(&mut cpu_run, &mut partitions);
                let c = &parts.candidates[ci];
                let (_, dev_s, transfer, measured) = taken
                    .iter()
                    .find(|t| t.0 == ci)
                    .copied()
                    .unwrap_or_default();
                partitions.push(PlannedPartition {
                    id: partitions.len(),
                    processor: c.kind,
                    delegate: c.delegate.clone(),
                    nodes: c.nodes.clone(),
                    expected_s: dev_s,
                    measured_s: measured,
                    transfer_s: transfer,
                    cpu_s: cost.estimate(info, &c.nodes, ProcessorKind::Cpu).seconds,
                    candidate: Some(ci),
                });
            }
        }
    }
    flush_cpu(&mut cpu_run, &mut partitions);

    let mut nodes = Vec::with_capacity(n_nodes);
    for n in 0..n_nodes {
        let op = info.op_name(n);
        if info.folded[n] {
            nodes.push(NodeExplanation {
                node: n,
                op,
                processor: None,
                partition: None,
                expected_s: 0.0,
                measured_s: None,
                why: "folded at prepare (constant inputs): runs once at load".into(),
            });
            continue;
        }
        let part = partitions.iter().find(|p| p.nodes.contains(&n));
        let node_cpu = cost.estimate(info, &[n], ProcessorKind::Cpu);
        let (processor, partition, expected_s, measured_s) = match part {
            Some(p) if p.processor != ProcessorKind::Cpu => (
                p.processor,
                Some(p.id),
                cost.node_seconds(info, n, p.processor),
                None,
            ),
            Some(p) => (
                ProcessorKind::Cpu,
                Some(p.id),
                node_cpu.seconds,
                node_cpu.measured.map(|m| m.mean_s),
            ),
            None => (ProcessorKind::Cpu, None, node_cpu.seconds, None),
        };
        let why = if let Some(p) = part.filter(|_| processor != ProcessorKind::Cpu) {
            format!(
                "cost: partition {:.3} ms on {} (+{:.3} ms transfers) vs {:.3} ms on the cpu",
                p.expected_s * 1e3,
                p.delegate,
                p.transfer_s * 1e3,
                p.cpu_s * 1e3
            )
        } else {
            cpu_reason(n, parts, caps, &denied, &too_slow, &owner)
        };
        nodes.push(NodeExplanation {
            node: n,
            op,
            processor: Some(processor),
            partition,
            expected_s,
            measured_s,
            why,
        });
    }
    let expected_total_s = partitions.iter().map(|p| p.expected_s + p.transfer_s).sum();
    let all_cpu_s = cost
        .estimate(info, &info.run_nodes, ProcessorKind::Cpu)
        .seconds;
    Plan {
        partitions,
        nodes,
        expected_total_s,
        all_cpu_s,
    }
}

/// Why node `n` stayed on the CPU, one clause per accelerator.
fn cpu_reason(
    n: usize,
    parts: &Partitioning,
    caps: &[Box<dyn Capability>],
    denied: &[Option<String>],
    too_slow: &[Option<f64>],
    owner: &[Option<usize>],
) -> String {
    if caps.is_empty() {
        return "no accelerator configured".into();
    }
    let mut clauses = Vec::new();
    for (pi, cap) in caps.iter().enumerate() {
        let cand = parts
            .candidates
            .iter()
            .position(|c| c.processor == pi && c.nodes.contains(&n));
        let clause = match cand {
            None => match parts
                .rejections
                .get(n)
                .and_then(|r| r.get(pi))
                .cloned()
                .flatten()
            {
                Some(why) => format!("{}: unsupported: {why}", cap.name()),
                None => format!("{}: unsupported", cap.name()),
            },
            Some(ci) => {
                if let Some(why) = &denied[ci] {
                    format!("{}: not allowlisted: {why}", cap.name())
                } else if let Some(loss) = too_slow[ci] {
                    format!(
                        "{}: cost: slower than the cpu by {:.3} ms with transfers",
                        cap.name(),
                        loss * 1e3
                    )
                } else if owner[n].is_some_and(|o| o != ci) {
                    format!("{}: cost: an overlapping partition saves more", cap.name())
                } else {
                    format!("{}: cost: not chosen", cap.name())
                }
            }
        };
        clauses.push(clause);
    }
    clauses.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::profile_rules;
    use crate::partition::partition;
    use std::sync::Arc;
    use switchyard_config::DeviceProfiles;
    use switchyard_interpreter::Model;

    fn info(stem: &str) -> Option<GraphInfo> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(format!("{stem}.tflite"));
        if !path.exists() {
            eprintln!(
                "skipping: {} missing (run scripts/setup.sh)",
                path.display()
            );
            return None;
        }
        Some(GraphInfo::analyse(Arc::new(Model::from_path(path).unwrap())).unwrap())
    }

    #[test]
    fn float_model_goes_to_the_gpu_and_denial_keeps_it_on_the_cpu() {
        let Some(info) = info("mp_face_detection_short_range") else {
            return;
        };
        let profiles = DeviceProfiles::default();
        let caps = profile_rules(&profiles);
        let parts = partition(&info, &caps);
        let cost = CostModel::new(profiles, crate::cost::Learning::default());
        let p = plan(&info, &parts, &caps, &cost, &|_| Permission::Allowed);
        assert!(
            p.partitions
                .iter()
                .any(|p| p.processor == ProcessorKind::Gpu),
            "{:?}",
            p.partitions
        );
        assert!(p.expected_total_s < p.all_cpu_s);
        // Float: the quantized-only DSP and the int8 NPU say why not.
        let conv = p.nodes.iter().find(|n| n.op == "CONV_2D").unwrap();
        assert_eq!(conv.processor, Some(ProcessorKind::Gpu));

        let denied = plan(&info, &parts, &caps, &cost, &|_| {
            Permission::Denied("blocked: wrong results".into())
        });
        assert!(
            denied
                .partitions
                .iter()
                .all(|p| p.processor == ProcessorKind::Cpu)
        );
        let conv = denied.nodes.iter().find(|n| n.op == "CONV_2D").unwrap();
        assert!(
            conv.why.contains("gpu: not allowlisted: blocked"),
            "{}",
            conv.why
        );
        assert!(
            conv.why.contains("dsp (emulated): unsupported"),
            "{}",
            conv.why
        );
    }

    #[test]
    fn a_tiny_int8_model_stays_on_the_cpu_because_dispatch_costs_more() {
        let Some(info) = info("mww_okay_nabu") else {
            return;
        };
        let profiles = DeviceProfiles::default();
        let caps = profile_rules(&profiles);
        let parts = partition(&info, &caps);
        assert!(
            parts
                .candidates
                .iter()
                .any(|c| c.kind == ProcessorKind::Dsp),
            "int8 convolutions are dsp candidates"
        );
        let cost = CostModel::new(profiles, crate::cost::Learning::default());
        let p = plan(&info, &parts, &caps, &cost, &|_| Permission::Allowed);
        let conv = p.nodes.iter().find(|n| n.op == "CONV_2D").unwrap();
        assert_eq!(conv.processor, Some(ProcessorKind::Cpu));
        assert!(
            conv.why
                .contains("dsp (emulated): cost: slower than the cpu"),
            "{}",
            conv.why
        );
        assert!(
            conv.why.contains(
                "gpu: unsupported: gpu: input 0 is int8; the GPU delegate runs float32 only"
            ),
            "{}",
            conv.why
        );
    }
}
