//! Run channels: the fast path for runs whose tensors already live in shared memory.
//!
//! A gRPC run costs HTTP/2 framing, protobuf and several thread handoffs per request;
//! on a VM whose blocking wakeups cost tens of microseconds that is most of a small
//! model's latency. A run channel replaces the transport, not the scheduling: the client
//! writes a fixed-size request frame into a one-page memfd the daemon created, bumps a
//! sequence word and (only when the daemon sleeps) rings an eventfd. A thread of the
//! channel copies the frame out once, decodes it ([`switchyard_proto::fastpath`]),
//! turns it into the `RunRequest` the same request would be over gRPC and hands it to
//! [`crate::service::run_request`], so checks (regions, ranges, dtypes, shapes, tenant
//! ownership), admission, the arbiter, budgets, tenant accounting and metrics are the
//! gRPC path's own. The answer goes back the same way.
//!
//! Both sides spin a bounded time (`spin_us`, capped at [`MAX_SPIN_US`], 0 disables) on
//! the sequence word before sleeping on their eventfd, so back-to-back requests skip the
//! blocking wakeup; an idle channel costs a sleeping thread, never a core.
//!
//! Lifetime: `OpenRunChannel` (gRPC) reserves a channel and answers with an id and a
//! random ticket; the client claims it on a side-socket connection (crate::shm), which
//! answers with the memfd and the two eventfds. The channel lives as long as that
//! connection: when the client exits or is killed, the connection closes, the request
//! in flight is cancelled (its run stops at the next node) and the thread exits, which
//! frees the tenant's channel slot. Claims not made within [`CLAIM_WITHIN`] lapse.
//!
//! The client owns the other mapping and may write anything at any time: the daemon
//! reads the request slot once into its own memory, trusts no count or sequence number
//! it finds there (any change of the request sequence word is one request, answered
//! with that number), and never parses the page in place.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::libc;
use nix::sys::memfd::{MFdFlags, memfd_create};
use switchyard_proto::fastpath::{
    self as wire, OutputMeta, REQUEST_LEN, RESPONSE_LEN, RequestFrame, ResponseFrame,
};
use switchyard_proto::v1::{self, tensor::Data};
use tracing::{debug, info, info_span, warn};

use crate::error::DaemonError;
use crate::service::{RunThread, State};
use crate::tenant::{Caller, TenantId, lock};

/// First bytes of a channel claim on the side socket; 24 bytes follow (the channel id,
/// u64 little-endian, and the 16-byte ticket).
pub const CLAIM_MAGIC: [u8; 8] = *b"SYRUN\x01\0\0";
pub const CLAIM_BODY: usize = 24;
/// Longest spin either side does before sleeping on its eventfd.
pub const MAX_SPIN_US: u32 = 200;
/// Channels one tenant may hold at once (each is a thread and three descriptors).
pub const MAX_CHANNELS_PER_TENANT: usize = 8;
/// How long a reserved channel waits for its side-socket claim.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(10);

/// Every reserved and live channel's bookkeeping.
pub struct Channels {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Reserved plus live channels per tenant, for the quota.
    held: Mutex<HashMap<TenantId, usize>>,
}

impl Default for Channels {
    fn default() -> Channels {
        Channels {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }
}

/// One of a tenant's channel slots; given back when the channel (reserved or live)
/// goes away, whichever way.
struct Slot {
    channels: Arc<Channels>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.channels.held);
        if let Some(n) = held.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

/// A channel reserved over gRPC, waiting for its claim.
pub struct Pending {
    id: u64,
    ticket: [u8; 16],
    caller: Caller,
    model_id: String,
    session_id: u64,
    spin: Duration,
    state: Arc<State>,
    created: Instant,
    _slot: Slot,
}

impl Channels {
    /// Channels (reserved or live) the tenant holds.
    pub fn held(&self, tenant: &TenantId) -> usize {
        lock(&self.held).get(tenant).copied().unwrap_or(0)
    }

    fn slot(self: &Arc<Self>, tenant: &TenantId) -> Result<Slot, DaemonError> {
        let mut held = lock(&self.held);
        let n = held.entry(tenant.clone()).or_insert(0);
        if *n >= MAX_CHANNELS_PER_TENANT {
            return Err(DaemonError::Quota {
                quota: "run_channels",
                limit: MAX_CHANNELS_PER_TENANT as u64,
                detail: format!("{tenant} holds {n} run channels"),
            });
        }
        *n += 1;
        Ok(Slot {
            channels: self.clone(),
            tenant: tenant.clone(),
        })
    }

    /// Drops reservations nobody claimed in time.
    fn expire(&self) {
        lock(&self.pending).retain(|_, p| p.created.elapsed() < CLAIM_WITHIN);
    }

    /// Takes the reservation a claim names. Another tenant's channel, a wrong ticket
    /// and an unknown id get the same answer.
    pub fn claim(&self, owner: &TenantId, body: &[u8; CLAIM_BODY]) -> Result<Pending, DaemonError> {
        self.expire();
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[..8]);
        let id = u64::from_le_bytes(id);
        let mut pending = lock(&self.pending);
        let ok = pending.get(&id).is_some_and(|p| {
            &p.caller.tenant == owner && crate::auth::constant_time_eq(&p.ticket, &body[8..])
        });
        match pending.remove(&id).filter(|_| ok) {
            Some(p) => Ok(p),
            None => Err(DaemonError::NotFound {
                kind: "run channel",
                id: id.to_string(),
            }),
        }
    }
}

fn random_ticket() -> Result<[u8; 16], DaemonError> {
    use std::io::Read;
    let mut t = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut t))
        .map_err(|e| DaemonError::io("reading /dev/urandom for a channel ticket", e))?;
    Ok(t)
}

/// `OpenRunChannel`: checks the model (and session) as a run would and reserves a
/// channel for the caller.
pub fn open(
    state: &Arc<State>,
    caller: &Caller,
    r: v1::OpenRunChannelRequest,
) -> Result<v1::OpenRunChannelResponse, DaemonError> {
    if !matches!(caller.tenant, TenantId::Uid(_)) {
        return Err(DaemonError::invalid(
            "run channels are shared memory: open them over the Unix socket",
        ));
    }
    let handle = state.tenants.handle(caller, &r.model_id)?;
    let m = &handle.model;
    if m.inputs.len() > wire::MAX_INPUTS || m.outputs.len() > wire::MAX_OUTPUTS {
        return Err(DaemonError::invalid(format!(
            "a run channel carries at most {} inputs and {} outputs; the model has {} and {}: use Run",
            wire::MAX_INPUTS,
            wire::MAX_OUTPUTS,
            m.inputs.len(),
            m.outputs.len()
        )));
    }
    if r.session_id != 0 {
        let entry = state.tenants.session(caller, r.session_id)?;
        if entry.model_id != r.model_id {
            return Err(DaemonError::invalid(format!(
                "session {} is on model `{}`, not `{}`",
                r.session_id, entry.model_id, r.model_id
            )));
        }
    }
    state.channels.expire();
    let slot = state.channels.slot(&caller.tenant)?;
    let ticket = random_ticket()?;
    let id = state.channels.next_id.fetch_add(1, Ordering::Relaxed);
    let spin_us = r.spin_us.min(MAX_SPIN_US);
    lock(&state.channels.pending).insert(
        id,
        Pending {
            id,
            ticket,
            caller: caller.clone(),
            model_id: r.model_id,
            session_id: r.session_id,
            spin: Duration::from_micros(u64::from(spin_us)),
            state: state.clone(),
            created: Instant::now(),
            _slot: slot,
        },
    );
    debug!(tenant = %caller.tenant, channel = id, "run channel reserved");
    Ok(v1::OpenRunChannelResponse {
        channel_id: id,
        ticket: ticket.to_vec(),
        spin_us,
    })
}

/// Tells a channel's thread to stop: raised when its side connection closes.
struct Closer {
    /// Also the cancel flag of the run in flight, which may be running on the channel's
    /// thread where nothing can drop it (see [`RunThread::Caller`]).
    closed: Arc<AtomicBool>,
    /// An eventfd the thread polls next to the doorbell, so a sleeping thread wakes.
    wake: OwnedFd,
    /// Wakes a thread waiting for a run in flight, which then cancels it.
    notify: tokio::sync::Notify,
}

impl Closer {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        ring_eventfd(self.wake.as_raw_fd());
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A running channel, held by the side connection that claimed it; dropping it stops
/// the channel.
pub struct Live {
    pub id: u64,
    closer: Arc<Closer>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.closer.close();
    }
}

fn eventfd() -> Result<OwnedFd, DaemonError> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor
    // this process owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(DaemonError::io(
            "creating a channel eventfd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes whoever polls it). A full counter (EAGAIN) already
/// wakes its reader, so errors are ignored.
fn ring_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Empties an eventfd's counter (non-blocking).
fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Sleeps until one of `fds` is readable or hung up (or `timeout_ms`, -1 for none).
fn poll_in(fds: &[RawFd], timeout_ms: i32) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfds.
    let _ = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
}

/// The daemon's mapping of a channel's page.
struct Ring {
    map: MmapRaw,
}

impl Ring {
    fn create() -> Result<(Ring, OwnedFd), DaemonError> {
        let fd = memfd_create(
            c"switchyard-run-channel",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| DaemonError::Shm(format!("memfd_create for a run channel: {e}")))?;
        let file = std::fs::File::from(fd);
        file.set_len(wire::RING_BYTES as u64)
            .map_err(|e| DaemonError::io("sizing a run channel", e))?;
        // The client maps this file too: sealed so that it can never shrink it under
        // the daemon's mapping (SIGBUS) nor change the seals.
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|e| DaemonError::Shm(format!("sealing a run channel: {e}")))?;
        let map = MmapOptions::new()
            .len(wire::RING_BYTES)
            .map_raw(&file)
            .map_err(|e| DaemonError::io("mapping a run channel", e))?;
        let ring = Ring { map };
        ring.write(0, &wire::MAGIC);
        ring.write(4, &wire::VERSION.to_le_bytes());
        Ok((ring, OwnedFd::from(file)))
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= wire::RING_BYTES);
        // SAFETY: `at` is one of the layout's 8-aligned offsets inside the page-aligned
        // mapping, which lives as long as `self`; both processes only touch these
        // words atomically.
        unsafe { &*(self.map.as_mut_ptr().add(at).cast::<AtomicU64>()) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at + 4 <= wire::RING_BYTES);
        // SAFETY: as in `u64_at`.
        unsafe { &*(self.map.as_mut_ptr().add(at).cast::<AtomicU32>()) }
    }

    fn write(&self, at: usize, bytes: &[u8]) {
        if at + bytes.len() <= wire::RING_BYTES {
            // SAFETY: the destination range is inside the mapping (checked); the source
            // is daemon memory, never the mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    bytes.len(),
                )
            };
        }
    }

    /// The request slot, copied once into daemon memory: the client may keep writing
    /// the page, so nothing is decoded in place.
    fn copy_request(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        // SAFETY: REQUEST_AT + REQUEST_LEN lies inside the page (the codec's compile-time
        // layout check); the bytes are plain data, so a concurrent writer garbles only them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(wire::REQUEST_AT),
                b.as_mut_ptr(),
                REQUEST_LEN,
            )
        };
        b
    }
}

/// Creates the channel's page and eventfds and starts its thread. Returns the running
/// channel and the descriptors to hand to the client: the memfd, the doorbell (client
/// to daemon) and the completion eventfd (daemon to client).
pub fn start(p: Pending) -> Result<(Live, [OwnedFd; 3]), DaemonError> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| DaemonError::Internal(format!("no runtime for a run channel: {e}")))?;
    let (ring, memfd) = Ring::create()?;
    let doorbell = eventfd()?;
    let completion = eventfd()?;
    let closer = Arc::new(Closer {
        closed: Arc::new(AtomicBool::new(false)),
        wake: eventfd()?,
        notify: tokio::sync::Notify::new(),
    });
    let give = [
        memfd,
        doorbell
            .try_clone()
            .map_err(|e| DaemonError::io("duplicating the doorbell", e))?,
        completion
            .try_clone()
            .map_err(|e| DaemonError::io("duplicating the completion eventfd", e))?,
    ];
    let id = p.id;
    let ctx = Ctx {
        ring,
        doorbell,
        completion,
        closer: closer.clone(),
        rt,
        p,
    };
    std::thread::Builder::new()
        .name(format!("sy-channel-{id}"))
        .spawn(move || ctx.serve())
        .map_err(|e| DaemonError::io("starting a run channel thread", e))?;
    Ok((Live { id, closer }, give))
}

/// What a channel's thread owns.
struct Ctx {
    ring: Ring,
    doorbell: OwnedFd,
    completion: OwnedFd,
    closer: Arc<Closer>,
    rt: tokio::runtime::Handle,
    p: Pending,
}

impl Ctx {
    fn serve(self) {
        let span = info_span!(
            "run_channel",
            channel = self.p.id,
            tenant = %self.p.caller.tenant,
            model = %self.p.model_id
        );
        let _e = span.enter();
        info!(session = self.p.session_id, "run channel open");
        let mut last = 0u64;
        let mut served = 0u64;
        let mut spin = wire::AdaptiveSpin::new(self.p.spin);
        while let Some(seq) = self.next_request(last, &mut spin) {
            let frame = self.ring.copy_request();
            let answer = if seq != last.wrapping_add(1) {
                Some(error_frame(
                    tonic::Code::InvalidArgument,
                    &format!(
                        "request sequence {seq} after {last}: each request must be the previous plus one"
                    ),
                ))
            } else {
                self.serve_one(&frame)
            };
            let Some(answer) = answer else { break };
            let bytes = answer.encode().unwrap_or_else(|e| {
                error_frame(tonic::Code::Internal, &e.to_string())
                    .encode()
                    .unwrap_or([0u8; RESPONSE_LEN])
            });
            self.ring.write(wire::RESPONSE_AT, &bytes);
            self.ring
                .u64_at(wire::RESP_SEQ_AT)
                .store(seq, Ordering::SeqCst);
            if self
                .ring
                .u32_at(wire::CLIENT_IDLE_AT)
                .load(Ordering::SeqCst)
                != 0
            {
                ring_eventfd(self.completion.as_raw_fd());
            }
            last = seq;
            served += 1;
        }
        info!(served, "run channel closed");
    }

    /// The next request's sequence number: spins (adaptively, up to the channel's
    /// spin), then sleeps on the doorbell. `None` once the channel is closed.
    fn next_request(&self, last: u64, spin: &mut wire::AdaptiveSpin) -> Option<u64> {
        let seq = self.ring.u64_at(wire::REQ_SEQ_AT);
        let started = Instant::now();
        let limit = spin.next();
        loop {
            if self.closer.is_closed() {
                return None;
            }
            let s = seq.load(Ordering::SeqCst);
            if s != last {
                spin.record(true);
                return Some(s);
            }
            if started.elapsed() >= limit {
                break;
            }
            std::hint::spin_loop();
        }
        spin.record(false);
        let idle = self.ring.u32_at(wire::DAEMON_IDLE_AT);
        loop {
            // Announce the sleep, then look once more: a client that published after
            // the look sees the flag and rings.
            idle.store(1, Ordering::SeqCst);
            let s = seq.load(Ordering::SeqCst);
            if s != last || self.closer.is_closed() {
                idle.store(0, Ordering::SeqCst);
                return (!self.closer.is_closed()).then_some(s);
            }
            poll_in(
                &[self.doorbell.as_raw_fd(), self.closer.wake.as_raw_fd()],
                -1,
            );
            drain_eventfd(self.doorbell.as_raw_fd());
        }
    }

    /// Decodes and runs one request. `None` when the channel closed meanwhile (the run
    /// was cancelled; nobody is left to answer).
    fn serve_one(&self, frame: &[u8; REQUEST_LEN]) -> Option<ResponseFrame> {
        let req = match RequestFrame::decode(frame) {
            Ok(r) => r,
            Err(e) => {
                return Some(error_frame(
                    tonic::Code::InvalidArgument,
                    &format!("invalid argument: bad request frame: {e}"),
                ));
            }
        };
        if req.outputs.is_empty() {
            return Some(error_frame(
                tonic::Code::InvalidArgument,
                "invalid argument: a run channel writes outputs to shared memory: name one destination per model output",
            ));
        }
        let run = v1::RunRequest {
            model_id: self.p.model_id.clone(),
            inputs: req
                .inputs
                .into_iter()
                .map(|x| v1::Tensor {
                    dtype: x.dtype,
                    shape: x.shape,
                    data: Some(Data::Shm(x.shm)),
                })
                .collect(),
            output_shm: req.outputs,
            priority: req.priority,
            deadline_ms: req.deadline_ms,
            session_id: self.p.session_id,
            allow_resize: req.allow_resize,
            client_request_id: String::new(),
        };
        let state = &self.p.state;
        let _active = state.enter();
        let closer = &self.closer;
        let answer = self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = closer.notify.notified() => None,
                r = crate::service::run_request(
                    state,
                    self.p.caller.clone(),
                    run,
                    // This thread serves only this channel and may block: a request the
                    // arbiter starts at once runs here, without two thread handoffs.
                    RunThread::Caller { cancel: closer.closed.clone() },
                ) => Some(r),
            }
        });
        if answer.is_none() || self.closer.is_closed() {
            warn!("run channel closed with a request in flight; the run was cancelled");
            return None;
        }
        Some(match answer? {
            Ok(resp) => response_frame(resp),
            Err(e) => {
                let s = tonic::Status::from(e);
                error_frame(s.code(), s.message())
            }
        })
    }
}

fn error_frame(code: tonic::Code, message: &str) -> ResponseFrame {
    ResponseFrame {
        status: code as u32,
        message: message.to_owned(),
        ..ResponseFrame::default()
    }
}

fn response_frame(resp: v1::RunResponse) -> ResponseFrame {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    for (i, t) in resp.outputs.into_iter().enumerate() {
        let Some(Data::Shm(r)) = t.data else {
            return error_frame(
                tonic::Code::Internal,
                &format!("output {i} did not go to shared memory"),
            );
        };
        if t.shape.len() > wire::MAX_RANK {
            return error_frame(
                tonic::Code::InvalidArgument,
                &format!(
                    "output {i} has rank {}, above the run channel's {}: use Run",
                    t.shape.len(),
                    wire::MAX_RANK
                ),
            );
        }
        outputs.push(OutputMeta {
            dtype: t.dtype,
            shape: t.shape,
            length: r.length,
        });
    }
    let timing = resp.timing.unwrap_or_default();
    ResponseFrame {
        status: 0,
        request_id: resp.request_id,
        queue_us: timing.queue_us,
        run_us: timing.run_us,
        outputs,
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_that_a_frame_cannot_carry_become_errors() {
        let resp = v1::RunResponse {
            outputs: vec![v1::Tensor {
                dtype: 1,
                shape: vec![1; 9],
                data: Some(Data::Shm(v1::ShmRef {
                    region: 1,
                    offset: 0,
                    length: 4,
                })),
            }],
            timing: None,
            request_id: 3,
        };
        let f = response_frame(resp);
        assert_eq!(f.status, tonic::Code::InvalidArgument as u32);
        let inline = v1::RunResponse {
            outputs: vec![v1::Tensor {
                dtype: 1,
                shape: vec![1],
                data: Some(Data::Inline(vec![0; 4])),
            }],
            timing: None,
            request_id: 3,
        };
        assert_eq!(response_frame(inline).status, tonic::Code::Internal as u32);
    }

    #[test]
    fn the_ring_is_sealed_and_starts_with_its_magic() {
        let (ring, fd) = Ring::create().unwrap();
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap();
        let seals = SealFlag::from_bits_truncate(seals);
        assert!(seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL));
        let f = std::fs::File::from(fd);
        assert!(f.set_len(16).is_err(), "the client cannot shrink the page");
        // SAFETY: reads the first 8 bytes of the live mapping.
        let head = unsafe { std::slice::from_raw_parts(ring.map.as_ptr(), 8) };
        assert_eq!(&head[..4], b"SYFP");
        assert_eq!(ring.u64_at(wire::REQ_SEQ_AT).load(Ordering::SeqCst), 0);
    }

    #[test]
    fn eventfds_wake_a_poll_and_drain() {
        let fd = eventfd().unwrap();
        let t = Instant::now();
        ring_eventfd(fd.as_raw_fd());
        poll_in(&[fd.as_raw_fd()], 5000);
        assert!(t.elapsed() < Duration::from_secs(4));
        drain_eventfd(fd.as_raw_fd());
        let t = Instant::now();
        poll_in(&[fd.as_raw_fd()], 50);
        assert!(t.elapsed() >= Duration::from_millis(40), "drained: no wake");
    }
}
