//! The daemon's untrusted inputs as functions of bytes, for fuzzing (issue 10).
//!
//! Each target takes whatever a hostile model file or client could send and drives the
//! daemon's own code with it: the model loader and verifier, prepare and run of a
//! (mutated) model, the gRPC request checks, and the shared-memory side socket with
//! real descriptors. A target returns normally on every input; a panic, an abort, a
//! stall or an allocation past the limits is the bug.
//!
//! Two callers: the cargo-fuzz crate in `fuzz/` (libFuzzer, `scripts/fuzz.sh`) and
//! `daemon/tests/fuzz_replay.rs`, which replays the committed corpora and saved crash
//! inputs through these same functions as ordinary tests, so CI needs neither nightly
//! nor an instrumented build.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prost::Message;
use switchyard_config::DaemonConfig;
use switchyard_config::daemon::{QuotaConfig, TokenConfig};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{
    Budget, DType, Model, OpResolver, Plan, PlanOptions, PrepareLimits, SessionLimits,
};
use switchyard_proto::v1;
use tonic::codegen::http;

use crate::registry::TensorSpec;

/// Bounds every target runs under: small enough that one input takes well under
/// libFuzzer's `-timeout=10` and `-rss_limit_mb=2048`, the same kind as the daemon's.
const MAX_NODES: u64 = 200_000;
const RUN_TIME: Duration = Duration::from_secs(2);
const PREPARE_TIME: Duration = Duration::from_secs(2);
const SESSION_BYTES: usize = 256 << 20;
/// Most work one node may do: a node's eval is not interrupted by the run budget, so
/// this bounds one node's time. Some reference paths cost ~100 ns per operation under
/// AddressSanitizer (an int8 BATCH_MATMUL of 1.3e7 operations took 1.7 s of CPU, twice
/// that on a loaded machine): 1e7 keeps every node well under a second.
const NODE_WORK: f64 = 1e7;
/// Largest input the run target fills (bytes); larger inputs are left zeroed.
const MAX_FILL: usize = 16 << 20;

fn resolver() -> Arc<dyn OpResolver> {
    static R: OnceLock<Arc<dyn OpResolver>> = OnceLock::new();
    R.get_or_init(|| Arc::new(CpuResolver::optimized())).clone()
}

fn plan_options() -> PlanOptions {
    PlanOptions {
        threads: 1,
        prepare: PrepareLimits {
            max_nodes: 50_000,
            max_time: Some(PREPARE_TIME),
            max_folded_bytes: 64 << 20,
            max_arena_bytes: SESSION_BYTES,
            max_shape_sets: 8,
            max_node_work: NODE_WORK,
        },
        ..PlanOptions::default()
    }
}

/// The loader and verifier (what `switchyard inspect` and every load do first), then
/// prepare on the CPU.
pub fn model(data: &[u8]) {
    let Ok(model) = Model::from_bytes(data) else {
        return;
    };
    let _ = Plan::new(Arc::new(model), resolver(), plan_options());
}

/// A model and inputs for it: the first 8 bytes seed the input values, the rest is the
/// model. Loads, prepares, opens a session with a memory limit and runs under a node
/// and time budget, twice (the second run sees the state the first left).
pub fn run(data: &[u8]) {
    let Some((seed, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    let Ok(plan) = Plan::new(Arc::new(model), resolver(), plan_options()) else {
        return;
    };
    let Ok(mut session) = plan.session(SessionLimits {
        max_bytes: SESSION_BYTES,
    }) else {
        return;
    };
    let mut rng = u64::from_le_bytes(*seed) | 1;
    for i in 0..plan.inputs().len() {
        let Some(info) = plan.inputs().get(i) else {
            break;
        };
        let len = info
            .shape
            .iter()
            .try_fold(info.dtype.size(), |acc, &d| acc.checked_mul(d));
        let Some(len) = len.filter(|&l| l <= MAX_FILL) else {
            continue;
        };
        let mut buf = vec![0u8; len];
        fill(&mut buf, info.dtype, &mut rng);
        let _ = session.set_input(i, &buf);
    }
    for _ in 0..2 {
        let mut budget = Budget::nodes(MAX_NODES).with_timeout(RUN_TIME);
        if session.invoke(&mut budget).is_err() {
            return;
        }
        for o in 0..session.output_count() {
            let _ = session.output(o);
        }
    }
}

/// Input values: mostly ordinary numbers, with the edge cases kernels get wrong
/// (zero, -1, the extremes, NaN and infinities for floats) mixed in.
fn fill(buf: &mut [u8], dtype: DType, rng: &mut u64) {
    let mut next = || {
        // xorshift64: deterministic per input, so a crash replays.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    match dtype {
        DType::F32 => {
            for c in buf.chunks_exact_mut(4) {
                let r = next();
                let v = match r % 16 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    3 => 0.0,
                    4 => f32::MAX,
                    _ => ((r >> 8) as i32 as f32) / (i32::MAX as f32) * 8.0,
                };
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::I32 | DType::I64 => {
            let w = dtype.size();
            for c in buf.chunks_exact_mut(w) {
                let r = next();
                let v: i64 = match r % 8 {
                    0 => 0,
                    1 => -1,
                    2 => i64::MIN,
                    3 => i64::MAX,
                    _ => ((r >> 8) % 64) as i64 - 32,
                };
                c.copy_from_slice(&v.to_le_bytes()[..w]);
            }
        }
        _ => {
            for b in buf.iter_mut() {
                *b = next() as u8;
            }
        }
    }
}

/// The model inputs the request target checks against: a fixed float input, one whose
/// batch dimension is dynamic, and an int64 one.
fn specs() -> [TensorSpec; 3] {
    [
        TensorSpec {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![1, 4],
            signature: None,
        },
        TensorSpec {
            name: "batch".into(),
            dtype: DType::F32,
            shape: vec![1, 16],
            signature: Some(vec![-1, 16]),
        },
        TensorSpec {
            name: "ids".into(),
            dtype: DType::I64,
            shape: vec![8],
            signature: None,
        },
    ]
}

/// gRPC request decoding: the first byte picks what the rest is. Protobuf bodies of
/// every request the service takes are decoded as tonic's codec does; run requests then
/// go through the daemon's own input checks, and headers through the identity check
/// that runs before any body is read.
pub fn grpc_request(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            let Ok(r) = v1::RunRequest::decode(rest) else {
                return;
            };
            let _ = crate::service::client_request_id(&r.client_request_id);
            let specs = specs();
            for (i, t) in r.inputs.iter().enumerate() {
                if let Some(spec) = specs.get(i % specs.len())
                    && let Ok((_, _, expected)) =
                        crate::service::check_tensor(i, t, spec, r.allow_resize)
                    && let Some(v1::tensor::Data::Shm(s)) = &t.data
                {
                    let _ = crate::shm::check_range(expected, s.offset, s.length);
                }
            }
        }
        1 => {
            // The model a load carries goes where a load sends it.
            if let Ok(r) = v1::LoadModelRequest::decode(rest) {
                model(&r.model);
            }
        }
        2 => {
            let _ = v1::LoadModelChunk::decode(rest);
        }
        3 => identify(rest),
        4 => {
            let _ = v1::OpenSessionRequest::decode(rest);
            let _ = v1::ResetSessionRequest::decode(rest);
        }
        5 => {
            let _ = v1::UnloadModelRequest::decode(rest);
            let _ = v1::ReleaseRegionRequest::decode(rest);
        }
        6 => {
            let _ = v1::GetPlacementRequest::decode(rest);
            let _ = v1::CloseSessionRequest::decode(rest);
        }
        _ => {
            let _ = v1::GetMetricsRequest::decode(rest);
            let _ = v1::ListAllowlistRequest::decode(rest);
        }
    }
}

/// The identity check of a TCP request from its `authorization` header alone.
fn identify(value: &[u8]) {
    let Ok(v) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, v);
    let mut ext = http::Extensions::new();
    ext.insert(tonic::transport::server::TcpConnectInfo {
        local_addr: None,
        remote_addr: None,
    });
    let config = DaemonConfig {
        tokens: vec![TokenConfig {
            token: "fuzz-token".into(),
            tenant: "fuzz".into(),
            admin: false,
        }],
        ..DaemonConfig::default()
    };
    let _ = crate::auth::identify(&config, &ext, &headers);
}

/// The shared-memory side socket, for real: the input is a script of messages a client
/// sends over a socketpair (bytes, and how many memfds of which size and seals ride
/// along), served by the daemon's own connection handler under a small quota. After
/// the client hangs up every region is released and every descriptor closed: the
/// process has exactly the descriptors it had before (issue 10, defect 6).
pub fn shm_side(data: &[u8]) {
    use std::os::fd::AsRawFd;

    let rt = runtime();
    let before = crate::fdpass::open_fd_count().ok();
    let regions = Arc::new(crate::shm::Regions::new(QuotaConfig {
        regions: 4,
        region_bytes: 4 << 20,
        ..QuotaConfig::default()
    }));
    {
        let Ok((client, server)) = std::os::unix::net::UnixStream::pair() else {
            return;
        };
        let mut script = data;
        // At most 16 messages: the replies of all of them fit in the socket buffer, so
        // the handler never blocks on a client that does not read.
        for _ in 0..16 {
            let Some((&op, rest)) = script.split_first() else {
                break;
            };
            let Some((&len, rest)) = rest.split_first() else {
                break;
            };
            let take = usize::from(len % 24).min(rest.len());
            let (body, rest) = rest.split_at(take);
            script = rest;
            let fds: Vec<std::os::fd::OwnedFd> = (0..op % 8)
                .filter_map(|k| memfd(op.rotate_left(u32::from(k))))
                .collect();
            let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
            // The magic header when the op says so, so registrations get through.
            let msg: Vec<u8> = if op & 0x80 != 0 {
                crate::shm::REGISTER_MAGIC.to_vec()
            } else {
                body.to_vec()
            };
            if crate::fdpass::send(client.as_raw_fd(), &msg, &raw).is_err() {
                break;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Write);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let regions2 = regions.clone();
        rt.block_on(async move {
            let _ = server.set_nonblocking(true);
            let Ok(server) = tokio::net::UnixStream::from_std(server) else {
                return;
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                crate::shm::serve_connection(server, regions2, stop_rx),
            )
            .await;
        });
        drop(client);
    }
    assert_eq!(regions.count(), 0, "a closed side connection kept regions");
    drop(regions);
    if let (Some(b), Ok(a)) = (before, crate::fdpass::open_fd_count()) {
        assert_eq!(a, b, "the side socket leaked descriptors");
    }
}

/// One runtime for every input, made before the first descriptor count.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("fuzz target runtime: {e}"))
    })
}

/// A memfd picked by `sel`: its size (empty, a page, 1 MiB, past the quota) and whether
/// it is sealed against shrinking, as the protocol requires.
fn memfd(sel: u8) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"fuzz", MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC).ok()?;
    let size: i64 = match sel % 4 {
        0 => 0,
        1 => 4096,
        2 => 1 << 20,
        _ => 8 << 20,
    };
    nix::unistd::ftruncate(&fd, size).ok()?;
    if sel & 0x10 != 0 {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).ok()?;
    }
    Some(fd)
}
