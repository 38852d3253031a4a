//! The wgpu device behind the delegate: adapter selection, the fingerprint, and turning
//! wgpu's error reporting (uncaptured errors panic by default) into `Result`s.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::pipelines::PipelineCache;

/// Everything the delegate holds on to for one device.
pub(crate) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub pipelines: PipelineCache,
    /// Set when the device is lost; every later execution fails fast with it.
    lost: Arc<Mutex<Option<String>>>,
}

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

impl GpuContext {
    /// Finds a Vulkan adapter (a real GPU first, then a software fallback such as Mesa's
    /// lavapipe) and opens a device with the adapter's own limits.
    pub fn acquire() -> Result<GpuContext, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        let instance = wgpu::Instance::new(desc);
        let mut reasons = Vec::new();
        let mut adapter = None;
        for force_fallback_adapter in [false, true] {
            let options = wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter,
                compatible_surface: None,
                ..Default::default()
            };
            match block_on(instance.request_adapter(&options)) {
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
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("switchyard-gpu"),
            required_features: wgpu::Features::empty(),
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
        let lost = Arc::new(Mutex::new(None));
        let lost_in_callback = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_in_callback.lock() {
                *slot = Some(format!("device lost ({reason:?}): {message}"));
            }
        });
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            pipelines: PipelineCache::default(),
            lost,
        })
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

    /// Why the device cannot be used any more, if it was lost.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|g| g.clone())
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and returns
    /// the first error any of them caught.
    pub fn checked<T>(&self, f: impl FnOnce() -> T) -> Result<T, String> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let errors = [
            block_on(validation.pop()),
            block_on(oom.pop()),
            block_on(internal.pop()),
        ];
        match errors.into_iter().flatten().next() {
            Some(e) => Err(e.to_string()),
            None => Ok(value),
        }
    }
}
