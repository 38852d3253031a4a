//! Memory and load-time figures of the shared registry and sessions (issue 9), each next
//! to LiteRT's measured in the same run:
//!
//! 1. A real `switchyardd` process (this package's release binary) loads pose detection
//!    and runs it: its RSS growth for one model with one session, against a LiteRT
//!    process's growth for the same model (Interpreter + allocate_tensors + 5 invokes).
//! 2. N = 1, 4, 16 sessions of the model: RSS growth per added session against the
//!    session's arena (what `ListSessions` reports), and `OpenSession` time against the
//!    first load's prepare.
//! 3. Concurrent loads: a small model's load time alone, and while another model's
//!    slow first load (verify, validate on the delegates, prepare) is in flight.
//! 4. First-load time against LiteRT's (Interpreter + allocate_tensors) for the same
//!    model, as a ratio (issue 8: within 2x). The load answers on the CPU plan and
//!    validates the delegates in the background (`scheduler.validate_in_background`);
//!    how long that validation took after the answer is printed beside it, and the
//!    memory figures are taken once it has ended, as before.
//!
//! The same under the embedded defaults (GPU on lavapipe, emulated DSP and NPU) and with
//! every delegate off (CPU only), so the delegates' share of the daemon's memory shows.
//!
//! `cargo bench -p switchyard-daemon --bench memory [-- --model mp_pose_detection]`
//! (needs `models/` and the project venv with LiteRT: scripts/setup.sh)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_client::blocking::{Client, Model};
use switchyard_client::{Run, Tensor};
use switchyard_interpreter::example_models::add_constant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Daemon {
    fn start(devices_off: bool) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("switchyard.sock");
        let mut toml = format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\n\
             # The concurrent-load part loads a dozen small models as one tenant.\n\
             [daemon.quota]\nmodels = 64\n",
            socket.display(),
            dir.path().join("state").display()
        );
        if devices_off {
            toml.push_str(
                "[devices.gpu]\nenabled = false\n[devices.dsp]\nenabled = false\n\
                 [devices.npu]\nenabled = false\n",
            );
        }
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, toml).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyardd"))
            .arg("--config")
            .arg(&config)
            .env("SWITCHYARD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("switchyardd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "switchyardd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let start-up work (delegate probing) settle before the baseline.
        std::thread::sleep(Duration::from_millis(500));
        Daemon {
            child,
            _dir: dir,
            socket,
        }
    }

    fn client(&self) -> Client {
        Client::connect_unix(&self.socket).expect("connect")
    }

    fn rss_mib(&self) -> f64 {
        rss_kib(self.child.id()) as f64 / 1024.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A run of zero tensors of the model's input shapes.
fn zero_run(m: &Model) -> Run {
    m.inputs().iter().fold(Run::new(), |r, t| {
        r.input(Tensor::new(t.dtype, t.shape.clone(), vec![0; t.byte_len()]).expect("tensor"))
    })
}

/// LiteRT's RSS growth for one process loading the model and invoking it 5 times
/// (after numpy and LiteRT are imported), in MiB, and its load time in ms.
fn litert(model: &Path) -> Option<(f64, f64)> {
    let py = root().join(".venv/bin/python");
    let script = r#"
import sys, time, numpy as np
from ai_edge_litert.interpreter import Interpreter
def rss():
    for l in open('/proc/self/status'):
        if l.startswith('VmRSS:'):
            return int(l.split()[1]) / 1024.0
base = rss()
t = time.perf_counter()
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
load_ms = (time.perf_counter() - t) * 1e3
for d in it.get_input_details():
    it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))
for _ in range(5):
    it.invoke()
print(rss() - base, load_ms)
"#;
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(model)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("LiteRT: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn memory(model: &Path, devices_off: bool, litert: Option<(f64, f64)>) {
    let litert_mib = litert.map(|l| l.0);
    let label = if devices_off {
        "cpu only"
    } else {
        "embedded defaults"
    };
    let d = Daemon::start(devices_off);
    let mut c = d.client();
    let base = d.rss_mib();
    let t = Instant::now();
    let m = c.load(model).expect("load");
    let load = t.elapsed();
    // The memory figures below include what validation leaves behind.
    let status = c
        .wait_placed(m.id(), Duration::from_secs(600))
        .expect("placement");
    let validated = t.elapsed();
    let after_load = d.rss_mib();
    // One session, as an app holds it, run 5 times: the figure set against a LiteRT
    // process (one interpreter, 5 invokes).
    let t = Instant::now();
    let first = m.open_session().expect("open session");
    let mut open_ms = vec![ms(t.elapsed())];
    for _ in 0..5 {
        first.run(zero_run(&m)).expect("run session");
    }
    let rss_one = d.rss_mib();
    // Runs without a session take a pooled one: a second arena.
    for _ in 0..5 {
        m.run(zero_run(&m)).expect("run");
    }
    let after_pooled = d.rss_mib();
    println!("\n## {label}: {}", model.display());
    match litert {
        Some((_, lite_ms)) => println!(
            "first load {:.1} ms vs LiteRT load {lite_ms:.1} ms: ratio {:.2} (target <= 2); \
             validation {} {:.0} ms after the load answered",
            ms(load),
            ms(load) / lite_ms,
            status.validation,
            ms(validated - load)
        ),
        None => println!(
            "first load {:.1} ms; validation {} {:.0} ms after the load answered",
            ms(load),
            status.validation,
            ms(validated - load)
        ),
    }
    println!(
        "daemon RSS {base:.1} MiB at start; +{:.1} MiB after the load ({:.0} ms; plan {:.2} MiB, \
         session {:.2} MiB); +{:.1} MiB with one session run 5 times; +{:.1} MiB after 5 more \
         runs without a session (a pooled session: a second arena)",
        after_load - base,
        ms(load),
        m.meta().plan_bytes as f64 / (1 << 20) as f64,
        m.meta().arena_bytes as f64 / (1 << 20) as f64,
        rss_one - base,
        after_pooled - base,
    );
    // More sessions: open, run each once (so its arena is touched), measure. Growth per
    // added session counts from after the pooled runs.
    let mut sessions = vec![first];
    let mut rows = vec![(1usize, rss_one, 0.0)];
    for n in [4usize, 16] {
        while sessions.len() < n {
            let t = Instant::now();
            let s = m.open_session().expect("open session");
            open_ms.push(ms(t.elapsed()));
            s.run(zero_run(&m)).expect("run session");
            sessions.push(s);
        }
        rows.push((n, d.rss_mib(), 0.0));
    }
    let arena = c
        .list_sessions()
        .expect("list")
        .iter()
        .map(|s| s.memory_bytes)
        .max()
        .unwrap_or(0) as f64
        / (1 << 20) as f64;
    for r in &mut rows {
        r.2 = arena;
    }
    println!(
        "| sessions | daemon RSS growth MiB | per added session MiB | session arena MiB | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &(n, rss, arena) in &rows {
        let per = if n > 1 {
            (rss - after_pooled) / (n - 1) as f64
        } else {
            f64::NAN
        };
        println!(
            "| {n} | {:.1} | {} | {arena:.2} | {} |",
            rss - base,
            if n > 1 {
                format!("{per:.2}")
            } else {
                "-".into()
            },
            if n > 1 {
                format!("{:.2}", per / arena)
            } else {
                "-".into()
            }
        );
    }
    println!(
        "OpenSession median {:.3} ms = {:.2}% of the first load ({:.0} ms)",
        median(open_ms.clone()),
        100.0 * median(open_ms) / ms(load),
        ms(load)
    );
    if let Some(l) = litert_mib {
        println!(
            "one model + one session: daemon +{:.1} MiB vs LiteRT process +{l:.1} MiB: ratio {:.2}",
            rss_one - base,
            (rss_one - base) / l
        );
    }
}

fn concurrent_loads(slow: &Path) {
    let d = Daemon::start(false);
    let c = d.client();
    // Warm-up: the first load pays for lazily built state.
    c.load_bytes("warm", add_constant(-1.0))
        .expect("warm-up load");
    let mut alone = Vec::new();
    for k in 0..9 {
        let t = Instant::now();
        c.load_bytes("b", add_constant(k as f32)).expect("load b");
        alone.push(ms(t.elapsed()));
    }
    let slow_bytes = std::fs::read(slow).expect("slow model");
    let socket = d.socket.clone();
    let a = std::thread::spawn(move || {
        let c = Client::connect_unix(socket).expect("connect");
        let t = Instant::now();
        c.load_bytes("a", slow_bytes).expect("load a");
        ms(t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut during = Vec::new();
    let mut overlapped = 0;
    for k in 100..109 {
        let t = Instant::now();
        c.load_bytes("b", add_constant(k as f32)).expect("load b");
        during.push(ms(t.elapsed()));
        overlapped += usize::from(!a.is_finished());
    }
    let a_ms = a.join().expect("a");
    let (alone, during) = (median(alone), median(during));
    println!(
        "\n## concurrent loads ({} in flight, {a_ms:.0} ms)",
        slow.display()
    );
    println!(
        "small model load: {alone:.1} ms alone, {during:.1} ms with the slow load in flight \
         ({overlapped}/9 overlapped): extra {:.1} ms (target <= 100 ms)",
        during - alone
    );
}

fn main() {
    let mut model = "mp_pose_detection".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--model"
            && let Some(m) = args.next()
        {
            model = m;
        }
    }
    let path = root().join("models").join(format!("{model}.tflite"));
    if !path.exists() {
        eprintln!("{} missing: run scripts/setup.sh", path.display());
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# memory and load times (load average {})", load.trim());
    let lite = litert(&path);
    match lite {
        Some((mib, load_ms)) => println!(
            "LiteRT (XNNPACK, 1 thread): +{mib:.1} MiB per process for load + 5 invokes, \
             load {load_ms:.0} ms"
        ),
        None => println!("LiteRT: not available (project venv missing)"),
    }
    memory(&path, false, lite);
    memory(&path, true, lite);
    concurrent_loads(&path);
}
