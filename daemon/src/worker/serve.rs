//! The worker process's side of the protocol: validation runs of candidate delegates
//! and calls into vendor plugins, for one daemon, until the daemon hangs up.
//!
//! Everything here may crash for reasons outside Switchyard's control (a driver's
//! SIGSEGV, an abort, a hang): that is the point of running it in its own process. A
//! Rust panic is caught per request and answered as a failure, so a bug in one request
//! does not cost the daemon a restart.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::Config;
use switchyard_delegates::plugin::{AbiGraph, AbiNode, AbiPartition, AbiTensor, PluginPartition};
use switchyard_delegates::{EmulatedDelegate, PluginDelegate, gpu};
use switchyard_interpreter::{
    DType, Delegate, DelegateError, Model, Partition, PlacedPartition, ProcessorKind, Tensor,
};
use switchyard_scheduler::allowlist::{Tolerance, validate_partition};
use tracing::{info, warn};

use super::protocol::{
    AbiGraphWire, DelegateErrorWire, FrameError, FromWorker, PluginInfo, ToWorker, ValidateWire,
    recv, send,
};
use super::shmem::{Arena, Mapped};

#[derive(Default)]
struct Worker {
    config: Option<Config>,
    delegates: HashMap<String, Arc<dyn Delegate>>,
    plugins: Vec<Option<Arc<PluginDelegate>>>,
    compiled: HashMap<u64, PluginPartition>,
    next_handle: u64,
    arena: Option<Arena>,
    /// The last model validated, by sha256: one model has several candidates in a row.
    model: Option<(String, Arc<Model>)>,
    gpu_started: bool,
}

/// Serves the daemon on `socket` until it closes the connection. Returns why it ended
/// when that was not an orderly close.
pub fn serve(socket: UnixStream) -> Result<(), String> {
    let mut w = Worker::default();
    loop {
        let (msg, fds): (ToWorker, Vec<OwnedFd>) = match recv(&socket) {
            Ok(m) => m,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(format!("reading from the daemon: {e}")),
        };
        let reply = match catch_unwind(AssertUnwindSafe(|| w.handle(msg, fds))) {
            Ok(r) => r,
            Err(p) => {
                let why = crate::panics::message(p.as_ref());
                warn!(panic = %why, "worker request panicked");
                FromWorker::Failed(format!("the worker panicked: {why}"))
            }
        };
        if let Err(e) = send(&socket, &reply, &[]) {
            return Err(format!("answering the daemon: {e}"));
        }
    }
}

fn delegate_error(e: DelegateError) -> DelegateErrorWire {
    match e {
        DelegateError::Unsupported { what, .. } => DelegateErrorWire::Unsupported(what),
        DelegateError::Compile { what, .. } => DelegateErrorWire::Compile(what),
        DelegateError::Execute { what, .. } => DelegateErrorWire::Execute(what),
        DelegateError::Timeout { after, .. } => DelegateErrorWire::Timeout {
            after_us: after.as_micros() as u64,
        },
        DelegateError::Unavailable { what, .. } => DelegateErrorWire::Unavailable(what),
    }
}

fn kind_name(k: ProcessorKind) -> String {
    k.name().to_string()
}

/// A wire graph as the ABI graph, its constants borrowed from `blob`.
fn graph_from_wire<'a>(g: &AbiGraphWire, blob: Option<&'a Mapped>) -> Result<AbiGraph<'a>, String> {
    let mut tensors = Vec::with_capacity(g.tensors.len());
    for (i, t) in g.tensors.iter().enumerate() {
        let data = match t.data {
            None => None,
            Some((off, len)) => Some(
                blob.and_then(|b| b.get(off, len))
                    .ok_or_else(|| format!("tensor {i}: its data lies outside the blob"))?,
            ),
        };
        tensors.push(AbiTensor {
            dtype: t.dtype,
            shape: t.shape.clone(),
            scales: t.scales.clone(),
            zero_points: t.zero_points.clone(),
            axis: t.axis,
            data,
        });
    }
    let n = tensors.len();
    let in_range = |i: u32| (i as usize) < n;
    let nodes: Vec<AbiNode> = g
        .nodes
        .iter()
        .map(|x| AbiNode {
            code: x.code,
            version: x.version,
            activation: x.activation,
            inputs: x.inputs.clone(),
            outputs: x.outputs.clone(),
        })
        .collect();
    // The plugin indexes tensors with these: out-of-range ones never reach it.
    let nodes_ok = nodes.iter().all(|x| {
        x.inputs
            .iter()
            .all(|&i| i == -1 || (i >= 0 && in_range(i as u32)))
            && x.outputs.iter().all(|&o| in_range(o))
    });
    if !nodes_ok
        || !g.inputs.iter().all(|&i| in_range(i))
        || !g.outputs.iter().all(|&i| in_range(i))
    {
        return Err("the graph names tensors it does not have".into());
    }
    Ok(AbiGraph {
        tensors,
        nodes,
        inputs: g.inputs.clone(),
        outputs: g.outputs.clone(),
    })
}

impl Worker {
    fn handle(&mut self, msg: ToWorker, mut fds: Vec<OwnedFd>) -> FromWorker {
        match msg {
            ToWorker::Hello { config, plugins } => self.hello(*config, plugins),
            ToWorker::Validate(v) => match self.validate(*v, fds) {
                Ok((entry, nan_error)) => FromWorker::Validated { entry, nan_error },
                Err(e) => FromWorker::Failed(e),
            },
            ToWorker::PluginSupports { plugin, op, graph } => {
                let r = (|| {
                    let p = self.plugin(plugin)?;
                    let blob = match fds.pop() {
                        Some(fd) => Some(map_whole(&fd)?),
                        None => None,
                    };
                    let g = graph_from_wire(&graph, blob.as_ref())?;
                    Ok::<_, String>(p.supports_graph(&g, &op))
                })();
                match r {
                    Ok(s) => FromWorker::Supported {
                        supported: s.is_supported(),
                        reason: match s {
                            switchyard_interpreter::Support::Unsupported(r) => r,
                            switchyard_interpreter::Support::Supported => String::new(),
                        },
                    },
                    Err(e) => FromWorker::Failed(e),
                }
            }
            ToWorker::PluginCompile {
                plugin,
                graph,
                input_lens,
                output_lens,
            } => {
                let r = (|| {
                    let p = self.plugin(plugin)?;
                    let blob = match fds.pop() {
                        Some(fd) => Some(map_whole(&fd)?),
                        None => None,
                    };
                    let g = graph_from_wire(&graph, blob.as_ref())?;
                    let part = AbiPartition {
                        graph: g,
                        input_lens: input_lens.iter().map(|&l| l as usize).collect(),
                        output_lens: output_lens.iter().map(|&l| l as usize).collect(),
                    };
                    Ok::<_, String>(p.compile_graph(&part))
                })();
                match r {
                    Ok(Ok(compiled)) => {
                        self.next_handle += 1;
                        self.compiled.insert(self.next_handle, compiled);
                        FromWorker::Compiled {
                            handle: self.next_handle,
                        }
                    }
                    Ok(Err(e)) => FromWorker::DelegateFailed(delegate_error(e)),
                    Err(e) => FromWorker::Failed(e),
                }
            }
            ToWorker::PluginArena { len } => {
                let Some(fd) = fds.pop() else {
                    return FromWorker::Failed("an arena needs its memfd".into());
                };
                match Arena::from_fd(fd, len) {
                    Ok(a) => {
                        self.arena = Some(a);
                        FromWorker::Done
                    }
                    Err(e) => FromWorker::Failed(format!("cannot map the arena: {e}")),
                }
            }
            ToWorker::PluginExecute {
                handle,
                inputs,
                outputs,
                timeout_us,
            } => self.execute(handle, &inputs, &outputs, timeout_us),
            ToWorker::PluginDestroy { handle } => {
                self.compiled.remove(&handle);
                FromWorker::Done
            }
        }
    }

    fn hello(&mut self, config: Config, plugins: Vec<std::path::PathBuf>) -> FromWorker {
        // The same emulated devices as the daemon, with the same hang limit.
        let hang_limit =
            Duration::from_millis(config.scheduler.partition_timeout_ms.saturating_mul(2));
        for d in EmulatedDelegate::from_profiles(&config.devices) {
            let d: Arc<dyn Delegate> = Arc::new(d.with_hang_limit(hang_limit));
            self.delegates.insert(d.name().to_string(), d);
        }
        let mut infos = Vec::new();
        for path in &plugins {
            match PluginDelegate::load(path) {
                Ok(p) => {
                    let p = Arc::new(p);
                    infos.push(Ok(PluginInfo {
                        name: p.name().to_string(),
                        kind: kind_name(p.kind()),
                        fingerprint: p.fingerprint(),
                    }));
                    self.delegates.insert(p.name().to_string(), p.clone());
                    self.plugins.push(Some(p));
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "plugin did not load in the worker");
                    infos.push(Err(e.to_string()));
                    self.plugins.push(None);
                }
            }
        }
        info!(
            delegates = self.delegates.len(),
            plugins = plugins.len(),
            "worker ready"
        );
        self.config = Some(config);
        FromWorker::Ready {
            pid: std::process::id(),
            plugins: infos,
        }
    }

    fn plugin(&self, id: u32) -> Result<Arc<PluginDelegate>, String> {
        self.plugins
            .get(id as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("plugin {id} is not open in this worker"))
    }

    /// The delegate named `name`; the GPU is started on first use (it is slow to
    /// start and most validations never need it).
    fn delegate(&mut self, name: &str) -> Result<Arc<dyn Delegate>, String> {
        if let Some(d) = self.delegates.get(name) {
            return Ok(d.clone());
        }
        if !self.gpu_started
            && let Some(cfg) = &self.config
        {
            self.gpu_started = true;
            // The daemon keeps the pipeline cache; validation compiles afresh.
            for g in gpu::from_config(cfg, false) {
                let g: Arc<dyn Delegate> = g;
                self.delegates.insert(g.name().to_string(), g);
            }
            if let Some(d) = self.delegates.get(name) {
                return Ok(d.clone());
            }
        }
        Err(format!("the worker has no delegate named `{name}`"))
    }

    fn validate(
        &mut self,
        v: ValidateWire,
        fds: Vec<OwnedFd>,
    ) -> Result<(serde_json::Value, bool), String> {
        let [model_fd, blob_fd]: [OwnedFd; 2] = fds
            .try_into()
            .map_err(|_| "a validation needs the model and the inputs".to_string())?;
        let model = match &self.model {
            Some((sha, m)) if !v.model_sha.is_empty() && *sha == v.model_sha => m.clone(),
            _ => {
                let map = Mapped::new(&model_fd, v.model_len).map_err(|e| e.to_string())?;
                let bytes = map
                    .get(0, v.model_len)
                    .ok_or("the model memfd is shorter than announced")?;
                let m = Arc::new(Model::from_bytes(bytes).map_err(|e| e.to_string())?);
                self.model = Some((v.model_sha.clone(), m.clone()));
                m
            }
        };
        drop(model_fd);
        let blob = map_whole(&blob_fd)?;
        let mut inputs = Vec::with_capacity(v.inputs.len());
        for (i, t) in v.inputs.iter().enumerate() {
            let dtype = DType::from_schema(t.dtype)
                .ok_or_else(|| format!("input {i}: type {}", t.dtype))?;
            let bytes = blob
                .get(t.offset, t.len)
                .ok_or_else(|| format!("input {i} lies outside the blob"))?;
            inputs.push(
                Tensor::from_bytes(dtype, t.shape.clone(), bytes)
                    .map_err(|e| format!("input {i}: {e}"))?,
            );
        }
        let delegate = self.delegate(&v.delegate)?;
        if delegate.fingerprint() != v.fingerprint {
            return Err(format!(
                "`{}` here is `{}`, the daemon asked for `{}`",
                v.delegate,
                delegate.fingerprint(),
                v.fingerprint
            ));
        }
        let sg = model
            .subgraphs
            .get(v.partition.subgraph)
            .ok_or("no such subgraph")?;
        let n = sg.nodes.len();
        let t = sg.tensors.len();
        if v.partition.nodes.iter().any(|&x| x >= n)
            || v.partition
                .inputs
                .iter()
                .chain(&v.partition.outputs)
                .any(|&x| x >= t)
        {
            return Err("the partition names nodes or tensors the model does not have".into());
        }
        let placed = PlacedPartition {
            partition: Partition {
                subgraph: v.partition.subgraph,
                nodes: v.partition.nodes,
                inputs: v.partition.inputs,
                outputs: v.partition.outputs,
            },
            delegate,
            timeout: v.timeout_ms.map(Duration::from_millis),
        };
        let tolerance = Tolerance {
            float_relative: v.float_relative,
            half_float_relative: v.half_float_relative,
            quantized_steps: v.quantized_steps,
        };
        let mut entry = validate_partition(model, placed, &inputs, v.runs, tolerance, v.cpu_s)
            .map_err(|e| e.to_string())?;
        let nan_error = entry.max_error.is_nan();
        if nan_error {
            entry.max_error = 0.0;
        }
        let value = serde_json::to_value(&entry).map_err(|e| e.to_string())?;
        Ok((value, nan_error))
    }

    fn execute(
        &mut self,
        handle: u64,
        inputs: &[(u64, u64)],
        outputs: &[(u64, u64)],
        timeout_us: u64,
    ) -> FromWorker {
        let Some(part) = self.compiled.get(&handle) else {
            return FromWorker::Failed(format!("no compiled partition {handle}"));
        };
        let Some(arena) = self.arena.as_mut() else {
            return FromWorker::Failed("no arena".into());
        };
        let Some((ins, mut outs)) = arena.io_slices(inputs, outputs) else {
            return FromWorker::Failed("tensor ranges lie outside the arena or overlap".into());
        };
        let deadline = (timeout_us > 0).then(|| Instant::now() + Duration::from_micros(timeout_us));
        match part.execute_bytes(&ins, &mut outs, deadline) {
            Ok(r) => FromWorker::Executed {
                device_time_us: r.device_time.map(|d| d.as_micros() as u64),
            },
            Err(e) => FromWorker::DelegateFailed(delegate_error(e)),
        }
    }
}

/// Maps a received blob whole (its size from the file).
fn map_whole(fd: &OwnedFd) -> Result<Mapped, String> {
    let len = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| e.to_string())?
        .len();
    Mapped::new(fd, len).map_err(|e| e.to_string())
}

/// Entry point of the `switchyard-worker` binary once it has its socket.
pub fn main_with_socket(socket: UnixStream) -> std::process::ExitCode {
    let fd = socket.as_raw_fd();
    match serve(socket) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            warn!(fd, error = %e, "worker ending");
            std::process::ExitCode::FAILURE
        }
    }
}
