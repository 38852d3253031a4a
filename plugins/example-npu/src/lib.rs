//! An example Switchyard vendor plugin implementing plugin ABI v1 (docs/plugin-abi.md).
//!
//! It drives an imaginary "example NPU" whose vector unit runs float32 ADD, SUB, MUL
//! (same-shape inputs, no broadcasting; fused NONE/RELU/RELU6 activation), RELU and
//! LOGISTIC. The "device" is this library's own loops; what matters is the boundary:
//! everything crossing it is a `#[repr(C)]` struct declared here, independently of the
//! daemon, exactly as a C driver would declare them from the document.
//!
//! Like many real fixed-function units, its vector unit traps on non-finite values:
//! an input holding NaN or infinity makes `execute` fail with `SY_EXECUTE_FAILED`,
//! which the daemon answers by re-running the partition on the CPU.
//!
//! Every `unsafe` block relies on the ABI's contract (pointers valid for the call,
//! calls serialised per plugin); each says which part.
//!
//! For the daemon's crash-containment tests it can also misbehave the way real drivers
//! do, chosen by the environment of the process that loads it:
//! `SWITCHYARD_EXAMPLE_NPU_FAULT=segv|abort|hang` makes `execute` dereference NULL,
//! abort, or never return, after `SWITCHYARD_EXAMPLE_NPU_FAULT_AFTER` (default 0)
//! executions that behave.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const ABI_VERSION: u32 = 1;

type SyStatus = i32;
const SY_OK: SyStatus = 0;
const SY_UNSUPPORTED: SyStatus = 1;
const SY_INVALID_ARGUMENT: SyStatus = 2;
const SY_COMPILE_FAILED: SyStatus = 3;
const SY_EXECUTE_FAILED: SyStatus = 4;
const SY_DEVICE_NPU: u32 = 3;

const DTYPE_FLOAT32: i32 = 0;

const OP_ADD: i32 = 0;
const OP_LOGISTIC: i32 = 14;
const OP_MUL: i32 = 18;
const OP_RELU: i32 = 19;
const OP_SUB: i32 = 41;

const ACT_NONE: i32 = 0;
const ACT_RELU: i32 = 1;
const ACT_RELU6: i32 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyStr {
    ptr: *const u8,
    len: usize,
}

/// Every field is part of the ABI layout, even those this float-only plugin ignores.
#[repr(C)]
#[allow(dead_code)]
pub struct SyTensor {
    dtype: i32,
    rank: u32,
    shape: *const u64,
    quant_count: u32,
    quant_axis: u32,
    quant_scale: *const f32,
    quant_zero_point: *const i64,
    data: *const u8,
    data_len: usize,
}

#[repr(C)]
#[allow(dead_code)]
pub struct SyNode {
    builtin_code: i32,
    version: i32,
    fused_activation: i32,
    inputs: *const i32,
    n_inputs: usize,
    outputs: *const u32,
    n_outputs: usize,
}

#[repr(C)]
pub struct SyGraph {
    tensors: *const SyTensor,
    n_tensors: usize,
    nodes: *const SyNode,
    n_nodes: usize,
    inputs: *const u32,
    n_inputs: usize,
    outputs: *const u32,
    n_outputs: usize,
}

#[repr(C)]
pub struct SyBuffer {
    data: *const u8,
    len: usize,
}

#[repr(C)]
pub struct SyBufferMut {
    data: *mut u8,
    len: usize,
}

#[repr(C)]
pub struct SyPluginApi {
    abi_version: u32,
    struct_size: u32,
    device_kind: u32,
    ctx: *mut c_void,
    name: unsafe extern "C" fn(*mut c_void) -> SyStr,
    fingerprint: unsafe extern "C" fn(*mut c_void) -> SyStr,
    supports: unsafe extern "C" fn(*mut c_void, *const SyGraph, *mut SyStr) -> SyStatus,
    compile:
        unsafe extern "C" fn(*mut c_void, *const SyGraph, *mut *mut c_void, *mut SyStr) -> SyStatus,
    execute: unsafe extern "C" fn(
        *mut c_void,
        *mut c_void,
        *const SyBuffer,
        usize,
        *const SyBufferMut,
        usize,
        u64,
        *mut SyStr,
    ) -> SyStatus,
    destroy: unsafe extern "C" fn(*mut c_void, *mut c_void),
}

/// The table is immutable and `ctx` is unused (NULL), so sharing it is sound.
struct Table(SyPluginApi);
// SAFETY: the table holds only function pointers and a NULL ctx; nothing is mutated.
unsafe impl Sync for Table {}

static TABLE: Table = Table(SyPluginApi {
    abi_version: ABI_VERSION,
    struct_size: std::mem::size_of::<SyPluginApi>() as u32,
    device_kind: SY_DEVICE_NPU,
    ctx: std::ptr::null_mut(),
    name,
    fingerprint,
    supports,
    compile,
    execute,
    destroy,
});

/// The string most recently returned: valid until the next call, as the ABI allows.
static LAST_MESSAGE: Mutex<String> = Mutex::new(String::new());

fn hand_out(s: String) -> SyStr {
    let mut slot = match LAST_MESSAGE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *slot = s;
    SyStr {
        ptr: slot.as_ptr(),
        len: slot.len(),
    }
}

const NAME: &str = "example-npu";
const FINGERPRINT: &str = "example-npu driver 1.0.0 (software vector unit, float32)";

/// Entry point: returns the v1 table whatever the host speaks; the host checks the
/// version and refuses a mismatch with a clear message.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_plugin_entry(_host_abi_version: u32) -> *const SyPluginApi {
    &TABLE.0
}

unsafe extern "C" fn name(_ctx: *mut c_void) -> SyStr {
    SyStr {
        ptr: NAME.as_ptr(),
        len: NAME.len(),
    }
}

unsafe extern "C" fn fingerprint(_ctx: *mut c_void) -> SyStr {
    SyStr {
        ptr: FINGERPRINT.as_ptr(),
        len: FINGERPRINT.len(),
    }
}

/// A slice from an ABI pointer and length (NULL allowed when empty).
///
/// # Safety
/// When `len > 0`, `ptr` must be valid for `len` elements for the returned lifetime.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// What this plugin keeps of a tensor.
#[derive(Clone, Debug)]
struct Tensor {
    dtype: i32,
    shape: Vec<u64>,
    constant: Option<Vec<f32>>,
}

impl Tensor {
    fn elements(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }
}

#[derive(Clone, Debug)]
struct Node {
    op: i32,
    activation: i32,
    inputs: Vec<usize>,
    output: usize,
}

/// The daemon's graph in owned memory.
struct Graph {
    tensors: Vec<Tensor>,
    nodes: Vec<Node>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

/// Copies the daemon's graph into owned memory, checking every index.
///
/// # Safety
/// `g` must point to a graph valid for this call, per the ABI.
unsafe fn read_graph(g: *const SyGraph) -> Result<Graph, String> {
    if g.is_null() {
        return Err("graph is NULL".into());
    }
    // SAFETY: non-null and valid for the call (caller).
    let g = unsafe { &*g };
    // SAFETY: the ABI makes every (pointer, length) pair valid for the call.
    let (raw_tensors, raw_nodes, ins, outs) = unsafe {
        (
            slice(g.tensors, g.n_tensors),
            slice(g.nodes, g.n_nodes),
            slice(g.inputs, g.n_inputs),
            slice(g.outputs, g.n_outputs),
        )
    };
    let mut tensors = Vec::with_capacity(raw_tensors.len());
    for t in raw_tensors {
        // SAFETY: as above, for the tensor's own arrays.
        let shape = unsafe { slice(t.shape, t.rank as usize) }.to_vec();
        let constant = if t.data.is_null() {
            None
        } else {
            // SAFETY: as above.
            let bytes = unsafe { slice(t.data, t.data_len) };
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        };
        tensors.push(Tensor {
            dtype: t.dtype,
            shape,
            constant,
        });
    }
    let index = |i: i64| -> Result<usize, String> {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < tensors.len())
            .ok_or_else(|| format!("tensor index {i} out of range"))
    };
    let mut nodes = Vec::with_capacity(raw_nodes.len());
    for n in raw_nodes {
        // SAFETY: as above.
        let (ni, no) = unsafe { (slice(n.inputs, n.n_inputs), slice(n.outputs, n.n_outputs)) };
        let [output] = no else {
            return Err(format!(
                "op {} has {} outputs, expected 1",
                n.builtin_code,
                no.len()
            ));
        };
        let inputs = ni
            .iter()
            .map(|&i| index(i as i64))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.push(Node {
            op: n.builtin_code,
            activation: n.fused_activation,
            inputs,
            output: index(*output as i64)?,
        });
    }
    let ins = ins
        .iter()
        .map(|&i| index(i as i64))
        .collect::<Result<_, _>>()?;
    let outs = outs
        .iter()
        .map(|&i| index(i as i64))
        .collect::<Result<_, _>>()?;
    Ok(Graph {
        tensors,
        nodes,
        inputs: ins,
        outputs: outs,
    })
}

/// Why this device cannot run `node`, if it cannot.
fn refuse(tensors: &[Tensor], node: &Node) -> Option<String> {
    let arity = match node.op {
        OP_ADD | OP_SUB | OP_MUL => 2,
        OP_RELU | OP_LOGISTIC => 1,
        other => return Some(format!("example-npu does not run builtin op {other}")),
    };
    if node.inputs.len() != arity {
        return Some(format!("op {} needs {arity} inputs", node.op));
    }
    if !matches!(node.activation, ACT_NONE | ACT_RELU | ACT_RELU6) {
        return Some(format!(
            "example-npu fuses only NONE, RELU and RELU6, not activation {}",
            node.activation
        ));
    }
    let out = &tensors[node.output];
    for &i in node.inputs.iter().chain(std::iter::once(&node.output)) {
        let t = &tensors[i];
        if t.dtype != DTYPE_FLOAT32 {
            return Some(format!(
                "example-npu runs float32 only, got dtype code {}",
                t.dtype
            ));
        }
        if t.shape != out.shape {
            return Some(format!(
                "example-npu does not broadcast: shapes {:?} and {:?} differ",
                t.shape, out.shape
            ));
        }
        if let Some(c) = &t.constant
            && c.len() != t.elements()
        {
            return Some(format!(
                "constant holds {} values for shape {:?}",
                c.len(),
                t.shape
            ));
        }
    }
    None
}

unsafe extern "C" fn supports(
    _ctx: *mut c_void,
    node: *const SyGraph,
    reason: *mut SyStr,
) -> SyStatus {
    let set = |s: String| {
        if !reason.is_null() {
            // SAFETY: `reason` is a valid out-pointer for this call (ABI).
            unsafe { *reason = hand_out(s) };
        }
    };
    // SAFETY: `node` is valid for the call (ABI).
    let Graph { tensors, nodes, .. } = match unsafe { read_graph(node) } {
        Ok(g) => g,
        Err(e) => {
            set(e);
            return SY_INVALID_ARGUMENT;
        }
    };
    let [n] = nodes.as_slice() else {
        set(format!("supports expects one node, got {}", nodes.len()));
        return SY_INVALID_ARGUMENT;
    };
    match refuse(&tensors, n) {
        None => SY_OK,
        Some(why) => {
            set(why);
            SY_UNSUPPORTED
        }
    }
}

/// A compiled partition: the program and one workspace buffer per tensor.
struct Compiled {
    tensors: Vec<Tensor>,
    nodes: Vec<Node>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    values: Vec<Vec<f32>>,
}

unsafe extern "C" fn compile(
    _ctx: *mut c_void,
    partition: *const SyGraph,
    handle: *mut *mut c_void,
    message: *mut SyStr,
) -> SyStatus {
    let fail = |status: SyStatus, s: String| {
        if !message.is_null() {
            // SAFETY: valid out-pointer for this call (ABI).
            unsafe { *message = hand_out(s) };
        }
        status
    };
    if handle.is_null() {
        return fail(SY_INVALID_ARGUMENT, "handle out-pointer is NULL".into());
    }
    // SAFETY: `partition` is valid for the call (ABI).
    let Graph {
        tensors,
        nodes,
        inputs,
        outputs,
    } = match unsafe { read_graph(partition) } {
        Ok(g) => g,
        Err(e) => return fail(SY_INVALID_ARGUMENT, e),
    };
    for n in &nodes {
        if let Some(why) = refuse(&tensors, n) {
            return fail(SY_UNSUPPORTED, why);
        }
    }
    if nodes.is_empty() {
        return fail(SY_COMPILE_FAILED, "empty partition".into());
    }
    let values = tensors
        .iter()
        .map(|t| {
            t.constant
                .clone()
                .unwrap_or_else(|| vec![0.0; t.elements()])
        })
        .collect();
    let compiled = Box::new(Compiled {
        tensors,
        nodes,
        inputs,
        outputs,
        values,
    });
    // SAFETY: non-null out-pointer valid for this call.
    unsafe { *handle = Box::into_raw(compiled).cast() };
    SY_OK
}

fn activate(act: i32, x: f32) -> f32 {
    match act {
        ACT_RELU => x.max(0.0),
        ACT_RELU6 => x.clamp(0.0, 6.0),
        _ => x,
    }
}

impl Compiled {
    fn run(&mut self) {
        for n in &self.nodes {
            let mut out = std::mem::take(&mut self.values[n.output]);
            match n.op {
                OP_ADD | OP_SUB | OP_MUL => {
                    let (a, b) = (&self.values[n.inputs[0]], &self.values[n.inputs[1]]);
                    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                        let v = match n.op {
                            OP_ADD => x + y,
                            OP_SUB => x - y,
                            _ => x * y,
                        };
                        *o = activate(n.activation, v);
                    }
                }
                OP_RELU => {
                    for (o, &x) in out.iter_mut().zip(&self.values[n.inputs[0]]) {
                        *o = x.max(0.0);
                    }
                }
                _ => {
                    for (o, &x) in out.iter_mut().zip(&self.values[n.inputs[0]]) {
                        *o = 1.0 / (1.0 + (-x).exp());
                    }
                }
            }
            self.values[n.output] = out;
        }
    }
}

/// Executions so far, for `SWITCHYARD_EXAMPLE_NPU_FAULT_AFTER`.
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

/// The injected fault, if this execution is to have one.
fn injected_fault() {
    let Ok(fault) = std::env::var("SWITCHYARD_EXAMPLE_NPU_FAULT") else {
        return;
    };
    let after: u64 = std::env::var("SWITCHYARD_EXAMPLE_NPU_FAULT_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if EXECUTIONS.fetch_add(1, Ordering::Relaxed) < after {
        return;
    }
    match fault.as_str() {
        // SAFETY: deliberately not: a driver bug that crashes its process.
        "segv" => unsafe { std::ptr::null_mut::<u8>().write_volatile(1) },
        "abort" => std::process::abort(),
        "hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn execute(
    _ctx: *mut c_void,
    handle: *mut c_void,
    inputs: *const SyBuffer,
    n_inputs: usize,
    outputs: *const SyBufferMut,
    n_outputs: usize,
    _timeout_us: u64,
    message: *mut SyStr,
) -> SyStatus {
    let fail = |status: SyStatus, s: String| {
        if !message.is_null() {
            // SAFETY: valid out-pointer for this call (ABI).
            unsafe { *message = hand_out(s) };
        }
        status
    };
    if handle.is_null() {
        return fail(SY_INVALID_ARGUMENT, "NULL handle".into());
    }
    injected_fault();
    // SAFETY: the handle came from `compile` and is not destroyed yet; calls are
    // serialised by the host, so this is the only reference.
    let c = unsafe { &mut *handle.cast::<Compiled>() };
    // SAFETY: arrays valid for the call (ABI).
    let (ins, outs) = unsafe { (slice(inputs, n_inputs), slice(outputs, n_outputs)) };
    if ins.len() != c.inputs.len() || outs.len() != c.outputs.len() {
        return fail(
            SY_INVALID_ARGUMENT,
            format!(
                "compiled for {} inputs and {} outputs, got {} and {}",
                c.inputs.len(),
                c.outputs.len(),
                ins.len(),
                outs.len()
            ),
        );
    }
    for (k, (buf, &t)) in ins.iter().zip(&c.inputs).enumerate() {
        let want = c.tensors[t].elements() * 4;
        if buf.len != want {
            return fail(
                SY_INVALID_ARGUMENT,
                format!("input {k} has {} bytes, expected {want}", buf.len),
            );
        }
        // SAFETY: `buf` is valid for `len` bytes for the call (ABI), length checked.
        let bytes = unsafe { slice(buf.data, buf.len) };
        let dst = &mut c.values[t];
        for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if dst.iter().any(|v| !v.is_finite()) {
            return fail(
                SY_EXECUTE_FAILED,
                format!("vector unit trapped: input {k} holds a non-finite value"),
            );
        }
    }
    c.run();
    for (k, (buf, &t)) in outs.iter().zip(&c.outputs).enumerate() {
        let src = &c.values[t];
        if buf.len != src.len() * 4 || buf.data.is_null() {
            return fail(
                SY_INVALID_ARGUMENT,
                format!(
                    "output {k} has {} bytes, expected {}",
                    buf.len,
                    src.len() * 4
                ),
            );
        }
        // SAFETY: `buf` is a distinct writable buffer of `len` bytes for the call (ABI).
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.data, buf.len) };
        for (d, v) in dst.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    SY_OK
}

unsafe extern "C" fn destroy(_ctx: *mut c_void, handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: the handle came from `Box::into_raw` in `compile` and the host
        // destroys it exactly once.
        drop(unsafe { Box::from_raw(handle.cast::<Compiled>()) });
    }
}
