//! The partitioner: which nodes could run on which processor, grouped into connected
//! partitions the executor can run as one step.
//!
//! The executor runs a placed partition at the position of its first node, so a
//! partition is valid exactly when everything it reads from outside is produced before
//! that node. Growing partitions under that rule is TFLite's "no cycle through CPU
//! nodes": a CPU node that consumes a partition's output and feeds it again would have
//! to run both after and before it.
//!
//! Each processor is partitioned on its own; the candidates of different processors may
//! overlap and [`crate::placement`] chooses among them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_interpreter::{Delegate, Partition, PlacedPartition, ProcessorKind, Support};

use crate::capability::Capability;
use crate::graph::GraphInfo;

/// A connected set of nodes one processor could run.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Index into the capability list given to [`partition`].
    pub processor: usize,
    pub kind: ProcessorKind,
    pub delegate: String,
    /// Nodes in run order.
    pub nodes: Vec<usize>,
}

/// Everything the partitioner found, including why nodes were left out.
#[derive(Clone, Debug, Default)]
pub struct Partitioning {
    pub candidates: Vec<Candidate>,
    /// Per node, per capability: why the node is in no candidate of that capability
    /// (`None` when it is in one).
    pub rejections: Vec<Vec<Option<String>>>,
}

/// Adapts delegates to the partitioner's question.
pub fn delegates_as_capabilities(delegates: &[Arc<dyn Delegate>]) -> Vec<Box<dyn Capability>> {
    delegates
        .iter()
        .map(|d| Box::new(d.clone()) as Box<dyn Capability>)
        .collect()
}

/// True when the executor can run `nodes` as one step: every tensor they read from
/// outside is produced before their first node.
pub fn is_valid(info: &GraphInfo, nodes: &[usize]) -> bool {
    let Some(&first) = nodes.iter().min() else {
        return false;
    };
    let sg = &info.model.subgraphs[0];
    nodes.iter().all(|&n| {
        sg.nodes.get(n).is_some_and(|node| {
            node.inputs
                .iter()
                .flatten()
                .all(|&t| match info.producer.get(t).copied().flatten() {
                    None => true,
                    Some(p) => nodes.contains(&p) || p < first || info.folded[p],
                })
        })
    })
}

/// Groups `supported` run nodes into maximal valid connected sets, greedily in run
/// order: a node joins the partitions of its producers when the union stays valid.
pub fn group(info: &GraphInfo, supported: &[bool]) -> Vec<Vec<usize>> {
    let sg = &info.model.subgraphs[0];
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for &n in &info.run_nodes {
        if !supported.get(n).copied().unwrap_or(false) {
            continue;
        }
        let mut adjacent: Vec<usize> = Vec::new();
        for &t in sg.nodes[n].inputs.iter().flatten() {
            if let Some(p) = info.producer.get(t).copied().flatten()
                && let Some(i) = parts.iter().position(|part| part.contains(&p))
                && !adjacent.contains(&i)
            {
                adjacent.push(i);
            }
        }
        let mut merged: Vec<usize> = adjacent.iter().flat_map(|&i| parts[i].clone()).collect();
        merged.push(n);
        merged.sort_unstable();
        if !adjacent.is_empty() && is_valid(info, &merged) {
            adjacent.sort_unstable_by(|a, b| b.cmp(a));
            for i in adjacent {
                parts.remove(i);
            }
            parts.push(merged);
            continue;
        }
        adjacent.sort_by_key(|&i| std::cmp::Reverse(parts[i].len()));
        let joined = adjacent.iter().copied().find(|&i| {
            let mut with = parts[i].clone();
            with.push(n);
            is_valid(info, &with)
        });
        match joined {
            Some(i) => parts[i].push(n),
            None => parts.push(vec![n]),
        }
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    parts.sort_by_key(|p| p[0]);
    parts
}

/// Partitions the model for every capability, honouring each one's minimum partition
/// size and partition cap (largest partitions kept first).
pub fn partition(info: &GraphInfo, caps: &[Box<dyn Capability>]) -> Partitioning {
    let n_nodes = info.node_count();
    let mut rejections = vec![vec![None; caps.len()]; n_nodes];
    let mut candidates = Vec::new();
    for (ci, cap) in caps.iter().enumerate() {
        let mut supported = vec![false; n_nodes];
        for n in 0..n_nodes {
            if info.folded[n] {
                rejections[n][ci] = Some("folded at prepare: runs once, on no processor".into());
                continue;
            }
            let Some(ctx) = info.support_ctx(n) else {
                continue;
            };
            match cap.supports(&ctx) {
                Support::Supported => supported[n] = true,
                Support::Unsupported(why) => rejections[n][ci] = Some(why),
            }
        }
        let opts = cap.partition_options();
        let mut parts = group(info, &supported);
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut kept = 0usize;
        for part in parts {
            let why = if part.len() < opts.min_nodes_per_partition {
                Some(format!(
                    "{}: partition of {} node(s) is below its minimum of {}",
                    cap.name(),
                    part.len(),
                    opts.min_nodes_per_partition
                ))
            } else if kept >= opts.max_partitions {
                Some(format!(
                    "{}: already has its maximum of {} partitions (larger ones kept)",
                    cap.name(),
                    opts.max_partitions
                ))
            } else {
                None
            };
            match why {
                Some(why) => {
                    for &n in &part {
                        rejections[n][ci] = Some(why.clone());
                    }
                }
                None => {
                    kept += 1;
                    candidates.push(Candidate {
                        processor: ci,
                        kind: cap.kind(),
                        delegate: cap.name().to_string(),
                        nodes: part,
                    });
                }
            }
        }
    }
    candidates.sort_by_key(|c| (c.nodes[0], c.processor));
    Partitioning {
        candidates,
        rejections,
    }
}

/// Turns chosen candidates into what `Interpreter::with_placement` takes. Candidates of
/// capabilities without a real delegate are skipped: they stay on the CPU.
pub fn to_placed(
    info: &GraphInfo,
    chosen: &[&Candidate],
    caps: &[Box<dyn Capability>],
    timeout: Option<Duration>,
) -> Vec<PlacedPartition> {
    let sg = &info.model.subgraphs[0];
    let mut seen = HashSet::new();
    chosen
        .iter()
        .filter(|c| c.nodes.iter().all(|n| seen.insert(*n)))
        .filter_map(|c| {
            let delegate = caps.get(c.processor)?.delegate()?;
            Some(PlacedPartition {
                partition: Partition::from_nodes(0, sg, c.nodes.clone()),
                delegate,
                timeout,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{
        BuiltinOp, DType, Model, NodeSupportCtx, OpKind, OpOptions, PartitionOptions,
    };

    /// Supports ADD only, like a tiny accelerator.
    struct AddOnly(PartitionOptions);

    impl Capability for AddOnly {
        fn name(&self) -> &str {
            "add-only"
        }
        fn kind(&self) -> ProcessorKind {
            ProcessorKind::Npu
        }
        fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
            if ctx.node.op == OpKind::Builtin(BuiltinOp::Add) {
                Support::Supported
            } else {
                Support::Unsupported(format!("no {}", ctx.node.op))
            }
        }
        fn partition_options(&self) -> PartitionOptions {
            self.0
        }
        fn fingerprint(&self) -> String {
            "add-only-1".into()
        }
    }

    /// x -> ADD(0) -> a ; a -> TANH(1) -> b ; (a, b) -> ADD(2) -> c ; c -> ADD(3) -> y
    /// Node 2 needs node 1 (CPU), which needs node 0: {0, 2} would be a cycle.
    fn diamond() -> GraphInfo {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let one = sg.constant_f32("one", &[4], &[1.0; 4]);
        let a = sg.tensor("a", DType::F32, &[4]);
        let b = sg.tensor("b", DType::F32, &[4]);
        let c = sg.tensor("c", DType::F32, &[4]);
        let y = sg.tensor("y", DType::F32, &[4]);
        let add = OpKind::Builtin(BuiltinOp::Add);
        let act = OpOptions::Activation(Default::default());
        sg.op(add.clone(), &[Some(x), Some(one)], &[a], act.clone());
        sg.op(
            OpKind::Builtin(BuiltinOp::Tanh),
            &[Some(a)],
            &[b],
            OpOptions::None,
        );
        sg.op(add.clone(), &[Some(a), Some(b)], &[c], act.clone());
        sg.op(add, &[Some(c), Some(one)], &[y], act);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let model = Arc::new(Model::from_bytes(&mb.finish()).unwrap());
        GraphInfo::analyse(model).unwrap()
    }

    fn caps(opts: PartitionOptions) -> Vec<Box<dyn Capability>> {
        vec![Box::new(AddOnly(opts))]
    }

    #[test]
    fn a_cpu_node_between_two_supported_nodes_splits_them() {
        let info = diamond();
        let p = partition(&info, &caps(PartitionOptions::default()));
        let sets: Vec<_> = p.candidates.iter().map(|c| c.nodes.clone()).collect();
        assert_eq!(sets, vec![vec![0], vec![2, 3]]);
        assert!(!is_valid(&info, &[0, 2]));
        assert_eq!(p.rejections[1][0].as_deref(), Some("no TANH"));
    }

    #[test]
    fn min_size_and_cap_send_nodes_back_to_the_cpu_with_a_reason() {
        let info = diamond();
        let p = partition(
            &info,
            &caps(PartitionOptions {
                min_nodes_per_partition: 2,
                max_partitions: 1,
            }),
        );
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(p.candidates[0].nodes, vec![2, 3]);
        let why = p.rejections[0][0].as_deref().unwrap();
        assert!(why.contains("below its minimum of 2"), "{why}");

        let p = partition(
            &info,
            &caps(PartitionOptions {
                min_nodes_per_partition: 1,
                max_partitions: 1,
            }),
        );
        assert_eq!(p.candidates[0].nodes, vec![2, 3], "largest first");
        let why = p.rejections[0][0].as_deref().unwrap();
        assert!(why.contains("maximum of 1"), "{why}");
    }

    #[test]
    fn candidates_are_accepted_by_the_executor() {
        let info = diamond();
        let p = partition(&info, &caps(PartitionOptions::default()));
        for c in &p.candidates {
            assert!(is_valid(&info, &c.nodes));
        }
    }

    /// Has no device: compile always fails, so the executor keeps the CPU kernels. The
    /// executor still checks the partition's structure first.
    struct NoDevice;

    impl Delegate for NoDevice {
        fn name(&self) -> &str {
            "no-device"
        }
        fn kind(&self) -> ProcessorKind {
            ProcessorKind::Gpu
        }
        fn fingerprint(&self) -> String {
            "none".into()
        }
        fn supports(&self, _: &NodeSupportCtx<'_>) -> Support {
            Support::Supported
        }
        fn compile(
            &self,
            _: &switchyard_interpreter::PartitionCtx<'_>,
        ) -> Result<
            Box<dyn switchyard_interpreter::CompiledPartition>,
            switchyard_interpreter::DelegateError,
        > {
            Err(switchyard_interpreter::DelegateError::Unavailable {
                delegate: "no-device".into(),
                what: "test".into(),
            })
        }
    }

    #[test]
    fn real_model_partitions_are_accepted_by_the_executor() {
        let profiles = switchyard_config::DeviceProfiles::default();
        let rules = crate::capability::profile_rules(&profiles);
        for stem in [
            "mp_face_detection_short_range",
            "mp_pose_detection",
            "mww_okay_nabu",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models")
                .join(format!("{stem}.tflite"));
            if !path.exists() {
                eprintln!(
                    "skipping: {} missing (run scripts/setup.sh)",
                    path.display()
                );
                return;
            }
            let model = Arc::new(Model::from_path(&path).unwrap());
            let info = GraphInfo::analyse(model.clone()).unwrap();
            let parts = partition(&info, &rules);
            assert!(!parts.candidates.is_empty(), "{stem}");
            // One processor's candidates never overlap; place them all at once.
            for kind in [ProcessorKind::Gpu, ProcessorKind::Dsp, ProcessorKind::Npu] {
                let mine: Vec<&Candidate> =
                    parts.candidates.iter().filter(|c| c.kind == kind).collect();
                let sg = &model.subgraphs[0];
                let placed: Vec<PlacedPartition> = mine
                    .iter()
                    .map(|c| {
                        assert!(is_valid(&info, &c.nodes));
                        PlacedPartition {
                            partition: Partition::from_nodes(0, sg, c.nodes.clone()),
                            delegate: Arc::new(NoDevice),
                            timeout: None,
                        }
                    })
                    .collect();
                let n = placed.len();
                let mut it = switchyard_interpreter::Interpreter::with_placement(
                    model.clone(),
                    Arc::new(switchyard_delegates::CpuResolver::optimized()),
                    switchyard_interpreter::InterpreterOptions::default(),
                    placed,
                )
                .unwrap_or_else(|e| panic!("{stem} on {kind}: {e}"));
                assert_eq!(it.partition_reports().len(), n);
                if stem == "mp_face_detection_short_range" && kind == ProcessorKind::Gpu {
                    // Partitions fall back to the CPU in place: same outputs as no
                    // placement at all.
                    let mut plain = switchyard_interpreter::Interpreter::new(
                        model.clone(),
                        Arc::new(switchyard_delegates::CpuResolver::optimized()),
                        switchyard_interpreter::InterpreterOptions::default(),
                    )
                    .unwrap();
                    let x = crate::decide::validation_inputs(&info).unwrap();
                    let views: Vec<_> = x.iter().map(|t| t.view()).collect();
                    let a = it.run(&views).unwrap();
                    let b = plain.run(&views).unwrap();
                    assert_eq!(a.len(), b.len());
                    for (a, b) in a.iter().zip(&b) {
                        assert_eq!(a.data.as_slice(), b.data.as_slice());
                    }
                    assert!(it.partition_reports()[0].compile_error.is_some());
                }
            }
        }
    }
}
