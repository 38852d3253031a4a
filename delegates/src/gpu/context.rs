//! The wgpu device behind the delegate: adapter selection and features, the
//! fingerprint, wgpu's error reporting as typed `Result`s, the work counters, and the
//! device's life: blocked after a loss or a driver out-of-memory error, closed and
//! drained at shutdown, waited idle before it is destroyed.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::disk_cache::DiskCache;
use super::pipelines::PipelineCache;
use super::types::{GpuCounters, GpuOptions, ShutdownReport};

/// Runs a future that wgpu's native backends resolve without ever returning `Pending`
/// for long (adapter and device requests, error-scope pops). Spinning here instead of
/// pulling in an executor crate keeps the dependency list short.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// An error the driver or wgpu reported for one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GpuFailure {
    /// Our request was invalid (a bug, or a limit we did not check).
    Validation(String),
    /// The driver ran out of memory: the device is blocked.
    OutOfMemory(String),
    Internal(String),
    /// The device is lost, blocked, or closed for shutdown.
    Unavailable(String),
}

impl std::fmt::Display for GpuFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuFailure::Validation(m) => write!(f, "validation: {m}"),
            GpuFailure::OutOfMemory(m) => write!(f, "driver out of memory: {m}"),
            GpuFailure::Internal(m) => write!(f, "internal: {m}"),
            GpuFailure::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Atomic counterparts of [`GpuCounters`].
#[derive(Default)]
pub(crate) struct Counters {
    pub runs: AtomicU64,
    pub queue_submits: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub readbacks: AtomicU64,
    pub readback_bytes: AtomicU64,
    pub maps: AtomicU64,
    pub command_buffers_recorded: AtomicU64,
    pub dispatches_recorded: AtomicU64,
    pub shader_modules_created: AtomicU64,
    pub pipelines_created: AtomicU64,
    pub bind_groups_created: AtomicU64,
    pub buffers_created: AtomicU64,
    pub resident_sets_created: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> GpuCounters {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GpuCounters {
            runs: r(&self.runs),
            queue_submits: r(&self.queue_submits),
            uploads: r(&self.uploads),
            upload_bytes: r(&self.upload_bytes),
            readbacks: r(&self.readbacks),
            readback_bytes: r(&self.readback_bytes),
            maps: r(&self.maps),
            command_buffers_recorded: r(&self.command_buffers_recorded),
            dispatches_recorded: r(&self.dispatches_recorded),
            shader_modules_created: r(&self.shader_modules_created),
            pipelines_created: r(&self.pipelines_created),
            bind_groups_created: r(&self.bind_groups_created),
            buffers_created: r(&self.buffers_created),
            resident_sets_created: r(&self.resident_sets_created),
        }
    }
}

/// Why the device takes no more work.
#[derive(Default)]
struct Life {
    /// Device lost or driver out of memory: permanent for this process.
    blocked: Option<String>,
    /// Shutdown began.
    closed: bool,
}

/// Everything the delegate holds on to for one device. Field order is drop order:
/// caches and the device go before the adapter and the instance.
pub(crate) struct GpuContext {
    pub pipelines: PipelineCache,
    pub disk_cache: Option<DiskCache>,
    pub counters: Counters,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Subgroup operations are enabled on the device and allowed by the options.
    pub subgroups: bool,
    /// `shader-f16` is enabled on the device and allowed by the options.
    pub f16: bool,
    /// Timestamp queries (per compute pass) are enabled.
    pub timestamps: bool,
    pub timestamp_period_ns: f32,
    pub max_resident_sets: usize,
    /// Set by `switchyard bench --device gpu`: executions run phase by phase with
    /// timestamps and record a profile.
    pub profiling: AtomicBool,
    /// Compiled partitions, for profiles.
    pub partitions: Mutex<Vec<Weak<super::execute::PartitionCore>>>,
    life: Mutex<Life>,
    in_flight: AtomicUsize,
    idle: (Mutex<()>, Condvar),
    _adapter: wgpu::Adapter,
    _instance: wgpu::Instance,
}

impl GpuContext {
    /// Finds a Vulkan adapter (a real GPU first, then a software fallback such as Mesa's
    /// lavapipe) and opens a device with the adapter's own limits and the optional
    /// features the options allow.
    pub fn acquire(options: &GpuOptions) -> Result<GpuContext, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        let instance = wgpu::Instance::new(desc);
        let mut reasons = Vec::new();
        let mut adapter = None;
        for force_fallback_adapter in [false, true] {
            let request = wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter,
                compatible_surface: None,
                ..Default::default()
            };
            match block_on(instance.request_adapter(&request)) {
                Ok(a) => {
                    adapter = Some(a);
                    break;
                }
                Err(e) => reasons.push(format!("fallback={force_fallback_adapter}: {e}")),
            }
        }
        let adapter = adapter.ok_or_else(|| {
            format!(
                "no Vulkan adapter ({}); install a Vulkan driver, e.g. Mesa's lavapipe \
                 (mesa-vulkan-drivers libvulkan1)",
                reasons.join("; ")
            )
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        if options.subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        if options.fp16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if options.pipeline_cache_dir.is_some() {
            wanted |= wgpu::Features::PIPELINE_CACHE;
        }
        wanted |= wgpu::Features::TIMESTAMP_QUERY;
        let features = available & wanted;
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("switchyard-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("adapter {} refused a device: {e}", info.name))?;
        // Errors are caught by error scopes around every operation; anything that still
        // escapes them is logged rather than panicking the daemon.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            tracing::error!(error = %e, "uncaptured wgpu error");
        }));
        let disk_cache = match &options.pipeline_cache_dir {
            Some(dir) if features.contains(wgpu::Features::PIPELINE_CACHE) => {
                DiskCache::open(&device, &info, dir)
            }
            _ => None,
        };
        let timestamp_period_ns = queue.get_timestamp_period();
        Ok(GpuContext {
            pipelines: PipelineCache::default(),
            disk_cache,
            counters: Counters::default(),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            f16: features.contains(wgpu::Features::SHADER_F16),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_period_ns,
            max_resident_sets: options.max_resident_sets.max(1),
            profiling: AtomicBool::new(false),
            partitions: Mutex::new(Vec::new()),
            life: Mutex::new(Life::default()),
            in_flight: AtomicUsize::new(0),
            idle: (Mutex::new(()), Condvar::new()),
            device,
            queue,
            info,
            limits,
            _adapter: adapter,
            _instance: instance,
        })
    }

    /// Registers the callback that blocks the device when the driver loses it. Needs the
    /// context's final `Arc`, so it runs after [`GpuContext::acquire`].
    pub fn watch_device_loss(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.device
            .set_device_lost_callback(move |reason, message| {
                if let Some(ctx) = weak.upgrade() {
                    ctx.block(format!("device lost ({reason:?}): {message}"));
                }
            });
    }

    /// Adapter name, driver, driver version and backend: what the allowlist keys on.
    pub fn fingerprint(&self) -> String {
        format!(
            "{} | {} | {} | {}",
            self.info.name,
            self.info.driver,
            self.info.driver_info,
            self.info.backend.to_str()
        )
    }

    /// Stops all further work on the device, for the rest of the process: every later
    /// `supports` answers no with `reason`, and compile and execute fail fast so their
    /// partitions run on the CPU.
    pub fn block(&self, reason: String) {
        if let Ok(mut life) = self.life.lock()
            && life.blocked.is_none()
        {
            tracing::error!(%reason, "GPU blocked");
            life.blocked = Some(reason);
        }
    }

    /// Why the device takes no work, when it does not.
    pub fn unavailable(&self) -> Option<String> {
        let life = self.life.lock().ok()?;
        if let Some(b) = &life.blocked {
            return Some(format!("GPU blocked: {b}"));
        }
        life.closed
            .then(|| "GPU closed: the daemon is shutting down".to_string())
    }

    /// Counts one execution in flight until the guard drops; refused once the device is
    /// blocked or closed.
    pub fn enter(self: &Arc<Self>) -> Result<InFlight, GpuFailure> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight { ctx: self.clone() };
        match self.unavailable() {
            Some(why) => Err(GpuFailure::Unavailable(why)),
            None => Ok(guard),
        }
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes (wgpu's scopes
    /// are per thread) and returns the first error any of them caught. An out-of-memory
    /// error blocks the device.
    pub fn checked<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuFailure> {
        if let Some(why) = self.unavailable() {
            return Err(GpuFailure::Unavailable(why));
        }
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let errors = [
            block_on(validation.pop()),
            block_on(oom.pop()),
            block_on(internal.pop()),
        ];
        let Some(e) = errors.into_iter().flatten().next() else {
            return Ok(value);
        };
        let failure = match e {
            wgpu::Error::OutOfMemory { .. } => GpuFailure::OutOfMemory(e.to_string()),
            wgpu::Error::Validation { .. } => GpuFailure::Validation(e.to_string()),
            _ => GpuFailure::Internal(e.to_string()),
        };
        self.note(&failure);
        Err(failure)
    }

    /// Blocks the device on the failures that make it unusable.
    pub fn note(&self, failure: &GpuFailure) {
        if let GpuFailure::OutOfMemory(m) = failure {
            self.block(format!("driver out of memory: {m}"));
        }
    }

    pub fn counters(&self) -> GpuCounters {
        self.counters.snapshot()
    }

    /// Waits for the queue to finish everything submitted, up to `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(timeout),
            })
            .is_ok()
    }

    /// Refuses new work, waits (up to `timeout`) for executions in flight and for the
    /// queue to drain, and writes the pipeline cache. The device itself is destroyed
    /// when its last handle drops, which the daemon arranges to happen on its main
    /// thread before it exits.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        if let Ok(mut life) = self.life.lock() {
            life.closed = true;
        }
        let (lock, cvar) = &self.idle;
        if let Ok(mut guard) = lock.lock() {
            while self.in_flight.load(Ordering::Acquire) > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match cvar.wait_timeout(guard, left.min(Duration::from_millis(50))) {
                    Ok((g, _)) => guard = g,
                    Err(_) => break,
                }
            }
        }
        let idle = self.wait_idle(deadline.saturating_duration_since(Instant::now()));
        let pipeline_cache_bytes = self.disk_cache.as_ref().and_then(|c| {
            c.save()
                .map_err(|e| tracing::warn!(error = %e, "pipeline cache"))
                .ok()
        });
        ShutdownReport {
            in_flight: self.in_flight.load(Ordering::Acquire),
            idle,
            pipeline_cache_bytes,
        }
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        // Vulkan forbids destroying a device with work in flight, and wgpu's Vulkan
        // backend does not wait before it does: drain first.
        if self.wait_idle(Duration::from_secs(5)) {
            tracing::info!(adapter = %self.info.name, "GPU device released, idle");
        } else {
            tracing::warn!(adapter = %self.info.name, "GPU still busy when its device was dropped");
        }
    }
}

/// One execution in flight (see [`GpuContext::enter`]).
pub(crate) struct InFlight {
    ctx: Arc<GpuContext>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.ctx.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let (lock, cvar) = &self.ctx.idle;
            let _guard = lock.lock();
            cvar.notify_all();
        }
    }
}
