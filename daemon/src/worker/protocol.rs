//! The daemon-worker protocol (docs/worker.md): length-prefixed JSON messages over a
//! Unix stream socket, bulk bytes (models, tensors, constants) in sealed memfds passed
//! alongside with SCM_RIGHTS.
//!
//! A frame is a 16-byte header — magic `SYWK`, protocol version (u16 LE), reserved
//! (u16), JSON length (u32 LE), descriptor count (u32 LE) — then the JSON. The
//! descriptors travel with the header's bytes. Both sides refuse anything else: a bad
//! magic, version, length over [`MAX_JSON`], more than [`MAX_FDS`] descriptors, or a
//! count that does not match what arrived (every descriptor that did arrive is closed).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_config::Config;

use crate::fdpass;

pub const MAGIC: [u8; 4] = *b"SYWK";
pub const VERSION: u16 = 1;
/// Largest JSON body: messages carry descriptions, never tensor data.
pub const MAX_JSON: usize = 16 << 20;
/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 4;
const HEADER: usize = 16;

/// A tensor stored in a message's blob memfd at `offset`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlobTensor {
    /// TFLite schema type code.
    pub dtype: i8,
    pub shape: Vec<usize>,
    pub offset: u64,
    pub len: u64,
}

/// A partition of a model (the interpreter's `Partition`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartitionWire {
    pub subgraph: usize,
    pub nodes: Vec<usize>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

/// One validation: descriptor 0 is the model file (a memfd of `model_len` bytes),
/// descriptor 1 the blob holding the inputs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValidateWire {
    pub model_len: u64,
    /// The model's sha256 (hex): the worker keeps the last model it parsed.
    pub model_sha: String,
    /// The delegate's name, as the worker's delegates are named.
    pub delegate: String,
    /// Driver fingerprint the daemon saw: the worker refuses to validate another one.
    pub fingerprint: String,
    pub partition: PartitionWire,
    pub timeout_ms: Option<u64>,
    pub inputs: Vec<BlobTensor>,
    pub runs: u32,
    pub float_relative: f64,
    pub half_float_relative: f64,
    pub quantized_steps: f64,
    /// The partition's CPU time as served, which the delegate must beat.
    pub cpu_s: f64,
}

/// A tensor of a plugin graph (the plugin ABI's `SyTensor`); constant data lives in the
/// message's blob.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AbiTensorWire {
    pub dtype: i32,
    pub shape: Vec<u64>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub axis: u32,
    /// (offset, length) in the blob.
    pub data: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AbiNodeWire {
    pub code: i32,
    pub version: i32,
    pub activation: i32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AbiGraphWire {
    pub tensors: Vec<AbiTensorWire>,
    pub nodes: Vec<AbiNodeWire>,
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
}

/// What a plugin reported when the worker opened it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PluginInfo {
    pub name: String,
    /// "gpu", "dsp" or "npu".
    pub kind: String,
    pub fingerprint: String,
}

/// A delegate error across the boundary (the interpreter's `DelegateError`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum DelegateErrorWire {
    Unsupported(String),
    Compile(String),
    Execute(String),
    Timeout { after_us: u64 },
    Unavailable(String),
}

/// Daemon to worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// First message: the daemon's configuration (the worker builds the same delegates)
    /// and the plugins to open, whose index is their id.
    Hello {
        config: Box<Config>,
        plugins: Vec<PathBuf>,
    },
    Validate(Box<ValidateWire>),
    /// Descriptor 0: the blob with constant data, when any tensor has some.
    PluginSupports {
        plugin: u32,
        op: String,
        graph: AbiGraphWire,
    },
    PluginCompile {
        plugin: u32,
        graph: AbiGraphWire,
        input_lens: Vec<u64>,
        output_lens: Vec<u64>,
    },
    /// Descriptor 0: the shared arena executions read inputs from and write outputs to.
    PluginArena {
        len: u64,
    },
    /// Ranges of the arena, as (offset, length).
    PluginExecute {
        handle: u64,
        inputs: Vec<(u64, u64)>,
        outputs: Vec<(u64, u64)>,
        timeout_us: u64,
    },
    PluginDestroy {
        handle: u64,
    },
}

/// Worker to daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    Ready {
        pid: u32,
        plugins: Vec<Result<PluginInfo, String>>,
    },
    /// The allowlist entry, as JSON of `switchyard_scheduler::allowlist::Entry`; JSON has
    /// no NaN, so a NaN `max_error` travels as 0 with `nan_error` set.
    Validated {
        entry: serde_json::Value,
        nan_error: bool,
    },
    Supported {
        supported: bool,
        reason: String,
    },
    Compiled {
        handle: u64,
    },
    Executed {
        device_time_us: Option<u64>,
    },
    DelegateFailed(DelegateErrorWire),
    Done,
    /// The request itself was wrong or could not be served.
    Failed(String),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no answer in time")]
    TimedOut,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// The header of a frame with `json` bytes and `fds` descriptors.
pub fn encode_header(json: usize, fds: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&(json as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(fds as u32).to_le_bytes());
    h
}

/// Checks a header: the JSON length and descriptor count it announces.
pub fn decode_header(h: &[u8]) -> Result<(usize, usize), FrameError> {
    let bad = |s: &str| Err(FrameError::Malformed(s.into()));
    if h.len() != HEADER {
        return bad("short header");
    }
    if h[..4] != MAGIC {
        return bad("bad magic");
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(FrameError::Malformed(format!(
            "protocol version {version}, expected {VERSION}"
        )));
    }
    let json = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let fds = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if json > MAX_JSON {
        return Err(FrameError::Malformed(format!("{json}-byte message")));
    }
    if fds > MAX_FDS {
        return Err(FrameError::Malformed(format!("{fds} descriptors")));
    }
    Ok((json, fds))
}

fn io_err(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => FrameError::Closed,
        _ => FrameError::Io(e),
    }
}

/// Writes one message with `fds` attached on a blocking socket.
pub fn send<T: Serialize>(socket: &impl AsRawFd, msg: &T, fds: &[RawFd]) -> Result<(), FrameError> {
    let json = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if json.len() > MAX_JSON || fds.len() > MAX_FDS {
        return Err(FrameError::Malformed("message too large".into()));
    }
    let mut frame = Vec::with_capacity(HEADER + json.len());
    frame.extend_from_slice(&encode_header(json.len(), fds.len()));
    frame.extend_from_slice(&json);
    let raw = socket.as_raw_fd();
    let mut sent = fdpass::send(raw, &frame, fds).map_err(io_err)?;
    while sent < frame.len() {
        sent += fdpass::send(raw, &frame[sent..], &[]).map_err(io_err)?;
    }
    Ok(())
}

/// Fills `buf` completely, collecting any descriptors that arrive on the way.
fn recv_exact(raw: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        let r = fdpass::recv(raw, &mut buf[got..]).map_err(io_err)?;
        fds.extend(r.fds);
        if r.truncated {
            return Err(FrameError::Malformed("control data truncated".into()));
        }
        if r.bytes == 0 {
            return Err(FrameError::Closed);
        }
        got += r.bytes;
    }
    Ok(())
}

/// Reads one message on a blocking socket (its read timeout applies to each read).
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: &impl AsRawFd,
) -> Result<(T, Vec<OwnedFd>), FrameError> {
    let raw = socket.as_raw_fd();
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER];
    recv_exact(raw, &mut header, &mut fds)?;
    let (json_len, nfds) = decode_header(&header)?;
    let mut json = vec![0u8; json_len];
    recv_exact(raw, &mut json, &mut fds)?;
    decode_body(&json, fds, nfds)
}

/// Parses a message body and checks the descriptors that came with it. Pure, for the
/// fuzz target: anything malformed is an error and every descriptor is dropped.
pub fn decode_body<T: for<'de> Deserialize<'de>>(
    json: &[u8],
    fds: Vec<OwnedFd>,
    announced: usize,
) -> Result<(T, Vec<OwnedFd>), FrameError> {
    if fds.len() != announced {
        return Err(FrameError::Malformed(format!(
            "{} descriptors arrived, {announced} announced",
            fds.len()
        )));
    }
    let msg = serde_json::from_slice(json).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok((msg, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_and_descriptors_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let memfd = crate::worker::shmem::Blob::from_bytes(b"hello").unwrap();
        let msg = ToWorker::PluginArena { len: 5 };
        send(&a, &msg, &[memfd.fd().as_raw_fd()]).unwrap();
        let (got, fds): (ToWorker, _) = recv(&b).unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 1);
        // Large bodies arrive whole.
        let graph = AbiGraphWire {
            inputs: (0..100_000).collect(),
            ..AbiGraphWire::default()
        };
        let big = ToWorker::PluginSupports {
            plugin: 0,
            op: "ADD".into(),
            graph,
        };
        let sender = std::thread::spawn(move || send(&a, &big, &[]).map(|_| big));
        let (got, fds): (ToWorker, _) = recv(&b).unwrap();
        assert_eq!(got, sender.join().unwrap().unwrap());
        assert!(fds.is_empty());
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert!(decode_header(&[0u8; 16]).is_err());
        let mut h = encode_header(10, 1);
        assert_eq!(decode_header(&h).unwrap(), (10, 1));
        h[4] = 9;
        assert!(decode_header(&h).is_err());
        assert!(decode_header(&encode_header(MAX_JSON + 1, 0)).is_err());
        assert!(decode_header(&encode_header(1, MAX_FDS + 1)).is_err());
        let r: Result<(ToWorker, _), _> = decode_body(b"{}", Vec::new(), 0);
        assert!(r.is_err());
        let r: Result<(FromWorker, _), _> = decode_body(b"\"Done\"", Vec::new(), 1);
        assert!(r.is_err());
        let (done, _): (FromWorker, _) = decode_body(b"\"Done\"", Vec::new(), 0).unwrap();
        assert_eq!(done, FromWorker::Done);
    }

    #[test]
    fn a_closed_peer_is_reported_as_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let r: Result<(FromWorker, _), _> = recv(&b);
        assert!(matches!(r, Err(FrameError::Closed)), "{r:?}");
    }
}
