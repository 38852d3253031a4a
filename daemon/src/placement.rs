//! Placement in the daemon: on the first load of a model the scheduler decides which
//! partitions run on which delegate, validating unknown (model, delegate, driver)
//! combinations through the persisted allowlist against the CPU as it serves; failures
//! seen while serving requests are fed back so a device that keeps failing is blocked
//! for the next load. How requests are then offered to the arbiter (the serving plan)
//! is the scheduler's decision too; this file only wires the daemon's state to it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use switchyard_config::Config;
use switchyard_interpreter::{Delegate, Model, PartitionReport, PlacedPartition, ProcessorKind};
use switchyard_scheduler::allowlist::{
    Allowlist, Entry, InProcess, Lookup, Validator, Verdict, key,
};
use switchyard_scheduler::cost::{CostModel, Learning, partition_key};
use switchyard_scheduler::decide::decide_with;
use switchyard_scheduler::serving::ServingPlan;
use tracing::{info, warn};

use crate::error::DaemonError;
use crate::tenant::lock;

/// Run-time delegate failures (errors or timeouts, each already re-run on the CPU)
/// after which an allowed placement is blocked.
pub const BLOCK_AFTER_FAILURES: u64 = 3;

/// What was decided for one model, kept for `switchyard placement --socket`.
pub struct ModelPlacement {
    pub placed: Vec<PlacedPartition>,
    /// The plan as JSON (the same shape `switchyard placement --json` prints locally).
    pub plan_json: String,
    /// Allowlist subject per placed partition, indexed like `placed`.
    subjects: Vec<String>,
    /// How requests are offered to the arbiter (processors, learned times).
    pub serving: Arc<ServingPlan>,
}

/// The scheduler's state shared by all models of one daemon.
pub struct Placer {
    delegates: Vec<Arc<dyn Delegate>>,
    /// Runs validation of unknown candidates: the worker process in the daemon.
    validator: Arc<dyn Validator>,
    cfg: switchyard_config::SchedulerConfig,
    allowlist: Mutex<Allowlist>,
    /// Shared with the arbiter's gate, which records every served run in it.
    pub cost: Arc<Mutex<CostModel>>,
    /// Intra-op threads a request may use on the CPU (`daemon.kernel_threads`): the CPU
    /// is timed with them when delegates are judged.
    threads: usize,
    pub allowlist_path: Option<PathBuf>,
}

impl Placer {
    /// Opens the allowlist (creating the state directory) and keeps the delegates;
    /// `validator` runs validations (the daemon passes its worker pool).
    pub fn new(
        cfg: &Config,
        delegates: Vec<Arc<dyn Delegate>>,
        validator: Arc<dyn Validator>,
    ) -> Result<Placer, DaemonError> {
        let path = if !cfg.scheduler.allowlist_path.is_empty() {
            Some(PathBuf::from(&cfg.scheduler.allowlist_path))
        } else {
            let dir = cfg.daemon.effective_state_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| DaemonError::io(format!("creating {}", dir.display()), e))?;
            Some(dir.join("allowlist.json"))
        };
        let allowlist = match &path {
            Some(p) => Allowlist::open(p)?,
            None => Allowlist::in_memory(),
        };
        info!(path = ?path, decisions = allowlist.entries().count(), "allowlist loaded");
        let mut placer = Placer::in_memory(cfg, delegates);
        placer.validator = validator;
        placer.allowlist = Mutex::new(allowlist);
        placer.allowlist_path = path;
        Ok(placer)
    }

    /// A placer whose decisions live in memory only (unit tests).
    pub fn in_memory(cfg: &Config, delegates: Vec<Arc<dyn Delegate>>) -> Placer {
        Placer {
            delegates,
            validator: Arc::new(InProcess),
            cost: Arc::new(Mutex::new(CostModel::new(
                cfg.devices.clone(),
                Learning::from_config(&cfg.scheduler),
            ))),
            cfg: cfg.scheduler.clone(),
            allowlist: Mutex::new(Allowlist::in_memory()),
            threads: cfg.daemon.kernel_threads.max(1),
            allowlist_path: None,
        }
    }

    /// Decides where `model` (whose sha256 is `sha256_hex`) runs. Blocking (validation
    /// runs the model): call from the blocking pool. With no delegates the model runs
    /// on the CPU only, and nothing is timed before its first request.
    ///
    /// The shared allowlist and cost model are locked only to copy what this model needs
    /// and to merge back what was learned: validation runs on the copies, so placing one
    /// model never waits for another model's validation.
    pub fn place(
        &self,
        model: Arc<Model>,
        sha256_hex: &str,
    ) -> Result<ModelPlacement, DaemonError> {
        if self.delegates.is_empty() {
            crate::debug_hooks::hold_prepare(sha256_hex);
            return Ok(ModelPlacement {
                placed: Vec::new(),
                plan_json: "null".into(),
                subjects: Vec::new(),
                // A guess the first served runs replace; admission never refuses on it.
                serving: Arc::new(ServingPlan::cpu_only(sha256_hex, 1e-3, self.threads)),
            });
        }
        let mut list = Allowlist::in_memory();
        for (k, e) in lock(&self.allowlist).entries() {
            if k.starts_with(sha256_hex) {
                list.record(k, e.clone())?;
            }
        }
        let mut cost = lock(&self.cost).clone();
        // Where validation runs: no lock of the placer is held from here to the merge.
        crate::debug_hooks::hold_prepare(sha256_hex);
        // Validation runs in the worker process; a panic in partitioning or planning
        // here is INTERNAL with a generic message, its text in the log.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decide_with(
                self.validator.as_ref(),
                model,
                &self.delegates,
                &mut list,
                &mut cost,
                &self.cfg,
                self.threads,
            )
        }));
        let d = match decided {
            Ok(d) => d?,
            Err(payload) => {
                tracing::error!(panic = %crate::panics::message(payload.as_ref()), "placement panicked");
                return Err(DaemonError::Internal(
                    "placing the model failed unexpectedly; the daemon log has the details".into(),
                ));
            }
        };
        self.merge(&d.verdicts);
        let subjects = d
            .placed
            .iter()
            .map(|p| partition_key(&d.info.sha256, &p.partition.nodes))
            .collect();
        let plan_json = serde_json::to_string(&d.plan)
            .map_err(|e| DaemonError::Internal(format!("plan as json: {e}")))?;
        for p in &d.plan.partitions {
            info!(processor = %p.processor.name(), delegate = %p.delegate, nodes = p.nodes.len(), "placed");
        }
        let serving = Arc::new(ServingPlan::from_decision(&d, self.threads));
        Ok(ModelPlacement {
            placed: d.placed,
            plan_json,
            subjects,
            serving,
        })
    }

    /// Records what one placement learned in the shared allowlist and cost model. A
    /// decision made meanwhile by another load (for the same subject and driver) wins.
    fn merge(&self, verdicts: &[(String, String, Entry)]) {
        {
            let mut list = lock(&self.allowlist);
            for (subject, delegate, entry) in verdicts {
                let k = key(subject, delegate);
                if matches!(
                    list.lookup(&k, &entry.fingerprint),
                    Lookup::Unknown | Lookup::Stale(_)
                ) && let Err(e) = list.record(&k, entry.clone())
                {
                    warn!(error = %e, "cannot persist the allowlist");
                }
            }
        }
        let mut cost = lock(&self.cost);
        for (subject, delegate, entry) in verdicts {
            let Some(d) = self.delegates.iter().find(|d| d.name() == delegate) else {
                continue;
            };
            if cost.measured(subject, d.kind()).is_none() && entry.runs > 0 {
                cost.observe(subject, d.kind(), entry.delegate_s);
            }
        }
    }

    /// The processors requests may queue on: the CPU and every delegate's kind.
    pub fn processors(&self) -> Vec<ProcessorKind> {
        let mut out = vec![ProcessorKind::Cpu];
        for d in &self.delegates {
            if !out.contains(&d.kind()) {
                out.push(d.kind());
            }
        }
        out
    }

    /// Every learned decision, keyed `subject@delegate`.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        lock(&self.allowlist)
            .entries()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Feeds one request's delegate failures (`after - before` per partition) back into
    /// the allowlist and the cost model.
    pub fn observe(
        &self,
        placement: &ModelPlacement,
        before: &[PartitionReport],
        after: &[PartitionReport],
    ) {
        for (i, now) in after.iter().enumerate() {
            let (Some(placed), Some(subject)) =
                (placement.placed.get(i), placement.subjects.get(i))
            else {
                continue;
            };
            let prev = before.get(i).cloned().unwrap_or_default();
            let failures = now.failures.saturating_sub(prev.failures);
            let runs = now.runs.saturating_sub(prev.runs);
            if runs > 0 && failures == 0 {
                let wall = now.delegate_wall.saturating_sub(prev.delegate_wall);
                let device = now.device_time.saturating_sub(prev.device_time);
                let t = if device > wall { device } else { wall };
                lock(&self.cost).observe(
                    subject,
                    placed.delegate.kind(),
                    t.as_secs_f64() / runs as f64,
                );
            }
            if failures == 0 {
                continue;
            }
            let k = key(subject, placed.delegate.name());
            let fp = placed.delegate.fingerprint();
            let mut list = lock(&self.allowlist);
            let mut entry = match list.lookup(&k, &fp) {
                Lookup::Allowed(e) | Lookup::Blocked(e) | Lookup::Stale(e) => e.clone(),
                Lookup::Unknown => continue,
            };
            let error = now.last_error.clone().unwrap_or_default();
            entry.failures += failures;
            if error.contains("timed out") {
                entry.timeouts += failures;
            }
            if entry.verdict == Verdict::Allowed && entry.failures >= BLOCK_AFTER_FAILURES {
                entry.verdict = Verdict::Blocked;
                entry.reason = format!(
                    "{} delegate failures while serving requests (last: {error})",
                    entry.failures
                );
                warn!(key = %k, reason = %entry.reason, "placement blocked at run time");
            }
            if let Err(e) = list.record(&k, entry) {
                warn!(error = %e, "cannot persist the allowlist");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_delegates::EmulatedDelegate;
    use switchyard_interpreter::Partition;
    use switchyard_scheduler::allowlist::Lookup;

    #[test]
    fn an_allowed_device_that_keeps_failing_at_run_time_is_blocked() {
        let cfg = Config::default();
        let npu: Arc<dyn Delegate> = Arc::new(EmulatedDelegate::npu(cfg.devices.npu.clone()));
        let placer = Placer::in_memory(&cfg, vec![npu.clone()]);
        let subject = "abc:0,1".to_string();
        let k = key(&subject, npu.name());
        let allowed = Entry {
            fingerprint: npu.fingerprint(),
            verdict: Verdict::Allowed,
            reason: "accurate and faster".into(),
            max_error: 0.0,
            tolerance: 1.0,
            delegate_s: 1e-3,
            cpu_s: 2e-3,
            runs: 3,
            failures: 0,
            timeouts: 0,
        };
        lock(&placer.allowlist).record(&k, allowed).unwrap();
        let placement = ModelPlacement {
            placed: vec![PlacedPartition {
                partition: Partition {
                    subgraph: 0,
                    nodes: vec![0, 1],
                    inputs: vec![],
                    outputs: vec![],
                },
                delegate: npu.clone(),
                timeout: None,
            }],
            plan_json: "null".into(),
            subjects: vec![subject],
            serving: Arc::new(ServingPlan::cpu_only("abc", 1e-3, 1)),
        };
        let report = |failures: u64| PartitionReport {
            delegate: npu.name().to_string(),
            nodes: vec![0, 1],
            runs: 5,
            failures,
            last_error: (failures > 0).then(|| "npu (emulated): timed out after 200ms".into()),
            ..Default::default()
        };
        // Two failures: still allowed, counted.
        placer.observe(&placement, &[report(0)], &[report(2)]);
        let list = lock(&placer.allowlist);
        let Lookup::Allowed(e) = list.lookup(&k, &npu.fingerprint()) else {
            panic!("blocked too early");
        };
        assert_eq!((e.failures, e.timeouts), (2, 2));
        drop(list);
        // A third: blocked, with the run-time error as the reason.
        placer.observe(&placement, &[report(2)], &[report(3)]);
        let list = lock(&placer.allowlist);
        let Lookup::Blocked(e) = list.lookup(&k, &npu.fingerprint()) else {
            panic!("still allowed after {BLOCK_AFTER_FAILURES} failures");
        };
        assert!(e.reason.contains("timed out"), "{}", e.reason);
    }

    /// A delegate whose compile panics: validation runs it while placement holds the
    /// allowlist and cost-model locks.
    struct Panicking;

    impl Delegate for Panicking {
        fn name(&self) -> &str {
            "panicking"
        }
        fn kind(&self) -> ProcessorKind {
            ProcessorKind::Npu
        }
        fn fingerprint(&self) -> String {
            "panicking 1".into()
        }
        fn supports(
            &self,
            _: &switchyard_interpreter::NodeSupportCtx<'_>,
        ) -> switchyard_interpreter::Support {
            switchyard_interpreter::Support::Supported
        }
        fn compile(
            &self,
            _: &switchyard_interpreter::PartitionCtx<'_>,
        ) -> Result<
            Box<dyn switchyard_interpreter::CompiledPartition>,
            switchyard_interpreter::DelegateError,
        > {
            panic!("driver bug in compile");
        }
    }

    /// Issue 10, defect 13: a panic during validation came back as the panic text and
    /// poisoned the placement locks.
    #[test]
    fn a_panic_while_placing_is_internal_and_poisons_nothing() {
        let cfg = Config::default();
        let placer = Placer::in_memory(&cfg, vec![Arc::new(Panicking)]);
        let model = Arc::new(
            Model::from_bytes(&switchyard_interpreter::example_models::add_constant(1.0)).unwrap(),
        );
        for _ in 0..2 {
            let e = placer
                .place(model.clone(), "0000")
                .err()
                .expect("placing must fail");
            let s = tonic::Status::from(e);
            assert_eq!(s.code(), tonic::Code::Internal);
            assert!(!s.message().contains("driver bug"), "{}", s.message());
            assert!(!placer.allowlist.is_poisoned());
            assert!(!placer.cost.is_poisoned());
        }
    }
}
