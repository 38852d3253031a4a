//! Vendor plugins as seen by the daemon: a [`Delegate`] whose every call goes to the
//! plugin lane's worker, which holds the real plugin. Descriptions travel as the
//! plugin ABI's own graph ([`AbiGraph`]), constants in a sealed blob, and tensors of
//! each execution through a shared arena. A worker that crashes or hangs turns into a
//! delegate error, so the partition falls back to the CPU and the request survives;
//! partitions compiled in a worker that has since been replaced are compiled again
//! on their next execution.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_delegates::PluginDelegate;
use switchyard_delegates::plugin::AbiGraph;
use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, ExecReport, NodeSupportCtx, PartitionCtx,
    ProcessorKind, Support, TensorView, TensorViewMut,
};

use super::protocol::{
    AbiGraphWire, AbiNodeWire, AbiTensorWire, DelegateErrorWire, FromWorker, PluginInfo, ToWorker,
};
use super::shmem::{Blob, BlobBuilder};
use super::{Conn, WorkerError, WorkerPool};
use crate::tenant::lock;

/// A plugin hosted by the plugin worker.
pub struct PluginProxy {
    pool: Arc<WorkerPool>,
    id: u32,
    name: String,
    kind: ProcessorKind,
    fingerprint: String,
}

impl PluginProxy {
    pub fn new(pool: Arc<WorkerPool>, id: u32, info: PluginInfo) -> Result<PluginProxy, String> {
        let kind = ProcessorKind::from_name(&info.kind)
            .ok_or_else(|| format!("unknown processor kind `{}`", info.kind))?;
        Ok(PluginProxy {
            pool,
            id,
            name: info.name,
            kind,
            fingerprint: info.fingerprint,
        })
    }
}

/// The graph as a wire message and a blob of its constants (None without any).
fn to_wire(g: &AbiGraph<'_>) -> Result<(AbiGraphWire, Option<Blob>), WorkerError> {
    let mut b = BlobBuilder::default();
    let tensors = g
        .tensors
        .iter()
        .map(|t| AbiTensorWire {
            dtype: t.dtype,
            shape: t.shape.clone(),
            scales: t.scales.clone(),
            zero_points: t.zero_points.clone(),
            axis: t.axis,
            data: t.data.map(|d| b.push(d)),
        })
        .collect();
    let wire = AbiGraphWire {
        tensors,
        nodes: g
            .nodes
            .iter()
            .map(|n| AbiNodeWire {
                code: n.code,
                version: n.version,
                activation: n.activation,
                inputs: n.inputs.clone(),
                outputs: n.outputs.clone(),
            })
            .collect(),
        inputs: g.inputs.clone(),
        outputs: g.outputs.clone(),
    };
    let blob = if b.is_empty() {
        None
    } else {
        Some(b.finish().map_err(|e| WorkerError::Shm(e.to_string()))?)
    };
    Ok((wire, blob))
}

fn from_wire(delegate: &str, e: DelegateErrorWire) -> DelegateError {
    let delegate = delegate.to_string();
    match e {
        DelegateErrorWire::Unsupported(what) => DelegateError::Unsupported { delegate, what },
        DelegateErrorWire::Compile(what) => DelegateError::Compile { delegate, what },
        DelegateErrorWire::Execute(what) => DelegateError::Execute { delegate, what },
        DelegateErrorWire::Timeout { after_us } => DelegateError::Timeout {
            delegate,
            after: Duration::from_micros(after_us),
        },
        DelegateErrorWire::Unavailable(what) => DelegateError::Unavailable { delegate, what },
    }
}

/// A worker failure as the delegate error the executor falls back on.
fn worker_failure(delegate: &str, e: WorkerError) -> DelegateError {
    match e {
        WorkerError::Hung { after } => DelegateError::Timeout {
            delegate: delegate.to_string(),
            after,
        },
        other => DelegateError::Execute {
            delegate: delegate.to_string(),
            what: format!("plugin worker: {other}"),
        },
    }
}

/// Compiles on the worker behind `conn`; returns the handle.
#[allow(clippy::too_many_arguments)]
fn compile_on(
    conn: &mut Conn<'_>,
    name: &str,
    plugin: u32,
    graph: &AbiGraphWire,
    blob: Option<&Blob>,
    input_lens: &[usize],
    output_lens: &[usize],
    timeout: Duration,
) -> Result<Result<u64, DelegateError>, WorkerError> {
    let msg = ToWorker::PluginCompile {
        plugin,
        graph: graph.clone(),
        input_lens: input_lens.iter().map(|&l| l as u64).collect(),
        output_lens: output_lens.iter().map(|&l| l as u64).collect(),
    };
    let fds: Vec<i32> = blob.iter().map(|b| b.fd().as_raw_fd()).collect();
    match conn.call(&msg, &fds, timeout)?.0 {
        FromWorker::Compiled { handle } => Ok(Ok(handle)),
        FromWorker::DelegateFailed(e) => Ok(Err(from_wire(name, e))),
        FromWorker::Failed(e) => Err(WorkerError::Refused(e)),
        other => Err(super::unexpected(&other)),
    }
}

impl Delegate for PluginProxy {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProcessorKind {
        self.kind
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        let g = match PluginDelegate::describe_node(ctx) {
            Ok(g) => g,
            Err(why) => return Support::Unsupported(why),
        };
        let (graph, blob) = match to_wire(&g) {
            Ok(v) => v,
            Err(e) => return Support::Unsupported(format!("{}: {e}", self.name)),
        };
        let msg = ToWorker::PluginSupports {
            plugin: self.id,
            op: ctx.node.op.to_string(),
            graph,
        };
        let fds: Vec<i32> = blob.iter().map(|b| b.fd().as_raw_fd()).collect();
        let timeout = self.pool.call_timeout(Some(Duration::ZERO));
        let timeout = timeout.max(Duration::from_secs(5));
        match self.pool.with_plugins(|c| c.call(&msg, &fds, timeout)) {
            Ok((
                FromWorker::Supported {
                    supported: true, ..
                },
                _,
            )) => Support::Supported,
            Ok((FromWorker::Supported { reason, .. }, _)) => Support::Unsupported(reason),
            Ok((other, _)) => Support::Unsupported(format!(
                "{}: {}",
                self.name,
                match other {
                    FromWorker::Failed(e) => e,
                    o => format!("unexpected answer {o:?}"),
                }
            )),
            Err(e) => Support::Unsupported(format!("{}: plugin worker: {e}", self.name)),
        }
    }

    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let p = PluginDelegate::describe_partition(&self.name, ctx)?;
        let (graph, blob) = to_wire(&p.graph).map_err(|e| worker_failure(&self.name, e))?;
        let timeout = self.pool.call_timeout(None);
        let (handle, generation) = self
            .pool
            .with_plugins(|c| {
                let g = c.generation;
                compile_on(
                    c,
                    &self.name,
                    self.id,
                    &graph,
                    blob.as_ref(),
                    &p.input_lens,
                    &p.output_lens,
                    timeout,
                )
                .map(|r| r.map(|h| (h, g)))
            })
            .map_err(|e| match e {
                WorkerError::Hung { .. } | WorkerError::Crashed { .. } => DelegateError::Compile {
                    delegate: self.name.clone(),
                    what: format!("plugin worker: {e}"),
                },
                other => worker_failure(&self.name, other),
            })??;
        Ok(Box::new(ProxyPartition {
            pool: self.pool.clone(),
            plugin: self.id,
            name: self.name.clone(),
            graph,
            blob,
            input_lens: p.input_lens,
            output_lens: p.output_lens,
            handle: Mutex::new(Some((generation, handle))),
        }))
    }
}

/// A partition compiled in the plugin worker.
struct ProxyPartition {
    pool: Arc<WorkerPool>,
    plugin: u32,
    name: String,
    /// Kept to compile again in a new worker after a crash.
    graph: AbiGraphWire,
    blob: Option<Blob>,
    input_lens: Vec<usize>,
    output_lens: Vec<usize>,
    /// (worker generation, handle in that worker).
    handle: Mutex<Option<(u64, u64)>>,
}

impl CompiledPartition for ProxyPartition {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let fail = |what: String| DelegateError::Execute {
            delegate: self.name.clone(),
            what,
        };
        if inputs.len() != self.input_lens.len() || outputs.len() != self.output_lens.len() {
            return Err(fail(
                "tensor counts differ from the compiled partition".into(),
            ));
        }
        for (v, &l) in inputs.iter().map(|v| v.bytes.len()).zip(&self.input_lens) {
            if v != l {
                return Err(fail(format!("an input has {v} bytes, compiled for {l}")));
            }
        }
        for (v, &l) in outputs.iter().map(|v| v.bytes.len()).zip(&self.output_lens) {
            if v != l {
                return Err(fail(format!("an output has {v} bytes, compiled for {l}")));
            }
        }
        let budget = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if budget.is_some_and(|b| b.is_zero()) {
            return Err(DelegateError::Timeout {
                delegate: self.name.clone(),
                after: Duration::ZERO,
            });
        }
        let timeout = self.pool.call_timeout(budget);
        let compile_timeout = self.pool.call_timeout(None);
        let r = self.pool.with_plugins(|c| {
            let current = *lock(&self.handle);
            let handle = match current {
                Some((g, h)) if g == c.generation => h,
                _ => {
                    let h = match compile_on(
                        c,
                        &self.name,
                        self.plugin,
                        &self.graph,
                        self.blob.as_ref(),
                        &self.input_lens,
                        &self.output_lens,
                        compile_timeout,
                    )? {
                        Ok(h) => h,
                        Err(e) => return Ok(Err(e)),
                    };
                    *lock(&self.handle) = Some((c.generation, h));
                    h
                }
            };
            // Inputs then outputs, each 64-byte aligned, in the shared arena.
            let mut at = 0u64;
            let mut place = |len: usize| {
                let r = (at, len as u64);
                at = (at + len as u64).next_multiple_of(64);
                r
            };
            let ins: Vec<(u64, u64)> = self.input_lens.iter().map(|&l| place(l)).collect();
            let outs: Vec<(u64, u64)> = self.output_lens.iter().map(|&l| place(l)).collect();
            let arena = c.arena(at as usize, compile_timeout)?;
            for (v, &(o, _)) in inputs.iter().zip(&ins) {
                arena.write(o, v.bytes);
            }
            let msg = ToWorker::PluginExecute {
                handle,
                inputs: ins,
                outputs: outs.clone(),
                timeout_us: budget.map_or(0, |b| b.as_micros().max(1) as u64),
            };
            match c.call(&msg, &[], timeout)?.0 {
                FromWorker::Executed { device_time_us } => {
                    let arena = c.arena(at as usize, compile_timeout)?;
                    for (v, &(o, _)) in outputs.iter_mut().zip(&outs) {
                        arena.read(o, v.bytes);
                    }
                    Ok(Ok(ExecReport {
                        device_time: device_time_us.map(Duration::from_micros),
                    }))
                }
                FromWorker::DelegateFailed(e) => Ok(Err(from_wire(&self.name, e))),
                FromWorker::Failed(e) => Err(WorkerError::Refused(e)),
                other => Err(super::unexpected(&other)),
            }
        });
        match r {
            Ok(inner) => inner,
            Err(e) => Err(worker_failure(&self.name, e)),
        }
    }
}

impl Drop for ProxyPartition {
    fn drop(&mut self) {
        let Some((generation, handle)) = *lock(&self.handle) else {
            return;
        };
        // Best effort, never waiting on a busy lane: a handle left behind dies with
        // its worker.
        let msg = ToWorker::PluginDestroy { handle };
        let _ = self.pool.try_with_plugins(|c| {
            if c.generation == generation {
                c.call(&msg, &[], Duration::from_secs(1)).map(|_| ())
            } else {
                Ok(())
            }
        });
    }
}
