//! End-to-end tests of run channels (the fast path, docs/shm-protocol.md): a real
//! `switchyardd`, the Rust client's `FastChannel`, a hand-written hostile ring writer
//! that speaks the protocol from raw descriptors, and a client SIGKILLed mid-request.
//!
//! The helper process of the last test is this binary re-run with `--ignored --exact`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_client::blocking::Client;
use switchyard_client::{DType, OutputData, Run, ShmSlice, Tensor};
use switchyard_proto::fastpath::{self as wire, InputRef, RequestFrame, ResponseFrame};
use switchyard_proto::v1::{self, ShmRef};
use switchyard_testkit::{compare, default_tolerance};
use switchyard_tests::spawn::Daemon;
use switchyard_tests::{crafted, golden, model_path};

const STEM: &str = "mp_iris_landmark";

fn input_tensor() -> Tensor {
    let x = golden(STEM, "input_0.npy").expect("input_0.npy");
    Tensor::new(
        DType::Float32,
        x.shape.iter().map(|&d| d as u64).collect(),
        x.data.as_slice().to_vec(),
    )
    .unwrap()
}

/// The fast path answers what the gRPC path answers, byte for byte, and both match
/// LiteRT's golden outputs.
#[test]
fn fast_path_results_equal_grpc_and_litert() {
    let mut d = Daemon::start("");
    let mut c = d.client();
    let model = c.load(model_path(STEM)).unwrap();
    let x = input_tensor();
    let pool = c.shm_pool(1 << 20).unwrap();
    let input = pool.tensor(&x).unwrap();
    let outs: Vec<ShmSlice> = model
        .outputs()
        .iter()
        .map(|s| pool.alloc(s.byte_len()).unwrap())
        .collect();
    let out_refs: Vec<&ShmSlice> = outs.iter().collect();
    let mut ch = model.fast_channel(&pool).unwrap();
    let grpc = model.run(Run::new().input(x.clone())).unwrap();
    for round in 0..3 {
        let got = ch.run(&[&input], &out_refs).unwrap();
        assert_eq!(got.outputs.len(), grpc.tensors.len());
        for (k, (fast, slow)) in got.outputs.iter().zip(&grpc.tensors).enumerate() {
            assert_eq!(fast.dtype, slow.dtype, "output {k}");
            assert_eq!(fast.shape, slow.shape, "output {k}");
            let OutputData::Inline(want) = &slow.data else {
                panic!("gRPC output {k} not inline")
            };
            let bytes = outs[k].prefix(fast.length).unwrap();
            assert_eq!(bytes, want.as_slice(), "round {round}, output {k}");
            let e = golden(STEM, &format!("output_{k}.ref.npy")).expect("golden output");
            let a = switchyard_interpreter::Tensor::from_bytes(
                e.dtype,
                fast.shape.iter().map(|&d| d as usize).collect(),
                bytes,
            )
            .unwrap();
            compare(&a, &e, default_tolerance(e.dtype)).unwrap();
        }
        assert!(got.request_id > 0);
    }
    // The runs were accounted like gRPC runs: four requests for this tenant.
    let st = c.status().unwrap();
    assert_eq!(st.requests, 4, "{st:?}");
    // Wrong inputs get the gRPC path's typed errors.
    let small = pool.alloc(16).unwrap();
    let bad = switchyard_client::ShmTensor {
        dtype: DType::Float32,
        shape: vec![1, 2, 2, 1],
        slice: small,
    };
    let e = ch.run(&[&bad], &out_refs).unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    let e = ch.run(&[&input], &out_refs[..1]).unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    // And the channel keeps serving after them.
    ch.run(&[&input], &out_refs).unwrap();
    d.assert_alive("fast path runs");
}

/// The protocol spoken from raw descriptors, as a hostile client would.
struct RawChannel {
    _side: UnixStream,
    ring: std::fs::File,
    doorbell: std::fs::File,
}

fn open_raw(d: &Daemon, model_id: &str) -> RawChannel {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = d.socket.clone();
    let reply = rt.block_on(async move {
        let channel = switchyard_tests::spawn::raw_channel(socket.clone()).await;
        let mut rpc = v1::switchyard_client::SwitchyardClient::new(channel);
        rpc.open_run_channel(v1::OpenRunChannelRequest {
            model_id: model_id.to_owned(),
            session_id: 0,
            spin_us: 0,
        })
        .await
        .unwrap()
        .into_inner()
    });
    let mut side = UnixStream::connect(d.shm_socket()).unwrap();
    let mut claim = b"SYRUN\x01\0\0".to_vec();
    claim.extend_from_slice(&reply.channel_id.to_le_bytes());
    claim.extend_from_slice(&reply.ticket);
    side.write_all(&claim).unwrap();
    let mut head = [0u8; 21];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut fds = Vec::new();
    let n = {
        let mut iov = [std::io::IoSliceMut::new(&mut head)];
        let msg = nix::sys::socket::recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&side),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw);
            }
        }
        msg.bytes
    };
    side.read_exact(&mut head[n..]).unwrap();
    assert_eq!(head[0], 0, "claim refused");
    assert_eq!(fds.len(), 3);
    // SAFETY: SCM_RIGHTS just installed these three descriptors in this process.
    let [ring, doorbell, _completion] =
        [fds[0], fds[1], fds[2]].map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    RawChannel {
        _side: side,
        ring,
        doorbell,
    }
}

impl RawChannel {
    /// Writes `frame` into the slot, publishes `seq`, rings, and returns the answer.
    fn send(&mut self, frame: &[u8], seq: u64) -> ResponseFrame {
        self.ring
            .write_all_at(frame, wire::REQUEST_AT as u64)
            .unwrap();
        self.ring
            .write_all_at(&seq.to_le_bytes(), wire::REQ_SEQ_AT as u64)
            .unwrap();
        self.doorbell.write_all(&1u64.to_ne_bytes()).unwrap();
        let t = Instant::now();
        loop {
            let mut w = [0u8; 8];
            self.ring
                .read_exact_at(&mut w, wire::RESP_SEQ_AT as u64)
                .unwrap();
            if u64::from_le_bytes(w) == seq {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no answer to {seq}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut b = [0u8; wire::RESPONSE_LEN];
        self.ring
            .read_exact_at(&mut b, wire::RESPONSE_AT as u64)
            .unwrap();
        ResponseFrame::decode(&b).unwrap()
    }
}

/// A client writing arbitrary bytes into its ring gets errors; the daemon and the
/// other channels keep going.
#[test]
fn a_hostile_ring_writer_gets_errors_and_others_keep_being_served() {
    let mut d = Daemon::start("");
    let c = d.client();
    let model = c.load_bytes("add", crafted::add_model(0.5)).unwrap();
    let pool = c.shm_pool(1 << 16).unwrap();
    let x = Tensor::from_f32(vec![1, 4], &[1.0; 4]);
    let input = pool.tensor(&x).unwrap();
    let out = pool.alloc(16).unwrap();
    // Where the hostile client's well-formed requests write (not the good one's input).
    let scratch_slice = pool.alloc(16).unwrap();
    let scratch = scratch_slice.shm_ref();
    let mut good = model.fast_channel(&pool).unwrap();
    let check_good = |good: &mut switchyard_client::FastChannel| {
        let r = good.run(&[&input], &[&out]).unwrap();
        assert_eq!(r.outputs[0].length, 16);
        let v: Vec<f32> = out
            .bytes()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, vec![1.5; 4]);
    };
    check_good(&mut good);

    let mut bad = open_raw(&d, model.id());
    let mut seq = 0u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    // Garbage frames.
    for _ in 0..20 {
        seq += 1;
        let r = bad.send(&noise(wire::REQUEST_LEN), seq);
        assert_ne!(r.status, 0, "garbage ran");
        check_good(&mut good);
    }
    // Well-formed frames naming what the caller does not own or what does not exist.
    let frame = |region: u64, offset: u64| RequestFrame {
        inputs: vec![InputRef {
            dtype: v1::DataType::Float32 as i32,
            shape: vec![1, 4],
            shm: ShmRef {
                region,
                offset,
                length: 16,
            },
        }],
        outputs: vec![scratch],
        ..RequestFrame::default()
    };
    seq += 1;
    let r = bad.send(&frame(9999, 0).encode().unwrap(), seq);
    assert_eq!(r.status, tonic::Code::NotFound as u32, "{}", r.message);
    seq += 1;
    let r = bad.send(
        &frame(pool.region_id(), u64::MAX - 4).encode().unwrap(),
        seq,
    );
    assert_eq!(
        r.status,
        tonic::Code::InvalidArgument as u32,
        "{}",
        r.message
    );
    // A sequence number that jumps is refused, and the next one after it is served.
    seq += 1_000_000;
    let r = bad.send(&frame(pool.region_id(), 0).encode().unwrap(), seq);
    assert_eq!(r.status, tonic::Code::InvalidArgument as u32);
    assert!(r.message.contains("sequence"), "{}", r.message);
    seq += 1;
    let ok = bad.send(
        &frame(pool.region_id(), input_offset(&input))
            .encode()
            .unwrap(),
        seq,
    );
    assert_eq!(ok.status, 0, "{}", ok.message);
    // The whole page overwritten, the daemon's own words included.
    bad.ring.write_all_at(&noise(wire::RING_BYTES), 0).unwrap();
    seq += 1;
    let r = bad.send(&noise(wire::REQUEST_LEN), seq);
    assert_ne!(r.status, 0);
    check_good(&mut good);
    d.assert_alive("a hostile ring writer");
}

fn input_offset(t: &switchyard_client::ShmTensor) -> u64 {
    t.slice.shm_ref().offset
}

/// A client killed in the middle of a request: the daemon cancels the run, frees the
/// in-flight slot and every channel the client held.
#[test]
fn a_client_killed_mid_request_frees_its_channels() {
    let d = Daemon::start("[daemon.limits]\nrun_max_nodes = 1000000000000000\nrun_max_ms = 0\n");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_holds_every_channel_and_runs_forever",
            "--nocapture",
        ])
        .env("SY_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let t = Instant::now();
    loop {
        let line = lines.next().expect("helper ended").unwrap();
        if line.contains("RUNNING") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    let mut c = d.client();
    // The run is in flight and every channel slot is taken.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.status().unwrap().in_flight, 1);
    let model = c.load_bytes("loops", crafted::nested_while()).unwrap();
    let pool = c.shm_pool(4096).unwrap();
    let e = model.fast_channel(&pool).unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while c.status().unwrap().in_flight != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the killed client's run is still in flight:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let mut channels = Vec::new();
    while channels.len() < 8 {
        match model.fast_channel(&pool) {
            Ok(ch) => channels.push(ch),
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the killed client's channels were not freed: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // They work.
    let input = pool
        .tensor(&Tensor::new(DType::Int32, vec![1], 3i32.to_le_bytes().to_vec()).unwrap())
        .unwrap();
    let out = pool.alloc(4).unwrap();
    let r = channels[7].run(&[&input], &[&out]).unwrap();
    assert_eq!(out.prefix(r.outputs[0].length).unwrap(), 3i32.to_le_bytes());
}

#[test]
#[ignore = "helper process of a_client_killed_mid_request_frees_its_channels"]
fn helper_holds_every_channel_and_runs_forever() {
    let socket = std::env::var("SY_SOCKET").unwrap();
    let c = Client::connect_unix(&socket).unwrap();
    let model = c.load_bytes("loops", crafted::nested_while()).unwrap();
    let pool = c.shm_pool(4096).unwrap();
    let mut chans: Vec<_> = (0..8).map(|_| model.fast_channel(&pool).unwrap()).collect();
    let n = Tensor::new(DType::Int32, vec![1], 999_999i32.to_le_bytes().to_vec()).unwrap();
    let input = pool.tensor(&n).unwrap();
    let out = pool.alloc(4).unwrap();
    println!("RUNNING");
    std::io::stdout().flush().unwrap();
    let r = chans[0].run(&[&input], &[&out]);
    panic!("10^12 iterations cannot finish: {r:?}");
}
