//! Run channels: the fast path for runs whose tensors live in a [`ShmPool`].
//!
//! A channel is a one-page shared mailbox with the daemon for one model (and
//! optionally one session): [`FastChannel::run`] writes a small request frame naming
//! the input and output slices, publishes a sequence number and waits for the answer
//! frame, spinning briefly before sleeping on an eventfd. Nothing crosses gRPC per run;
//! the daemon still checks, schedules and accounts each request exactly as a gRPC run
//! (docs/shm-protocol.md, "Run channels").
//!
//! One request at a time per channel (`&mut self`); open several to pipeline. Runs
//! block the calling thread: from async code, call them on a thread of their own (e.g.
//! `spawn_blocking`). The channel lives until it is dropped (or the process exits):
//! the daemon then stops it and frees its slot.
#![allow(unsafe_code)]

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use nix::libc;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use switchyard_proto::fastpath::{
    self as wire, InputRef, REQUEST_LEN, RESPONSE_LEN, RequestFrame, ResponseFrame,
};
use switchyard_proto::v1;

use crate::model::{Priority, Timing};
use crate::{ClientError, DType, ShmPool, ShmSlice, ShmTensor};

/// What a channel spins by default before sleeping: long enough to cover a small
/// model's run without a blocking wakeup, short enough to cost little when it does not.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

const CLAIM_MAGIC: [u8; 8] = *b"SYRUN\x01\0\0";

/// One output of a channel run: its bytes are at the start of the slice named for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastOutput {
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Bytes the daemon wrote at the start of the output slice.
    pub length: u64,
}

/// The answer to one channel run.
#[derive(Clone, Debug)]
pub struct FastOutputs {
    pub outputs: Vec<FastOutput>,
    pub timing: Timing,
    pub request_id: u64,
}

/// A run channel with the daemon (see the module documentation).
pub struct FastChannel {
    id: u64,
    map: MmapRaw,
    doorbell: OwnedFd,
    completion: OwnedFd,
    /// The channel lives as long as this connection; the daemon hanging up on it means
    /// the channel is gone.
    side: UnixStream,
    seq: u64,
    spin: wire::AdaptiveSpin,
    priority: Priority,
    deadline_ms: u64,
    /// Keeps the pool's region registered while the channel may name it.
    _pool: ShmPool,
}

impl std::fmt::Debug for FastChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastChannel")
            .field("id", &self.id)
            .field("spin", &self.spin.next())
            .finish()
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        what: what.into(),
        source,
    }
}

impl FastChannel {
    /// Claims channel `id` on a new side connection and maps it.
    pub(crate) fn claim(
        side_path: &std::path::Path,
        reply: v1::OpenRunChannelResponse,
        pool: &ShmPool,
    ) -> Result<FastChannel, ClientError> {
        let mut side = UnixStream::connect(side_path).map_err(|e| ClientError::Connect {
            target: side_path.display().to_string(),
            why: e.to_string(),
        })?;
        let mut claim = Vec::with_capacity(32);
        claim.extend_from_slice(&CLAIM_MAGIC);
        claim.extend_from_slice(&reply.channel_id.to_le_bytes());
        if reply.ticket.len() != 16 {
            return Err(ClientError::Invalid(
                "the daemon's channel ticket is not 16 bytes".into(),
            ));
        }
        claim.extend_from_slice(&reply.ticket);
        side.write_all(&claim)
            .map_err(io("sending the channel claim"))?;
        let (head, fds) = recv_reply(&side)?;
        let msg_len = u32::from_le_bytes(head[17..21].try_into().unwrap_or_default()) as usize;
        let mut msg = vec![0u8; msg_len.min(4096)];
        side.read_exact(&mut msg)
            .map_err(io("reading the channel claim's reply"))?;
        if head[0] != 0 {
            return Err(ClientError::Shm(format!(
                "the daemon refused the run channel: {}",
                String::from_utf8_lossy(&msg)
            )));
        }
        let mut fds = fds.into_iter();
        let (Some(memfd), Some(doorbell), Some(completion), None) =
            (fds.next(), fds.next(), fds.next(), fds.next())
        else {
            return Err(ClientError::Shm(
                "the daemon's channel reply does not carry exactly three descriptors".into(),
            ));
        };
        let file = std::fs::File::from(memfd);
        let map = MmapOptions::new()
            .len(wire::RING_BYTES)
            .map_raw(&file)
            .map_err(io("mapping the run channel"))?;
        let ch = FastChannel {
            id: reply.channel_id,
            map,
            doorbell,
            completion,
            side,
            seq: 0,
            spin: wire::AdaptiveSpin::new(Duration::from_micros(u64::from(reply.spin_us))),
            priority: Priority::default(),
            deadline_ms: 0,
            _pool: pool.clone(),
        };
        let mut magic = [0u8; 4];
        ch.read(0, &mut magic);
        if magic != wire::MAGIC {
            return Err(ClientError::Shm(
                "the run channel does not start with its magic".into(),
            ));
        }
        Ok(ch)
    }

    /// The daemon's id of the channel.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The priority class of the following runs.
    pub fn set_priority(&mut self, p: Priority) {
        self.priority = p;
    }

    /// The deadline of the following runs, from each run's arrival (`None`: none).
    pub fn set_deadline(&mut self, d: Option<Duration>) {
        self.deadline_ms = d.map_or(0, |d| d.as_millis().max(1) as u64);
    }

    /// Runs the model once: inputs from pool tensors, outputs written to the start of
    /// `outputs` (one slice per model output). Blocks until the daemon answers.
    pub fn run(
        &mut self,
        inputs: &[&ShmTensor],
        outputs: &[&ShmSlice],
    ) -> Result<FastOutputs, ClientError> {
        let frame = RequestFrame {
            inputs: inputs
                .iter()
                .map(|t| InputRef {
                    dtype: t.dtype.to_wire() as i32,
                    shape: t.shape.clone(),
                    shm: t.slice.shm_ref(),
                })
                .collect(),
            outputs: outputs.iter().map(|s| s.shm_ref()).collect(),
            priority: self.priority.to_wire() as i32,
            deadline_ms: self.deadline_ms,
            allow_resize: false,
        };
        let bytes = frame
            .encode()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let resp = self.round_trip(&bytes)?;
        if resp.status != 0 {
            return Err(ClientError::Status(tonic::Status::new(
                tonic::Code::from_i32(resp.status as i32),
                resp.message,
            )));
        }
        let outputs = resp
            .outputs
            .into_iter()
            .map(|o| {
                let dtype = v1::DataType::try_from(o.dtype)
                    .ok()
                    .and_then(DType::from_wire)
                    .ok_or_else(|| {
                        ClientError::Invalid(format!("unknown output data type {}", o.dtype))
                    })?;
                Ok(FastOutput {
                    dtype,
                    shape: o.shape,
                    length: o.length,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(FastOutputs {
            outputs,
            timing: Timing {
                queue: Duration::from_micros(resp.queue_us),
                run: Duration::from_micros(resp.run_us),
            },
            request_id: resp.request_id,
        })
    }

    /// Publishes one request frame and waits for its answer.
    fn round_trip(&mut self, frame: &[u8; REQUEST_LEN]) -> Result<ResponseFrame, ClientError> {
        self.write(wire::REQUEST_AT, frame);
        self.seq = self.seq.wrapping_add(1);
        self.u64_at(wire::REQ_SEQ_AT)
            .store(self.seq, Ordering::SeqCst);
        if self.u32_at(wire::DAEMON_IDLE_AT).load(Ordering::SeqCst) != 0 {
            ring(self.doorbell.as_raw_fd());
        }
        self.wait_answer()?;
        let mut b = [0u8; RESPONSE_LEN];
        self.read(wire::RESPONSE_AT, &mut b);
        ResponseFrame::decode(&b).map_err(|e| ClientError::Shm(format!("bad answer frame: {e}")))
    }

    fn wait_answer(&mut self) -> Result<(), ClientError> {
        let limit = self.spin.next();
        let resp = self.u64_at(wire::RESP_SEQ_AT);
        let started = Instant::now();
        while started.elapsed() < limit {
            if resp.load(Ordering::SeqCst) == self.seq {
                self.spin.record(true);
                return Ok(());
            }
            std::hint::spin_loop();
        }
        self.spin.record(false);
        let resp = self.u64_at(wire::RESP_SEQ_AT);
        let idle = self.u32_at(wire::CLIENT_IDLE_AT);
        loop {
            idle.store(1, Ordering::SeqCst);
            if resp.load(Ordering::SeqCst) == self.seq {
                idle.store(0, Ordering::SeqCst);
                return Ok(());
            }
            let mut p = [
                libc::pollfd {
                    fd: self.completion.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.side.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `p` is a live array of two pollfds.
            let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(io("waiting for the run channel")(e));
                }
            }
            drain(self.completion.as_raw_fd());
            // The daemon never writes on the side connection after the claim: anything
            // readable there is its hang-up.
            if p[1].revents != 0 && resp.load(Ordering::SeqCst) != self.seq {
                idle.store(0, Ordering::SeqCst);
                return Err(ClientError::Shm("the daemon closed the run channel".into()));
            }
        }
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the layout's 8-aligned offsets inside the page-aligned
        // mapping, which lives as long as `self`; both sides touch it only atomically.
        unsafe { &*(self.map.as_mut_ptr().add(at).cast::<AtomicU64>()) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as in `u64_at`.
        unsafe { &*(self.map.as_mut_ptr().add(at).cast::<AtomicU32>()) }
    }

    fn write(&self, at: usize, bytes: &[u8]) {
        if at + bytes.len() <= self.map.len() {
            // SAFETY: inside the mapping (checked); the source is this process's memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    bytes.len(),
                )
            };
        }
    }

    fn read(&self, at: usize, out: &mut [u8]) {
        if at + out.len() <= self.map.len() {
            // SAFETY: as in `write`, the other way round.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.as_ptr().add(at),
                    out.as_mut_ptr(),
                    out.len(),
                )
            };
        }
    }
}

fn ring(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64 (the eventfd is non-blocking).
    let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

impl crate::Model {
    /// Opens a run channel for this model (runs without a session, as
    /// `Run` without one), spinning [`DEFAULT_SPIN`]. Only on the Unix socket.
    pub async fn fast_channel(&self, pool: &ShmPool) -> Result<FastChannel, ClientError> {
        self.fast_channel_with(pool, 0, DEFAULT_SPIN).await
    }

    /// [`Model::fast_channel`] with another spin (zero: sleep at once; the daemon caps
    /// it at 200 µs).
    pub async fn fast_channel_spin(
        &self,
        pool: &ShmPool,
        spin: Duration,
    ) -> Result<FastChannel, ClientError> {
        self.fast_channel_with(pool, 0, spin).await
    }

    pub(crate) async fn fast_channel_with(
        &self,
        pool: &ShmPool,
        session_id: u64,
        spin: Duration,
    ) -> Result<FastChannel, ClientError> {
        let side = self.client.side_socket_path()?;
        let mut c = self.client.clone();
        let reply = c
            .rpc
            .open_run_channel(v1::OpenRunChannelRequest {
                model_id: self.meta.id.clone(),
                session_id,
                spin_us: u32::try_from(spin.as_micros()).unwrap_or(u32::MAX),
            })
            .await?
            .into_inner();
        FastChannel::claim(&side, reply, pool)
    }
}

impl crate::Session {
    /// Opens a run channel whose runs continue this session's stream.
    pub async fn fast_channel(&self, pool: &ShmPool) -> Result<FastChannel, ClientError> {
        self.model()
            .fast_channel_with(pool, self.id(), DEFAULT_SPIN)
            .await
    }
}

/// The claim's 21-byte reply head and the descriptors attached to it.
fn recv_reply(side: &UnixStream) -> Result<([u8; 21], Vec<OwnedFd>), ClientError> {
    let mut head = [0u8; 21];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut head)];
        let msg = recvmsg::<()>(
            side.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| ClientError::Shm(format!("reading the channel claim's reply: {e}")))?;
        let mut fds = Vec::new();
        for c in msg
            .cmsgs()
            .map_err(|e| ClientError::Shm(format!("the claim's reply: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process just
                // now; each gets exactly one owner.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(ClientError::Shm(
            "the daemon closed the side socket instead of answering the claim".into(),
        ));
    }
    let mut s = side;
    s.read_exact(&mut head[n.min(21)..])
        .map_err(io("reading the channel claim's reply"))?;
    Ok((head, fds))
}
