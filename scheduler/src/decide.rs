//! The whole placement decision for one model with real delegates, as the daemon makes
//! it on first load: partition, time the model on the CPU as it will be served
//! (optimized kernels, the serving thread count, warm, real input shapes), validate
//! every candidate the allowlist does not know yet (or knows only for an older driver)
//! against that CPU time, feed the measured times to the cost model, plan, and hand
//! back the partitions for `Interpreter::with_placement`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::SchedulerConfig;
use switchyard_interpreter::{Delegate, Model, PlacedPartition, ProcessorKind, Tensor};

use crate::SchedError;
use crate::allowlist::{
    Allowlist, Entry, InProcess, Tolerance, Validator, Verdict, check_or_validate_with,
};
use crate::cost::{CostModel, partition_key};
use crate::graph::{CpuMeasurement, GraphInfo};
use crate::partition::{delegates_as_capabilities, partition, to_placed};
use crate::placement::{Permission, Plan, plan};

/// What [`decide`] chose, and the evidence.
pub struct Decision {
    pub info: GraphInfo,
    pub plan: Plan,
    pub placed: Vec<PlacedPartition>,
    /// Allowlist decisions per candidate (partition key, delegate, decision), including
    /// ones reloaded from disk.
    pub verdicts: Vec<(String, String, Entry)>,
    /// The model timed on the CPU as served, when every op has a CPU kernel and there
    /// was a candidate to compare with.
    pub cpu: Option<CpuMeasurement>,
}

/// Timed runs behind the CPU figures validation compares against.
pub const CPU_TIMING_RUNS: u32 = 5;

/// Deterministic, varied inputs for validation: a constant input would hide many
/// wrong kernels.
pub fn validation_inputs(info: &GraphInfo) -> Option<Vec<Tensor>> {
    let it = info.interpreter()?;
    (0..it.input_count())
        .map(|i| {
            let (dtype, shape) = it.input_info(i).ok()?;
            let n: usize = shape.iter().product();
            let mut bytes = vec![0u8; n * dtype.size()];
            let mut state = 0x2545_F491_4F6C_DD1Du64 ^ i as u64;
            for chunk in bytes.chunks_mut(dtype.size().max(1)) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match dtype {
                    switchyard_interpreter::DType::F32 => {
                        let v = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                        chunk.copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        for (k, b) in chunk.iter_mut().enumerate() {
                            *b = (state >> (8 * k)) as u8;
                        }
                    }
                }
            }
            Tensor::from_bytes(dtype, shape, &bytes).ok()
        })
        .collect()
}

/// Partitions `model` for `delegates`, validates unknown candidates in this process,
/// and plans. `threads` is the intra-op thread count the daemon serves CPU work with.
pub fn decide(
    model: Arc<Model>,
    delegates: &[Arc<dyn Delegate>],
    allowlist: &mut Allowlist,
    cost: &mut CostModel,
    cfg: &SchedulerConfig,
    threads: usize,
) -> Result<Decision, SchedError> {
    decide_with(&InProcess, model, delegates, allowlist, cost, cfg, threads)
}

/// [`decide`] with candidates validated by `validator` (the daemon's worker process).
pub fn decide_with(
    validator: &dyn Validator,
    model: Arc<Model>,
    delegates: &[Arc<dyn Delegate>],
    allowlist: &mut Allowlist,
    cost: &mut CostModel,
    cfg: &SchedulerConfig,
    threads: usize,
) -> Result<Decision, SchedError> {
    let info = GraphInfo::analyse(model.clone())?;
    let caps = delegates_as_capabilities(delegates);
    let parts = partition(&info, &caps);
    let inputs = validation_inputs(&info);
    // Only worth the runs when some candidate needs a CPU figure to compare with.
    let cpu = if parts.candidates.is_empty() {
        None
    } else {
        info.measure_cpu(CPU_TIMING_RUNS, threads)
    };
    if let Some(m) = &cpu {
        cost.observe_cpu_profile(&info.sha256, &m.per_node_s);
    }
    let timeout = Some(Duration::from_millis(cfg.partition_timeout_ms));
    let tolerance = Tolerance {
        float_relative: cfg.float_tolerance,
        half_float_relative: cfg.half_float_tolerance,
        quantized_steps: cfg.quantized_tolerance_steps,
    };
    let mut permissions: HashMap<usize, Permission> = HashMap::new();
    let mut entries: HashMap<usize, Entry> = HashMap::new();
    let mut verdicts = Vec::new();
    for (ci, c) in parts.candidates.iter().enumerate() {
        let subject = partition_key(&info.sha256, &c.nodes);
        let Some(placed) = to_placed(&info, &[c], &caps, timeout).pop() else {
            permissions.insert(ci, Permission::Denied("no delegate to run it".into()));
            continue;
        };
        let Some(inputs) = &inputs else {
            permissions.insert(
                ci,
                Permission::Denied(format!(
                    "cannot validate: no cpu reference ({})",
                    info.shape_source
                )),
            );
            continue;
        };
        let _span = tracing::info_span!("validate", delegate = %c.delegate, nodes = c.nodes.len())
            .entered();
        let cpu_s = cost.estimate(&info, &c.nodes, ProcessorKind::Cpu).seconds;
        match check_or_validate_with(
            validator,
            allowlist,
            &subject,
            model.clone(),
            placed,
            inputs,
            cfg.validation_runs,
            tolerance,
            cpu_s,
        ) {
            Ok(entry) => {
                let p = match entry.verdict {
                    Verdict::Allowed => Permission::Allowed,
                    Verdict::Blocked => Permission::Denied(format!("blocked: {}", entry.reason)),
                };
                permissions.insert(ci, p);
                entries.insert(ci, entry.clone());
                verdicts.push((subject, c.delegate.clone(), entry));
            }
            Err(e) => {
                permissions.insert(ci, Permission::Denied(format!("validation failed: {e}")));
            }
        }
    }
    prefer_faster_variant(&parts.candidates, &entries, &mut permissions);
    for (&ci, entry) in &entries {
        let (Some(c), Some(Permission::Allowed)) = (parts.candidates.get(ci), permissions.get(&ci))
        else {
            continue;
        };
        let subject = partition_key(&info.sha256, &c.nodes);
        if cost.measured(&subject, c.kind).is_none() && entry.runs > 0 {
            cost.observe(&subject, c.kind, entry.delegate_s);
        }
    }
    let candidates = &parts.candidates;
    let permission = |c: &crate::partition::Candidate| {
        candidates
            .iter()
            .position(|x| x == c)
            .and_then(|i| permissions.get(&i).cloned())
            .unwrap_or_else(|| Permission::Denied("not validated".into()))
    };
    let the_plan = plan(&info, &parts, &caps, cost, &permission);
    let placed = to_placed(&info, &the_plan.chosen(&parts), &caps, timeout);
    Ok(Decision {
        info,
        plan: the_plan,
        placed,
        verdicts,
        cpu,
    })
}

/// Two delegates of one processor kind allowed on the same nodes (the GPU in fp32 and in
/// fp16): the allowlist's measurements pick the faster, and the other is denied with
/// the comparison as its reason. The cost model keeps one figure per (partition, kind),
/// so the choice is made here, per model, where both are measured.
fn prefer_faster_variant(
    candidates: &[crate::partition::Candidate],
    entries: &HashMap<usize, Entry>,
    permissions: &mut HashMap<usize, Permission>,
) {
    let mut best: HashMap<(ProcessorKind, &[usize]), usize> = HashMap::new();
    let mut denied = Vec::new();
    for (ci, c) in candidates.iter().enumerate() {
        if permissions.get(&ci) != Some(&Permission::Allowed) {
            continue;
        }
        let Some(entry) = entries.get(&ci) else {
            continue;
        };
        let key = (c.kind, c.nodes.as_slice());
        match best.get(&key).copied() {
            None => {
                best.insert(key, ci);
            }
            Some(other) => {
                let other_s = entries.get(&other).map_or(f64::INFINITY, |e| e.delegate_s);
                let (winner, loser) = if entry.delegate_s < other_s {
                    (ci, other)
                } else {
                    (other, ci)
                };
                best.insert(key, winner);
                denied.push((winner, loser));
            }
        }
    }
    for (winner, loser) in denied {
        let (Some(w), Some(we), Some(le)) = (
            candidates.get(winner),
            entries.get(&winner),
            entries.get(&loser),
        ) else {
            continue;
        };
        permissions.insert(
            loser,
            Permission::Denied(format!(
                "{} is faster on these nodes ({:.3} ms vs {:.3} ms, both accurate)",
                w.delegate,
                we.delegate_s * 1e3,
                le.delegate_s * 1e3
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::Learning;
    use crate::testing::{Fault, FaultDelegate, chain};
    use switchyard_config::DeviceProfiles;
    use switchyard_delegates::CpuResolver;
    use switchyard_interpreter::{Interpreter, InterpreterOptions, TensorView};

    fn run(model: Arc<Model>, placed: Vec<PlacedPartition>, x: &Tensor) -> Vec<f32> {
        let mut it = Interpreter::with_placement(
            model,
            Arc::new(CpuResolver::reference()),
            InterpreterOptions::default(),
            placed,
        )
        .unwrap();
        let views: Vec<TensorView<'_>> = vec![x.view()];
        let out = it.run(&views).unwrap();
        out[0].view().f32s().unwrap().to_vec()
    }

    #[test]
    fn a_validated_delegate_gets_the_partition_and_a_faulty_one_does_not() {
        let model = chain();
        let cfg = SchedulerConfig::default();
        let x = validation_inputs(&GraphInfo::analyse(model.clone()).unwrap())
            .unwrap()
            .remove(0);
        let cpu = run(model.clone(), Vec::new(), &x);

        let good: Arc<dyn Delegate> = FaultDelegate::new(Fault::None, "ok-1");
        let mut list = Allowlist::in_memory();
        let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        let d = decide(model.clone(), &[good], &mut list, &mut cost, &cfg, 1).unwrap();
        assert_eq!(d.placed.len(), 1, "{:?}", d.plan.partitions);
        assert_eq!(d.plan.partitions[0].processor, ProcessorKind::Npu);
        assert!(
            d.plan.partitions[0].measured_s.is_some(),
            "measured replaces the prior"
        );
        assert_eq!(run(model.clone(), d.placed, &x), cpu);

        let bad: Arc<dyn Delegate> = FaultDelegate::new(Fault::WrongResult, "bad-1");
        let mut list = Allowlist::in_memory();
        let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        let d = decide(model.clone(), &[bad], &mut list, &mut cost, &cfg, 1).unwrap();
        assert!(d.placed.is_empty());
        assert_eq!(d.verdicts[0].2.verdict, Verdict::Blocked);
        let why = &d.plan.nodes[0].why;
        assert!(
            why.contains("not allowlisted: blocked: wrong results"),
            "{why}"
        );
    }

    #[test]
    fn the_faster_of_two_allowed_variants_keeps_the_nodes() {
        let cand = |processor: usize, delegate: &str| crate::partition::Candidate {
            processor,
            kind: ProcessorKind::Gpu,
            delegate: delegate.into(),
            nodes: vec![1, 2, 3],
        };
        let entry = |delegate_s: f64| Entry {
            fingerprint: "f".into(),
            verdict: Verdict::Allowed,
            reason: String::new(),
            max_error: 0.0,
            tolerance: 1e-3,
            delegate_s,
            cpu_s: 1.0,
            runs: 1,
            failures: 0,
            timeouts: 0,
        };
        let candidates = vec![cand(0, "gpu"), cand(1, "gpu-fp16")];
        let entries = HashMap::from([(0, entry(0.004)), (1, entry(0.002))]);
        let mut permissions = HashMap::from([(0, Permission::Allowed), (1, Permission::Allowed)]);
        prefer_faster_variant(&candidates, &entries, &mut permissions);
        assert_eq!(permissions[&1], Permission::Allowed);
        match &permissions[&0] {
            Permission::Denied(why) => assert!(why.contains("gpu-fp16 is faster"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A blocked variant leaves the other alone.
        let mut permissions = HashMap::from([
            (0, Permission::Allowed),
            (1, Permission::Denied("blocked".into())),
        ]);
        prefer_faster_variant(&candidates, &entries, &mut permissions);
        assert_eq!(permissions[&0], Permission::Allowed);
    }

    /// The emulated DSP's fault profiles (config `[devices.dsp.fault]`) on the real
    /// int8 wake-word model: wrong results and hangs end up blocked.
    #[test]
    fn faulty_emulated_dsp_profiles_end_up_blocked() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mww_okay_nabu.tflite");
        if !path.exists() {
            eprintln!(
                "skipping: {} missing (run scripts/setup.sh)",
                path.display()
            );
            return;
        }
        let model = Arc::new(Model::from_path(&path).unwrap());
        let cfg = SchedulerConfig {
            partition_timeout_ms: 5,
            validation_runs: 1,
            ..SchedulerConfig::default()
        };
        for (fault, expect) in [("wrong", "wrong results"), ("hang", "timed out")] {
            let mut profile = DeviceProfiles::default().dsp;
            match fault {
                "wrong" => profile.fault.wrong_result_rate = 1.0,
                _ => profile.fault.hang_rate = 1.0,
            }
            let dsp: Arc<dyn Delegate> =
                Arc::new(switchyard_delegates::EmulatedDelegate::dsp(profile));
            let mut list = Allowlist::in_memory();
            let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
            let d = decide(model.clone(), &[dsp], &mut list, &mut cost, &cfg, 1).unwrap();
            assert!(!d.verdicts.is_empty());
            assert!(d.placed.is_empty(), "{fault}");
            for (_, _, e) in &d.verdicts {
                assert_eq!(e.verdict, Verdict::Blocked, "{fault}: {}", e.reason);
            }
            assert!(
                d.verdicts.iter().any(|(_, _, e)| e.reason.contains(expect)),
                "{fault}: {:?}",
                d.verdicts.iter().map(|v| &v.2.reason).collect::<Vec<_>>()
            );
        }
    }
}
