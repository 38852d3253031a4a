//! libswitchyard.so: the C ABI over the blocking Rust client. `include/switchyard.h`
//! is the contract (written by hand, kept next to this file); every function here has
//! its declaration there.
//!
//! Rules: no panic crosses the ABI (each entry point catches it and reports
//! SY_INTERNAL); every pointer from C is checked for NULL; strings are UTF-8; the last
//! failure's message is kept per thread for `sy_last_error`.
//!
//! Entry points that take pointers are `unsafe extern "C"`: C must pass NULL or what
//! the header says (objects from this library, arrays of the stated length, NUL-
//! terminated UTF-8); `switchyard.h` is where that contract is written down.
#![allow(unsafe_code, non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::time::Duration;

use switchyard_client::blocking::{Client, Model, Session};
use switchyard_client::{
    ClientError, DType, OutputData, Outputs, Priority, Run, ShmPool, ShmSlice, TensorSpec,
};

const SY_OK: i32 = 0;
const SY_INTERNAL: i32 = 13;
const SY_ERR_CONNECT: i32 = 100;
const SY_ERR_IO: i32 = 101;
const SY_ERR_SHM: i32 = 102;
const SY_ERR_ARGUMENT: i32 = 103;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(status: i32, message: impl std::fmt::Display) -> i32 {
    let text = message.to_string().replace('\0', " ");
    LAST_ERROR.with(|l| *l.borrow_mut() = CString::new(text).unwrap_or_default());
    status
}

fn client_error(e: ClientError) -> i32 {
    let status = match &e {
        ClientError::Status(s) => s.code() as i32,
        ClientError::Connect { .. } => SY_ERR_CONNECT,
        ClientError::Io { .. } => SY_ERR_IO,
        ClientError::Shm(_) => SY_ERR_SHM,
        ClientError::Invalid(_) => SY_ERR_ARGUMENT,
    };
    fail(status, e)
}

/// Runs an entry point, turning a panic into SY_INTERNAL.
fn guard(f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SY_OK,
        Ok(Err(status)) => status,
        Err(_) => fail(SY_INTERNAL, "internal error in libswitchyard (panic)"),
    }
}

fn arg<'a, T>(p: *const T, what: &str) -> Result<&'a T, i32> {
    // SAFETY: C passes either NULL or a pointer from this library (or a struct it owns)
    // that is valid for the call.
    unsafe { p.as_ref() }.ok_or_else(|| fail(SY_ERR_ARGUMENT, format!("{what} is NULL")))
}

fn arg_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, i32> {
    // SAFETY: as in `arg`.
    unsafe { p.as_mut() }.ok_or_else(|| fail(SY_ERR_ARGUMENT, format!("{what} is NULL")))
}

fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, i32> {
    if p.is_null() {
        return Err(fail(SY_ERR_ARGUMENT, format!("{what} is NULL")));
    }
    // SAFETY: a NUL-terminated string from C, valid for the call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| fail(SY_ERR_ARGUMENT, format!("{what} is not UTF-8")))
}

fn slice_of<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], i32> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(fail(SY_ERR_ARGUMENT, format!("{what} is NULL")));
    }
    // SAFETY: C promises `n` valid elements at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn put<T>(out: *mut *mut T, value: T) -> Result<(), i32> {
    let out = arg_mut(out, "out")?;
    *out = Box::into_raw(Box::new(value));
    Ok(())
}

fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from Box::into_raw in this library and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }
}

pub struct sy_client {
    inner: Client,
}

struct Info {
    name: CString,
    dtype: i32,
    shape: Vec<u64>,
}

impl Info {
    fn new(t: &TensorSpec) -> Info {
        Info {
            name: CString::new(t.name.replace('\0', " ")).unwrap_or_default(),
            dtype: t.dtype.to_wire() as i32,
            shape: t.shape.clone(),
        }
    }
}

pub struct sy_model {
    inner: Model,
    id: CString,
    inputs: Vec<Info>,
    outputs: Vec<Info>,
}

struct OutTensor {
    dtype: i32,
    shape: Vec<u64>,
    data: Vec<u8>,
    /// For outputs the daemon wrote into a slice: where and how many bytes.
    shm: Option<(*const u8, usize)>,
}

pub struct sy_outputs {
    tensors: Vec<OutTensor>,
    queue_us: u64,
    run_us: u64,
}

pub struct sy_pool {
    inner: ShmPool,
}

pub struct sy_slice {
    inner: ShmSlice,
}

#[repr(C)]
pub struct sy_tensor {
    dtype: i32,
    rank: usize,
    shape: *const u64,
    data: *const c_void,
    len: usize,
    slice: *mut sy_slice,
}

#[repr(C)]
pub struct sy_tensor_info {
    name: *const c_char,
    dtype: i32,
    rank: usize,
    shape: *const u64,
}

#[repr(C)]
pub struct sy_run_options {
    priority: i32,
    deadline_ms: u64,
    allow_resize: i32,
    request_id: *const c_char,
    outputs: *const *mut sy_slice,
}

#[unsafe(no_mangle)]
pub extern "C" fn sy_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn sy_status_name(status: i32) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"OK",
        1 => c"CANCELLED",
        2 => c"UNKNOWN",
        3 => c"INVALID_ARGUMENT",
        4 => c"DEADLINE_EXCEEDED",
        5 => c"NOT_FOUND",
        6 => c"ALREADY_EXISTS",
        7 => c"PERMISSION_DENIED",
        8 => c"RESOURCE_EXHAUSTED",
        9 => c"FAILED_PRECONDITION",
        10 => c"ABORTED",
        11 => c"OUT_OF_RANGE",
        12 => c"UNIMPLEMENTED",
        13 => c"INTERNAL",
        14 => c"UNAVAILABLE",
        15 => c"DATA_LOSS",
        16 => c"UNAUTHENTICATED",
        SY_ERR_CONNECT => c"ERR_CONNECT",
        SY_ERR_IO => c"ERR_IO",
        SY_ERR_SHM => c"ERR_SHM",
        SY_ERR_ARGUMENT => c"ERR_ARGUMENT",
        _ => c"UNKNOWN_STATUS",
    };
    name.as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_connect_unix(path: *const c_char, out: *mut *mut sy_client) -> i32 {
    guard(|| {
        let path = if path.is_null() {
            std::env::var("SWITCHYARD_SOCKET")
                .unwrap_or_else(|_| "/run/switchyard/switchyard.sock".into())
        } else {
            text(path, "path")?.to_owned()
        };
        let inner = Client::connect_unix(path).map_err(client_error)?;
        put(out, sy_client { inner })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_connect_tcp(
    address: *const c_char,
    token: *const c_char,
    out: *mut *mut sy_client,
) -> i32 {
    guard(|| {
        let inner = Client::connect_tcp(text(address, "address")?, text(token, "token")?)
            .map_err(client_error)?;
        put(out, sy_client { inner })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_client_free(client: *mut sy_client) {
    free(client)
}

fn wrap_model(inner: Model) -> sy_model {
    sy_model {
        id: CString::new(inner.id()).unwrap_or_default(),
        inputs: inner.inputs().iter().map(Info::new).collect(),
        outputs: inner.outputs().iter().map(Info::new).collect(),
        inner,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_load_file(
    client: *mut sy_client,
    path: *const c_char,
    out: *mut *mut sy_model,
) -> i32 {
    guard(|| {
        let c = arg(client, "client")?;
        let m = c.inner.load(text(path, "path")?).map_err(client_error)?;
        put(out, wrap_model(m))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_load_bytes(
    client: *mut sy_client,
    name: *const c_char,
    bytes: *const c_void,
    len: usize,
    out: *mut *mut sy_model,
) -> i32 {
    guard(|| {
        let c = arg(client, "client")?;
        let name = if name.is_null() {
            ""
        } else {
            text(name, "name")?
        };
        let data = slice_of(bytes.cast::<u8>(), len, "bytes")?.to_vec();
        let m = c.inner.load_bytes(name, data).map_err(client_error)?;
        put(out, wrap_model(m))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_free(model: *mut sy_model) {
    free(model)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_unload(model: *mut sy_model) -> i32 {
    guard(|| {
        let m = arg(model, "model")?;
        m.inner.clone().unload().map_err(client_error)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_id(model: *const sy_model) -> *const c_char {
    // SAFETY: NULL or a model from this library.
    match unsafe { model.as_ref() } {
        Some(m) => m.id.as_ptr(),
        None => c"".as_ptr(),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_input_count(model: *const sy_model) -> usize {
    // SAFETY: NULL or a model from this library.
    unsafe { model.as_ref() }.map_or(0, |m| m.inputs.len())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_output_count(model: *const sy_model) -> usize {
    // SAFETY: NULL or a model from this library.
    unsafe { model.as_ref() }.map_or(0, |m| m.outputs.len())
}

fn info_at(list: &[Info], index: usize, out: *mut sy_tensor_info) -> Result<(), i32> {
    let i = list.get(index).ok_or_else(|| {
        fail(
            SY_ERR_ARGUMENT,
            format!(
                "index {index} is out of range (the model has {})",
                list.len()
            ),
        )
    })?;
    *arg_mut(out, "out")? = sy_tensor_info {
        name: i.name.as_ptr(),
        dtype: i.dtype,
        rank: i.shape.len(),
        shape: i.shape.as_ptr(),
    };
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_input(
    model: *const sy_model,
    index: usize,
    out: *mut sy_tensor_info,
) -> i32 {
    guard(|| info_at(&arg(model, "model")?.inputs, index, out))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_model_output(
    model: *const sy_model,
    index: usize,
    out: *mut sy_tensor_info,
) -> i32 {
    guard(|| info_at(&arg(model, "model")?.outputs, index, out))
}

fn build_run(
    inputs: &[sy_tensor],
    options: Option<&sy_run_options>,
    n_outputs: usize,
) -> Result<(Run, Vec<*mut sy_slice>), i32> {
    let mut run = Run::new();
    for (i, t) in inputs.iter().enumerate() {
        let dtype = DType::try_from(t.dtype)
            .map_err(|e| fail(SY_ERR_ARGUMENT, format!("input {i}: {e}")))?;
        let shape = slice_of(t.shape, t.rank, "shape")?.to_vec();
        run = if t.slice.is_null() {
            let data = slice_of(t.data.cast::<u8>(), t.len, "data")?.to_vec();
            let tensor = switchyard_client::Tensor::new(dtype, shape, data)
                .map_err(|e| fail(SY_ERR_ARGUMENT, format!("input {i}: {e}")))?;
            run.input(tensor)
        } else {
            let slice = &arg(t.slice, "slice")?.inner;
            run.input_slice(dtype, shape, slice)
        };
    }
    let mut out_slices = Vec::new();
    if let Some(o) = options {
        run = run
            .priority(match o.priority {
                1 => Priority::Realtime,
                3 => Priority::Background,
                _ => Priority::Interactive,
            })
            .resize(o.allow_resize != 0);
        if o.deadline_ms > 0 {
            run = run.deadline(Duration::from_millis(o.deadline_ms));
        }
        if !o.request_id.is_null() {
            run = run.request_id(text(o.request_id, "request_id")?);
        }
        if !o.outputs.is_null() {
            out_slices = slice_of(o.outputs, n_outputs, "outputs")?.to_vec();
            for &s in &out_slices {
                run = run.output_shm(&arg(s, "output slice")?.inner);
            }
        }
    }
    Ok((run, out_slices))
}

fn wrap_outputs(r: Outputs, slices: &[*mut sy_slice]) -> Result<sy_outputs, i32> {
    let mut tensors = Vec::with_capacity(r.tensors.len());
    for (i, o) in r.tensors.into_iter().enumerate() {
        let (data, shm) = match o.data {
            OutputData::Inline(b) => (b, None),
            OutputData::Shm(at) => {
                let s = slices
                    .get(i)
                    .copied()
                    .ok_or_else(|| fail(SY_INTERNAL, "the daemon wrote an unasked-for slice"))?;
                let bytes = arg(s, "output slice")?
                    .inner
                    .prefix(at.length)
                    .map_err(client_error)?;
                (Vec::new(), Some((bytes.as_ptr(), bytes.len())))
            }
        };
        tensors.push(OutTensor {
            dtype: o.dtype.to_wire() as i32,
            shape: o.shape,
            data,
            shm,
        });
    }
    Ok(sy_outputs {
        tensors,
        queue_us: r.timing.queue.as_micros() as u64,
        run_us: r.timing.run.as_micros() as u64,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_run(
    model: *mut sy_model,
    inputs: *const sy_tensor,
    n_inputs: usize,
    options: *const sy_run_options,
    out: *mut *mut sy_outputs,
) -> i32 {
    guard(|| {
        let m = arg(model, "model")?;
        let inputs = slice_of(inputs, n_inputs, "inputs")?;
        // SAFETY: NULL or options C owns for the call.
        let options = unsafe { options.as_ref() };
        let (run, slices) = build_run(inputs, options, m.outputs.len())?;
        let r = m.inner.run(run).map_err(client_error)?;
        put(out, wrap_outputs(r, &slices)?)
    })
}

/// A session on a model: one stream's state in the daemon.
pub struct sy_session {
    inner: Session,
    /// The model's output count, for output slices.
    outputs: usize,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_open(model: *mut sy_model, out: *mut *mut sy_session) -> i32 {
    guard(|| {
        let m = arg(model, "model")?;
        let inner = m.inner.open_session().map_err(client_error)?;
        put(
            out,
            sy_session {
                inner,
                outputs: m.outputs.len(),
            },
        )
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_id(session: *const sy_session) -> u64 {
    // SAFETY: NULL or a session from this library.
    unsafe { session.as_ref() }.map_or(0, |s| s.inner.id())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_run(
    session: *mut sy_session,
    inputs: *const sy_tensor,
    n_inputs: usize,
    options: *const sy_run_options,
    out: *mut *mut sy_outputs,
) -> i32 {
    guard(|| {
        let s = arg(session, "session")?;
        let inputs = slice_of(inputs, n_inputs, "inputs")?;
        // SAFETY: NULL or options C owns for the call.
        let options = unsafe { options.as_ref() };
        let (run, slices) = build_run(inputs, options, s.outputs)?;
        let r = s.inner.run(run).map_err(client_error)?;
        put(out, wrap_outputs(r, &slices)?)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_reset(session: *mut sy_session) -> i32 {
    guard(|| arg(session, "session")?.inner.reset().map_err(client_error))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_close(session: *mut sy_session) -> i32 {
    guard(|| {
        arg(session, "session")?
            .inner
            .clone()
            .close()
            .map_err(client_error)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_session_free(session: *mut sy_session) {
    free(session)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_outputs_count(outputs: *const sy_outputs) -> usize {
    // SAFETY: NULL or outputs from this library.
    unsafe { outputs.as_ref() }.map_or(0, |o| o.tensors.len())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_outputs_get(
    outputs: *const sy_outputs,
    index: usize,
    out: *mut sy_tensor,
) -> i32 {
    guard(|| {
        let o = arg(outputs, "outputs")?;
        let t = o
            .tensors
            .get(index)
            .ok_or_else(|| fail(SY_ERR_ARGUMENT, format!("output {index} is out of range")))?;
        let (data, len) = match t.shm {
            Some((p, n)) => (p, n),
            None => (t.data.as_ptr(), t.data.len()),
        };
        *arg_mut(out, "out")? = sy_tensor {
            dtype: t.dtype,
            rank: t.shape.len(),
            shape: t.shape.as_ptr(),
            data: data.cast(),
            len,
            slice: ptr::null_mut(),
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_outputs_timing(
    outputs: *const sy_outputs,
    queue_us: *mut u64,
    run_us: *mut u64,
) {
    // SAFETY: NULL or pointers C owns for the call.
    unsafe {
        if let Some(o) = outputs.as_ref() {
            if let Some(q) = queue_us.as_mut() {
                *q = o.queue_us;
            }
            if let Some(r) = run_us.as_mut() {
                *r = o.run_us;
            }
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_outputs_free(outputs: *mut sy_outputs) {
    free(outputs)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_pool_create(
    client: *mut sy_client,
    size: usize,
    out: *mut *mut sy_pool,
) -> i32 {
    guard(|| {
        let c = arg(client, "client")?;
        let inner = c.inner.shm_pool(size).map_err(client_error)?;
        put(out, sy_pool { inner })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_pool_free(pool: *mut sy_pool) {
    free(pool)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_pool_alloc(
    pool: *mut sy_pool,
    len: usize,
    out: *mut *mut sy_slice,
) -> i32 {
    guard(|| {
        let p = arg(pool, "pool")?;
        let inner = p.inner.alloc(len).map_err(client_error)?;
        put(out, sy_slice { inner })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_slice_data(slice: *mut sy_slice) -> *mut c_void {
    // SAFETY: NULL or a slice from this library.
    match unsafe { slice.as_mut() } {
        Some(s) => s.inner.as_mut_ptr().cast(),
        None => ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_slice_len(slice: *const sy_slice) -> usize {
    // SAFETY: NULL or a slice from this library.
    unsafe { slice.as_ref() }.map_or(0, |s| s.inner.len())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sy_slice_free(slice: *mut sy_slice) {
    free(slice)
}
