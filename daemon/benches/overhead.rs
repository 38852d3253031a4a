//! Per-request overhead of the daemon: the same model run in-process and through a real
//! `switchyardd` (library `run` on a temporary Unix socket, real client), with tensors
//! inline and in shared memory, for 1 KiB and 4 MiB tensors. Prints medians and the
//! ratio daemon / in-process.
//!
//! `cargo bench -p switchyard-daemon --bench overhead`
// The old client entry points (string ids, parallel output vectors) are deprecated;
// these tests still exercise them until they move to `Model`/`Run`.
#![allow(deprecated)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_client::{Client, Tensor};
use switchyard_config::{Config, DaemonConfig};
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded_defaults();
    config.daemon = DaemonConfig {
        socket: dir.path().join("switchyard.sock"),
        state_dir: dir.path().join("state"),
        ..DaemonConfig::default()
    };
    let listeners = switchyard_daemon::bind(&config.daemon).await.expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let socket = config.daemon.socket.clone();
    let server = tokio::spawn(switchyard_daemon::run(config, listeners, async {
        let _ = stop_rx.await;
    }));
    let mut client = Client::connect_unix(&socket).await.expect("connect");

    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "tensor", "in-process", "daemon inl", "daemon shm", "ratio inline", "ratio shm"
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

        let info = client.load_model("bench", model_bytes).await.expect("load");
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

        println!(
            "{label:<8} {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>13.1}x {:>13.1}x",
            ms(local),
            ms(inline),
            ms(shm),
            inline.as_secs_f64() / local.as_secs_f64(),
            shm.as_secs_f64() / local.as_secs_f64()
        );
        println!(
            "{:<8} overhead per request: inline {:.3} ms, shm {:.3} ms",
            "",
            ms(inline.saturating_sub(local)),
            ms(shm.saturating_sub(local))
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
