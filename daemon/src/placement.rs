//! Placement in the daemon: on the first load of a model the scheduler decides which
//! partitions run on which delegate, validating unknown (model, delegate, driver)
//! combinations through the persisted allowlist against the CPU as it serves; failures
//! seen while serving requests are fed back so a device that keeps failing is blocked
//! for the next load. How requests are then offered to the arbiter (the serving plan)
//! is the scheduler's decision too; this file only wires the daemon's state to it.
//!
//! Validation runs the model many times on every candidate (seconds for a GPU on a
//! software rasterizer), while LiteRT loads the same model in tens of milliseconds. So by
//! default (`scheduler.validate_in_background`) a first load answers as soon as the
//! model's CPU plan is ready, and the placement is decided on a thread of its own; when
//! it allows an accelerator the model's placement is switched for later requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

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
use crate::registry::PreparedModel;
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
    /// What was placed where and what the allowlist said, in one line.
    pub summary: String,
}

/// Where validating one model's accelerators stands (`switchyard placement` shows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    /// No delegate is configured: the model runs on the CPU and nothing is validated.
    None,
    /// Validation runs in the background; requests are served on the CPU meanwhile.
    Running,
    /// The placement is final; why it is what it is.
    Done(String),
    /// Validation could not finish; the CPU plan keeps serving.
    Failed(String),
}

impl Validation {
    /// The wire form: state and reason.
    pub fn wire(&self) -> (&'static str, String) {
        match self {
            Validation::None => ("none", "no delegate is configured".into()),
            Validation::Running => (
                "validating",
                "validating accelerators in the background; requests run on the cpu meanwhile"
                    .into(),
            ),
            Validation::Done(r) => ("done", r.clone()),
            Validation::Failed(r) => ("failed", r.clone()),
        }
    }
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
    /// One lock per model (by sha256) being validated in the background, so a model
    /// unloaded and loaded again while its validation runs is not validated twice at
    /// once (the second one finds the first's verdicts in the allowlist).
    validating: Mutex<HashMap<String, Arc<Mutex<()>>>>,
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
            validating: Mutex::new(HashMap::new()),
        }
    }

    /// Whether first loads answer on the CPU plan and validate in the background.
    pub fn validates_in_background(&self) -> bool {
        self.cfg.validate_in_background && !self.delegates.is_empty()
    }

    /// The placement a model serves with until its validation ends: everything on the
    /// CPU. Its time is learned from the first served runs (admission never refuses on
    /// the guess).
    pub fn cpu_placement(&self, sha256_hex: &str) -> ModelPlacement {
        crate::debug_hooks::hold_prepare(sha256_hex);
        ModelPlacement {
            placed: Vec::new(),
            plan_json: "null".into(),
            subjects: Vec::new(),
            serving: Arc::new(ServingPlan::cpu_only(sha256_hex, 1e-3, self.threads)),
            summary: "every node runs on the cpu until validation ends".into(),
        }
    }

    /// What a finished placement says about validation.
    pub fn finished(&self, p: &ModelPlacement) -> Validation {
        if self.delegates.is_empty() {
            Validation::None
        } else {
            Validation::Done(p.summary.clone())
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
                summary: "no delegate is configured: every node runs on the cpu".into(),
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
        let summary = summarize(&d.placed, &d.verdicts);
        Ok(ModelPlacement {
            placed: d.placed,
            plan_json,
            subjects,
            serving,
            summary,
        })
    }

    /// The lock that keeps one validation of `sha256_hex` running at a time.
    fn validation_lock(&self, sha256_hex: &str) -> Arc<Mutex<()>> {
        lock(&self.validating)
            .entry(sha256_hex.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets the lock of `sha256_hex` when nobody else waits on it.
    fn release_validation_lock(&self, sha256_hex: &str, held: Arc<Mutex<()>>) {
        let mut map = lock(&self.validating);
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&held) <= 2 {
            map.remove(sha256_hex);
        }
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

/// One line on a decision: the partitions placed per delegate and the allowlist's
/// verdicts per delegate (with the first reason of each kind).
fn summarize(placed: &[PlacedPartition], verdicts: &[(String, String, Entry)]) -> String {
    let mut per: Vec<(String, usize)> = Vec::new();
    for p in placed {
        let name = p.delegate.name().to_owned();
        match per.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => per.push((name, 1)),
        }
    }
    let mut out = if per.is_empty() {
        "every node runs on the cpu".to_owned()
    } else {
        let parts: Vec<String> = per
            .iter()
            .map(|(n, k)| format!("{k} partition(s) on {n}"))
            .collect();
        parts.join(", ")
    };
    let mut seen: Vec<(String, &'static str)> = Vec::new();
    for (_, delegate, e) in verdicts {
        let v = match e.verdict {
            Verdict::Allowed => "allowed",
            Verdict::Blocked => "blocked",
        };
        if seen.iter().any(|(d, s)| d == delegate && *s == v) {
            continue;
        }
        seen.push((delegate.clone(), v));
        out.push_str(&format!("; {delegate}: {v} ({})", e.reason));
    }
    out
}

/// Starts the background validation of a model prepared for it, once (the first
/// loader calls it after its load has answered, so the validation does not compete
/// with that answer for the cores). Returns whether this call started it.
pub fn start_validation(placer: &Arc<Placer>, prepared: &Arc<PreparedModel>) -> bool {
    if !prepared.take_validation_start() {
        return false;
    }
    let model = prepared.plan().model().clone();
    validate_in_background(placer, prepared, model);
    true
}

/// Validates `model`'s accelerators on a thread of its own and switches its placement
/// when that allows one. One validation per model runs at a time; one whose model was
/// unloaded before it starts is skipped, and its outcome is ignored (the allowlist keeps
/// the verdicts) when the model is gone by the time it ends. A failure leaves the CPU
/// plan serving, with the reason in `switchyard placement`.
fn validate_in_background(placer: &Arc<Placer>, prepared: &Arc<PreparedModel>, model: Arc<Model>) {
    let weak: Weak<PreparedModel> = Arc::downgrade(prepared);
    let placer = placer.clone();
    let sha = prepared.sha256_hex.clone();
    let spawned = std::thread::Builder::new()
        .name("validate".into())
        .spawn(move || {
            let span = tracing::info_span!("validate_in_background", model = &sha[..16]);
            let _entered = span.enter();
            let held = placer.validation_lock(&sha);
            {
                let _one_at_a_time = lock(&held);
                if weak.strong_count() == 0 {
                    info!("model unloaded before its validation started: skipped");
                } else {
                    let started = std::time::Instant::now();
                    let result = placer.place(model, &sha);
                    match (weak.upgrade(), result) {
                        (None, _) => {
                            info!("model unloaded while it was validated: the outcome is ignored")
                        }
                        (Some(m), Ok(p)) => {
                            let v = placer.finished(&p);
                            match m.switch(p) {
                                Ok(()) => {
                                    info!(ms = started.elapsed().as_millis() as u64, outcome = ?v, "validated");
                                    m.set_validation(v);
                                }
                                Err(e) => {
                                    warn!(error = %e, "preparing the validated placement failed: the cpu plan keeps serving");
                                    m.set_validation(Validation::Failed(format!(
                                        "preparing the validated placement failed: {e}"
                                    )));
                                }
                            }
                        }
                        (Some(m), Err(e)) => {
                            warn!(error = %e, "validation failed: the cpu plan keeps serving");
                            m.set_validation(Validation::Failed(format!(
                                "validation failed: {e}; the cpu plan keeps serving"
                            )));
                        }
                    }
                }
            }
            placer.release_validation_lock(&sha, held);
            // The placement's measurement and validation temporaries were freed on this
            // thread's own malloc arena, which nothing else trims: ~10 MiB of freed
            // pages stayed resident for pose detection.
            crate::registry::release_free_heap();
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the validation thread: the cpu plan keeps serving");
        prepared.set_validation(Validation::Failed(format!(
            "cannot start the validation thread: {e}"
        )));
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
            summary: String::new(),
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

    /// An exact, instant NPU for ADD with a constant second input whose compile waits
    /// while `gate` is closed: validation can be held in flight.
    struct GatedAdder {
        gate: Arc<std::sync::atomic::AtomicBool>,
    }

    struct CompiledAdd(Vec<f32>);

    impl switchyard_interpreter::CompiledPartition for CompiledAdd {
        fn execute(
            &self,
            inputs: &[switchyard_interpreter::TensorView<'_>],
            outputs: &mut [switchyard_interpreter::TensorViewMut<'_>],
            _: Option<std::time::Instant>,
        ) -> Result<switchyard_interpreter::ExecReport, switchyard_interpreter::DelegateError>
        {
            let fail = |e: String| switchyard_interpreter::DelegateError::Execute {
                delegate: "adder".into(),
                what: e,
            };
            let x = inputs[0].f32s().map_err(|e| fail(e.to_string()))?;
            let y = outputs[0].f32s_mut().map_err(|e| fail(e.to_string()))?;
            for ((y, x), c) in y.iter_mut().zip(x).zip(&self.0) {
                *y = x + c;
            }
            Ok(switchyard_interpreter::ExecReport {
                device_time: Some(std::time::Duration::from_nanos(1)),
            })
        }
    }

    impl Delegate for GatedAdder {
        fn name(&self) -> &str {
            "adder"
        }
        fn kind(&self) -> ProcessorKind {
            ProcessorKind::Npu
        }
        fn fingerprint(&self) -> String {
            "adder 1".into()
        }
        fn supports(
            &self,
            ctx: &switchyard_interpreter::NodeSupportCtx<'_>,
        ) -> switchyard_interpreter::Support {
            if ctx.node.op
                == switchyard_interpreter::OpKind::Builtin(switchyard_interpreter::BuiltinOp::Add)
            {
                switchyard_interpreter::Support::Supported
            } else {
                switchyard_interpreter::Support::Unsupported("only ADD".into())
            }
        }
        fn compile(
            &self,
            ctx: &switchyard_interpreter::PartitionCtx<'_>,
        ) -> Result<
            Box<dyn switchyard_interpreter::CompiledPartition>,
            switchyard_interpreter::DelegateError,
        > {
            while !self.gate.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let n = ctx.partition.nodes[0];
            let c = ctx.subgraph.nodes[n].inputs[1]
                .and_then(|t| (ctx.constant)(t))
                .ok_or_else(|| switchyard_interpreter::DelegateError::Compile {
                    delegate: "adder".into(),
                    what: "the second input must be constant".into(),
                })?;
            let c = c
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(Box::new(CompiledAdd(c)))
        }
    }

    fn wait_validated(m: &PreparedModel) -> Validation {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while m.validation() == Validation::Running {
            assert!(
                std::time::Instant::now() < deadline,
                "validation never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        m.validation()
    }

    fn run(
        m: &PreparedModel,
        placed: &crate::registry::Placed,
        form: crate::registry::Form,
    ) -> Vec<f32> {
        let pool = switchyard_interpreter::MemoryPool::new(1 << 20);
        let mut lent = m.lend(placed, &pool, form).unwrap();
        let x =
            switchyard_interpreter::Tensor::from_f32(vec![1, 4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        lent.session
            .run(&[x.view()], &mut switchyard_interpreter::Budget::nodes(100))
            .unwrap();
        let out = lent.session.output(0).unwrap().f32s().unwrap().to_vec();
        m.give_back(lent, true);
        out
    }

    /// A first load answers on a CPU plan while validation is held; once validation
    /// allows the accelerator the placement switches for later requests, while a request
    /// that started on the CPU plan keeps it, and the CPU plan becomes the CPU-only form.
    #[test]
    fn a_first_load_serves_on_the_cpu_and_switches_when_validation_allows() {
        use crate::registry::{MAIN_FORM, ModelRegistry};
        let mut cfg = Config::default();
        cfg.scheduler.validation_runs = 2;
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let npu: Arc<dyn Delegate> = Arc::new(GatedAdder { gate: gate.clone() });
        let placer = Arc::new(Placer::in_memory(&cfg, vec![npu]));
        assert!(placer.validates_in_background());
        let reg = ModelRegistry::new(1, 2, placer.clone());
        let bytes = switchyard_interpreter::example_models::add_constant(0.5);
        let (m, _) = reg.load(&bytes).unwrap();
        assert_eq!(m.validation(), Validation::Running);
        assert!(start_validation(&placer, &m));
        assert!(!start_validation(&placer, &m), "started once");
        let first = m.placed();
        assert!(
            first.placement.placed.is_empty(),
            "the first plan is all cpu"
        );
        assert_eq!(run(&m, &first, MAIN_FORM), vec![1.5, 2.5, 3.5, 4.5]);
        gate.store(true, std::sync::atomic::Ordering::Release);
        let v = wait_validated(&m);
        let Validation::Done(why) = v else {
            panic!("{v:?}");
        };
        assert!(why.contains("on adder") && why.contains("allowed"), "{why}");
        let now = m.placed();
        assert_eq!(now.placement.placed.len(), 1, "switched to the accelerator");
        assert!(!Arc::ptr_eq(&now.plan, &first.plan));
        // The request that arrived before the switch still runs on the CPU plan.
        assert!(first.placement.placed.is_empty());
        assert_eq!(run(&m, &first, MAIN_FORM), vec![1.5, 2.5, 3.5, 4.5]);
        assert_eq!(run(&m, &now, MAIN_FORM), vec![1.5, 2.5, 3.5, 4.5]);
        // The CPU plan made at load is the new placement's CPU-only form.
        let cpu = m
            .plan_for(&now, (switchyard_scheduler::serving::Variant::CpuOnly, 1))
            .unwrap();
        assert!(Arc::ptr_eq(&cpu, &first.plan));
        assert!(
            lock(&placer.validating).is_empty(),
            "the validation lock is released"
        );
    }

    /// A model unloaded while its validation is held: the outcome is ignored, the
    /// allowlist keeps the verdict, and a new load of the same bytes validates after
    /// the first (one at a time) and finds that verdict.
    #[test]
    fn a_validation_outlived_by_its_model_is_ignored_and_its_verdict_kept() {
        use crate::registry::ModelRegistry;
        let mut cfg = Config::default();
        cfg.scheduler.validation_runs = 2;
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let npu: Arc<dyn Delegate> = Arc::new(GatedAdder { gate: gate.clone() });
        let placer = Arc::new(Placer::in_memory(&cfg, vec![npu]));
        let reg = ModelRegistry::new(1, 2, placer.clone());
        let bytes = switchyard_interpreter::example_models::add_constant(0.25);
        let (m, _) = reg.load(&bytes).unwrap();
        assert!(start_validation(&placer, &m));
        drop(m);
        assert_eq!(reg.live(), 0);
        let (again, reused) = reg.load(&bytes).unwrap();
        assert!(!reused);
        assert_eq!(again.validation(), Validation::Running);
        assert!(start_validation(&placer, &again));
        gate.store(true, std::sync::atomic::Ordering::Release);
        let v = wait_validated(&again);
        assert!(matches!(v, Validation::Done(_)), "{v:?}");
        assert_eq!(again.placed().placement.placed.len(), 1);
        assert_eq!(
            placer.entries().len(),
            1,
            "validated once: {:?}",
            placer.entries()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !lock(&placer.validating).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a validation lock stays"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
