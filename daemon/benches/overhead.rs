//! Per-request overhead of the daemon: the same model run in-process and through a
//! separate `switchyardd` process (this package's binary, embedded defaults, a temporary
//! Unix socket, the real client), over a run channel (the fast path, shared memory, no
//! gRPC per run) and over gRPC with tensors in shared memory and inline, for 1 KiB and
//! 4 MiB tensors. Prints medians and the ratio daemon / in-process, next to the floor:
//! a 1 KiB round trip on a bare Unix socket pair between two threads. For the fast path
//! it also prints the median of what the daemon reports as queueing (lease, arbiter
//! queue and the handoff to the thread that runs the model and back), the part of the
//! overhead that is scheduling rather than transport.
//!
//! `cargo bench -p switchyard-daemon --bench overhead`
// The old client entry points (string ids, parallel output vectors) are deprecated;
// these tests still exercise them until they move to `Model`/`Run`.
#![allow(deprecated)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_client::{Client, Tensor};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Interpreter, InterpreterOptions, Model, OpKind, OpOptions,
};

/// `y = x + 1` over `n` floats: compute is tiny, so what the daemon adds shows.
fn add_model(n: usize) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, n]);
    let k = sg.constant_f32("one", &[1], &[1.0]);
    let y = sg.tensor("y", DType::F32, &[1, n]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(k)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y]);
    mb.finish()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..runs.div_ceil(10) {
        f().await;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    median(v)
}

/// As `time`, for the fast path, whose runs block the calling thread.
fn time_sync(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..runs.div_ceil(10) {
        f();
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    median(v)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A `switchyardd` process of its own, as apps meet it; SIGKILLed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("switchyard.sock");
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\n",
                socket.display(),
                dir.path().join("state").display()
            ),
        )
        .expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyardd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start switchyardd");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "switchyardd did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor under any IPC design: 1 KiB there and back on a Unix socket pair.
fn unix_socket_round_trip(runs: usize) -> Duration {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let msg = [7u8; 1024];
    let mut back = [0u8; 1024];
    let mut v = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let t = Instant::now();
        a.write_all(&msg).expect("write");
        a.read_exact(&mut back).expect("read");
        if i >= runs / 10 {
            v.push(t.elapsed());
        }
    }
    drop(a);
    let _ = echo.join();
    median(v)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let floor = unix_socket_round_trip(20_000);
    println!(
        "floor: 1 KiB round trip on a Unix socket pair {:.1} us",
        floor.as_secs_f64() * 1e6
    );
    let daemon = Daemon::start();
    let socket = daemon.socket.clone();
    let mut client = Client::connect_unix(&socket).await.expect("connect");

    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>12} {:>11} {:>11} {:>11}",
        "tensor",
        "in-process",
        "fast path",
        "gRPC shm",
        "gRPC inline",
        "ratio fast",
        "ratio shm",
        "ratio inl"
    );
    for (label, bytes, runs) in [("1 KiB", 1usize << 10, 2000usize), ("4 MiB", 4 << 20, 60)] {
        let n = bytes / 4;
        let model_bytes = add_model(n);
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Tensor::from_f32(vec![1, n as u64], &values);

        let model = Arc::new(Model::from_bytes(&model_bytes).expect("model"));
        let mut it = Interpreter::new(
            model,
            Arc::new(CpuResolver::optimized()),
            InterpreterOptions::default(),
        )
        .expect("interpreter");
        let local_in =
            switchyard_interpreter::Tensor::from_f32(vec![1, n], &values).expect("tensor");
        let local = time(runs, || {
            let out = it.run(&[local_in.view()]).expect("run");
            std::hint::black_box(out);
            async {}
        })
        .await;

        let model = client.load_bytes("bench", model_bytes).await.expect("load");
        let info = model.meta().clone();
        let inline = time(runs, || {
            let mut c = client.clone();
            let id = info.id.clone();
            let x = x.clone();
            async move {
                let out = c.run(&id, &[x]).await.expect("run");
                std::hint::black_box(out);
            }
        })
        .await;

        let mut region = client.create_region(2 * bytes).expect("region");
        let input = region.write_tensor(0, &x).expect("write");
        let slot = region.slot(bytes as u64, bytes as u64).expect("slot");
        let shm = time(runs, || {
            let mut c = client.clone();
            let id = info.id.clone();
            let input = input.clone();
            async move {
                let out = c.run_shm(&id, &[input], &[slot]).await.expect("run");
                std::hint::black_box(out);
            }
        })
        .await;
        let check = client
            .run_shm(&info.id, std::slice::from_ref(&input), &[slot])
            .await
            .expect("run");
        let got = region
            .read(&check.shm[0].expect("shm output"))
            .expect("read");
        assert_eq!(&got[..4], &1.0f32.to_le_bytes());
        drop(region);

        let pool = client.shm_pool(2 * bytes + 4096).expect("pool");
        let fast_in = pool.tensor(&x).expect("input");
        let fast_out = pool.alloc(bytes).expect("output");
        let mut channel = model.fast_channel(&pool).await.expect("run channel");
        let mut queued = Vec::with_capacity(runs);
        let fast = time_sync(runs, || {
            let out = channel.run(&[&fast_in], &[&fast_out]).expect("run");
            queued.push(out.timing.queue);
            std::hint::black_box(out);
        });
        let checked = channel.run(&[&fast_in], &[&fast_out]).expect("run");
        assert_eq!(checked.outputs[0].length, bytes as u64);
        assert_eq!(&fast_out.bytes()[..4], &1.0f32.to_le_bytes());
        let queue = median(queued);
        let mut lazy = model
            .fast_channel_spin(&pool, Duration::ZERO)
            .await
            .expect("run channel");
        let no_spin = time_sync(runs, || {
            std::hint::black_box(lazy.run(&[&fast_in], &[&fast_out]).expect("run"));
        });
        drop((channel, lazy, fast_in, fast_out, pool));

        let ratio = |d: Duration| d.as_secs_f64() / local.as_secs_f64();
        println!(
            "{label:<8} {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>10.1}x {:>10.1}x {:>10.1}x",
            ms(local),
            ms(fast),
            ms(shm),
            ms(inline),
            ratio(fast),
            ratio(shm),
            ratio(inline)
        );
        println!(
            "{:<8} overhead per request: fast path {:.1} us (without spinning {:.1} us), gRPC shm {:.1} us, gRPC inline {:.1} us; socketpair floor {:.1} us",
            "",
            us(fast.saturating_sub(local)),
            us(no_spin.saturating_sub(local)),
            us(shm.saturating_sub(local)),
            us(inline.saturating_sub(local)),
            us(floor)
        );
        println!(
            "{:<8} fast path: the daemon reports a median {:.1} us of queueing (lease, arbiter, handoff to the run thread and back)",
            "",
            us(queue)
        );
    }
    drop(daemon);
}
