//! The vendor plugin C ABI, version [`ABI_VERSION`]: the header a driver implements.
//!
//! Read as a C header (docs/plugin-abi.md has the same content in prose). Everything
//! is `#[repr(C)]`, integers have fixed widths, strings are UTF-8 byte ranges (not
//! NUL-terminated), and no Rust type crosses the boundary.
//!
//! Ownership rules, which every pointer below follows:
//! - Everything the daemon passes in (graphs, tensors, shapes, constant data, input
//!   and output buffers) is owned by the daemon and valid only for the duration of
//!   the call that receives it. A plugin that needs constant data after `compile`
//!   returns copies it.
//! - Every [`SyStr`] a plugin returns (name, fingerprint, reasons, error messages) is
//!   owned by the plugin and must stay valid until the plugin's next call on the same
//!   `ctx`; the daemon copies it before making another call.
//! - A compiled handle is owned by the plugin; the daemon passes it to `execute` any
//!   number of times and to `destroy` exactly once, after which it never uses it.
//! - The daemon never calls into one plugin from two threads at once (it holds a lock
//!   per loaded plugin), so a plugin needs no locking of its own for `ctx`.

use std::ffi::c_void;

/// The ABI version this daemon speaks. A plugin whose table reports another version
/// is refused at load time.
pub const ABI_VERSION: u32 = 1;

/// Name of the one symbol a plugin exports:
/// `const SyPluginApi *switchyard_plugin_entry(uint32_t host_abi_version);`
/// It returns a pointer to a table valid for as long as the library stays loaded, or
/// NULL when the plugin cannot serve this host (e.g. its device is absent).
pub const ENTRY_SYMBOL: &str = "switchyard_plugin_entry";

/// Status codes returned by every call.
pub type SyStatus = i32;
/// Success (for `supports`: the node is supported).
pub const SY_OK: SyStatus = 0;
/// `supports`: the node is not supported; the reason string says why. From `compile`:
/// the plugin refuses the partition.
pub const SY_UNSUPPORTED: SyStatus = 1;
/// The daemon passed something the plugin considers malformed.
pub const SY_INVALID_ARGUMENT: SyStatus = 2;
/// Compilation failed (out of device memory, compiler error, ...).
pub const SY_COMPILE_FAILED: SyStatus = 3;
/// Execution failed on the device.
pub const SY_EXECUTE_FAILED: SyStatus = 4;
/// Execution did not finish within `timeout_us`.
pub const SY_TIMEOUT: SyStatus = 5;
/// The device is gone or busy beyond recovery (reset, powered down).
pub const SY_UNAVAILABLE: SyStatus = 6;

/// `device_kind` values.
pub const SY_DEVICE_GPU: u32 = 1;
pub const SY_DEVICE_DSP: u32 = 2;
pub const SY_DEVICE_NPU: u32 = 3;

/// A UTF-8 byte range. `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl SyStr {
    pub const EMPTY: SyStr = SyStr {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// One tensor of a graph handed to `supports` or `compile`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyTensor {
    /// Element type, numbered as the TFLite schema's `TensorType` (0 float32, 2 int32,
    /// 3 uint8, 9 int8, ...).
    pub dtype: i32,
    /// Number of dimensions; `shape` points to `rank` sizes (NULL when `rank` is 0).
    pub rank: u32,
    pub shape: *const u64,
    /// Quantization: `quant_count` scales and zero points (0 = not quantized, 1 = per
    /// tensor, more = per channel along `quant_axis`).
    pub quant_count: u32,
    pub quant_axis: u32,
    pub quant_scale: *const f32,
    pub quant_zero_point: *const i64,
    /// Constant value (weights, biases) as little-endian bytes, or NULL with
    /// `data_len` 0 for tensors whose value arrives at execution.
    pub data: *const u8,
    pub data_len: usize,
}

/// One node. Only ops whose parameters fit here are ever offered to a plugin (ABI v1:
/// ops without options, and elementwise ops with a fused activation).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyNode {
    /// TFLite builtin operator code (0 ADD, 14 LOGISTIC, 18 MUL, 19 RELU, ...).
    pub builtin_code: i32,
    /// Operator version from the model.
    pub version: i32,
    /// Fused activation as the schema's `ActivationFunctionType` (0 none, 1 relu,
    /// 2 relu_n1_to_1, 3 relu6, 4 tanh).
    pub fused_activation: i32,
    /// `n_inputs` indices into the graph's tensor table; -1 marks an omitted optional
    /// input.
    pub inputs: *const i32,
    pub n_inputs: usize,
    /// `n_outputs` indices into the graph's tensor table.
    pub outputs: *const u32,
    pub n_outputs: usize,
}

/// A partition (or, for `supports`, a single node) with its tensors.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyGraph {
    pub tensors: *const SyTensor,
    pub n_tensors: usize,
    /// Nodes in execution order.
    pub nodes: *const SyNode,
    pub n_nodes: usize,
    /// Indices of the tensors `execute` receives as inputs, in order.
    pub inputs: *const u32,
    pub n_inputs: usize,
    /// Indices of the tensors `execute` must fill, in order.
    pub outputs: *const u32,
    pub n_outputs: usize,
}

/// A read-only buffer: `len` bytes at `data`, holding a tensor's elements densely in
/// row-major order. `data` is at least 4-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyBuffer {
    pub data: *const u8,
    pub len: usize,
}

/// A writable buffer, same layout rules as [`SyBuffer`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyBufferMut {
    pub data: *mut u8,
    pub len: usize,
}

/// `SyStr name(void *ctx)`: unique, stable name shown in placements ("acme-npu").
pub type NameFn = unsafe extern "C" fn(ctx: *mut c_void) -> SyStr;

/// `SyStr fingerprint(void *ctx)`: driver, firmware and device identity; a change
/// makes the daemon re-validate every placement on this plugin.
pub type FingerprintFn = unsafe extern "C" fn(ctx: *mut c_void) -> SyStr;

/// `SyStatus supports(void *ctx, const SyGraph *node, SyStr *reason)`: `node` holds
/// exactly one node with all its tensors (constants with data). Returns `SY_OK` when
/// supported, or `SY_UNSUPPORTED` with `*reason` set.
pub type SupportsFn =
    unsafe extern "C" fn(ctx: *mut c_void, node: *const SyGraph, reason: *mut SyStr) -> SyStatus;

/// `SyStatus compile(void *ctx, const SyGraph *partition, void **handle, SyStr *message)`:
/// prepares a partition; on `SY_OK` stores an opaque handle in `*handle`, otherwise
/// sets `*message`.
pub type CompileFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    partition: *const SyGraph,
    handle: *mut *mut c_void,
    message: *mut SyStr,
) -> SyStatus;

/// `SyStatus execute(void *ctx, void *handle, const SyBuffer *inputs, size_t n_inputs,
/// const SyBufferMut *outputs, size_t n_outputs, uint64_t timeout_us, SyStr *message)`:
/// runs a compiled partition. Buffers follow the graph's `inputs`/`outputs` order and
/// sizes. `timeout_us` 0 means no limit; otherwise the plugin must return (with
/// `SY_TIMEOUT`) within it — the daemon cannot interrupt a call in progress.
pub type ExecuteFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    handle: *mut c_void,
    inputs: *const SyBuffer,
    n_inputs: usize,
    outputs: *const SyBufferMut,
    n_outputs: usize,
    timeout_us: u64,
    message: *mut SyStr,
) -> SyStatus;

/// `void destroy(void *ctx, void *handle)`: frees a compiled partition.
pub type DestroyFn = unsafe extern "C" fn(ctx: *mut c_void, handle: *mut c_void);

/// The table `switchyard_plugin_entry` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyPluginApi {
    /// Must equal the daemon's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof(SyPluginApi)` as the plugin was built; must be at least the daemon's.
    pub struct_size: u32,
    /// Which processor the plugin drives: [`SY_DEVICE_GPU`], [`SY_DEVICE_DSP`] or
    /// [`SY_DEVICE_NPU`].
    pub device_kind: u32,
    /// The plugin's state, passed back as `ctx` to every function.
    pub ctx: *mut c_void,
    pub name: NameFn,
    pub fingerprint: FingerprintFn,
    pub supports: SupportsFn,
    pub compile: CompileFn,
    pub execute: ExecuteFn,
    pub destroy: DestroyFn,
}

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn(host_abi_version: u32) -> *const SyPluginApi;
