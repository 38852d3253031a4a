//! The gRPC service: identifies the caller, checks every field of the request, and runs
//! models on the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use switchyard_config::{Config, DaemonConfig};
use switchyard_scheduler::arbiter::runtime::RunsOn;

use crate::arbitration::{Assigned, Gate, Work, class_from_wire};
use crate::placement::Placer;
use crate::processors::{Processors, build_processors};
use crate::worker::{WorkerPool, WorkerValidator};
use switchyard_proto::v1::{self, switchyard_server::Switchyard, tensor::Data};
use tokio_stream::StreamExt;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use crate::error::DaemonError;
use crate::metrics::{Metrics, Viewer, refusal_reason};
use crate::registry::{
    ModelRegistry, Placed, PreparedModel, TensorSpec, dtype_from_wire, dtype_to_wire,
};
use crate::sessions::{Opener, SessionEntry};
use crate::shm::{Region, Regions, check_range};
use crate::tenant::{Caller, Handle, TenantId, TenantSnapshot, Tenants};
use switchyard_interpreter::{Budget, DType, MemoryPool, ProcessorKind, Session};

/// Longest tensor rank accepted from a client.
const MAX_RANK: usize = 16;

/// Shared daemon state: one per running daemon.
pub struct State {
    pub config: DaemonConfig,
    /// The arbiter every run request queues in.
    pub gate: Gate<RunJob>,
    /// The whole configuration (devices, scheduler) the daemon started with.
    pub full: Config,
    pub started: Instant,
    pub registry: ModelRegistry,
    pub tenants: Tenants,
    pub regions: Arc<Regions>,
    /// The delegates, with the GPU handles its shutdown needs.
    pub processors: Processors,
    /// Request counters and histograms (metrics.rs).
    pub metrics: Metrics,
    next_request: AtomicU64,
    /// Load and run handlers currently executing; shutdown drains until this is zero.
    active: Arc<AtomicUsize>,
    /// Worker processes: validation and vendor plugins run there (crate::worker).
    pub workers: Arc<WorkerPool>,
    /// Shared-memory run channels, reserved and live (crate::fastpath).
    pub channels: Arc<crate::fastpath::Channels>,
}

/// Counts one executing handler for as long as it lives.
pub struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl State {
    /// Builds the delegates and opens the allowlist (blocking: plugins load, files are
    /// read).
    pub fn new(full: Config) -> Result<State, DaemonError> {
        let workers = WorkerPool::new(&full);
        let processors = build_processors(&full, &workers)?;
        let placer = Arc::new(Placer::new(
            &full,
            processors.delegates.clone(),
            Arc::new(WorkerValidator(workers.clone())),
        )?);
        let config = full.daemon.clone();
        Ok(State {
            gate: Gate::new(&full.scheduler, &placer.processors(), placer.cost.clone()),
            registry: ModelRegistry::new(
                config.kernel_threads,
                config.interpreters_per_model,
                placer,
            )
            .with_node_max_work(config.limits.node_max_work),
            tenants: Tenants::new(config.quota.clone()),
            regions: Arc::new(Regions::new(config.quota.clone())),
            processors,
            metrics: Metrics::default(),
            started: Instant::now(),
            next_request: AtomicU64::new(1),
            active: Arc::new(AtomicUsize::new(0)),
            workers,
            channels: Arc::default(),
            config,
            full,
        })
    }

    pub fn enter(&self) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.active.clone())
    }

    /// Load and run requests still executing.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The tenant behind a request: peer credentials on the Unix socket, the bearer
    /// token on TCP. Anything else is refused.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, DaemonError> {
        // Set by the identity layer (crate::auth) before the body was read.
        if let Some(c) = req.extensions().get::<Caller>() {
            return Ok(c.clone());
        }
        if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
            let cred = info.peer_cred.ok_or_else(|| {
                DaemonError::Unauthenticated("the Unix socket gave no peer credentials".into())
            })?;
            let uid = cred.uid();
            return Ok(Caller {
                tenant: TenantId::Uid(uid),
                pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
                admin: self.config.admin_uids.contains(&uid),
            });
        }
        if req.extensions().get::<TcpConnectInfo>().is_none() {
            return Err(DaemonError::Unauthenticated("unknown transport".into()));
        }
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                DaemonError::Unauthenticated(
                    "TCP requests need `authorization: Bearer <token>`".into(),
                )
            })?;
        self.token_caller(presented)
            .ok_or_else(|| DaemonError::Unauthenticated("unknown token".into()))
    }

    /// The tenant a bearer token names (for readers outside gRPC: the metrics
    /// endpoint on TCP).
    pub fn token_caller(&self, presented: &str) -> Option<Caller> {
        let mut found = None;
        for t in &self.config.tokens {
            if crate::auth::constant_time_eq(t.token.as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        found.map(|t| Caller {
            tenant: TenantId::Token(t.tenant.clone()),
            pid: None,
            admin: t.admin,
        })
    }

    fn model_info(&self, id: &str, handle: &Handle) -> v1::ModelInfo {
        let m = &handle.model;
        v1::ModelInfo {
            id: id.to_owned(),
            name: handle.name.clone(),
            sha256: m.sha256_hex.clone(),
            bytes: m.bytes,
            arena_bytes: m.arena_bytes,
            inputs: m.inputs.iter().map(tensor_info).collect(),
            outputs: m.outputs.iter().map(tensor_info).collect(),
            stateful: m.stateful,
            plan_bytes: m.plan_bytes(),
        }
    }

    fn tenant_info(&self, s: TenantSnapshot) -> v1::TenantInfo {
        let regions = self.regions.of(&s.id);
        v1::TenantInfo {
            id: s.id.to_string(),
            uid: match s.id {
                TenantId::Uid(u) => Some(u),
                TenantId::Token(_) => None,
            },
            pids: s.pids,
            models: s.models as u32,
            model_bytes: s.model_bytes,
            arena_bytes: s.arena_bytes,
            regions: regions.len() as u32,
            region_bytes: regions.iter().map(|r| r.len() as u64).sum(),
            counters: Some(v1::TenantCounters {
                requests: s.counters.requests,
                failed: s.counters.failed,
                rejected: s.counters.rejected,
                in_flight: s.in_flight as u32,
                queue_us_total: s.counters.queue_us_total,
                run_us_total: s.counters.run_us_total,
                last_queue_us: s.counters.last_queue_us,
                last_run_us: s.counters.last_run_us,
            }),
            sessions: s.sessions as u32,
            session_bytes: s.session_bytes,
            plan_bytes: s.plan_bytes,
        }
    }

    fn visible_tenants(&self, caller: &Caller) -> Vec<v1::TenantInfo> {
        self.tenants.touch(caller);
        self.tenants
            .snapshot()
            .into_iter()
            .filter(|s| caller.admin || s.id == caller.tenant)
            .map(|s| self.tenant_info(s))
            .collect()
    }

    fn finish_load(
        &self,
        caller: &Caller,
        name: String,
        model: Arc<PreparedModel>,
        // Whether this tenant already held the model (never whether anyone else does).
        shared: bool,
    ) -> Result<(v1::LoadModelResponse, Vec<Arc<SessionEntry>>), DaemonError> {
        let id = model.id();
        let handle = Handle { name, model };
        let reloaded = self.tenants.insert(caller, id.clone(), handle.clone())?;
        info!(tenant = %caller.tenant, model = %id, shared, bytes = handle.model.bytes, "model loaded");
        Ok((
            v1::LoadModelResponse {
                model: Some(self.model_info(&id, &handle)),
                shared,
            },
            reloaded,
        ))
    }

    /// The physical memory figures, each prepared model once (admins only).
    fn memory_info(&self) -> v1::MemoryInfo {
        let p = self.registry.physical();
        let tenants = self.tenants.snapshot();
        v1::MemoryInfo {
            models: p.models as u32,
            model_bytes: p.model_bytes,
            plan_bytes: p.plan_bytes,
            sessions: tenants.iter().map(|t| t.sessions as u32).sum(),
            session_bytes: tenants.iter().map(|t| t.session_bytes).sum(),
            pooled_sessions: p.pooled_sessions as u32,
            pooled_bytes: p.pooled_bytes,
            charged_bytes: tenants.iter().map(|t| t.plan_bytes + t.session_bytes).sum(),
        }
    }
}

fn tensor_info(t: &TensorSpec) -> v1::TensorInfo {
    v1::TensorInfo {
        name: t.name.clone(),
        dtype: dtype_to_wire(t.dtype).unwrap_or(v1::DataType::Unspecified) as i32,
        shape: t.shape.iter().map(|&d| d as u64).collect(),
        shape_signature: t
            .signature
            .as_ref()
            .map(|s| s.iter().map(|&d| i64::from(d)).collect())
            .unwrap_or_default(),
    }
}

/// The model sha256 an allowlist key (`<sha256>:<nodes>@<delegate>`) is about.
fn subject_model(key: &str) -> &str {
    key.split([':', '@']).next().unwrap_or("")
}

/// The client's request id, checked: it ends up in logs, so it stays short and printable.
pub(crate) fn client_request_id(id: &str) -> Result<&str, DaemonError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DaemonError::invalid(
            "client_request_id must be at most 64 printable ASCII bytes",
        ));
    }
    Ok(id)
}

/// The gRPC service over shared state.
#[derive(Clone)]
pub struct Service {
    pub state: Arc<State>,
}

/// Loads `bytes` on the blocking pool (hashing, verifying and preparing are CPU work).
async fn spawn_load(
    state: &Arc<State>,
    caller: &Caller,
    name: String,
    bytes: Vec<u8>,
) -> Result<v1::LoadModelResponse, DaemonError> {
    if name.len() > 256 {
        return Err(DaemonError::invalid("model name is longer than 256 bytes"));
    }
    let started = Instant::now();
    let st = state.clone();
    let c = caller.clone();
    let load_id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let (model, held_before, reused) = tokio::task::spawn_blocking(move || {
        crate::panics::contain("load", load_id, || {
            let digest = ModelRegistry::digest(&bytes);
            // Quotas are checked before the expensive prepare, except for a model the
            // tenant already holds, which a reload does not charge again.
            let held = st.tenants.holds(&c, &digest);
            if !held {
                st.tenants.precheck_load(&c, bytes.len() as u64)?;
            }
            let (model, reused) = st.registry.load_digest(digest, &bytes)?;
            drop(bytes);
            crate::registry::release_free_heap();
            Ok((model, held, reused))
        })
    })
    .await
    .map_err(|_| crate::panics::generic("load", load_id))??;
    // Whether another tenant holds the same model must not be observable: a copy
    // prepared for someone else answers no sooner than preparing it took.
    if reused && !held_before {
        let first = std::time::Duration::from_micros(model.first_answer_us.load(Ordering::Relaxed));
        let prepared_in = model.prepare_time.max(first).min(MAX_SHARING_DELAY);
        tokio::time::sleep_until((started + prepared_in).into()).await;
    }
    let kept = model.clone();
    let finished = state.finish_load(caller, name, model, held_before);
    if !reused {
        let us = started.elapsed().as_micros() as u64;
        kept.first_answer_us.store(us, Ordering::Relaxed);
    }
    // Once the answer is ready, so validation does not delay it. Any loader may start
    // it (once): the first one's load may have failed after preparing.
    crate::placement::start_validation(&state.registry.placer, &kept);
    drop(kept);
    let (resp, reloaded) = finished?;
    // Reloading a model starts fresh streams on the tenant's sessions of it.
    for entry in reloaded {
        let mut s = entry.state.lock().await;
        s.reset();
        entry.ran(&s, false);
    }
    Ok(resp)
}

/// Longest a shared load is held back to look like a fresh one.
const MAX_SHARING_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// Where one input's bytes come from, after checking.
enum Input {
    Inline(Vec<u8>),
    Shm(Arc<Region>, std::ops::Range<usize>),
}

struct CheckedInput {
    shape: Vec<usize>,
    data: Input,
}

struct OutputDest {
    region: Arc<Region>,
    offset: u64,
    length: u64,
}

/// Why a shape the client sent may not run on the model's input: `None` when it matches,
/// differs only in dimensions the shape signature marks dynamic, or the client asked
/// for a resize.
pub fn shape_refusal(spec: &TensorSpec, shape: &[usize], allow_resize: bool) -> Option<String> {
    if allow_resize || spec.shape == shape {
        return None;
    }
    let dynamic = |i: usize| {
        spec.signature
            .as_ref()
            .and_then(|s| s.get(i))
            .is_some_and(|&d| d < 0)
    };
    let fits = spec.shape.len() == shape.len()
        && spec
            .shape
            .iter()
            .zip(shape)
            .enumerate()
            .all(|(i, (m, c))| m == c || dynamic(i));
    (!fits).then(|| {
        format!(
            "input `{}`: the model takes shape {:?}, the request has {shape:?}; resize explicitly (RunRequest.allow_resize) to run it anyway",
            spec.name, spec.shape
        )
    })
}

/// One input tensor as the client sent it, checked against the model's input without
/// touching its data: data type, rank, dimensions, byte length, shape. Pure, so the
/// request-decoding fuzz target (crate::fuzzing) reaches exactly what a request does.
/// Returns the data type, the shape and the byte length the data must have.
pub fn check_tensor(
    i: usize,
    t: &v1::Tensor,
    spec: &TensorSpec,
    allow_resize: bool,
) -> Result<(DType, Vec<usize>, usize), DaemonError> {
    let wire = v1::DataType::try_from(t.dtype)
        .map_err(|_| DaemonError::invalid(format!("input {i}: unknown data type {}", t.dtype)))?;
    let dtype = dtype_from_wire(wire)
        .ok_or_else(|| DaemonError::invalid(format!("input {i}: data type is unspecified")))?;
    if dtype != spec.dtype {
        return Err(DaemonError::invalid(format!(
            "input {i} (`{}`): expected {}, got {dtype}",
            spec.name, spec.dtype
        )));
    }
    if t.shape.len() > MAX_RANK {
        return Err(DaemonError::invalid(format!(
            "input {i}: rank {} is above {MAX_RANK}",
            t.shape.len()
        )));
    }
    // TFLite dimensions are int32; larger ones can only be hostile.
    if let Some(d) = t.shape.iter().find(|&&d| d > i32::MAX as u64) {
        return Err(DaemonError::invalid(format!(
            "input {i}: dimension {d} is too large"
        )));
    }
    let expected = wire
        .byte_len(&t.shape)
        .ok_or_else(|| DaemonError::invalid(format!("input {i}: shape {:?} overflows", t.shape)))?;
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    if let Some(why) = shape_refusal(spec, &shape, allow_resize) {
        return Err(DaemonError::invalid(why));
    }
    Ok((dtype, shape, expected))
}

fn check_inputs(
    state: &State,
    caller: &Caller,
    model: &PreparedModel,
    tensors: Vec<v1::Tensor>,
    allow_resize: bool,
) -> Result<Vec<CheckedInput>, DaemonError> {
    if tensors.len() != model.inputs.len() {
        return Err(DaemonError::invalid(format!(
            "the model takes {} inputs, the request has {}",
            model.inputs.len(),
            tensors.len()
        )));
    }
    let mut out = Vec::with_capacity(tensors.len());
    for (i, (t, spec)) in tensors.into_iter().zip(&model.inputs).enumerate() {
        let (dtype, shape, expected) = check_tensor(i, &t, spec, allow_resize)?;
        let data = match t.data {
            Some(Data::Inline(bytes)) => {
                if bytes.len() != expected {
                    return Err(DaemonError::invalid(format!(
                        "input {i}: {dtype} {shape:?} needs {expected} bytes, got {}",
                        bytes.len()
                    )));
                }
                Input::Inline(bytes)
            }
            Some(Data::Shm(r)) => {
                if r.length != expected as u64 {
                    return Err(DaemonError::invalid(format!(
                        "input {i}: {dtype} {shape:?} needs {expected} bytes, the shm range has {}",
                        r.length
                    )));
                }
                let region = state.regions.get(&caller.tenant, r.region)?;
                let range = check_range(region.len(), r.offset, r.length)?;
                Input::Shm(region, range)
            }
            None => return Err(DaemonError::invalid(format!("input {i} carries no data"))),
        };
        out.push(CheckedInput { shape, data });
    }
    Ok(out)
}

fn check_outputs(
    state: &State,
    caller: &Caller,
    model: &PreparedModel,
    refs: Vec<v1::ShmRef>,
) -> Result<Option<Vec<OutputDest>>, DaemonError> {
    if refs.is_empty() {
        return Ok(None);
    }
    if refs.len() != model.outputs.len() {
        return Err(DaemonError::invalid(format!(
            "the model has {} outputs, the request names {} shm destinations",
            model.outputs.len(),
            refs.len()
        )));
    }
    refs.into_iter()
        .map(|r| {
            let region = state.regions.get(&caller.tenant, r.region)?;
            check_range(region.len(), r.offset, r.length)?;
            Ok(OutputDest {
                region,
                offset: r.offset,
                length: r.length,
            })
        })
        .collect::<Result<Vec<_>, DaemonError>>()
        .map(Some)
}

/// Raises its flag when dropped: held by a run's handler, whose future tonic drops when
/// the client disconnects, so the run it queued stops at its next node.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The session one run executes on.
enum Lease {
    /// The caller's own session (locked for the run: runs on one session take turns).
    Own(tokio::sync::OwnedMutexGuard<Session>, Arc<SessionEntry>),
    /// A pooled session borrowed inside the run and counted in the tenant's memory;
    /// the permit bounds how many exist.
    Pooled(tokio::sync::OwnedSemaphorePermit, MemoryPool),
}

/// One run request's work as it travels through the arbiter: its checked inputs and
/// output destinations, its session lease and the in-flight permit it holds until the
/// run really ends (a client that disconnects mid-run drops its future, not the work),
/// and then its result.
pub struct RunJob {
    request_id: u64,
    /// The run's work budget ([daemon.limits]); its clock starts when the run does.
    max_nodes: u64,
    max_time: Option<std::time::Duration>,
    /// Raised when the client goes away (its handler future is dropped): the run stops
    /// at the next node instead of finishing for nobody.
    cancel: Arc<std::sync::atomic::AtomicBool>,
    model: Arc<PreparedModel>,
    /// The model's placement when the request arrived: it runs on it to the end, even
    /// if background validation switches the model meanwhile.
    placed: Arc<Placed>,
    lease: Option<Lease>,
    inputs: Vec<CheckedInput>,
    outputs: Option<Vec<OutputDest>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    result: Option<Result<Vec<v1::Tensor>, DaemonError>>,
    run_us: u64,
    /// Where the arbiter ran it (metrics count requests per processor).
    ran_on: Option<ProcessorKind>,
}

impl Work for RunJob {
    fn run(&mut self, at: Assigned) -> bool {
        let t = Instant::now();
        let lease = self.lease.take();
        let inputs = std::mem::take(&mut self.inputs);
        let outputs = self.outputs.take();
        let model = &self.model;
        let placed = &self.placed;
        self.ran_on = Some(at.processor);
        let mut budget = Budget::nodes(self.max_nodes).with_cancel(self.cancel.clone());
        if let Some(t) = self.max_time {
            budget = budget.with_timeout(t);
        }
        let res = crate::panics::contain("run", self.request_id, || match lease {
            Some(lease) => execute_on(model, placed, lease, at, inputs, outputs, &mut budget),
            None => Err(DaemonError::Internal("the run was started twice".into())),
        });
        self.run_us = t.elapsed().as_micros() as u64;
        let ok = res.is_ok();
        self.result = Some(res);
        ok
    }
}

/// Runs one request on its session, in the model's form the arbiter chose (placement,
/// threads): the whole execution of a run, in one place.
fn execute_on(
    model: &PreparedModel,
    placed: &Placed,
    lease: Lease,
    at: Assigned,
    inputs: Vec<CheckedInput>,
    outputs: Option<Vec<OutputDest>>,
    budget: &mut Budget,
) -> Result<Vec<v1::Tensor>, DaemonError> {
    let form = (at.variant, at.threads);
    match lease {
        Lease::Own(mut session, entry) => {
            // The stream's state stays in the session whichever plan runs it.
            let result = model
                .bind(placed, &mut session, form)
                .and_then(|()| execute(model, placed, &mut session, inputs, outputs, budget));
            entry.ran(&session, true);
            result
        }
        Lease::Pooled(_permit, memory) => {
            let mut lent = model.lend(placed, &memory, form)?;
            let result = execute(model, placed, &mut lent.session, inputs, outputs, budget);
            model.give_back(lent, result.is_ok());
            result
        }
    }
}

/// Sets inputs (resizing the session when a shape differs), invokes, and returns
/// outputs inline or written to shm. Runs on the blocking pool.
fn execute(
    model: &PreparedModel,
    placed: &Placed,
    s: &mut Session,
    inputs: Vec<CheckedInput>,
    outputs: Option<Vec<OutputDest>>,
    budget: &mut Budget,
) -> Result<Vec<v1::Tensor>, DaemonError> {
    let before = s.partition_reports().to_vec();
    for (i, x) in inputs.iter().enumerate() {
        let current = s.input_shape(i).map_err(DaemonError::Run)?;
        if current != x.shape.as_slice() {
            s.resize_input(i, &x.shape).map_err(|e| match e {
                switchyard_interpreter::RunError::Memory { .. } => DaemonError::from_memory(e),
                e => DaemonError::invalid(format!(
                    "input {i}: shape {:?} does not fit the model: {e}",
                    x.shape
                )),
            })?;
        }
        let bytes = match &x.data {
            Input::Inline(b) => b.as_slice(),
            Input::Shm(region, range) => region.bytes(range.clone())?,
        };
        s.set_input(i, bytes).map_err(DaemonError::from_run)?;
    }
    let invoked = s.invoke(budget).map_err(DaemonError::from_run);
    model.observe(placed, &before, s);
    invoked?;
    let mut out = Vec::with_capacity(s.output_count());
    for i in 0..s.output_count() {
        let view = s.output(i).map_err(DaemonError::Run)?;
        let dtype = dtype_to_wire(view.dtype).ok_or_else(|| {
            DaemonError::Internal(format!(
                "output {i} has type {}, which the API cannot carry",
                view.dtype
            ))
        })?;
        let shape = view.shape.iter().map(|&d| d as u64).collect();
        let data = match outputs.as_ref().and_then(|d| d.get(i)) {
            Some(dest) => {
                let len = view.bytes.len() as u64;
                if len > dest.length {
                    return Err(DaemonError::invalid(format!(
                        "output {i} has {len} bytes; its shm destination holds {}",
                        dest.length
                    )));
                }
                dest.region.write(dest.offset, view.bytes)?;
                Data::Shm(v1::ShmRef {
                    region: dest.region.id,
                    offset: dest.offset,
                    length: len,
                })
            }
            None => {
                let mut v = Vec::new();
                v.try_reserve_exact(view.bytes.len()).map_err(|_| {
                    DaemonError::from_memory(switchyard_interpreter::RunError::Memory {
                        what: format!("a copy of output {i}"),
                        requested: view.bytes.len(),
                        used: 0,
                        limit: 0,
                    })
                })?;
                v.extend_from_slice(view.bytes);
                Data::Inline(v)
            }
        };
        out.push(v1::Tensor {
            dtype: dtype as i32,
            shape,
            data: Some(data),
        });
    }
    Ok(out)
}

/// How often sessions whose opening process has exited are closed.
const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Closes sessions of exited processes until the daemon stops.
pub async fn reap_sessions(state: Arc<State>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    loop {
        tick.tick().await;
        let closed = state.tenants.reap_sessions();
        if closed > 0 {
            info!(closed, "closed the sessions of exited processes");
        }
    }
}

/// Where a run executes, and so how it is cancelled.
pub(crate) enum RunThread {
    /// The blocking pool (gRPC handlers): dropping the request's future cancels the run.
    Pool,
    /// The calling thread, when the arbiter can start the run at once (a run channel's
    /// own thread). That thread is inside the kernels and cannot drop the future, so the
    /// run stops at its next node once `cancel` is raised (the channel closing).
    Caller {
        cancel: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// One run, from a checked caller to its response: the request's checks, admission, the
/// arbiter, tenant accounting and metrics. The gRPC `Run` and the run channels
/// (crate::fastpath) both come through here, so the two paths cannot drift apart.
pub(crate) async fn run_request(
    state: &Arc<State>,
    caller: Caller,
    r: v1::RunRequest,
    thread: RunThread,
) -> Result<v1::RunResponse, DaemonError> {
    let (on, cancelled_by) = match thread {
        RunThread::Pool => (RunsOn::Pool, None),
        RunThread::Caller { cancel } => (RunsOn::Caller, Some(cancel)),
    };
    let request_id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let client_request_id = client_request_id(&r.client_request_id)?;
    let span = info_span!(
        "run",
        tenant = %caller.tenant,
        model = %r.model_id,
        request_id,
        client_request_id
    );
    let outer = state;
    let state = state.clone();
    let tenant = caller.tenant.clone();
    let outcome = async move {
        let handle = state.tenants.handle(&caller, &r.model_id)?;
        let placed = handle.model.placed();
        let (model_name, main) = (handle.name.clone(), placed.placement.serving.main());
        let permit = state.tenants.admit(&caller)?;
        let result = async {
            let model = handle.model.clone();
            let inputs = check_inputs(&state, &caller, &model, r.inputs, r.allow_resize)?;
            let outputs = check_outputs(&state, &caller, &model, r.output_shm)?;
            let queued = Instant::now();
            // The lease and the permit move into the work: a client that
            // disconnects mid-run drops this future, but the in-flight count and
            // the session stay accounted for until the run really ends.
            let lease = if r.session_id != 0 {
                let entry = state.tenants.session(&caller, r.session_id)?;
                if entry.model_id != r.model_id {
                    return Err(DaemonError::invalid(format!(
                        "session {} is on model `{}`, not `{}`",
                        r.session_id, entry.model_id, r.model_id
                    )));
                }
                Lease::Own(entry.state.clone().lock_owned().await, entry)
            } else {
                let slot = model
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| DaemonError::Internal("model pool closed".into()))?;
                Lease::Pooled(slot, state.tenants.memory(&caller))
            };
            let (max_nodes, max_ms) = state.config.limits.run_budget(&caller.tenant.to_string());
            let cancel = cancelled_by
                .clone()
                .unwrap_or_else(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
            // An outside flag belongs to its owner: raising it here would close the
            // channel after every run.
            let _cancel_on_drop = cancelled_by.is_none().then(|| CancelOnDrop(cancel.clone()));
            let job = RunJob {
                request_id,
                max_nodes,
                max_time: (max_ms > 0).then(|| std::time::Duration::from_millis(max_ms)),
                cancel,
                model: model.clone(),
                placed: placed.clone(),
                lease: Some(lease),
                inputs,
                outputs,
                _permit: permit,
                result: None,
                run_us: 0,
                ran_on: None,
            };
            let job = state
                .gate
                .run_on(
                    request_id,
                    caller.tenant.to_string(),
                    class_from_wire(r.priority),
                    r.deadline_ms,
                    placed.placement.serving.clone(),
                    job,
                    on,
                )
                .await?;
            let run_us = job.run_us;
            let processor = job.ran_on.unwrap_or(main);
            let tensors = job
                .result
                .ok_or_else(|| DaemonError::Internal("the run ended without a result".into()))?;
            // Waiting for an interpreter and in the arbiter's queue.
            let queue_us = (queued.elapsed().as_micros() as u64).saturating_sub(run_us);
            Ok::<_, DaemonError>((tensors, queue_us, run_us, processor))
        }
        .await;
        match result {
            Ok((Ok(outputs), queue_us, run_us, processor)) => {
                state.tenants.record(&caller, true, queue_us, run_us);
                state.metrics.ran(
                    &caller.tenant,
                    &r.model_id,
                    &model_name,
                    true,
                    queue_us,
                    run_us,
                    processor,
                );
                Ok(v1::RunResponse {
                    outputs,
                    timing: Some(v1::Timing { queue_us, run_us }),
                    request_id,
                })
            }
            Ok((Err(e), queue_us, run_us, processor)) => {
                state.tenants.record(&caller, false, queue_us, run_us);
                // A refusal inside the run (e.g. a resize that does not fit) is
                // counted below with the others.
                if refusal_reason(&e).is_none() {
                    state.metrics.ran(
                        &caller.tenant,
                        &r.model_id,
                        &model_name,
                        false,
                        queue_us,
                        run_us,
                        processor,
                    );
                }
                Err(e)
            }
            Err(e) => {
                state.tenants.record(&caller, false, 0, 0);
                Err(e)
            }
        }
    }
    .instrument(span.clone())
    .await;
    match outcome {
        Ok(resp) => Ok(resp),
        Err(e) => {
            if let Some(reason) = refusal_reason(&e) {
                outer.metrics.refused(&tenant, reason);
            }
            span.in_scope(|| warn!(error = %e, "run failed"));
            Err(e)
        }
    }
}

type ChunkStream = Streaming<v1::LoadModelChunk>;

#[tonic::async_trait]
impl Switchyard for Service {
    async fn load_model(
        &self,
        req: Request<v1::LoadModelRequest>,
    ) -> Result<Response<v1::LoadModelResponse>, Status> {
        let _active = self.state.enter();
        let caller = self.state.caller(&req)?;
        let r = req.into_inner();
        let span = info_span!("load", tenant = %caller.tenant, bytes = r.model.len());
        let resp = spawn_load(&self.state, &caller, r.name, r.model)
            .instrument(span)
            .await?;
        Ok(Response::new(resp))
    }

    async fn load_model_stream(
        &self,
        req: Request<ChunkStream>,
    ) -> Result<Response<v1::LoadModelResponse>, Status> {
        let _active = self.state.enter();
        let caller = self.state.caller(&req)?;
        let limit = self.state.tenants.quota().model_bytes;
        let mut stream = req.into_inner();
        let mut name = None;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if name.is_none() {
                name = Some(chunk.name);
            }
            if (bytes.len() as u64).saturating_add(chunk.data.len() as u64) > limit {
                return Err(DaemonError::Quota {
                    quota: "model_bytes",
                    limit,
                    detail: "the streamed model is larger than the tenant may hold".into(),
                }
                .into());
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let span = info_span!("load", tenant = %caller.tenant, bytes = bytes.len());
        let resp = spawn_load(&self.state, &caller, name.unwrap_or_default(), bytes)
            .instrument(span)
            .await?;
        Ok(Response::new(resp))
    }

    async fn unload_model(
        &self,
        req: Request<v1::UnloadModelRequest>,
    ) -> Result<Response<v1::UnloadModelResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let id = req.into_inner().id;
        self.state.tenants.remove(&caller, &id)?;
        crate::registry::release_free_heap();
        info!(tenant = %caller.tenant, model = %id, "model unloaded");
        Ok(Response::new(v1::UnloadModelResponse {}))
    }

    async fn list_models(
        &self,
        req: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let models = self
            .state
            .tenants
            .handles(&caller)
            .iter()
            .map(|(id, h)| self.state.model_info(id, h))
            .collect();
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn run(&self, req: Request<v1::RunRequest>) -> Result<Response<v1::RunResponse>, Status> {
        let _active = self.state.enter();
        let caller = self.state.caller(&req)?;
        let resp = run_request(&self.state, caller, req.into_inner(), RunThread::Pool).await?;
        Ok(Response::new(resp))
    }

    async fn open_run_channel(
        &self,
        req: Request<v1::OpenRunChannelRequest>,
    ) -> Result<Response<v1::OpenRunChannelResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let resp = crate::fastpath::open(&self.state, &caller, req.into_inner())?;
        Ok(Response::new(resp))
    }

    async fn list_regions(
        &self,
        req: Request<v1::ListRegionsRequest>,
    ) -> Result<Response<v1::ListRegionsResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let regions = self
            .state
            .regions
            .of(&caller.tenant)
            .iter()
            .map(|r| v1::RegionInfo {
                id: r.id,
                bytes: r.len() as u64,
                pid: r.pid,
            })
            .collect();
        Ok(Response::new(v1::ListRegionsResponse { regions }))
    }

    async fn release_region(
        &self,
        req: Request<v1::ReleaseRegionRequest>,
    ) -> Result<Response<v1::ReleaseRegionResponse>, Status> {
        let caller = self.state.caller(&req)?;
        self.state
            .regions
            .release(&caller.tenant, req.into_inner().id)?;
        Ok(Response::new(v1::ReleaseRegionResponse {}))
    }

    async fn list_tenants(
        &self,
        req: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let caller = self.state.caller(&req)?;
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: self.state.visible_tenants(&caller),
        }))
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let caller = self.state.caller(&req)?;
        // A tenant sees figures of its own only: daemon-wide counts would tell it
        // whether another tenant holds a model or is running requests.
        let all: Vec<TenantSnapshot> = self
            .state
            .tenants
            .snapshot()
            .into_iter()
            .filter(|s| caller.admin || s.id == caller.tenant)
            .collect();
        let in_flight = all.iter().map(|s| s.in_flight as u32).sum();
        let requests = all.iter().map(|s| s.counters.requests).sum();
        let (models, regions) = if caller.admin {
            (
                self.state.registry.live() as u32,
                self.state.regions.count() as u32,
            )
        } else {
            (
                self.state.tenants.handles(&caller).len() as u32,
                self.state.regions.of(&caller.tenant).len() as u32,
            )
        };
        Ok(Response::new(v1::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.state.started.elapsed().as_millis() as u64,
            models,
            in_flight,
            regions,
            requests,
            tenants: self.state.visible_tenants(&caller),
            memory: caller.admin.then(|| self.state.memory_info()),
        }))
    }

    async fn open_session(
        &self,
        req: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::OpenSessionResponse>, Status> {
        let _active = self.state.enter();
        let caller = self.state.caller(&req)?;
        let model_id = req.into_inner().model_id;
        let span = info_span!("open_session", tenant = %caller.tenant, model = %model_id);
        let state = self.state.clone();
        let entry = async move {
            let handle = state.tenants.handle(&caller, &model_id)?;
            state.tenants.reap_sessions();
            state.tenants.precheck_session(&caller)?;
            let memory = state.tenants.memory(&caller);
            let opener = caller.pid.and_then(Opener::of);
            let model = handle.model.clone();
            // A few allocations (the arena, variable slots): never a prepare.
            let session = tokio::task::spawn_blocking(move || model.open_session(&memory))
                .await
                .map_err(|e| DaemonError::Internal(format!("open task: {e}")))??;
            let entry = state
                .tenants
                .add_session(&caller, &model_id, opener, session)?;
            info!(
                session = entry.id,
                bytes = entry.memory_bytes(),
                "session opened"
            );
            Ok::<_, DaemonError>(entry)
        }
        .instrument(span)
        .await?;
        Ok(Response::new(v1::OpenSessionResponse {
            session: Some(entry.info()),
        }))
    }

    async fn reset_session(
        &self,
        req: Request<v1::ResetSessionRequest>,
    ) -> Result<Response<v1::ResetSessionResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let entry = self
            .state
            .tenants
            .session(&caller, req.into_inner().session_id)?;
        let mut s = entry.state.lock().await;
        s.reset();
        entry.ran(&s, false);
        Ok(Response::new(v1::ResetSessionResponse {}))
    }

    async fn close_session(
        &self,
        req: Request<v1::CloseSessionRequest>,
    ) -> Result<Response<v1::CloseSessionResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let id = req.into_inner().session_id;
        self.state.tenants.close_session(&caller, id)?;
        info!(tenant = %caller.tenant, session = id, "session closed");
        Ok(Response::new(v1::CloseSessionResponse {}))
    }

    async fn list_sessions(
        &self,
        req: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let caller = self.state.caller(&req)?;
        self.state.tenants.reap_sessions();
        let sessions = self
            .state
            .tenants
            .sessions(&caller)
            .iter()
            .map(|e| e.info())
            .collect();
        Ok(Response::new(v1::ListSessionsResponse { sessions }))
    }

    async fn get_placement(
        &self,
        req: Request<v1::GetPlacementRequest>,
    ) -> Result<Response<v1::GetPlacementResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let id = req.into_inner().model_id;
        let handle = self.state.tenants.handle(&caller, &id)?;
        // Validation state first: a placement switched after this read is newer, never
        // older, than the state says.
        let (validation, reason) = handle.model.validation().wire();
        Ok(Response::new(v1::GetPlacementResponse {
            plan_json: handle.model.placed().placement.plan_json.clone(),
            validation: validation.to_owned(),
            validation_reason: reason,
        }))
    }

    async fn get_metrics(
        &self,
        req: Request<v1::GetMetricsRequest>,
    ) -> Result<Response<v1::GetMetricsResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let viewer = if caller.admin {
            Viewer::All
        } else {
            Viewer::Tenant(caller.tenant)
        };
        Ok(Response::new(v1::GetMetricsResponse {
            text: crate::metrics::render(&self.state, &viewer),
        }))
    }

    async fn list_allowlist(
        &self,
        req: Request<v1::ListAllowlistRequest>,
    ) -> Result<Response<v1::ListAllowlistResponse>, Status> {
        let caller = self.state.caller(&req)?;
        let placer = &self.state.registry.placer;
        // Subjects start with the model's sha256: a tenant sees the decisions about
        // models it holds, an admin all of them.
        let held: std::collections::HashSet<String> = self
            .state
            .tenants
            .handles(&caller)
            .into_iter()
            .map(|(_, h)| h.model.sha256_hex.clone())
            .collect();
        let entries = placer
            .entries()
            .into_iter()
            .filter(|(k, _)| caller.admin || held.contains(subject_model(k)))
            .map(|(k, e)| {
                let (subject, processor) = k.rsplit_once('@').unwrap_or((k.as_str(), ""));
                v1::AllowlistEntry {
                    subject: subject.to_owned(),
                    processor: processor.to_owned(),
                    fingerprint: e.fingerprint.clone(),
                    verdict: match e.verdict {
                        switchyard_scheduler::allowlist::Verdict::Allowed => "allowed",
                        switchyard_scheduler::allowlist::Verdict::Blocked => "blocked",
                    }
                    .to_owned(),
                    reason: e.reason.clone(),
                    delegate_ms: e.delegate_s * 1e3,
                    cpu_ms: e.cpu_s * 1e3,
                    max_error: e.max_error,
                    runs: e.runs,
                    failures: e.failures,
                    timeouts: e.timeouts,
                }
            })
            .collect();
        Ok(Response::new(v1::ListAllowlistResponse {
            entries,
            path: placer
                .allowlist_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }))
    }
}
