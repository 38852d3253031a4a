//! Running a compiled partition.
//!
//! A compiled partition lives in a shared, immutable plan and may be executed by many
//! sessions at once, so everything one execution mutates lives in a *resident set*:
//! the buffer slots (inputs, intermediates, outputs), the staging buffer outputs are
//! read back through, a bind group per dispatch, and the command buffer of the next
//! run. Sets are pooled inside the partition (one made at compile, more only while
//! executions overlap, up to the configured limit) and hold nothing that outlives one
//! execution.
//!
//! One run: each input is written into its slot (one upload per input), the set's
//! command buffer — every dispatch in one compute pass, then one copy per output into
//! the staging buffer — is submitted (one queue submit), the staging buffer is mapped
//! once, and the outputs are read. wgpu command buffers are single-use, so the set
//! records the next run's command buffer right after submitting this one, while the GPU
//! works: recording is off the request's path, and no pipeline, bind group or buffer is
//! created after compile.
//!
//! In profiling mode (`switchyard bench --device gpu`) upload, compute and readback are
//! submitted and timed apart, and each dispatch runs in its own compute pass between
//! timestamp queries.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchyard_interpreter::{
    CompiledPartition, DType, DelegateError, ExecReport, TensorView, TensorViewMut,
};

use super::context::{Counters, GpuContext, GpuFailure};
use super::types::{DispatchProfile, PartitionProfile, Precision};

/// How long an execution without a deadline may wait for the device before it is
/// declared hung.
pub(crate) const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

/// What a dispatch binds, in binding order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Binding {
    Slot(usize),
    Const(usize),
    Params(usize),
}

/// One dispatch, ready but for its resident set's buffers.
pub(crate) struct Step {
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<Binding>,
    pub workgroups: [u32; 3],
    pub label: String,
    pub shader: &'static str,
    pub nodes: Vec<usize>,
}

pub(crate) struct InputIo {
    pub slot: usize,
    pub elems: usize,
}

pub(crate) enum OutputIo {
    /// Copied from `slot` into the staging buffer at `offset` (`bytes` long).
    Device {
        slot: usize,
        elems: usize,
        offset: u64,
        bytes: u64,
    },
    /// A folded constant: its value is known since compile.
    Const(Vec<u8>),
}

/// Timestamp queries and their readback, made the first time a set is profiled.
struct ProfileObjects {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
}

/// Everything one execution mutates.
struct ResidentSet {
    slots: Vec<wgpu::Buffer>,
    staging: wgpu::Buffer,
    bind_groups: Vec<wgpu::BindGroup>,
    /// The command buffer of the next run, recorded while the previous one ran.
    next: Option<wgpu::CommandBuffer>,
    /// The staging map of an execution that timed out, still owed by the device.
    pending: Option<mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>>,
    /// Inputs converted to fp16 on the host.
    host: Vec<u8>,
    profile: Option<ProfileObjects>,
}

struct Pool {
    idle: Vec<ResidentSet>,
    created: usize,
}

/// Sums of profiled runs.
#[derive(Default)]
struct ProfileLog {
    runs: u64,
    upload: Duration,
    compute: Duration,
    readback: Duration,
    compute_gpu: Duration,
    steps: Vec<Duration>,
}

/// A compiled partition (shared by every session of the plan that holds it).
pub(crate) struct PartitionCore {
    ctx: Arc<GpuContext>,
    delegate: String,
    precision: Precision,
    nodes: Vec<usize>,
    steps: Vec<Step>,
    slot_sizes: Vec<u64>,
    consts: Vec<wgpu::Buffer>,
    params: Vec<wgpu::Buffer>,
    /// Per partition input: where it is uploaded, or `None` for a value folded at
    /// prepare (uploaded once, with the constants).
    inputs: Vec<Option<InputIo>>,
    outputs: Vec<OutputIo>,
    staging_size: u64,
    pipelines: usize,
    compile_time: Duration,
    pool: Mutex<Pool>,
    freed: Condvar,
    profile: Mutex<ProfileLog>,
}

/// The `CompiledPartition` the delegate hands out.
pub(crate) struct GpuPartition(pub Arc<PartitionCore>);

impl CompiledPartition for GpuPartition {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        self.0.execute(inputs, outputs, deadline)
    }
}

/// A resident set taken from the pool, put back when dropped.
struct Lease<'a> {
    core: &'a PartitionCore,
    set: Option<ResidentSet>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(set) = self.set.take()
            && let Ok(mut pool) = self.core.pool.lock()
        {
            pool.idle.push(set);
            self.core.freed.notify_one();
        }
    }
}

impl Lease<'_> {
    fn set(&mut self) -> Result<&mut ResidentSet, DelegateError> {
        let delegate = self.core.delegate.clone();
        self.set.as_mut().ok_or(DelegateError::Execute {
            delegate,
            what: "resident set missing".into(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PartitionCore {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        ctx: Arc<GpuContext>,
        delegate: String,
        precision: Precision,
        nodes: Vec<usize>,
        steps: Vec<Step>,
        slot_sizes: Vec<u64>,
        consts: Vec<wgpu::Buffer>,
        params: Vec<wgpu::Buffer>,
        inputs: Vec<Option<InputIo>>,
        outputs: Vec<OutputIo>,
        staging_size: u64,
        pipelines: usize,
        started: Instant,
    ) -> Result<GpuPartition, DelegateError> {
        let n_steps = steps.len();
        let mut core = PartitionCore {
            ctx,
            delegate,
            precision,
            nodes,
            steps,
            slot_sizes,
            consts,
            params,
            inputs,
            outputs,
            staging_size,
            pipelines,
            compile_time: Duration::ZERO,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                created: 1,
            }),
            freed: Condvar::new(),
            profile: Mutex::new(ProfileLog {
                steps: vec![Duration::ZERO; n_steps],
                ..Default::default()
            }),
        };
        let mut set = core
            .new_set()
            .map_err(|e| core.failure("resident buffers", e))?;
        set.next = Some(
            core.record(&set)
                .map_err(|e| core.failure("recording", e))?,
        );
        lock(&core.pool).idle.push(set);
        core.compile_time = started.elapsed();
        let core = Arc::new(core);
        if let Ok(mut list) = core.ctx.partitions.lock() {
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&core));
        }
        Ok(GpuPartition(core))
    }

    fn failure(&self, what: &str, e: GpuFailure) -> DelegateError {
        match e {
            GpuFailure::Unavailable(_) | GpuFailure::OutOfMemory(_) => DelegateError::Unavailable {
                delegate: self.delegate.clone(),
                what: format!("{what}: {e}"),
            },
            _ => DelegateError::Execute {
                delegate: self.delegate.clone(),
                what: format!("{what}: {e}"),
            },
        }
    }

    fn exec_err(&self, what: impl Into<String>) -> DelegateError {
        DelegateError::Execute {
            delegate: self.delegate.clone(),
            what: what.into(),
        }
    }

    fn timeout(&self, started: Instant) -> DelegateError {
        DelegateError::Timeout {
            delegate: self.delegate.clone(),
            after: started.elapsed(),
        }
    }

    /// Buffers, staging buffer and bind groups of one resident set.
    fn new_set(&self) -> Result<ResidentSet, GpuFailure> {
        let gpu = &self.ctx;
        let device = &gpu.device;
        let set = gpu.checked(|| {
            let slots: Vec<wgpu::Buffer> = self
                .slot_sizes
                .iter()
                .map(|&size| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("slot"),
                        size: size.max(4),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: self.staging_size.max(super::compile::COPY_ALIGN),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind_groups: Vec<wgpu::BindGroup> = self
                .steps
                .iter()
                .map(|s| {
                    let entries: Vec<wgpu::BindGroupEntry<'_>> = s
                        .bindings
                        .iter()
                        .enumerate()
                        .map(|(i, b)| wgpu::BindGroupEntry {
                            binding: i as u32,
                            resource: match *b {
                                Binding::Slot(k) => slots[k].as_entire_binding(),
                                Binding::Const(k) => self.consts[k].as_entire_binding(),
                                Binding::Params(k) => self.params[k].as_entire_binding(),
                            },
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&s.label),
                        layout: &s.layout,
                        entries: &entries,
                    })
                })
                .collect();
            (slots, staging, bind_groups)
        })?;
        let (slots, staging, bind_groups) = set;
        let c = &gpu.counters;
        Counters::add(&c.buffers_created, slots.len() as u64 + 1);
        Counters::add(&c.bind_groups_created, bind_groups.len() as u64);
        Counters::add(&c.resident_sets_created, 1);
        Ok(ResidentSet {
            slots,
            staging,
            bind_groups,
            next: None,
            pending: None,
            host: Vec::new(),
            profile: None,
        })
    }

    /// The command buffer of one run on `set`: every dispatch in one compute pass, then
    /// the output copies.
    fn record(&self, set: &ResidentSet) -> Result<wgpu::CommandBuffer, GpuFailure> {
        let gpu = &self.ctx;
        let cb = gpu.checked(|| {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("partition"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("partition"),
                    timestamp_writes: None,
                });
                for (s, bg) in self.steps.iter().zip(&set.bind_groups) {
                    pass.set_pipeline(&s.pipeline);
                    pass.set_bind_group(0, bg, &[]);
                    let [x, y, z] = s.workgroups;
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            self.encode_copies(&mut encoder, set);
            encoder.finish()
        })?;
        Counters::add(&gpu.counters.command_buffers_recorded, 1);
        Counters::add(&gpu.counters.dispatches_recorded, self.steps.len() as u64);
        Ok(cb)
    }

    fn encode_copies(&self, encoder: &mut wgpu::CommandEncoder, set: &ResidentSet) {
        for o in &self.outputs {
            if let OutputIo::Device {
                slot,
                offset,
                bytes,
                ..
            } = o
                && *bytes > 0
                && let Some(src) = set.slots.get(*slot)
            {
                encoder.copy_buffer_to_buffer(src, 0, &set.staging, *offset, *bytes);
            }
        }
    }

    fn device_outputs(&self) -> usize {
        self.outputs
            .iter()
            .filter(|o| matches!(o, OutputIo::Device { .. }))
            .count()
    }

    /// A resident set from the pool, a new one while under the limit, or the next one
    /// freed before the deadline.
    fn acquire(&self, deadline: Instant, started: Instant) -> Result<Lease<'_>, DelegateError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(set) = pool.idle.pop() {
                return Ok(Lease {
                    core: self,
                    set: Some(set),
                });
            }
            if pool.created < self.ctx.max_resident_sets {
                pool.created += 1;
                drop(pool);
                return match self.new_set() {
                    Ok(set) => Ok(Lease {
                        core: self,
                        set: Some(set),
                    }),
                    Err(e) => {
                        lock(&self.pool).created -= 1;
                        Err(self.failure("resident buffers", e))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(started));
            }
            pool = match self.freed.wait_timeout(pool, left) {
                Ok((p, _)) => p,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits for `index` until the deadline.
    fn wait(
        &self,
        index: wgpu::SubmissionIndex,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), DelegateError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(left),
        }) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(self.timeout(started)),
            Err(e) => Err(self.exec_err(format!("waiting for the device: {e}"))),
        }
    }

    /// Waits for the map of an execution that timed out, so the staging buffer can be
    /// used again.
    fn settle_pending(
        &self,
        set: &mut ResidentSet,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), DelegateError> {
        let Some(rx) = set.pending.take() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(left),
        });
        match rx.try_recv() {
            Ok(Ok(())) => {
                set.staging.unmap();
                Ok(())
            }
            Ok(Err(_)) | Err(mpsc::TryRecvError::Disconnected) => Ok(()),
            Err(mpsc::TryRecvError::Empty) => {
                set.pending = Some(rx);
                Err(self.timeout(started))
            }
        }
    }

    /// Writes every input into its slot, in the partition's precision.
    fn upload(&self, set: &mut ResidentSet, inputs: &[TensorView<'_>]) -> Result<(), GpuFailure> {
        let gpu = &self.ctx;
        let mut uploaded = 0u64;
        for (t, io) in inputs.iter().zip(&self.inputs) {
            let Some(io) = io else { continue };
            if io.elems == 0 {
                continue;
            }
            let Some(slot) = set.slots.get(io.slot) else {
                return Err(GpuFailure::Internal("input slot missing".into()));
            };
            let bytes: &[u8] = match self.precision {
                Precision::F32 => t.bytes,
                Precision::F16 => {
                    set.host.clear();
                    set.host.extend(t.bytes.chunks_exact(4).flat_map(|c| {
                        half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .to_le_bytes()
                    }));
                    set.host.resize(set.host.len().next_multiple_of(4), 0);
                    &set.host
                }
            };
            gpu.checked(|| gpu.queue.write_buffer(slot, 0, bytes))?;
            Counters::add(&gpu.counters.uploads, 1);
            uploaded += bytes.len() as u64;
        }
        Counters::add(&gpu.counters.upload_bytes, uploaded);
        Ok(())
    }

    /// Maps the staging buffer (after `submit`) and copies every output out.
    fn read_outputs(
        &self,
        set: &mut ResidentSet,
        outputs: &mut [TensorViewMut<'_>],
        index: wgpu::SubmissionIndex,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), DelegateError> {
        let gpu = &self.ctx;
        if self.device_outputs() == 0 {
            self.wait(index, deadline, started)?;
            return self.copy_out(None, outputs);
        }
        let (tx, rx) = mpsc::channel();
        gpu.checked(|| {
            set.staging
                .slice(..)
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                })
        })
        .map_err(|e| self.failure("mapping results", e))?;
        Counters::add(&gpu.counters.maps, 1);
        if let Err(e) = self.wait(index, deadline, started) {
            set.pending = Some(rx);
            return Err(e);
        }
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(match self.ctx.unavailable() {
                    Some(why) => DelegateError::Unavailable {
                        delegate: self.delegate.clone(),
                        what: why,
                    },
                    None => self.exec_err(format!("reading results back: {e}")),
                });
            }
            Err(_) => {
                set.pending = Some(rx);
                return Err(self.timeout(started));
            }
        }
        let copied = match set.staging.slice(..).get_mapped_range() {
            Ok(view) => self.copy_out(Some(&view), outputs),
            Err(e) => Err(self.exec_err(format!("mapping results: {e}"))),
        };
        set.staging.unmap();
        copied
    }

    fn copy_out(
        &self,
        staging: Option<&[u8]>,
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), DelegateError> {
        let gpu = &self.ctx;
        for (out, io) in outputs.iter_mut().zip(&self.outputs) {
            match io {
                OutputIo::Const(data) => out.bytes.copy_from_slice(data),
                OutputIo::Device { elems, offset, .. } => {
                    let view = staging.ok_or_else(|| self.exec_err("no staging buffer"))?;
                    let start = *offset as usize;
                    let len = elems * self.precision.size();
                    let src = view
                        .get(start..start + len)
                        .ok_or_else(|| self.exec_err("staging buffer too small"))?;
                    match self.precision {
                        Precision::F32 => out.bytes.copy_from_slice(src),
                        Precision::F16 => {
                            for (o, c) in out.bytes.chunks_exact_mut(4).zip(src.chunks_exact(2)) {
                                let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                                o.copy_from_slice(&v.to_le_bytes());
                            }
                        }
                    }
                    Counters::add(&gpu.counters.readbacks, 1);
                    Counters::add(&gpu.counters.readback_bytes, len as u64);
                }
            }
        }
        Ok(())
    }

    /// One run: upload, one submit, one map.
    fn run(
        &self,
        set: &mut ResidentSet,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Instant,
        started: Instant,
    ) -> Result<(), DelegateError> {
        let gpu = &self.ctx;
        self.upload(set, inputs)
            .map_err(|e| self.failure("uploading inputs", e))?;
        let cb = match set.next.take() {
            Some(cb) => cb,
            None => self.record(set).map_err(|e| self.failure("recording", e))?,
        };
        let index = gpu
            .checked(|| gpu.queue.submit([cb]))
            .map_err(|e| self.failure("submitting", e))?;
        Counters::add(&gpu.counters.queue_submits, 1);
        // The next run's commands, recorded while the GPU runs this one.
        set.next = Some(self.record(set).map_err(|e| self.failure("recording", e))?);
        self.read_outputs(set, outputs, index, deadline, started)
    }

    /// One profiled run: upload, compute and readback in separate submissions, each
    /// dispatch in its own pass between timestamp queries.
    fn run_profiled(
        &self,
        set: &mut ResidentSet,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Instant,
        started: Instant,
    ) -> Result<(), DelegateError> {
        let gpu = &self.ctx;
        let device = &gpu.device;
        let fail = |what: &str, e: GpuFailure| self.failure(what, e);
        let submit =
            |cbs: Vec<wgpu::CommandBuffer>| -> Result<wgpu::SubmissionIndex, DelegateError> {
                let index = gpu
                    .checked(|| gpu.queue.submit(cbs))
                    .map_err(|e| fail("submitting", e))?;
                Counters::add(&gpu.counters.queue_submits, 1);
                Ok(index)
            };
        // Upload.
        let t0 = Instant::now();
        self.upload(set, inputs)
            .map_err(|e| fail("uploading inputs", e))?;
        let index = submit(Vec::new())?;
        self.wait(index, deadline, started)?;
        let upload = t0.elapsed();
        // Compute, one pass per dispatch.
        let n = self.steps.len();
        let use_timestamps = gpu.timestamps && n > 0 && 2 * n <= 4096;
        if use_timestamps && set.profile.is_none() {
            let objects = gpu
                .checked(|| ProfileObjects {
                    queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("dispatch timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: 2 * n as u32,
                    }),
                    resolve: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps"),
                        size: 16 * n as u64,
                        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    }),
                    read: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps read"),
                        size: 16 * n as u64,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                })
                .map_err(|e| fail("timestamp queries", e))?;
            set.profile = Some(objects);
        }
        let mut step_times = vec![Duration::ZERO; n];
        let t1 = Instant::now();
        let mut compute_gpu = None;
        if let (true, Some(p)) = (use_timestamps, set.profile.as_ref()) {
            let cb = gpu
                .checked(|| {
                    let mut encoder =
                        device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("profile"),
                        });
                    for (i, (s, bg)) in self.steps.iter().zip(&set.bind_groups).enumerate() {
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(&s.label),
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: &p.queries,
                                beginning_of_pass_write_index: Some(2 * i as u32),
                                end_of_pass_write_index: Some(2 * i as u32 + 1),
                            }),
                        });
                        pass.set_pipeline(&s.pipeline);
                        pass.set_bind_group(0, bg, &[]);
                        let [x, y, z] = s.workgroups;
                        pass.dispatch_workgroups(x, y, z);
                    }
                    encoder.resolve_query_set(&p.queries, 0..2 * n as u32, &p.resolve, 0);
                    encoder.copy_buffer_to_buffer(&p.resolve, 0, &p.read, 0, 16 * n as u64);
                    encoder.finish()
                })
                .map_err(|e| fail("recording", e))?;
            let index = submit(vec![cb])?;
            self.wait(index, deadline, started)?;
            let (tx, rx) = mpsc::channel();
            p.read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            let index = submit(Vec::new())?;
            self.wait(index, deadline, started)?;
            if let Ok(Ok(())) = rx.try_recv() {
                if let Ok(view) = p.read.slice(..).get_mapped_range() {
                    let ticks: Vec<u64> = view
                        .chunks_exact(8)
                        .map(|c| {
                            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect();
                    let period = f64::from(gpu.timestamp_period_ns);
                    let mut total = Duration::ZERO;
                    for (i, t) in step_times.iter_mut().enumerate() {
                        let (b, e) = (ticks[2 * i], ticks[2 * i + 1]);
                        *t = Duration::from_nanos((e.saturating_sub(b) as f64 * period) as u64);
                        total += *t;
                    }
                    compute_gpu = Some(total);
                }
                p.read.unmap();
            }
        } else {
            for (i, (s, bg)) in self.steps.iter().zip(&set.bind_groups).enumerate() {
                let ts = Instant::now();
                let cb = gpu
                    .checked(|| {
                        let mut encoder =
                            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                label: Some("profile"),
                            });
                        {
                            let mut pass =
                                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                    label: Some(&s.label),
                                    timestamp_writes: None,
                                });
                            pass.set_pipeline(&s.pipeline);
                            pass.set_bind_group(0, bg, &[]);
                            let [x, y, z] = s.workgroups;
                            pass.dispatch_workgroups(x, y, z);
                        }
                        encoder.finish()
                    })
                    .map_err(|e| fail("recording", e))?;
                let index = submit(vec![cb])?;
                self.wait(index, deadline, started)?;
                step_times[i] = ts.elapsed();
            }
        }
        let compute = t1.elapsed();
        // Readback.
        let t2 = Instant::now();
        let cb = gpu
            .checked(|| {
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("readback"),
                });
                self.encode_copies(&mut encoder, set);
                encoder.finish()
            })
            .map_err(|e| fail("recording", e))?;
        let index = submit(vec![cb])?;
        self.read_outputs(set, outputs, index, deadline, started)?;
        let readback = t2.elapsed();
        let mut log = lock(&self.profile);
        log.runs += 1;
        log.upload += upload;
        log.compute += compute;
        log.readback += readback;
        if let Some(g) = compute_gpu {
            log.compute_gpu += g;
        }
        for (sum, t) in log.steps.iter_mut().zip(step_times) {
            *sum += t;
        }
        Ok(())
    }

    /// What `switchyard bench --device gpu` prints for this partition.
    pub(crate) fn profile(&self) -> PartitionProfile {
        let log = lock(&self.profile);
        let runs = log.runs.max(1) as u32;
        let timestamps = self.ctx.timestamps && log.compute_gpu > Duration::ZERO;
        PartitionProfile {
            nodes: self.nodes.clone(),
            precision: self.precision,
            dispatches: self.steps.len(),
            inputs: self.inputs.iter().flatten().count(),
            outputs: self.outputs.len(),
            pipelines: self.pipelines,
            compile: self.compile_time,
            runs: log.runs,
            upload: log.upload / runs,
            compute: log.compute / runs,
            readback: log.readback / runs,
            compute_gpu: timestamps.then(|| log.compute_gpu / runs),
            timestamps,
            steps: self
                .steps
                .iter()
                .zip(&log.steps)
                .map(|(s, t)| DispatchProfile {
                    label: s.label.clone(),
                    shader: s.shader.to_string(),
                    nodes: s.nodes.clone(),
                    mean: *t / runs,
                })
                .collect(),
        }
    }
}

impl CompiledPartition for PartitionCore {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let started = Instant::now();
        let deadline = deadline.unwrap_or(started + DEFAULT_MAX_WAIT);
        if Instant::now() >= deadline {
            return Err(self.timeout(started));
        }
        let _in_flight = self.ctx.enter().map_err(|e| self.failure("execute", e))?;
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(self.exec_err(format!(
                "expected {} inputs and {} outputs, got {} and {}",
                self.inputs.len(),
                self.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (i, (t, io)) in inputs.iter().zip(&self.inputs).enumerate() {
            let Some(io) = io else { continue };
            if t.dtype != DType::F32 || t.bytes.len() != io.elems * 4 {
                return Err(self.exec_err(format!(
                    "input {i} is {} with {} bytes; compiled for float32 with {}",
                    t.dtype,
                    t.bytes.len(),
                    io.elems * 4
                )));
            }
        }
        for (i, (t, io)) in outputs.iter().zip(&self.outputs).enumerate() {
            let bytes = match io {
                OutputIo::Device { elems, .. } => elems * 4,
                OutputIo::Const(data) => data.len(),
            };
            if t.bytes.len() != bytes {
                return Err(self.exec_err(format!(
                    "output {i} has {} bytes; compiled for {bytes}",
                    t.bytes.len()
                )));
            }
        }
        let mut lease = self.acquire(deadline, started)?;
        let set = lease.set()?;
        self.settle_pending(set, deadline, started)?;
        let result = if self.ctx.profiling.load(Ordering::Relaxed) {
            self.run_profiled(set, inputs, outputs, deadline, started)
        } else {
            self.run(set, inputs, outputs, deadline, started)
        };
        if result.is_ok() {
            Counters::add(&self.ctx.counters.runs, 1);
        } else if let Some(why) = self.ctx.unavailable() {
            return Err(DelegateError::Unavailable {
                delegate: self.delegate.clone(),
                what: why,
            });
        }
        result.map(|()| ExecReport { device_time: None })
    }
}
