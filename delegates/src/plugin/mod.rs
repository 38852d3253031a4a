//! Vendor plugin delegates: a driver shipped as a shared library (`.so`) implementing
//! the small versioned C ABI of [`abi`], so real DSPs and NPUs plug into the daemon
//! without rebuilding it.
//!
//! [`PluginDelegate::load`] opens the library, looks up `switchyard_plugin_entry`,
//! checks the ABI version and wraps the function table as a [`Delegate`]. Every call
//! into the plugin is serialised by one lock per loaded plugin, copies what the plugin
//! returns before the next call, and turns status codes into [`DelegateError`]s, so a
//! failing plugin costs a CPU fallback, never a request. docs/plugin-abi.md is the
//! vendor-facing description.
//!
//! This is the only module of the crate allowed `unsafe`: calling foreign functions
//! and reading what they return cannot be checked by the compiler. Each block says
//! why it is sound given the ABI's contract.
#![allow(unsafe_code)]

pub mod abi;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, ExecReport, Node, NodeSupportCtx, OpKind,
    OpOptions, PartitionCtx, ProcessorKind, Support, TensorMeta, TensorView, TensorViewMut,
};

use abi::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, SyBuffer, SyBufferMut, SyGraph, SyNode, SyPluginApi,
    SyStatus, SyStr, SyTensor,
};

/// Longest string accepted from a plugin; anything longer is truncated.
const MAX_PLUGIN_STRING: usize = 64 * 1024;

/// The loaded library and its function table, shared by the delegate and every
/// partition compiled on it (so the library outlives all handles).
struct Shared {
    api: SyPluginApi,
    lock: Mutex<()>,
    name: String,
    // Dropped last: unloading the library invalidates every function pointer above.
    _lib: libloading::Library,
}

// SAFETY: the table's `ctx` pointer and the function pointers are only used while
// holding `lock`, so the plugin is never entered from two threads at once, which is
// the ABI's promise to plugins; the library handle itself is thread-safe.
unsafe impl Send for Shared {}
// SAFETY: as above; `&Shared` only gives access to the table through `lock`.
unsafe impl Sync for Shared {}

impl Shared {
    fn enter(&self) -> MutexGuard<'_, ()> {
        match self.lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Copies a plugin-owned string out before the next call can invalidate it.
///
/// # Safety
/// `s` must come from the plugin under the ABI's rules: `ptr` valid for `len` bytes
/// (or NULL / `len` 0) until the plugin's next call, which has not happened yet.
unsafe fn copy_str(s: SyStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    let len = s.len.min(MAX_PLUGIN_STRING);
    // SAFETY: the caller guarantees `ptr` is valid for `len` bytes right now.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// A plugin's status as a delegate error.
fn status_error(
    delegate: &str,
    status: SyStatus,
    message: String,
    started: Instant,
) -> DelegateError {
    let delegate = delegate.to_string();
    let what = if message.is_empty() {
        format!("plugin returned status {status}")
    } else {
        message
    };
    match status {
        abi::SY_UNSUPPORTED => DelegateError::Unsupported { delegate, what },
        abi::SY_COMPILE_FAILED => DelegateError::Compile { delegate, what },
        abi::SY_TIMEOUT => DelegateError::Timeout {
            delegate,
            after: started.elapsed(),
        },
        abi::SY_UNAVAILABLE => DelegateError::Unavailable { delegate, what },
        abi::SY_INVALID_ARGUMENT => DelegateError::Execute {
            delegate,
            what: format!("plugin rejected its arguments: {what}"),
        },
        _ => DelegateError::Execute {
            delegate,
            what: format!("status {status}: {what}"),
        },
    }
}

/// A vendor driver loaded from a shared library.
pub struct PluginDelegate {
    name: String,
    fingerprint: String,
    kind: ProcessorKind,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PluginDelegate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDelegate")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

impl PluginDelegate {
    /// Loads the plugin at `path`, refusing libraries that do not export the entry
    /// symbol or that implement another ABI version.
    pub fn load(path: impl AsRef<Path>) -> Result<PluginDelegate, DelegateError> {
        PluginDelegate::load_as(path.as_ref(), ABI_VERSION)
    }

    /// Loads as a host speaking `host_version`: lets tests prove a version mismatch is
    /// refused without building a second plugin.
    #[doc(hidden)]
    pub fn load_as(path: &Path, host_version: u32) -> Result<PluginDelegate, DelegateError> {
        let shown = path.display().to_string();
        let unavailable = |what: String| DelegateError::Unavailable {
            delegate: format!("plugin {shown}"),
            what,
        };
        // SAFETY: loading a library runs its initialisers; loading a vendor driver is
        // exactly what the administrator configured, and the library is trusted code.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| unavailable(format!("cannot open the library: {e}")))?;
        // SAFETY: the symbol's type is fixed by the ABI (`abi::EntryFn`); a library
        // exporting this name with another signature violates the ABI.
        let entry: EntryFn = unsafe { lib.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| {
                unavailable(format!(
                    "not a switchyard plugin: it does not export `{ENTRY_SYMBOL}` ({e})"
                ))
            })?;
        // SAFETY: calling the entry point with a plain integer, per the ABI.
        let table = unsafe { entry(host_version) };
        if table.is_null() {
            return Err(unavailable(
                "the plugin declined to load (its entry point returned NULL)".into(),
            ));
        }
        // Read only the version first: a table of another version may have another
        // layout, but every version starts with `abi_version: u32`.
        // SAFETY: `table` is non-null and points to a table that starts with a u32.
        let version = unsafe { std::ptr::read(table.cast::<u32>()) };
        if version != host_version {
            return Err(unavailable(format!(
                "the plugin implements plugin ABI v{version}; this daemon speaks ABI \
                 v{host_version}; rebuild the plugin against ABI v{host_version}"
            )));
        }
        // SAFETY: same version, so the table has at least the second field's layout.
        let size = unsafe { std::ptr::read(table.cast::<u32>().add(1)) };
        if (size as usize) < std::mem::size_of::<SyPluginApi>() {
            return Err(unavailable(format!(
                "the plugin's function table is {size} bytes, ABI v{host_version} needs {}",
                std::mem::size_of::<SyPluginApi>()
            )));
        }
        // SAFETY: version and size checked; the table stays valid while `lib` is loaded.
        let api = unsafe { std::ptr::read(table) };
        let kind = match api.device_kind {
            abi::SY_DEVICE_GPU => ProcessorKind::Gpu,
            abi::SY_DEVICE_DSP => ProcessorKind::Dsp,
            abi::SY_DEVICE_NPU => ProcessorKind::Npu,
            other => {
                return Err(unavailable(format!(
                    "unknown device_kind {other} (expected 1 gpu, 2 dsp or 3 npu)"
                )));
            }
        };
        // SAFETY: valid table, no other thread knows the plugin yet; each string is
        // copied before the next call.
        let (plugin_name, fingerprint) = unsafe {
            let n = copy_str((api.name)(api.ctx));
            let f = copy_str((api.fingerprint)(api.ctx));
            (n, f)
        };
        if plugin_name.is_empty() {
            return Err(unavailable("the plugin reports an empty name".into()));
        }
        let name = format!("plugin:{plugin_name}");
        tracing::info!(plugin = %name, path = %shown, "loaded vendor plugin");
        Ok(PluginDelegate {
            shared: Arc::new(Shared {
                api,
                lock: Mutex::new(()),
                name: name.clone(),
                _lib: lib,
            }),
            name,
            fingerprint: format!("{fingerprint}; abi=v{ABI_VERSION}"),
            kind,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Describes one node for `supports` in the ABI's terms: its input and output
    /// tensors (constants with their values) and the node. An error says why the ABI
    /// cannot express the node at all. No plugin call.
    pub fn describe_node<'a>(ctx: &NodeSupportCtx<'a>) -> Result<AbiGraph<'a>, String> {
        let (code, activation) = abi_expressible(ctx.node)?;
        let mut g = OwnedGraph::default();
        let mut inputs = Vec::new();
        for m in &ctx.inputs {
            match m {
                Some(m) => {
                    let i = g.tensors.len();
                    if m.data.is_none() {
                        g.inputs.push(i as u32);
                    }
                    g.tensors.push(OwnedTensor::from_meta(m));
                    inputs.push(i as i32);
                }
                None => inputs.push(-1),
            }
        }
        let mut outputs = Vec::new();
        for m in &ctx.outputs {
            outputs.push(g.tensors.len() as u32);
            g.tensors.push(OwnedTensor::from_meta(m));
        }
        g.outputs = outputs.clone();
        g.nodes.push(OwnedNode {
            code,
            version: ctx.node.version,
            activation,
            inputs,
            outputs,
        });
        Ok(g)
    }

    /// Asks the plugin whether it runs the one-node graph `g` (from
    /// [`PluginDelegate::describe_node`]); `op` names the node's op in refusals.
    pub fn supports_graph(&self, g: &AbiGraph<'_>, op: &str) -> Support {
        let s = &self.shared;
        let (status, reason) = g.with_raw(|raw| {
            let _guard = s.enter();
            let mut reason = SyStr::EMPTY;
            // SAFETY: `raw` and everything it points to live until `with_raw` returns;
            // the lock serialises plugin calls; `reason` is copied before unlocking.
            unsafe {
                let status = (s.api.supports)(s.api.ctx, raw, &mut reason);
                (status, copy_str(reason))
            }
        });
        match status {
            abi::SY_OK => Support::Supported,
            abi::SY_UNSUPPORTED if !reason.is_empty() => Support::Unsupported(reason),
            other => Support::Unsupported(format!(
                "{} refused {op} (status {other}){}",
                self.name,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )),
        }
    }

    /// Describes a partition for `compile` in the ABI's terms: its boundary tensors,
    /// its nodes (folded ones left out) with the constants they read, and the byte sizes
    /// of its inputs and outputs. `delegate` names the plugin in errors. No plugin call.
    pub fn describe_partition<'a>(
        delegate: &str,
        ctx: &PartitionCtx<'a>,
    ) -> Result<AbiPartition<'a>, DelegateError> {
        let err = |what: String| DelegateError::Compile {
            delegate: delegate.to_string(),
            what,
        };
        let sg = ctx.subgraph;
        let mut g = OwnedGraph::default();
        let mut local: HashMap<usize, u32> = HashMap::new();
        let mut add = |g: &mut OwnedGraph<'_>, t: usize| -> Result<u32, DelegateError> {
            if let Some(&i) = local.get(&t) {
                return Ok(i);
            }
            let def = sg
                .tensors
                .get(t)
                .ok_or_else(|| err(format!("tensor {t} does not exist")))?;
            let shape = ctx
                .shapes
                .get(t)
                .ok_or_else(|| err(format!("tensor {t} has no resolved shape")))?;
            let i = g.tensors.len() as u32;
            g.tensors.push(OwnedTensor {
                dtype: def.dtype.schema_code() as i32,
                shape: shape.iter().map(|&d| d as u64).collect(),
                scales: def
                    .quant
                    .as_ref()
                    .map(|q| q.scale.clone())
                    .unwrap_or_default(),
                zero_points: def
                    .quant
                    .as_ref()
                    .map(|q| q.zero_point.clone())
                    .unwrap_or_default(),
                axis: def.quant.as_ref().map_or(0, |q| q.axis as u32),
                data: None,
            });
            local.insert(t, i);
            Ok(i)
        };
        let mut produced: Vec<usize> = Vec::new();
        for &t in &ctx.partition.inputs {
            let i = add(&mut g, t)?;
            g.inputs.push(i);
        }
        for &n in &ctx.partition.nodes {
            let node = sg
                .nodes
                .get(n)
                .ok_or_else(|| err(format!("node {n} does not exist")))?;
            let folded = !node.outputs.is_empty()
                && node
                    .outputs
                    .iter()
                    .all(|&o| (ctx.constant)(o).is_some() && !produced.contains(&o));
            if folded {
                continue;
            }
            let (code, activation) =
                abi_expressible(node).map_err(|why| DelegateError::Unsupported {
                    delegate: delegate.to_string(),
                    what: format!("node {n}: {why}"),
                })?;
            let mut inputs = Vec::new();
            for t in &node.inputs {
                let Some(t) = *t else {
                    inputs.push(-1);
                    continue;
                };
                let i = add(&mut g, t)?;
                let is_input = ctx.partition.inputs.contains(&t) || produced.contains(&t);
                if !is_input {
                    let data = (ctx.constant)(t).ok_or_else(|| {
                        err(format!(
                            "node {n} reads tensor {t}, which is neither a partition input, \
                             a constant, nor produced earlier in the partition"
                        ))
                    })?;
                    g.tensors[i as usize].data = Some(data);
                }
                inputs.push(i as i32);
            }
            let mut outputs = Vec::new();
            for &o in &node.outputs {
                outputs.push(add(&mut g, o)?);
                produced.push(o);
            }
            g.nodes.push(OwnedNode {
                code,
                version: node.version,
                activation,
                inputs,
                outputs,
            });
        }
        let mut output_lens = Vec::new();
        for &t in &ctx.partition.outputs {
            let i = *local
                .get(&t)
                .filter(|_| produced.contains(&t))
                .ok_or_else(|| {
                    err(format!(
                        "partition output {t} is not produced on the device"
                    ))
                })?;
            g.outputs.push(i);
            output_lens.push(byte_len(&g.tensors[i as usize]));
        }
        let input_lens = g
            .inputs
            .iter()
            .map(|&i| byte_len(&g.tensors[i as usize]))
            .collect();
        Ok(AbiPartition {
            graph: g,
            input_lens,
            output_lens,
        })
    }

    /// Compiles a partition described by [`PluginDelegate::describe_partition`] (here
    /// or in another process).
    pub fn compile_graph(&self, p: &AbiPartition<'_>) -> Result<PluginPartition, DelegateError> {
        let err = |what: String| DelegateError::Compile {
            delegate: self.name.clone(),
            what,
        };
        let s = &self.shared;
        let started = Instant::now();
        let (status, handle, message) = p.graph.with_raw(|raw| {
            let _guard = s.enter();
            let mut handle: *mut c_void = std::ptr::null_mut();
            let mut message = SyStr::EMPTY;
            // SAFETY: `raw` and the constant data it points to live until `with_raw`
            // returns (the plugin copies what it keeps); the lock serialises calls;
            // `message` is copied before unlocking.
            unsafe {
                let status = (s.api.compile)(s.api.ctx, raw, &mut handle, &mut message);
                (status, handle, copy_str(message))
            }
        });
        if status != abi::SY_OK {
            return Err(match status_error(&self.name, status, message, started) {
                DelegateError::Execute { delegate, what } => {
                    DelegateError::Compile { delegate, what }
                }
                e => e,
            });
        }
        if handle.is_null() {
            return Err(err(
                "the plugin reported success but returned no handle".into()
            ));
        }
        Ok(PluginPartition {
            shared: self.shared.clone(),
            handle,
            input_lens: p.input_lens.clone(),
            output_lens: p.output_lens.clone(),
        })
    }
}

/// ABI v1 carries an op code and a fused activation, nothing else: nodes with other
/// parameters are never offered, so a plugin cannot run them with the wrong ones.
fn abi_expressible(node: &Node) -> Result<(i32, i32), String> {
    let code = match &node.op {
        OpKind::Builtin(b) => b.code(),
        other => {
            return Err(format!(
                "plugin ABI v1 offers builtin ops only, not {other}"
            ));
        }
    };
    match &node.options {
        OpOptions::None => Ok((code, 0)),
        OpOptions::Activation(a) => Ok((code, a.code() as i32)),
        _ => Err(format!(
            "plugin ABI v1 cannot pass the parameters of {}",
            node.op
        )),
    }
}

/// A graph in the plugin ABI's own terms (what `supports` and `compile` receive), in
/// owned memory apart from constant data, which it borrows. It is also what crosses the
/// process boundary when the plugin runs in a worker process: everything a plugin sees
/// is here, so a proxy can ship it and the worker can call the plugin with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AbiGraph<'a> {
    pub tensors: Vec<AbiTensor<'a>>,
    pub nodes: Vec<AbiNode>,
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AbiTensor<'a> {
    /// TFLite schema type code.
    pub dtype: i32,
    pub shape: Vec<u64>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub axis: u32,
    /// The value of a constant tensor.
    pub data: Option<&'a [u8]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AbiNode {
    pub code: i32,
    pub version: i32,
    pub activation: i32,
    /// Tensor indices into the graph; -1 for an omitted optional input.
    pub inputs: Vec<i32>,
    pub outputs: Vec<u32>,
}

/// A partition described for `compile`: its graph and the byte sizes of the inputs
/// and outputs each execution will pass.
#[derive(Clone, Debug, PartialEq)]
pub struct AbiPartition<'a> {
    pub graph: AbiGraph<'a>,
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
}

type OwnedGraph<'a> = AbiGraph<'a>;
type OwnedTensor<'a> = AbiTensor<'a>;
type OwnedNode = AbiNode;

impl<'a> OwnedTensor<'a> {
    fn from_meta(m: &TensorMeta<'a>) -> OwnedTensor<'a> {
        OwnedTensor {
            dtype: m.dtype.schema_code() as i32,
            shape: m.shape.iter().map(|&d| d as u64).collect(),
            scales: m.quant.map(|q| q.scale.clone()).unwrap_or_default(),
            zero_points: m.quant.map(|q| q.zero_point.clone()).unwrap_or_default(),
            axis: m.quant.map_or(0, |q| q.axis as u32),
            data: m.data,
        }
    }
}

impl OwnedGraph<'_> {
    /// Calls `f` with raw views that point into `self` (valid for the call only).
    fn with_raw<R>(&self, f: impl FnOnce(&SyGraph) -> R) -> R {
        let tensors: Vec<SyTensor> = self
            .tensors
            .iter()
            .map(|t| SyTensor {
                dtype: t.dtype,
                rank: t.shape.len() as u32,
                shape: if t.shape.is_empty() {
                    std::ptr::null()
                } else {
                    t.shape.as_ptr()
                },
                quant_count: t.scales.len().min(t.zero_points.len()) as u32,
                quant_axis: t.axis,
                quant_scale: if t.scales.is_empty() {
                    std::ptr::null()
                } else {
                    t.scales.as_ptr()
                },
                quant_zero_point: if t.zero_points.is_empty() {
                    std::ptr::null()
                } else {
                    t.zero_points.as_ptr()
                },
                data: t.data.map_or(std::ptr::null(), |d| d.as_ptr()),
                data_len: t.data.map_or(0, |d| d.len()),
            })
            .collect();
        let nodes: Vec<SyNode> = self
            .nodes
            .iter()
            .map(|n| SyNode {
                builtin_code: n.code,
                version: n.version,
                fused_activation: n.activation,
                inputs: if n.inputs.is_empty() {
                    std::ptr::null()
                } else {
                    n.inputs.as_ptr()
                },
                n_inputs: n.inputs.len(),
                outputs: n.outputs.as_ptr(),
                n_outputs: n.outputs.len(),
            })
            .collect();
        let graph = SyGraph {
            tensors: tensors.as_ptr(),
            n_tensors: tensors.len(),
            nodes: nodes.as_ptr(),
            n_nodes: nodes.len(),
            inputs: self.inputs.as_ptr(),
            n_inputs: self.inputs.len(),
            outputs: self.outputs.as_ptr(),
            n_outputs: self.outputs.len(),
        };
        f(&graph)
    }
}

impl Delegate for PluginDelegate {
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
        match PluginDelegate::describe_node(ctx) {
            Ok(g) => self.supports_graph(&g, &ctx.node.op.to_string()),
            Err(why) => Support::Unsupported(why),
        }
    }

    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let p = PluginDelegate::describe_partition(&self.name, ctx)?;
        Ok(Box::new(self.compile_graph(&p)?))
    }
}

fn byte_len(t: &OwnedTensor<'_>) -> usize {
    let elems = t.shape.iter().map(|&d| d as usize).product::<usize>();
    let size = switchyard_interpreter::DType::from_schema(t.dtype as i8).map_or(1, |d| d.size());
    elems.saturating_mul(size)
}

/// A partition compiled by a plugin: its opaque handle, destroyed on drop.
pub struct PluginPartition {
    shared: Arc<Shared>,
    handle: *mut c_void,
    input_lens: Vec<usize>,
    output_lens: Vec<usize>,
}

// SAFETY: the handle is only passed to the plugin while holding the plugin's lock, so
// moving or sharing the wrapper between threads never makes the plugin see concurrent
// calls.
unsafe impl Send for PluginPartition {}
// SAFETY: as above.
unsafe impl Sync for PluginPartition {}

impl Drop for PluginPartition {
    fn drop(&mut self) {
        let s = &self.shared;
        let _guard = s.enter();
        // SAFETY: the handle came from this plugin's `compile`, is destroyed exactly
        // once (here), and the library is still loaded (we hold `shared`).
        unsafe { (s.api.destroy)(s.api.ctx, self.handle) };
    }
}

impl PluginPartition {
    /// Runs the partition on raw byte buffers (inputs and outputs in the order of the
    /// partition's boundary tensors, each of the compiled size).
    pub fn execute_bytes(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let s = &self.shared;
        let started = Instant::now();
        let exec_err = |what: String| DelegateError::Execute {
            delegate: s.name.clone(),
            what,
        };
        if inputs.len() != self.input_lens.len() || outputs.len() != self.output_lens.len() {
            return Err(exec_err(format!(
                "expected {} inputs and {} outputs, got {} and {}",
                self.input_lens.len(),
                self.output_lens.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (k, (v, &len)) in inputs.iter().zip(&self.input_lens).enumerate() {
            if v.len() != len {
                return Err(exec_err(format!(
                    "input {k} has {} bytes, compiled for {len}",
                    v.len()
                )));
            }
        }
        for (k, (v, &len)) in outputs.iter().zip(&self.output_lens).enumerate() {
            if v.len() != len {
                return Err(exec_err(format!(
                    "output {k} has {} bytes, compiled for {len}",
                    v.len()
                )));
            }
        }
        let timeout_us = match deadline {
            None => 0,
            Some(d) => {
                let left = d.saturating_duration_since(started);
                if left.is_zero() {
                    return Err(DelegateError::Timeout {
                        delegate: s.name.clone(),
                        after: started.elapsed(),
                    });
                }
                u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1)
            }
        };
        let ins: Vec<SyBuffer> = inputs
            .iter()
            .map(|v| SyBuffer {
                data: v.as_ptr(),
                len: v.len(),
            })
            .collect();
        let outs: Vec<SyBufferMut> = outputs
            .iter_mut()
            .map(|v| SyBufferMut {
                data: v.as_mut_ptr(),
                len: v.len(),
            })
            .collect();
        let (status, message) = {
            let _guard = s.enter();
            let mut message = SyStr::EMPTY;
            // SAFETY: the buffers point into `inputs`/`outputs`, which outlive the call
            // and have the compiled sizes (checked above); output buffers are distinct
            // mutable slices; the handle is live; the lock serialises calls; `message`
            // is copied before unlocking.
            unsafe {
                let status = (s.api.execute)(
                    s.api.ctx,
                    self.handle,
                    ins.as_ptr(),
                    ins.len(),
                    outs.as_ptr(),
                    outs.len(),
                    timeout_us,
                    &mut message,
                );
                (status, copy_str(message))
            }
        };
        if status != abi::SY_OK {
            return Err(status_error(&s.name, status, message, started));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(DelegateError::Timeout {
                delegate: s.name.clone(),
                after: started.elapsed(),
            });
        }
        Ok(ExecReport { device_time: None })
    }
}

impl CompiledPartition for PluginPartition {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let ins: Vec<&[u8]> = inputs.iter().map(|v| v.bytes).collect();
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|v| &mut *v.bytes).collect();
        self.execute_bytes(&ins, &mut outs, deadline)
    }
}

#[cfg(test)]
mod tests;
