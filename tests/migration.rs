//! End-to-end: request-level migration in the real `switchyardd`. A model the allowlist
//! places on the emulated NPU keeps a ready CPU plan, and each request goes to the
//! processor that finishes it first given the queues. Outputs stay LiteRT's whatever
//! processor ran them; which processor ran each request is read from the daemon's
//! metrics (`switchyard_processor_requests_total`).

use std::time::{Duration, Instant};

use switchyard_client::blocking::{Client, Model};
use switchyard_client::{OutputData, Run, Tensor};
use switchyard_tests::spawn::Daemon;
use switchyard_tests::{golden, model_path};

/// Requests of model `id` that ran on each processor so far, from the daemon's metrics.
fn runs_by_processor(c: &mut Client, id: &str) -> Vec<(String, u64)> {
    let text = c.metrics().unwrap();
    let model = format!("model=\"{id}\"");
    text.lines()
        .filter_map(|l| l.strip_prefix("switchyard_model_processor_runs_total{"))
        .filter(|l| l.contains(&model))
        .filter_map(|l| {
            let (labels, n) = l.split_once("} ")?;
            let p = labels.split_once("processor=\"")?.1.strip_suffix('"')?;
            Some((p.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

fn count(runs: &[(String, u64)], processor: &str) -> u64 {
    runs.iter()
        .filter(|(p, _)| p == processor)
        .map(|(_, n)| n)
        .sum()
}

fn golden_run(stem: &str, m: &Model) -> (Tensor, Vec<u8>) {
    let x = golden(stem, "input_0.npy").expect("golden input");
    let want = golden(stem, "output_0.ref.npy").expect("golden output");
    let xv = x.view();
    let input = Tensor::new(
        m.inputs()[0].dtype,
        xv.shape.iter().map(|&s| s as u64).collect(),
        xv.bytes.to_vec(),
    )
    .unwrap();
    (input, want.view().bytes.to_vec())
}

/// A model the emulated NPU takes whole (int8), tiny on the CPU.
const SMALL: &str = "helia_tiny_cnn_int8";
/// A float model (the NPU never takes it) heavy enough to keep a CPU core busy.
const HEAVY: &str = "mp_pose_detection";

/// Zero inputs of the model's shapes.
fn zeros(m: &Model) -> Run {
    m.inputs().iter().fold(Run::new(), |r, t| {
        r.input(Tensor::new(t.dtype, t.shape.clone(), vec![0; t.byte_len()]).unwrap())
    })
}

/// Runs `n` golden requests one after another; each output must be LiteRT's. Returns
/// how many ran on the cpu and on the npu, and the order they ran in (`c`/`n`), for
/// the failure message.
fn serve(c: &mut Client, m: &Model, input: &Tensor, want: &[u8], n: usize) -> (u64, u64, String) {
    let mut order = String::new();
    let mut last = runs_by_processor(c, m.id());
    let first = last.clone();
    for i in 0..n {
        let out = m.run(Run::new().input(input.clone())).unwrap();
        assert_eq!(
            out.tensors[0].data,
            OutputData::Inline(want.to_vec()),
            "request {i}: the output differs from LiteRT's"
        );
        let now = runs_by_processor(c, m.id());
        let ran = |p: &str| count(&now, p) - count(&last, p);
        order.push(match (ran("cpu"), ran("npu")) {
            (1, 0) => 'c',
            (0, 1) => 'n',
            _ => '?',
        });
        last = now;
    }
    let delta = |p: &str| count(&last, p) - count(&first, p);
    assert_eq!(
        delta("cpu") + delta("npu"),
        n as u64,
        "{first:?} -> {last:?}"
    );
    (delta("cpu"), delta("npu"), order)
}

/// The NPU is allowed for the small model and really serves it; the CPU, which runs it
/// faster than the emulated NPU (reference kernels on this host), takes it when idle.
/// While a heavy CPU-only model queues on the CPU, the small model's requests move to
/// the idle NPU, which finishes them first; when the pressure ends they return to the
/// CPU. Every output is LiteRT's, whichever processor ran it.
#[test]
fn requests_move_to_the_processor_that_finishes_first() {
    // One CPU server, so a queue forms; no express lane beside it (the small model would
    // take it instead of the NPU); a fast emulated NPU so the allowlist allows it.
    let d = Daemon::start(
        "[scheduler]\nmigration = true\ncpu_cores = 1\nexpress_ms = 0.0\n\
         validation_runs = 2\n\
         [devices.gpu]\nenabled = false\n[devices.dsp]\nenabled = false\n\
         [devices.npu]\nclock_mhz = 100000.0\nmacs_per_cycle = 4096.0\n\
         elementwise_per_cycle = 4096.0\ndispatch_overhead_us = 2.0\n\
         transfer_gbps = 1000.0\non_chip_memory_bytes = 0\n",
    );
    let mut c = Client::connect_unix(&d.socket).unwrap();
    let small = c.load(model_path(SMALL)).unwrap();
    let status = c.wait_placed(small.id(), Duration::from_secs(120)).unwrap();
    assert_eq!(status.validation, "done", "{}", status.validation_reason);
    assert!(
        status.validation_reason.contains("on npu") && status.validation_reason.contains("allowed"),
        "the npu must be allowed and placed: {}",
        status.validation_reason
    );
    let heavy = c.load(model_path(HEAVY)).unwrap();
    let status = c.wait_placed(heavy.id(), Duration::from_secs(120)).unwrap();
    assert_eq!(status.validation, "done", "{}", status.validation_reason);
    let (input, want) = golden_run(SMALL, &small);

    // Idle: the cost model learns both processors; the CPU finishes first.
    let (_cpu, npu, warm) = serve(&mut c, &small, &input, &want, 30);
    assert!(npu >= 1, "the npu never served the placed model");
    let (cpu_idle, npu_idle, idle) = serve(&mut c, &small, &input, &want, 10);
    println!("warm-up {warm}; idle {idle}");
    assert!(
        cpu_idle >= 8,
        "idle: cpu {cpu_idle}, npu {npu_idle} ({idle})"
    );

    // Pressure: four clients keep heavy requests queued on the one CPU server.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pressure: Vec<_> = (0..4)
        .map(|_| {
            let (heavy, stop) = (heavy.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    heavy.run(zeros(&heavy)).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Until the CPU queue is there: the heavy model has run at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&runs_by_processor(&mut c, heavy.id()), "cpu") < 1 {
        assert!(Instant::now() < deadline, "the heavy model never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (cpu_busy, npu_busy, busy) = serve(&mut c, &small, &input, &want, 10);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let heavy_runs: usize = pressure.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        count(&runs_by_processor(&mut c, heavy.id()), "npu"),
        0,
        "the float model never runs on the int8 npu"
    );
    println!("pressure ({heavy_runs} heavy runs): {busy}");
    assert!(
        npu_busy >= 8,
        "under cpu pressure: cpu {cpu_busy}, npu {npu_busy} ({busy})"
    );

    // Pressure gone: back to the CPU. The first few may still go by figures learned
    // under the pressure; the later ones must be on the CPU.
    let (_, _, after) = serve(&mut c, &small, &input, &want, 20);
    println!("after: {after}");
    let settled = after[10..].matches('c').count();
    assert!(
        settled >= 8,
        "after the pressure: {settled} of the last 10 on the cpu ({after})"
    );
}
