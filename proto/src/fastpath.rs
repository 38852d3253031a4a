//! The run channel's wire layout (the fast path; docs/shm-protocol.md, "Run channels").
//!
//! A run channel is one page of shared memory holding a single-slot mailbox: the client
//! writes a request frame and bumps the request sequence word; the daemon copies the
//! frame out once, answers in the response frame and publishes the same sequence number.
//! This module is the pure codec of those frames, shared by the daemon and the Rust
//! client so both sides agree byte for byte; the sequence words and the eventfds are
//! handled by each side (they need atomics on the mapping).
//!
//! Every decode takes a fixed-size copy: the other side may rewrite the shared page at
//! any time, so nothing is ever parsed in place, and every field is checked (counts,
//! ranks, reserved bytes) before anything is built from it.

use crate::v1::ShmRef;

/// The channel file's size: one page.
pub const RING_BYTES: usize = 4096;
/// `"SYFP"` then the layout version, at offset 0.
pub const MAGIC: [u8; 4] = *b"SYFP";
pub const VERSION: u32 = 1;
/// u64, written by the client: the sequence number of the request in the slot.
pub const REQ_SEQ_AT: usize = 8;
/// u64, written by the daemon: the sequence number of the request answered last.
pub const RESP_SEQ_AT: usize = 64;
/// u32, written by the daemon: 1 while it sleeps on the doorbell eventfd.
pub const DAEMON_IDLE_AT: usize = 128;
/// u32, written by the client: 1 while it sleeps on the completion eventfd.
pub const CLIENT_IDLE_AT: usize = 192;
/// The request frame.
pub const REQUEST_AT: usize = 256;
pub const REQUEST_LEN: usize = 32 + MAX_INPUTS * INPUT_LEN + MAX_OUTPUTS * OUTPUT_LEN;
/// The response frame.
pub const RESPONSE_AT: usize = 2048;
pub const RESPONSE_LEN: usize = MESSAGE_AT + MAX_MESSAGE;

/// At most this many inputs and outputs per request on a channel (use gRPC beyond).
pub const MAX_INPUTS: usize = 16;
pub const MAX_OUTPUTS: usize = 16;
/// Highest tensor rank a frame carries.
pub const MAX_RANK: usize = 8;
/// Longest error message in a response frame, in bytes.
pub const MAX_MESSAGE: usize = 1024;

const INPUT_LEN: usize = 32 + 4 * MAX_RANK;
const OUTPUT_LEN: usize = 32;
const OUT_META_AT: usize = 40;
const OUT_META_LEN: usize = 16 + 4 * MAX_RANK;
const MESSAGE_AT: usize = 832;

// The layout fits one page without overlap, and the sequence words sit on cache lines
// of their own: checked when the crate compiles.
const _: () = {
    assert!(REQUEST_AT + REQUEST_LEN <= RESPONSE_AT);
    assert!(RESPONSE_AT + RESPONSE_LEN <= RING_BYTES);
    assert!(OUT_META_AT + MAX_OUTPUTS * OUT_META_LEN <= MESSAGE_AT);
    assert!(REQ_SEQ_AT.is_multiple_of(8) && RESP_SEQ_AT.is_multiple_of(64));
    assert!(RESP_SEQ_AT - REQ_SEQ_AT >= 56);
};

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{what} is {got}, at most {max}")]
    TooMany {
        what: &'static str,
        got: u64,
        max: usize,
    },
    #[error("{0} must be zero")]
    Reserved(&'static str),
    #[error("dimension {0} does not fit the frame's 32 bits")]
    Dimension(u64),
}

/// One input: a typed tensor in one of the caller's regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    /// The wire `DataType` number.
    pub dtype: i32,
    pub shape: Vec<u64>,
    pub shm: ShmRef,
}

/// One run request as it travels in the slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFrame {
    pub inputs: Vec<InputRef>,
    /// One destination per model output.
    pub outputs: Vec<ShmRef>,
    /// The wire `Priority` number.
    pub priority: i32,
    /// As `RunRequest.deadline_ms`: relative, 0 for none.
    pub deadline_ms: u64,
    pub allow_resize: bool,
}

/// One output as the response reports it: the bytes are in the request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMeta {
    pub dtype: i32,
    pub shape: Vec<u64>,
    /// Bytes written at the destination's offset.
    pub length: u64,
}

/// One answer as it travels in the slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseFrame {
    /// 0 on success, else the gRPC status code the same request gets over gRPC.
    pub status: u32,
    pub request_id: u64,
    pub queue_us: u64,
    pub run_us: u64,
    pub outputs: Vec<OutputMeta>,
    /// Why it failed (UTF-8, cut to [`MAX_MESSAGE`] bytes).
    pub message: String,
}

/// How long one side spins before sleeping, adapted to whether spinning pays.
///
/// Spinning saves a blocking wakeup only when the other side answers within the spin
/// and has a core to do it on. On an oversubscribed machine the spinner takes the core
/// the other side needs, and every spin runs to its end for nothing (measured on a
/// loaded 2-core VM: 130 µs per 1 KiB run with a fixed 50 µs spin on both sides, 31 µs
/// without). So each wait that had to sleep halves the next spin, down to none; a wait
/// that the spin caught restores it; after [`AdaptiveSpin::PROBE_EVERY`] sleeps in a
/// row without spinning, one wait spins in full again to see whether things changed.
#[derive(Debug, Clone)]
pub struct AdaptiveSpin {
    max: std::time::Duration,
    now: std::time::Duration,
    sleeps: u32,
}

impl AdaptiveSpin {
    pub const PROBE_EVERY: u32 = 64;

    pub fn new(max: std::time::Duration) -> AdaptiveSpin {
        AdaptiveSpin {
            max,
            now: max,
            sleeps: 0,
        }
    }

    /// How long the next wait spins.
    pub fn next(&self) -> std::time::Duration {
        self.now
    }

    /// Records how the wait ended: `caught` when the spin saw the other side.
    pub fn record(&mut self, caught: bool) {
        if caught {
            self.now = self.max;
            self.sleeps = 0;
            return;
        }
        self.now /= 2;
        if self.now < std::time::Duration::from_micros(1) {
            self.now = std::time::Duration::ZERO;
            self.sleeps += 1;
            if self.sleeps >= Self::PROBE_EVERY {
                self.sleeps = 0;
                self.now = self.max;
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(s) = b.get_mut(at..at + bytes.len()) {
        s.copy_from_slice(bytes);
    }
}

fn count(what: &'static str, got: u32, max: usize) -> Result<usize, FrameError> {
    let n = got as usize;
    if n > max {
        return Err(FrameError::TooMany {
            what,
            got: u64::from(got),
            max,
        });
    }
    Ok(n)
}

fn put_shape(b: &mut [u8], at: usize, shape: &[u64]) -> Result<(), FrameError> {
    if shape.len() > MAX_RANK {
        return Err(FrameError::TooMany {
            what: "the rank",
            got: shape.len() as u64,
            max: MAX_RANK,
        });
    }
    for (i, &d) in shape.iter().enumerate() {
        let d = u32::try_from(d).map_err(|_| FrameError::Dimension(d))?;
        put(b, at + 4 * i, &d.to_le_bytes());
    }
    Ok(())
}

fn shape_at(b: &[u8], at: usize, rank: usize) -> Vec<u64> {
    (0..rank)
        .map(|i| u64::from(u32_at(b, at + 4 * i)))
        .collect()
}

impl RequestFrame {
    /// Encodes into a zeroed frame (every byte is written: reserved ones as zero).
    pub fn encode(&self) -> Result<[u8; REQUEST_LEN], FrameError> {
        let mut b = [0u8; REQUEST_LEN];
        if self.inputs.len() > MAX_INPUTS {
            return Err(FrameError::TooMany {
                what: "the number of inputs",
                got: self.inputs.len() as u64,
                max: MAX_INPUTS,
            });
        }
        if self.outputs.len() > MAX_OUTPUTS {
            return Err(FrameError::TooMany {
                what: "the number of outputs",
                got: self.outputs.len() as u64,
                max: MAX_OUTPUTS,
            });
        }
        put(&mut b, 0, &(self.inputs.len() as u32).to_le_bytes());
        put(&mut b, 4, &(self.outputs.len() as u32).to_le_bytes());
        put(&mut b, 8, &self.priority.to_le_bytes());
        put(&mut b, 12, &u32::from(self.allow_resize).to_le_bytes());
        put(&mut b, 16, &self.deadline_ms.to_le_bytes());
        for (i, x) in self.inputs.iter().enumerate() {
            let at = 32 + i * INPUT_LEN;
            put(&mut b, at, &x.shm.region.to_le_bytes());
            put(&mut b, at + 8, &x.shm.offset.to_le_bytes());
            put(&mut b, at + 16, &x.shm.length.to_le_bytes());
            put(&mut b, at + 24, &x.dtype.to_le_bytes());
            put(&mut b, at + 28, &(x.shape.len() as u32).to_le_bytes());
            put_shape(&mut b, at + 32, &x.shape)?;
        }
        for (j, r) in self.outputs.iter().enumerate() {
            let at = 32 + MAX_INPUTS * INPUT_LEN + j * OUTPUT_LEN;
            put(&mut b, at, &r.region.to_le_bytes());
            put(&mut b, at + 8, &r.offset.to_le_bytes());
            put(&mut b, at + 16, &r.length.to_le_bytes());
        }
        Ok(b)
    }

    /// Decodes a copy of the slot. Counts, ranks, flags and reserved words are checked
    /// here; what the values mean (regions, ranges, types against the model) is checked
    /// by the daemon exactly as for a gRPC request.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<RequestFrame, FrameError> {
        let n_in = count("the number of inputs", u32_at(b, 0), MAX_INPUTS)?;
        let n_out = count("the number of outputs", u32_at(b, 4), MAX_OUTPUTS)?;
        let priority = u32_at(b, 8) as i32;
        let flags = u32_at(b, 12);
        if flags & !1 != 0 {
            return Err(FrameError::Reserved(
                "flags other than bit 0 (allow_resize)",
            ));
        }
        if u64_at(b, 24) != 0 {
            return Err(FrameError::Reserved("the request's bytes 24..32"));
        }
        let mut inputs = Vec::with_capacity(n_in);
        for i in 0..n_in {
            let at = 32 + i * INPUT_LEN;
            let rank = count("an input's rank", u32_at(b, at + 28), MAX_RANK)?;
            inputs.push(InputRef {
                dtype: u32_at(b, at + 24) as i32,
                shape: shape_at(b, at + 32, rank),
                shm: ShmRef {
                    region: u64_at(b, at),
                    offset: u64_at(b, at + 8),
                    length: u64_at(b, at + 16),
                },
            });
        }
        let mut outputs = Vec::with_capacity(n_out);
        for j in 0..n_out {
            let at = 32 + MAX_INPUTS * INPUT_LEN + j * OUTPUT_LEN;
            if u64_at(b, at + 24) != 0 {
                return Err(FrameError::Reserved("an output's bytes 24..32"));
            }
            outputs.push(ShmRef {
                region: u64_at(b, at),
                offset: u64_at(b, at + 8),
                length: u64_at(b, at + 16),
            });
        }
        Ok(RequestFrame {
            inputs,
            outputs,
            priority,
            deadline_ms: u64_at(b, 16),
            allow_resize: flags & 1 != 0,
        })
    }
}

impl ResponseFrame {
    /// Encodes the answer. Outputs beyond [`MAX_OUTPUTS`] or of a rank above
    /// [`MAX_RANK`] cannot be reported; the daemon answers those requests with an error
    /// instead (a request names at most [`MAX_OUTPUTS`] destinations).
    pub fn encode(&self) -> Result<[u8; RESPONSE_LEN], FrameError> {
        let mut b = [0u8; RESPONSE_LEN];
        if self.outputs.len() > MAX_OUTPUTS {
            return Err(FrameError::TooMany {
                what: "the number of outputs",
                got: self.outputs.len() as u64,
                max: MAX_OUTPUTS,
            });
        }
        put(&mut b, 0, &self.status.to_le_bytes());
        put(&mut b, 4, &(self.outputs.len() as u32).to_le_bytes());
        put(&mut b, 8, &self.request_id.to_le_bytes());
        put(&mut b, 16, &self.queue_us.to_le_bytes());
        put(&mut b, 24, &self.run_us.to_le_bytes());
        for (k, o) in self.outputs.iter().enumerate() {
            let at = OUT_META_AT + k * OUT_META_LEN;
            put(&mut b, at, &o.length.to_le_bytes());
            put(&mut b, at + 8, &o.dtype.to_le_bytes());
            put(&mut b, at + 12, &(o.shape.len() as u32).to_le_bytes());
            put_shape(&mut b, at + 16, &o.shape)?;
        }
        let mut msg = self.message.as_bytes();
        if msg.len() > MAX_MESSAGE {
            // Cut on a character boundary so the client reads valid UTF-8.
            let mut end = MAX_MESSAGE;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        put(&mut b, 32, &(msg.len() as u32).to_le_bytes());
        put(&mut b, MESSAGE_AT, msg);
        Ok(b)
    }

    pub fn decode(b: &[u8; RESPONSE_LEN]) -> Result<ResponseFrame, FrameError> {
        let n_out = count("the number of outputs", u32_at(b, 4), MAX_OUTPUTS)?;
        let mut outputs = Vec::with_capacity(n_out);
        for k in 0..n_out {
            let at = OUT_META_AT + k * OUT_META_LEN;
            let rank = count("an output's rank", u32_at(b, at + 12), MAX_RANK)?;
            outputs.push(OutputMeta {
                length: u64_at(b, at),
                dtype: u32_at(b, at + 8) as i32,
                shape: shape_at(b, at + 16, rank),
            });
        }
        let msg_len = count("the message length", u32_at(b, 32), MAX_MESSAGE)?;
        let msg = b.get(MESSAGE_AT..MESSAGE_AT + msg_len).unwrap_or(&[]);
        Ok(ResponseFrame {
            status: u32_at(b, 0),
            request_id: u64_at(b, 8),
            queue_us: u64_at(b, 16),
            run_us: u64_at(b, 24),
            outputs,
            message: String::from_utf8_lossy(msg).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(region: u64, offset: u64, length: u64) -> ShmRef {
        ShmRef {
            region,
            offset,
            length,
        }
    }

    #[test]
    fn spinning_backs_off_when_it_does_not_pay_and_probes_again() {
        use std::time::Duration;
        let max = Duration::from_micros(64);
        let mut s = AdaptiveSpin::new(max);
        assert_eq!(s.next(), max);
        s.record(true);
        assert_eq!(s.next(), max);
        for _ in 0..7 {
            s.record(false);
        }
        assert_eq!(s.next(), Duration::ZERO);
        s.record(false);
        assert_eq!(s.next(), Duration::ZERO);
        // The probe comes back after PROBE_EVERY sleeps at zero (two so far).
        let mut n = 0;
        while s.next() == Duration::ZERO {
            s.record(false);
            n += 1;
        }
        assert_eq!(n, AdaptiveSpin::PROBE_EVERY - 2);
        assert_eq!(s.next(), max);
        s.record(true);
        assert_eq!(s.next(), max);
        let mut off = AdaptiveSpin::new(Duration::ZERO);
        off.record(false);
        assert_eq!(off.next(), Duration::ZERO);
    }

    #[test]
    fn requests_round_trip() {
        let f = RequestFrame {
            inputs: vec![
                InputRef {
                    dtype: 1,
                    shape: vec![1, 256],
                    shm: r(3, 64, 1024),
                },
                InputRef {
                    dtype: 8,
                    shape: vec![],
                    shm: r(4, 0, 1),
                },
            ],
            outputs: vec![r(3, 1088, 1024)],
            priority: 1,
            deadline_ms: 20,
            allow_resize: true,
        };
        assert_eq!(RequestFrame::decode(&f.encode().unwrap()).unwrap(), f);
        let empty = RequestFrame::default();
        assert_eq!(
            RequestFrame::decode(&empty.encode().unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn responses_round_trip_and_cut_long_messages_on_a_char_boundary() {
        let f = ResponseFrame {
            status: 0,
            request_id: 9,
            queue_us: 3,
            run_us: 40,
            outputs: vec![OutputMeta {
                dtype: 1,
                shape: vec![1, 2, 3],
                length: 24,
            }],
            message: String::new(),
        };
        assert_eq!(ResponseFrame::decode(&f.encode().unwrap()).unwrap(), f);
        let long = ResponseFrame {
            status: 3,
            message: "é".repeat(MAX_MESSAGE),
            ..ResponseFrame::default()
        };
        let back = ResponseFrame::decode(&long.encode().unwrap()).unwrap();
        assert_eq!(back.message.len(), MAX_MESSAGE);
        assert!(back.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn hostile_frames_are_refused_not_trusted() {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RequestFrame::decode(&b),
            Err(FrameError::TooMany { .. })
        ));
        let mut b = [0u8; REQUEST_LEN];
        b[4..8].copy_from_slice(&17u32.to_le_bytes());
        assert!(RequestFrame::decode(&b).is_err());
        let mut b = [0u8; REQUEST_LEN];
        b[12] = 2;
        assert_eq!(
            RequestFrame::decode(&b),
            Err(FrameError::Reserved(
                "flags other than bit 0 (allow_resize)"
            ))
        );
        let mut b = [0u8; REQUEST_LEN];
        b[0] = 1;
        b[32 + 28..32 + 32].copy_from_slice(&9u32.to_le_bytes());
        assert!(RequestFrame::decode(&b).is_err());
        let mut b = [0u8; RESPONSE_LEN];
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ResponseFrame::decode(&b).is_err());
        // Every byte pattern decodes or errs; none panics.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = [0u8; REQUEST_LEN];
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = (x & 0x0f) as u8 * ((x >> 8) & 1) as u8;
            }
            let _ = RequestFrame::decode(&b);
        }
    }

    #[test]
    fn encoding_refuses_what_the_frame_cannot_hold() {
        let wide = RequestFrame {
            inputs: vec![
                InputRef {
                    dtype: 1,
                    shape: vec![1; MAX_RANK + 1],
                    shm: r(1, 0, 4),
                };
                1
            ],
            ..RequestFrame::default()
        };
        assert!(wide.encode().is_err());
        let big = RequestFrame {
            inputs: vec![InputRef {
                dtype: 1,
                shape: vec![1 << 33],
                shm: r(1, 0, 4),
            }],
            ..RequestFrame::default()
        };
        assert_eq!(big.encode(), Err(FrameError::Dimension(1 << 33)));
    }
}
