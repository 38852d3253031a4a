//! Delegate partitions in a prepared subgraph: the CPU steps of each placed partition are
//! folded into one partition step at the position of its first node, and the partition
//! is compiled for its delegate. The CPU steps stay inside as the fallback; a compile
//! failure is recorded in the plan's reports and the partition runs on the CPU.

use std::collections::{HashMap, HashSet};

use super::Plan;
use super::prepare::Known;
use super::steps::{PartitionStep, Step, StepIo};
use crate::delegate::PartitionCtx;
use crate::error::RunError;
use crate::model::Subgraph;

/// Groups the steps of subgraph `si` by placed partition and compiles each partition.
pub(crate) fn group(
    plan: &Plan,
    si: usize,
    sg: &Subgraph,
    steps: Vec<Step>,
    known: &Known,
) -> Result<Vec<Step>, RunError> {
    let placements = plan.placements();
    let mine: Vec<usize> = (0..placements.len())
        .filter(|&p| placements[p].partition.subgraph == si)
        .collect();
    if mine.is_empty() {
        return Ok(steps);
    }
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for &p in &mine {
        for &n in &placements[p].partition.nodes {
            if owner.insert(n, p).is_some() {
                return Err(RunError::Graph {
                    subgraph: si,
                    what: format!("node {n} is placed in two partitions"),
                });
            }
        }
    }
    // A partition runs where its first node was: everything it reads from outside must
    // be produced before that point. Nodes folded at prepare produce constants,
    // available from the start.
    let stepped: HashSet<usize> = steps.iter().map(Step::node).collect();
    let mut producer: HashMap<usize, usize> = HashMap::new();
    for node in &sg.nodes {
        if !stepped.contains(&node.index) {
            continue;
        }
        for &t in &node.outputs {
            producer.insert(t, node.index);
        }
    }
    for &p in &mine {
        let part = &placements[p].partition;
        let first = part.nodes.iter().copied().min().unwrap_or(0);
        for &n in &part.nodes {
            for &t in sg.nodes[n].inputs.iter().flatten() {
                if let Some(&pn) = producer.get(&t)
                    && !part.nodes.contains(&pn)
                    && pn > first
                {
                    return Err(RunError::Graph {
                        subgraph: si,
                        what: format!(
                            "partition {:?} on {} reads tensor {t} produced later by node {pn}",
                            part.nodes,
                            placements[p].delegate.name()
                        ),
                    });
                }
            }
        }
    }
    let mut out: Vec<Step> = Vec::new();
    let mut slot_of: HashMap<usize, usize> = HashMap::new();
    for step in steps {
        match owner.get(&step.node()) {
            None => out.push(step),
            Some(&p) => match slot_of.get(&p) {
                Some(&slot) => {
                    if let Some(Step::Partition(part)) = out.get_mut(slot) {
                        part.fallback.push(step);
                    }
                }
                None => {
                    slot_of.insert(p, out.len());
                    out.push(Step::Partition(Box::new(PartitionStep {
                        placement: p,
                        compiled: None,
                        fallback: vec![step],
                        io: StepIo::default(),
                    })));
                }
            },
        }
    }
    let model = plan.model();
    for step in out.iter_mut() {
        let Step::Partition(part) = step else {
            continue;
        };
        let placed = &placements[part.placement];
        if part
            .fallback
            .iter()
            .any(|s| !matches!(s, Step::Kernel { .. }))
        {
            plan.update_report(part.placement, |r| {
                r.compile_error =
                    Some("partition has dynamic shapes or control flow; runs on the CPU".into())
            });
            continue;
        }
        let constant = |t: usize| known.value(sg, t);
        let ctx = PartitionCtx {
            model,
            subgraph: sg,
            partition: &placed.partition,
            shapes: &known.shapes,
            constant: &constant,
        };
        let _span =
            tracing::debug_span!("compile_partition", delegate = placed.delegate.name()).entered();
        match placed.delegate.compile(&ctx) {
            Ok(c) => {
                part.compiled = Some(c);
                plan.update_report(part.placement, |r| r.compile_error = None);
            }
            Err(e) => {
                tracing::warn!(delegate = placed.delegate.name(), error = %e, "partition falls back to the CPU");
                plan.update_report(part.placement, |r| r.compile_error = Some(e.to_string()));
            }
        }
    }
    Ok(out)
}
