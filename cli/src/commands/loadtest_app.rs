//! `switchyard loadtest-app`: one app of `switchyard loadtest`, a real process that uses
//! the client library the way a camera or microphone app would: its frames land in a
//! shared-memory region, each frame is sent with its priority class and what is left
//! of its deadline, and the app always works on the newest frame (older ones it had no
//! time for are dropped, as a camera pipeline overwrites them). Its twin with its own
//! LiteRT interpreter is `bench/contention/litert_app.py`; both follow the same
//! protocol and the same frame loop, so the two sides are judged alike:
//!
//! 1. load the model, prepare the inputs, run one warm-up frame;
//! 2. print `READY {json}` (RSS before and after the load);
//! 3. read `START <unix time> <seconds>` on stdin, then serve frames until then;
//! 4. print `RESULT {json}`.

use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use switchyard_client::blocking::Client;
use switchyard_client::{DType, Priority, RunOptions, ShmRef};
use switchyard_interpreter::npy;

#[derive(Args, Debug)]
pub struct LoadtestAppArgs {
    /// The daemon's socket.
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub model: PathBuf,
    /// Input tensors (.npy) in the model's input order; zeros when none are given.
    #[arg(long, value_delimiter = ',')]
    pub inputs: Vec<PathBuf>,
    /// Frames per second (ignored with --back-to-back).
    #[arg(long, default_value_t = 0.0)]
    pub fps: f64,
    /// Relative deadline of each frame.
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// realtime, interactive or background.
    #[arg(long, default_value = "interactive")]
    pub priority: String,
    /// The next request as soon as the previous one returns.
    #[arg(long)]
    pub back_to_back: bool,
}

/// What one app reports; the same fields as the LiteRT twin's.
#[derive(Serialize, Default)]
pub struct AppResult {
    pub name: String,
    /// Frames whose arrival fell in the run (back-to-back: requests sent).
    pub frames: u64,
    pub met: u64,
    pub completed: u64,
    /// Superseded by a newer frame before the app could start them.
    pub dropped: u64,
    /// Refused or dropped by the daemon's arbiter.
    pub refused: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Completed requests per second.
    pub throughput: f64,
    pub rss_end_kib: u64,
    pub hwm_kib: u64,
    pub last_error: Option<String>,
}

/// This process's VmRSS and VmHWM in KiB.
pub fn own_memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The p-th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn priority(name: &str) -> anyhow::Result<Priority> {
    Ok(match name {
        "realtime" => Priority::Realtime,
        "interactive" => Priority::Interactive,
        "background" => Priority::Background,
        other => bail!("unknown priority {other:?}"),
    })
}

/// The model's inputs in a shared-memory region, refreshed per frame like a camera
/// writing its buffer, and output slots in the same region.
struct Frames {
    region: switchyard_client::ShmRegion,
    inputs: Vec<(DType, Vec<u64>, Vec<u8>, u64)>,
    outputs: Vec<ShmRef>,
}

impl Frames {
    fn refs(&mut self) -> anyhow::Result<Vec<(DType, Vec<u64>, ShmRef)>> {
        let mut out = Vec::with_capacity(self.inputs.len());
        for (dt, shape, bytes, offset) in &self.inputs {
            let r = self.region.write(*offset, bytes)?;
            out.push((*dt, shape.clone(), r));
        }
        Ok(out)
    }
}

fn prepare(client: &mut Client, args: &LoadtestAppArgs) -> anyhow::Result<(String, Frames)> {
    let model = client
        .load(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    const ALIGN: u64 = 64;
    let align = |n: u64| n.div_ceil(ALIGN) * ALIGN;
    let mut inputs = Vec::new();
    let mut offset = 0u64;
    for (i, t) in model.inputs().iter().enumerate() {
        let dt = t.dtype;
        let bytes = match args.inputs.get(i) {
            Some(p) => npy::read(p)
                .with_context(|| format!("reading {}", p.display()))?
                .data
                .as_slice()
                .to_vec(),
            None => vec![0u8; dt.byte_len(&t.shape).context("input size")?],
        };
        let len = bytes.len() as u64;
        inputs.push((dt, t.shape.clone(), bytes, offset));
        offset += align(len);
    }
    let mut out_sizes = Vec::new();
    for t in model.outputs() {
        let dt = t.dtype;
        // Room for outputs whose shape depends on the inputs.
        out_sizes.push(dt.byte_len(&t.shape).unwrap_or(0) as u64 * 2 + 4096);
    }
    let total = offset + out_sizes.iter().map(|&s| align(s)).sum::<u64>();
    let region = client.create_region(total.max(1) as usize)?;
    let mut outputs = Vec::new();
    for s in out_sizes {
        outputs.push(region.slot(offset, s)?);
        offset += align(s);
    }
    Ok((
        model.id().to_string(),
        Frames {
            region,
            inputs,
            outputs,
        },
    ))
}

/// Waits for `START <unix time> <seconds>` and returns the start and end as instants.
fn wait_for_start() -> anyhow::Result<(Instant, Instant)> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let mut it = line.split_whitespace();
    let (Some("START"), Some(t0), Some(d)) = (it.next(), it.next(), it.next()) else {
        bail!("expected `START <unix time> <seconds>`, got {line:?}");
    };
    let t0: f64 = t0.parse().context("start time")?;
    let d: f64 = d.parse().context("duration")?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let now = Instant::now();
    let start = if t0 >= now_unix {
        now + Duration::from_secs_f64(t0 - now_unix)
    } else {
        now.checked_sub(Duration::from_secs_f64(now_unix - t0))
            .unwrap_or(now)
    };
    Ok((start, start + Duration::from_secs_f64(d.max(0.0))))
}

pub fn run(args: LoadtestAppArgs) -> anyhow::Result<()> {
    let class = priority(&args.priority)?;
    let (rss_before, _) = own_memory_kib();
    let mut client = Client::connect_unix(&args.socket)
        .with_context(|| format!("connecting to {}", args.socket.display()))?;
    let (model, mut frames) = prepare(&mut client, &args)?;
    // One warm-up frame, as an app's first inference after loading.
    let refs = frames.refs()?;
    client.run_shm_with(&model, &refs, &frames.outputs, RunOptions::default())?;
    let (rss_after, _) = own_memory_kib();
    println!(
        "READY {}",
        serde_json::json!({"rss_before_load_kib": rss_before, "rss_after_load_kib": rss_after})
    );
    std::io::stdout().flush()?;
    let (start, end) = wait_for_start()?;
    let mut r = AppResult {
        name: args.name.clone(),
        ..AppResult::default()
    };
    let mut latencies = Vec::new();
    let mut send = |deadline_ms: u64, r: &mut AppResult| -> anyhow::Result<bool> {
        let refs = frames.refs()?;
        let opts = RunOptions {
            priority: class,
            deadline_ms,
        };
        match client.run_shm_with(&model, &refs, &frames.outputs, opts) {
            Ok(_) => {
                r.completed += 1;
                Ok(true)
            }
            Err(e) => {
                match e.code() {
                    Some(tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted) => {
                        r.refused += 1
                    }
                    _ => r.failed += 1,
                }
                r.last_error = Some(e.to_string());
                Ok(false)
            }
        }
    };
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    if args.back_to_back {
        while Instant::now() < end {
            let t = Instant::now();
            r.frames += 1;
            if send(0, &mut r)? {
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    } else {
        if !(args.fps.is_finite() && args.fps > 0.0) {
            bail!("--fps must be positive for a frame app");
        }
        let deadline = args.deadline_ms.unwrap_or(1e3 / args.fps) / 1e3;
        let period = 1.0 / args.fps;
        let span = end.duration_since(start).as_secs_f64();
        r.frames = (span / period).ceil() as u64;
        let mut next = 0u64;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let since = now.duration_since(start).as_secs_f64();
            let newest = (since / period).floor() as u64;
            if newest < next {
                let due = start + Duration::from_secs_f64(next as f64 * period);
                std::thread::sleep(due.saturating_duration_since(now));
                continue;
            }
            if newest >= r.frames {
                break;
            }
            r.dropped += newest - next;
            let arrival = start + Duration::from_secs_f64(newest as f64 * period);
            let due = arrival + Duration::from_secs_f64(deadline);
            let left_ms = due.saturating_duration_since(now).as_secs_f64() * 1e3;
            let ok = send((left_ms.floor() as u64).max(1), &mut r)?;
            let done = Instant::now();
            if ok {
                latencies.push(done.duration_since(arrival).as_secs_f64() * 1e3);
                if done <= due {
                    r.met += 1;
                }
            }
            next = newest + 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    r.p50_ms = percentile(&latencies, 0.50);
    r.p99_ms = percentile(&latencies, 0.99);
    r.throughput = r.completed as f64 / end.duration_since(start).as_secs_f64().max(1e-9);
    let (rss, hwm) = own_memory_kib();
    r.rss_end_kib = rss;
    r.hwm_kib = hwm;
    println!("RESULT {}", serde_json::to_string(&r)?);
    std::io::stdout().flush()?;
    Ok(())
}
