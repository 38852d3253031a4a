//! `switchyard loadtest --workload workloads/<mix>.toml`: many apps sharing one machine,
//! through one `switchyardd` against the status quo, in one run.
//!
//! Each side runs the workload's apps as real processes for the same duration on the
//! same inputs (`golden/<model>/input_<i>.npy`):
//! - **switchyard**: a real `switchyardd` (CPU only unless `--daemon-config` enables
//!   more) and one `switchyard loadtest-app` per app, using the client library with its
//!   frames in shared memory, its priority class and what is left of each frame's
//!   deadline; as root, each tenant runs under its own uid, as apps on a phone do;
//! - **litert**: one `bench/contention/litert_app.py` per app, each with its own LiteRT
//!   interpreter (XNNPACK, the workload's `threads`).
//!
//! Both follow one frame loop (see `loadtest_app.rs`). Sides alternate over `--repeat`
//! runs (interleaved, so a drifting machine load hits both alike) and the report takes
//! the median per figure: SLO satisfaction (frames met within the deadline of their
//! scheduled arrival over frames offered; dropped and refused frames are missed),
//! p50/p99, background throughput, and the memory of all processes of each side (PSS
//! sampled mid-run; RSS growth after load: each process's peak minus its RSS before it
//! loaded a model, the daemon's minus its RSS before any app connected), with the load
//! average before and after each run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use switchyard_scheduler::workload::{App, Workload};

#[derive(Args)]
pub struct LoadtestArgs {
    /// Workload file (apps with model, fps or back_to_back, deadline_ms, priority,
    /// tenant; `threads` for the interpreters).
    #[arg(long)]
    pub workload: PathBuf,
    /// Seconds each run serves frames.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Runs per side, interleaved; the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// One 5-second run per side (for development).
    #[arg(long)]
    pub quick: bool,
    /// Which side(s) to run.
    #[arg(long, value_enum, default_value_t = Side::Both)]
    pub side: Side,
    /// Also write the runs and medians as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The `switchyardd` binary (default: next to this `switchyard`).
    #[arg(long)]
    pub daemon: Option<PathBuf>,
    /// Extra daemon configuration (TOML) appended to the generated one, e.g. to enable
    /// accelerators on a device that has them.
    #[arg(long)]
    pub daemon_config: Option<PathBuf>,
    /// Python with ai_edge_litert (default: `.venv/bin/python` of the repository).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Run every app under this process's uid (one tenant) even as root.
    #[arg(long)]
    pub same_uid: bool,
    /// Seconds each background (back-to-back) app then runs alone on each side, for
    /// the "background gets at least 25% of its alone throughput" bar; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    pub alone: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Both,
    Switchyard,
    Litert,
}

/// One app's report (the `RESULT` line of either twin).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AppRun {
    pub name: String,
    pub frames: u64,
    pub met: u64,
    pub completed: u64,
    pub dropped: u64,
    pub refused: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub throughput: f64,
    #[serde(default)]
    pub hwm_kib: u64,
    #[serde(default)]
    pub rss_before_load_kib: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Memory of every process of one side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// Sum of PSS, sampled in the middle of the run.
    pub pss_kib: u64,
    /// Sum of RSS at the same moment.
    pub rss_kib: u64,
    /// Sum over processes of peak RSS minus RSS before loading models.
    pub growth_kib: u64,
    /// Per process: (name, PSS KiB, RSS KiB, growth KiB).
    pub processes: Vec<(String, u64, u64, u64)>,
}

/// One run of one side.
#[derive(Clone, Debug, Serialize)]
pub struct SideRun {
    pub side: String,
    pub repeat: usize,
    pub apps: Vec<AppRun>,
    pub memory: Memory,
    pub load_before: f64,
    pub load_after: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// (PSS, RSS, peak RSS) of a process in KiB; zeros when it is gone.
fn memory_of(pid: u32) -> (u64, u64, u64) {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        field(&rollup, "Pss:"),
        field(&status, "VmRSS:"),
        field(&status, "VmHWM:"),
    )
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The repository root: the nearest ancestor of the working directory, then of this
/// binary, that holds `bench/contention/litert_app.py`.
fn repo_root() -> anyhow::Result<PathBuf> {
    let mut starts = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for s in starts {
        for dir in s.ancestors() {
            if dir.join("bench/contention/litert_app.py").is_file() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    bail!("cannot find the repository (bench/contention/litert_app.py); run from it")
}

/// `golden/<stem>/input_<i>.npy` for a model, when present.
fn inputs_for(root: &Path, model: &Path) -> Vec<PathBuf> {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (0..)
        .map(|i| {
            root.join("golden")
                .join(&stem)
                .join(format!("input_{i}.npy"))
        })
        .take_while(|p| p.is_file())
        .collect()
}

/// A started app process waiting for its START line.
struct Running {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    stderr_path: PathBuf,
    rss_before_load_kib: u64,
}

impl Running {
    /// The next line starting with `tag`, with the rest of it; the app's stderr on
    /// failure.
    fn expect(&mut self, tag: &str, within: Duration) -> anyhow::Result<String> {
        let until = Instant::now() + within;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line)?;
            if n == 0 || Instant::now() > until {
                let err = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
                bail!(
                    "app {} ended without {tag}: {}",
                    self.name,
                    err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return Ok(rest.trim().to_string());
            }
        }
    }
}

fn app_args(app: &App, inputs: &[PathBuf]) -> Vec<String> {
    let mut a = vec![
        "--name".to_string(),
        app.name.clone(),
        "--model".to_string(),
        app.model.display().to_string(),
        "--priority".to_string(),
        app.priority.name().to_string(),
    ];
    if !inputs.is_empty() {
        a.push("--inputs".into());
        a.push(
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if app.back_to_back {
        a.push("--back-to-back".into());
    } else {
        a.push("--fps".into());
        a.push(app.fps.to_string());
    }
    if let Some(d) = app.deadline_ms {
        a.push("--deadline-ms".into());
        a.push(d.to_string());
    }
    a
}

struct Plan<'a> {
    workload: &'a Workload,
    root: PathBuf,
    dir: PathBuf,
    duration: f64,
    daemon: PathBuf,
    daemon_config: Option<String>,
    python: PathBuf,
    uids: bool,
}

fn spawn(mut cmd: Command, name: &str, dir: &Path) -> anyhow::Result<Running> {
    let stderr_path = dir.join(format!("{name}.stderr"));
    let err = std::fs::File::create(&stderr_path)?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting app {name}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("app {name}: no pipes");
    };
    Ok(Running {
        name: name.to_string(),
        child,
        stdin,
        stdout: BufReader::new(stdout),
        stderr_path,
        rss_before_load_kib: 0,
    })
}

/// Waits until every app printed READY, starts them together, samples memory mid-run
/// and collects their results.
fn drive(
    plan: &Plan<'_>,
    mut apps: Vec<Running>,
    extra: Option<(&str, u32, u64)>,
) -> anyhow::Result<(Vec<AppRun>, Memory)> {
    for a in &mut apps {
        let ready = a.expect("READY", Duration::from_secs(300))?;
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap_or_default();
        a.rss_before_load_kib = v["rss_before_load_kib"].as_u64().unwrap_or(0);
    }
    let t0 = now_unix() + 0.5;
    for a in &mut apps {
        writeln!(a.stdin, "START {t0:.6} {}", plan.duration)?;
        a.stdin.flush()?;
    }
    let mid = Duration::from_secs_f64(0.5 + plan.duration / 2.0);
    std::thread::sleep(mid);
    let mut memory = Memory::default();
    let mut sample = |name: &str, pid: u32, before: u64| {
        let (pss, rss, _) = memory_of(pid);
        memory.pss_kib += pss;
        memory.rss_kib += rss;
        memory.processes.push((name.to_string(), pss, rss, before));
    };
    for a in &apps {
        sample(&a.name, a.child.id(), a.rss_before_load_kib);
    }
    if let Some((name, pid, before)) = extra {
        sample(name, pid, before);
    }
    let mut results = Vec::new();
    let within = Duration::from_secs_f64(plan.duration + 120.0);
    for a in &mut apps {
        let line = a.expect("RESULT", within)?;
        let mut r: AppRun =
            serde_json::from_str(&line).with_context(|| format!("app {}: {line}", a.name))?;
        r.rss_before_load_kib = a.rss_before_load_kib;
        results.push(r);
        let _ = a.child.wait();
    }
    for r in &results {
        if let Some(p) = memory.processes.iter_mut().find(|p| p.0 == r.name) {
            p.3 = r.hwm_kib.saturating_sub(r.rss_before_load_kib);
        }
    }
    if let Some((name, pid, before)) = extra {
        let (_, _, hwm) = memory_of(pid);
        if let Some(p) = memory.processes.iter_mut().find(|p| p.0 == name) {
            p.3 = hwm.saturating_sub(before);
        }
    }
    memory.growth_kib = memory.processes.iter().map(|p| p.3).sum();
    Ok((results, memory))
}

fn run_litert(plan: &Plan<'_>) -> anyhow::Result<(Vec<AppRun>, Memory)> {
    let script = plan.root.join("bench/contention/litert_app.py");
    let mut apps = Vec::new();
    for app in &plan.workload.apps {
        let mut cmd = Command::new(&plan.python);
        cmd.arg(&script)
            .args(app_args(app, &inputs_for(&plan.root, &app.model)))
            .arg("--threads")
            .arg(plan.workload.threads.to_string());
        apps.push(spawn(cmd, &app.name, &plan.dir)?);
    }
    drive(plan, apps, None)
}

/// Waits for a socket file to appear.
fn wait_for(path: &Path, daemon: &mut Child, log: &Path) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = daemon.try_wait()? {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            bail!("switchyardd exited ({status}): {err}");
        }
        if Instant::now() > until {
            bail!("switchyardd did not create {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_switchyard(plan: &Plan<'_>, repeat: usize) -> anyhow::Result<(Vec<AppRun>, Memory)> {
    let dir = plan.dir.join(format!("sy-{repeat}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let socket = dir.join("switchyard.sock");
    let mut cfg = format!(
        "[daemon]\nsocket = {socket:?}\nstate_dir = {:?}\nkernel_threads = {}\n\
         [daemon.quota]\nin_flight = 64\nmodels = 16\nregions = 16\n\
         [devices.gpu]\nenabled = false\n[devices.dsp]\nenabled = false\n\
         [devices.npu]\nenabled = false\n",
        dir.join("state"),
        plan.workload.threads
    );
    if let Some(extra) = &plan.daemon_config {
        cfg.push_str(extra);
    }
    let cfg_path = dir.join("switchyardd.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = dir.join("switchyardd.log");
    let mut daemon = Command::new(&plan.daemon)
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", plan.daemon.display()))?;
    let result = (|| {
        wait_for(&socket, &mut daemon, &log)?;
        let daemon_before = memory_of(daemon.id()).1;
        let me = std::env::current_exe()?;
        let mut tenants: BTreeMap<String, u32> = BTreeMap::new();
        let mut apps = Vec::new();
        for app in &plan.workload.apps {
            let mut cmd = Command::new(&me);
            cmd.arg("loadtest-app")
                .arg("--socket")
                .arg(&socket)
                .args(app_args(app, &inputs_for(&plan.root, &app.model)));
            if plan.uids {
                let next = 20_000 + tenants.len() as u32;
                let uid = *tenants.entry(app.tenant.clone()).or_insert(next);
                cmd.uid(uid).gid(uid);
            }
            apps.push(spawn(cmd, &app.name, &dir)?);
        }
        drive(
            plan,
            apps,
            Some(("switchyardd", daemon.id(), daemon_before)),
        )
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over the runs of one side.
#[derive(Clone, Debug, Serialize)]
pub struct SideSummary {
    pub side: String,
    /// Per app: SLO %, p50 ms, p99 ms, throughput/s, refused, dropped.
    pub apps: Vec<(String, f64, f64, f64, f64, f64, f64)>,
    /// Frames met over frames offered, over the apps with deadlines.
    pub overall_pct: f64,
    /// The same for realtime apps only.
    pub realtime_pct: f64,
    pub pss_mib: f64,
    pub rss_mib: f64,
    pub growth_mib: f64,
}

fn summarise(w: &Workload, side: &str, runs: &[&SideRun]) -> SideSummary {
    let pct = |met: u64, frames: u64| {
        if frames == 0 {
            f64::NAN
        } else {
            100.0 * met as f64 / frames as f64
        }
    };
    let mut apps = Vec::new();
    for app in &w.apps {
        let rs: Vec<&AppRun> = runs
            .iter()
            .filter_map(|r| r.apps.iter().find(|a| a.name == app.name))
            .collect();
        let m = |f: &dyn Fn(&AppRun) -> f64| median(rs.iter().map(|a| f(a)).collect());
        apps.push((
            app.name.clone(),
            m(&|a| pct(a.met, a.frames)),
            m(&|a| a.p50_ms),
            m(&|a| a.p99_ms),
            m(&|a| a.throughput),
            m(&|a| a.refused as f64),
            m(&|a| a.dropped as f64),
        ));
    }
    let overall = |filter: &dyn Fn(&App) -> bool| {
        median(
            runs.iter()
                .map(|r| {
                    let (mut met, mut frames) = (0, 0);
                    for a in &r.apps {
                        if w.apps.iter().any(|x| x.name == a.name && filter(x)) {
                            met += a.met;
                            frames += a.frames;
                        }
                    }
                    pct(met, frames)
                })
                .collect(),
        )
    };
    let mib = |f: &dyn Fn(&Memory) -> u64| {
        median(runs.iter().map(|r| f(&r.memory) as f64 / 1024.0).collect())
    };
    SideSummary {
        side: side.to_string(),
        apps,
        overall_pct: overall(&|a| a.deadline_ms.is_some()),
        realtime_pct: overall(&|a| {
            a.deadline_ms.is_some()
                && a.priority == switchyard_scheduler::arbiter::PriorityClass::Realtime
        }),
        pss_mib: mib(&|m| m.pss_kib),
        rss_mib: mib(&|m| m.rss_kib),
        growth_mib: mib(&|m| m.growth_kib),
    }
}

#[derive(Serialize)]
struct Report<'a> {
    workload: &'a str,
    duration_s: f64,
    repeat: usize,
    threads: usize,
    runs: &'a [SideRun],
    summaries: &'a [SideSummary],
    alone: &'a [AloneRun],
}

pub fn run(mut args: LoadtestArgs) -> anyhow::Result<()> {
    if args.quick {
        args.duration = 5.0;
        args.repeat = 1;
        args.alone = args.alone.min(5.0);
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) || args.repeat == 0 {
        bail!("--duration must be in (0, 3600] and --repeat at least 1");
    }
    let workload = Workload::from_path(&args.workload)?;
    let root = repo_root()?;
    let dir = std::env::temp_dir().join(format!("switchyard-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let daemon = match &args.daemon {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|p| p.join("switchyardd"))
            .context("locating switchyardd")?,
    };
    let plan = Plan {
        workload: &workload,
        root: root.clone(),
        dir: dir.clone(),
        duration: args.duration,
        daemon,
        daemon_config: match &args.daemon_config {
            Some(p) => Some(std::fs::read_to_string(p)?),
            None => None,
        },
        python: args
            .python
            .clone()
            .unwrap_or_else(|| root.join(".venv/bin/python")),
        uids: !args.same_uid && is_root(),
    };
    let mut runs = Vec::new();
    for r in 0..args.repeat {
        let order: &[&str] = match (args.side, r % 2) {
            (Side::Switchyard, _) => &["switchyard"],
            (Side::Litert, _) => &["litert"],
            (Side::Both, 0) => &["switchyard", "litert"],
            (Side::Both, _) => &["litert", "switchyard"],
        };
        for &side in order {
            let load_before = load_average();
            eprintln!(
                "run {}/{} {side}: {} apps for {} s (load average {load_before:.2})",
                r + 1,
                args.repeat,
                workload.apps.len(),
                args.duration
            );
            let (apps, memory) = match side {
                "switchyard" => run_switchyard(&plan, r)?,
                _ => run_litert(&plan)?,
            };
            runs.push(SideRun {
                side: side.to_string(),
                repeat: r,
                apps,
                memory,
                load_before,
                load_after: load_average(),
            });
        }
    }
    let alone = background_alone(&workload, &plan, &args)?;
    let mut summaries = Vec::new();
    for side in ["switchyard", "litert"] {
        let rs: Vec<&SideRun> = runs.iter().filter(|r| r.side == side).collect();
        if !rs.is_empty() {
            summaries.push(summarise(&workload, side, &rs));
        }
    }
    print!("{}", table(&workload, &args, &runs, &summaries));
    print!("{}", alone_table(&workload, &summaries, &alone));
    if let Some(path) = &args.json {
        let report = Report {
            workload: &workload.name,
            duration_s: args.duration,
            repeat: args.repeat,
            threads: workload.threads,
            runs: &runs,
            summaries: &summaries,
            alone: &alone,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Throughput of one background app running by itself on one side.
#[derive(Clone, Debug, Serialize)]
pub struct AloneRun {
    pub app: String,
    pub side: String,
    pub throughput: f64,
    pub load_before: f64,
}

/// Each background app alone, once per side, for `--alone` seconds: what "at least 25%
/// of what it gets alone" is measured against, in the same invocation as the mix.
fn background_alone(
    workload: &Workload,
    plan: &Plan<'_>,
    args: &LoadtestArgs,
) -> anyhow::Result<Vec<AloneRun>> {
    let mut out = Vec::new();
    if args.alone <= 0.0 {
        return Ok(out);
    }
    for (k, app) in workload.apps.iter().filter(|a| a.back_to_back).enumerate() {
        let single = Workload {
            apps: vec![app.clone()],
            ..workload.clone()
        };
        let solo = Plan {
            workload: &single,
            duration: args.alone,
            root: plan.root.clone(),
            dir: plan.dir.clone(),
            daemon: plan.daemon.clone(),
            daemon_config: plan.daemon_config.clone(),
            python: plan.python.clone(),
            uids: plan.uids,
        };
        let sides: &[&str] = match args.side {
            Side::Both => &["switchyard", "litert"],
            Side::Switchyard => &["switchyard"],
            Side::Litert => &["litert"],
        };
        for &side in sides {
            let load_before = load_average();
            eprintln!(
                "{} alone on {side} for {} s (load average {load_before:.2})",
                app.name, args.alone
            );
            let (apps, _) = match side {
                "switchyard" => run_switchyard(&solo, 1000 + k)?,
                _ => run_litert(&solo)?,
            };
            out.push(AloneRun {
                app: app.name.clone(),
                side: side.to_string(),
                throughput: apps.first().map_or(0.0, |a| a.throughput),
                load_before,
            });
        }
    }
    Ok(out)
}

fn alone_table(w: &Workload, s: &[SideSummary], alone: &[AloneRun]) -> String {
    let mut o = String::new();
    if alone.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nbackground throughput in the mix / alone (bar: at least 0.25 on the switchyard side)"
    );
    for (i, app) in w.apps.iter().enumerate().filter(|(_, a)| a.back_to_back) {
        for x in s {
            let Some(mix) = x.apps.get(i).map(|a| a.4) else {
                continue;
            };
            let Some(solo) = alone.iter().find(|a| a.app == app.name && a.side == x.side) else {
                continue;
            };
            let _ = writeln!(
                o,
                "{:<14} {:<10} mix {:>7.1}/s  alone {:>7.1}/s  ratio {:.2}",
                app.name,
                x.side,
                mix,
                solo.throughput,
                if solo.throughput > 0.0 {
                    mix / solo.throughput
                } else {
                    0.0
                }
            );
        }
    }
    o
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn table(w: &Workload, args: &LoadtestArgs, runs: &[SideRun], s: &[SideSummary]) -> String {
    let mut o = String::new();
    let loads: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {:.1}->{:.1}", r.side, r.load_before, r.load_after))
        .collect();
    let _ = writeln!(
        o,
        "\nworkload {} — {} apps, {} s x {} runs per side (medians), {} thread(s) per interpreter",
        w.name,
        w.apps.len(),
        args.duration,
        args.repeat,
        w.threads
    );
    let _ = writeln!(o, "load average per run: {}", loads.join(", "));
    let _ = write!(o, "\n{:<14} {:<12}", "app", "class");
    for x in s {
        let _ = write!(
            o,
            " | {:<10} {:>6} {:>7} {:>7} {:>7} {:>5} {:>5}",
            x.side, "SLO%", "p50 ms", "p99 ms", "thr/s", "refus", "drop"
        );
    }
    o.push('\n');
    for (i, app) in w.apps.iter().enumerate() {
        let _ = write!(o, "{:<14} {:<12}", app.name, app.priority.name());
        for x in s {
            let Some(a) = x.apps.get(i) else { continue };
            let slo = if app.deadline_ms.is_some() {
                format!("{:.1}", a.1)
            } else {
                "-".into()
            };
            let _ = write!(
                o,
                " | {:<10} {:>6} {:>7.2} {:>7.2} {:>7.1} {:>5.0} {:>5.0}",
                "", slo, a.2, a.3, a.4, a.5, a.6
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o);
    for x in s {
        let _ = writeln!(
            o,
            "{:<10} overall {:>6.2}% (realtime {:>6.2}%)  memory: PSS {:>7.1} MiB, RSS {:>7.1} MiB, RSS growth after load {:>7.1} MiB",
            x.side, x.overall_pct, x.realtime_pct, x.pss_mib, x.rss_mib, x.growth_mib
        );
    }
    if let [a, b] = s {
        let bg: Vec<String> = w
            .apps
            .iter()
            .enumerate()
            .filter(|(_, app)| app.back_to_back)
            .map(|(i, app)| {
                let (x, y) = (a.apps[i].4, b.apps[i].4);
                format!("{} {:.2}x", app.name, x / y)
            })
            .collect();
        let _ = writeln!(
            o,
            "\nswitchyard / litert: overall SLO {:.3}x, PSS {:.2}x, RSS growth {:.2}x; background throughput {}",
            a.overall_pct / b.overall_pct,
            a.pss_mib / b.pss_mib,
            a.growth_mib / b.growth_mib,
            if bg.is_empty() {
                "-".to_string()
            } else {
                bg.join(", ")
            }
        );
    }
    o
}
