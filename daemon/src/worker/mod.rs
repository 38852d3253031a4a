//! Worker processes: validation and benchmark runs of candidate delegates, and vendor
//! plugins, run in `switchyard-worker`, never in the daemon. A driver that crashes
//! (SIGSEGV, abort) or hangs takes a worker down; the daemon blocks the delegate with
//! the reason, starts a fresh worker on the next call and serves on (as LiteRT's
//! mini-benchmark does). docs/worker.md describes the protocol and its cost.
//!
//! Layout:
//! - [`WorkerPool`]: the daemon's handle; [`WorkerPool::validate`] runs one validation,
//!   [`WorkerPool::plugin_delegates`] gives proxy delegates for the configured plugins.
//!   Two lanes, each one process at a time: validation (long runs) and plugins (short
//!   calls on the serving path), so a validation never delays a served request.
//! - [`protocol`]: the frames and messages; [`shmem`]: sealed memfds for bulk bytes;
//!   [`process`]: spawning and reaping; [`proxy`]: the plugin proxy delegate;
//!   [`serve`]: the worker's side.
//!
//! Every call is blocking and the pool is `Sync`: call it from a blocking thread (the
//! load path today, a background validation task tomorrow).

pub mod process;
pub mod protocol;
pub mod proxy;
pub mod serve;
pub mod shmem;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;
use switchyard_config::Config;
use switchyard_interpreter::{Delegate, Model, Partition, Tensor};
use switchyard_scheduler::SchedError;
use switchyard_scheduler::allowlist::{Entry, Tolerance, Validator, Verdict};
use tracing::{info, warn};

use crate::tenant::lock;
use protocol::{BlobTensor, FrameError, FromWorker, PartitionWire, PluginInfo, ToWorker};
use shmem::{Arena, Blob, BlobBuilder};

/// Why a worker call did not produce an answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the worker {exe}: {why}")]
    Spawn { exe: String, why: String },
    /// The worker died during the call: a driver crashed it.
    #[error("the worker crashed: {status}")]
    Crashed { status: String },
    /// The worker did not answer in time and was killed.
    #[error("the worker did not answer within {after:?} and was killed")]
    Hung { after: Duration },
    /// Several crashes in a row: the lane waits before starting another worker.
    #[error("the worker crashed {crashes} times in a row; the next start is in {retry_in:?}")]
    Backoff { crashes: u32, retry_in: Duration },
    #[error("worker protocol: {0}")]
    Protocol(String),
    /// The worker answered that the request could not be served.
    #[error("{0}")]
    Refused(String),
    #[error("shared memory for the worker: {0}")]
    Shm(String),
}

impl WorkerError {
    /// Errors after which the worker process is gone or no longer trusted.
    fn ends_worker(&self) -> bool {
        matches!(
            self,
            WorkerError::Crashed { .. } | WorkerError::Hung { .. } | WorkerError::Protocol(_)
        )
    }

    /// Errors that say the candidate itself crashed or hung the worker, as opposed to
    /// the pool being unable to run anything.
    pub fn is_candidates_fault(&self) -> bool {
        matches!(self, WorkerError::Crashed { .. } | WorkerError::Hung { .. })
    }
}

/// One validation: run `partition` of `model` on `delegate` (`runs` times in validation
/// mode, against the CPU reference) on `inputs`.
pub struct ValidationRequest<'a> {
    pub model: &'a Model,
    pub delegate: &'a dyn Delegate,
    pub partition: &'a Partition,
    /// Per-execution time limit of the partition (the serving timeout).
    pub timeout: Option<Duration>,
    pub inputs: &'a [Tensor],
    pub runs: u32,
    pub tolerance: Tolerance,
    /// The partition's CPU time as served, which the delegate must beat.
    pub cpu_s: f64,
}

/// A validation's outcome.
#[derive(Clone, Debug)]
pub struct ValidationResult {
    /// The allowlist entry the worker measured.
    pub entry: Entry,
    /// Wall time of the whole call: transfer, worker-side parse, the runs.
    pub wall: Duration,
}

/// A running worker and the state tied to this process instance.
struct Proc {
    child: Child,
    socket: UnixStream,
    /// The plugin lane's shared arena (sent once, replaced when too small).
    arena: Option<Arena>,
}

#[derive(Default)]
struct LaneState {
    proc: Option<Proc>,
    /// Bumped on every new process: handles from an older one are void.
    generation: u64,
    crashes_in_row: u32,
    last_crash: Option<Instant>,
    plugins: Vec<Result<PluginInfo, String>>,
    started: u64,
    crashed: u64,
}

struct Lane {
    name: &'static str,
    state: Mutex<LaneState>,
}

/// Figures about a lane, for logs, `status` and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneStats {
    pub started: u64,
    pub crashed: u64,
    pub running: bool,
}

/// A model copied into a blob: its address and length in the daemon, the blob, and
/// its sha256.
type SentModel = (usize, usize, Arc<Blob>, String);

/// The daemon's workers.
pub struct WorkerPool {
    exe: PathBuf,
    config: Config,
    plugins: Vec<PathBuf>,
    validation: Lane,
    plugin_lane: Lane,
    /// The last model sent for validation, by address: one model's candidates are
    /// validated one after the other, and copying it once is enough.
    last_model: Mutex<Option<SentModel>>,
}

/// A live call on a lane's worker.
pub struct Conn<'a> {
    proc: &'a mut Proc,
    pub generation: u64,
}

impl Conn<'_> {
    /// Sends `msg` with `fds` and waits up to `timeout` for the answer.
    pub fn call(
        &mut self,
        msg: &ToWorker,
        fds: &[RawFd],
        timeout: Duration,
    ) -> Result<(FromWorker, Vec<OwnedFd>), WorkerError> {
        let child = &mut self.proc.child;
        let mut frame = |e: FrameError| match e {
            FrameError::Closed => WorkerError::Crashed {
                status: process::reap(child, Duration::from_secs(2)),
            },
            FrameError::TimedOut => WorkerError::Hung { after: timeout },
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                WorkerError::Crashed {
                    status: process::reap(child, Duration::from_secs(2)),
                }
            }
            other => WorkerError::Protocol(other.to_string()),
        };
        let socket = &self.proc.socket;
        protocol::send(socket, msg, fds).map_err(&mut frame)?;
        socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| WorkerError::Protocol(e.to_string()))?;
        protocol::recv(socket).map_err(frame)
    }

    /// The lane's shared arena, at least `len` bytes (sent to the worker when new).
    pub fn arena(&mut self, len: usize, timeout: Duration) -> Result<&mut Arena, WorkerError> {
        if self.proc.arena.as_ref().is_none_or(|a| a.len() < len) {
            let size = len.max(1 << 20).next_power_of_two();
            let a = Arena::new(size).map_err(|e| WorkerError::Shm(e.to_string()))?;
            let msg = ToWorker::PluginArena { len: size as u64 };
            match self.call(&msg, &[a.fd().as_raw_fd()], timeout)? {
                (FromWorker::Done, _) => {}
                (FromWorker::Failed(e), _) => return Err(WorkerError::Refused(e)),
                (other, _) => return Err(unexpected(&other)),
            }
            self.proc.arena = Some(a);
        }
        self.proc
            .arena
            .as_mut()
            .ok_or_else(|| WorkerError::Shm("no arena".into()))
    }
}

fn unexpected(msg: &FromWorker) -> WorkerError {
    WorkerError::Protocol(format!("unexpected answer {msg:?}"))
}

/// Where `switchyard-worker` is: the configured path, else next to this executable.
fn worker_exe(config: &Config) -> PathBuf {
    if !config.daemon.worker.path.as_os_str().is_empty() {
        return config.daemon.worker.path.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("switchyard-worker")))
        .unwrap_or_else(|| PathBuf::from("switchyard-worker"))
}

impl WorkerPool {
    /// A pool for `config`; no process starts until the first call.
    pub fn new(config: &Config) -> Arc<WorkerPool> {
        Arc::new(WorkerPool {
            exe: worker_exe(config),
            config: config.clone(),
            plugins: config.daemon.plugins.clone(),
            validation: Lane {
                name: "validation",
                state: Mutex::new(LaneState::default()),
            },
            plugin_lane: Lane {
                name: "plugins",
                state: Mutex::new(LaneState::default()),
            },
            last_model: Mutex::new(None),
        })
    }

    fn timeouts(&self) -> (Duration, Duration, Duration) {
        let w = &self.config.daemon.worker;
        (
            Duration::from_millis(w.start_timeout_ms),
            Duration::from_millis(w.validation_timeout_ms),
            Duration::from_millis(w.call_grace_ms),
        )
    }

    fn start(&self, lane: &Lane, st: &mut LaneState) -> Result<(), WorkerError> {
        let (start_timeout, _, _) = self.timeouts();
        let (child, socket) = process::spawn(&self.exe).map_err(|e| WorkerError::Spawn {
            exe: self.exe.display().to_string(),
            why: e.to_string(),
        })?;
        let pid = child.id();
        st.generation += 1;
        st.started += 1;
        let mut proc = Proc {
            child,
            socket,
            arena: None,
        };
        let hello = ToWorker::Hello {
            config: Box::new(self.config.clone()),
            plugins: self.plugins.clone(),
        };
        let mut conn = Conn {
            proc: &mut proc,
            generation: st.generation,
        };
        match conn.call(&hello, &[], start_timeout) {
            Ok((FromWorker::Ready { plugins, .. }, _)) => {
                info!(
                    lane = lane.name,
                    pid,
                    generation = st.generation,
                    "worker started"
                );
                st.plugins = plugins;
                st.proc = Some(proc);
                Ok(())
            }
            Ok((other, _)) => {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                Err(unexpected(&other))
            }
            Err(e) => {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                Err(e)
            }
        }
    }

    /// Runs `f` on the lane's worker, starting one if needed. A crash or hang ends the
    /// process; the next call starts a fresh one, after a pause that doubles with each
    /// crash in a row (up to 10 s) so a driver that always crashes cannot keep the
    /// daemon busy forking.
    fn with<T>(
        &self,
        lane: &Lane,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, WorkerError>,
    ) -> Result<T, WorkerError> {
        let mut st = lock(&lane.state);
        if st.proc.is_none() {
            if let (Some(last), n) = (st.last_crash, st.crashes_in_row)
                && n >= 3
            {
                let pause =
                    Duration::from_millis(100u64 << (n - 3).min(7)).min(Duration::from_secs(10));
                let since = last.elapsed();
                if since < pause {
                    return Err(WorkerError::Backoff {
                        crashes: n,
                        retry_in: pause - since,
                    });
                }
            }
            if let Err(e) = self.start(lane, &mut st) {
                if e.ends_worker() {
                    st.crashes_in_row += 1;
                    st.crashed += 1;
                    st.last_crash = Some(Instant::now());
                }
                warn!(lane = lane.name, error = %e, "worker did not start");
                return Err(e);
            }
        }
        let generation = st.generation;
        let result = match st.proc.as_mut() {
            Some(proc) => f(&mut Conn { proc, generation }),
            None => Err(WorkerError::Protocol("no worker".into())),
        };
        match &result {
            Err(e) if e.ends_worker() => {
                if let Some(mut proc) = st.proc.take() {
                    let _ = proc.child.kill();
                    let _ = proc.child.wait();
                }
                st.crashes_in_row += 1;
                st.crashed += 1;
                st.last_crash = Some(Instant::now());
                warn!(lane = lane.name, error = %e, "worker lost; the next call starts a new one");
            }
            Ok(_) => st.crashes_in_row = 0,
            Err(_) => {}
        }
        result
    }

    /// Validates one candidate in the validation worker. Blocking; thread-safe.
    pub fn validate(&self, req: &ValidationRequest<'_>) -> Result<ValidationResult, WorkerError> {
        let t = Instant::now();
        let (_, timeout, _) = self.timeouts();
        let (model_blob, model_sha) = self.model_blob(req.model)?;
        let mut b = BlobBuilder::default();
        let inputs: Vec<BlobTensor> = req
            .inputs
            .iter()
            .map(|x| {
                let (offset, len) = b.push(x.data.as_slice());
                BlobTensor {
                    dtype: x.dtype.schema_code(),
                    shape: x.shape.clone(),
                    offset,
                    len,
                }
            })
            .collect();
        let blob = b.finish().map_err(|e| WorkerError::Shm(e.to_string()))?;
        let msg = ToWorker::Validate(Box::new(protocol::ValidateWire {
            model_len: model_blob.len() as u64,
            model_sha,
            delegate: req.delegate.name().to_string(),
            fingerprint: req.delegate.fingerprint(),
            partition: PartitionWire {
                subgraph: req.partition.subgraph,
                nodes: req.partition.nodes.clone(),
                inputs: req.partition.inputs.clone(),
                outputs: req.partition.outputs.clone(),
            },
            timeout_ms: req.timeout.map(|d| d.as_millis() as u64),
            inputs,
            runs: req.runs,
            float_relative: req.tolerance.float_relative,
            half_float_relative: req.tolerance.half_float_relative,
            quantized_steps: req.tolerance.quantized_steps,
            cpu_s: req.cpu_s,
        }));
        let fds = [model_blob.fd().as_raw_fd(), blob.fd().as_raw_fd()];
        let reply = self.with(&self.validation, |c| c.call(&msg, &fds, timeout))?;
        match reply.0 {
            FromWorker::Validated { entry, nan_error } => {
                let mut entry: Entry = serde_json::from_value(entry)
                    .map_err(|e| WorkerError::Protocol(format!("entry: {e}")))?;
                if nan_error {
                    entry.max_error = f64::NAN;
                }
                Ok(ValidationResult {
                    entry,
                    wall: t.elapsed(),
                })
            }
            FromWorker::Failed(e) => Err(WorkerError::Refused(e)),
            other => Err(unexpected(&other)),
        }
    }

    fn model_blob(&self, model: &Model) -> Result<(Arc<Blob>, String), WorkerError> {
        let bytes = model.bytes();
        let key = (bytes.as_ptr() as usize, bytes.len());
        let mut last = lock(&self.last_model);
        if let Some((p, l, blob, sha)) = last.as_ref()
            && (*p, *l) == key
        {
            return Ok((blob.clone(), sha.clone()));
        }
        let blob = Arc::new(Blob::from_bytes(bytes).map_err(|e| WorkerError::Shm(e.to_string()))?);
        let sha = crate::registry::sha256_hex(&sha2::Sha256::digest(bytes).into());
        *last = Some((key.0, key.1, blob.clone(), sha.clone()));
        Ok((blob, sha))
    }

    /// Proxy delegates for the configured plugins that load in a worker. Plugins that
    /// fail there (or crash it) are left out with a warning: the daemon serves on
    /// without them.
    pub fn plugin_delegates(self: &Arc<Self>) -> Vec<Arc<dyn Delegate>> {
        if self.plugins.is_empty() {
            return Vec::new();
        }
        let infos = match self.with(&self.plugin_lane, |_| Ok(())) {
            Ok(()) => lock(&self.plugin_lane.state).plugins.clone(),
            Err(e) => {
                warn!(error = %e, "no plugin worker: plugins are unavailable");
                return Vec::new();
            }
        };
        let mut out: Vec<Arc<dyn Delegate>> = Vec::new();
        for (id, (path, info)) in self.plugins.iter().zip(infos).enumerate() {
            match info {
                Ok(info) => match proxy::PluginProxy::new(self.clone(), id as u32, info) {
                    Ok(p) => out.push(Arc::new(p)),
                    Err(e) => warn!(path = %path.display(), error = %e, "plugin unusable"),
                },
                Err(e) => warn!(path = %path.display(), error = %e, "plugin did not load"),
            }
        }
        out
    }

    /// Runs `f` on the plugin lane's worker.
    pub fn with_plugins<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, WorkerError>,
    ) -> Result<T, WorkerError> {
        self.with(&self.plugin_lane, f)
    }

    /// Like [`WorkerPool::with_plugins`] but gives up at once when the lane is busy.
    pub fn try_with_plugins<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, WorkerError>,
    ) -> Option<Result<T, WorkerError>> {
        let mut st = self.plugin_lane.state.try_lock().ok()?;
        let generation = st.generation;
        let proc = st.proc.as_mut()?;
        Some(f(&mut Conn { proc, generation }))
    }

    /// How long a plugin call may take: its own budget plus the grace.
    pub fn call_timeout(&self, budget: Option<Duration>) -> Duration {
        let (_, validation, grace) = self.timeouts();
        budget.unwrap_or(validation) + grace
    }

    pub fn stats(&self) -> (LaneStats, LaneStats) {
        let s = |l: &Lane| {
            let st = lock(&l.state);
            LaneStats {
                started: st.started,
                crashed: st.crashed,
                running: st.proc.is_some(),
            }
        };
        (s(&self.validation), s(&self.plugin_lane))
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for lane in [&self.validation, &self.plugin_lane] {
            if let Some(mut p) = lock(&lane.state).proc.take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// The scheduler's validator backed by the pool: a candidate that crashes or hangs the
/// worker is recorded as blocked with the reason, so it is never tried again for this
/// driver; a pool that cannot run anything (no worker binary) fails the validation
/// without recording it, so the next load tries again.
pub struct WorkerValidator(pub Arc<WorkerPool>);

impl Validator for WorkerValidator {
    fn validate(
        &self,
        model: Arc<Model>,
        placed: switchyard_interpreter::PlacedPartition,
        inputs: &[Tensor],
        runs: u32,
        tolerance: Tolerance,
        cpu_s: f64,
    ) -> Result<Entry, SchedError> {
        let req = ValidationRequest {
            model: &model,
            delegate: placed.delegate.as_ref(),
            partition: &placed.partition,
            timeout: placed.timeout,
            inputs,
            runs,
            tolerance,
            cpu_s,
        };
        match self.0.validate(&req) {
            Ok(r) => Ok(r.entry),
            Err(e) if e.is_candidates_fault() => {
                warn!(delegate = placed.delegate.name(), error = %e, "validation took the worker down; blocking the candidate");
                Ok(Entry {
                    fingerprint: placed.delegate.fingerprint(),
                    verdict: Verdict::Blocked,
                    reason: format!("validation crashed its worker: {e}"),
                    max_error: 0.0,
                    tolerance: 0.0,
                    delegate_s: 0.0,
                    cpu_s: 0.0,
                    runs: 0,
                    failures: 1,
                    timeouts: u64::from(matches!(e, WorkerError::Hung { .. })),
                })
            }
            Err(e) => Err(SchedError::Invalid(format!("validation worker: {e}"))),
        }
    }
}
