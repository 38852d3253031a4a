//! `switchyard simulate --workload FILE.toml [--json] [--config FILE]`: runs a workload
//! of apps (frame rates, deadlines, priorities, tenants) on the device profiles under
//! every arbiter policy and every fixed placement, on one arrival trace, and prints
//! them side by side. Fair by construction: the fixed placements get the same
//! admission control and CPU cores, migration is a switch, and CPU service times are
//! measured on this machine as the daemon serves them.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use switchyard_config::Config;
use switchyard_scheduler::sim::{self, Report};
use switchyard_scheduler::workload::Workload;

#[derive(Args)]
pub struct SimulateArgs {
    /// Workload file (TOML: apps with model, fps, deadline_ms, priority, tenant).
    #[arg(long)]
    pub workload: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Configuration file (device profiles, queue limit); embedded defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use the CPU profile's prior instead of timing each model on this machine's CPU
    /// as the daemon serves it (the default: the profile describes a target board, and
    /// this machine and its kernels may be much faster or slower).
    #[arg(long)]
    pub prior_cpu: bool,
    /// Run the policies without migration: each stage stays on its planned processor
    /// (to see what migration adds).
    #[arg(long)]
    pub no_migration: bool,
    /// CPU cores that serve requests side by side; `scheduler.cpu_cores` (0: this
    /// machine's) otherwise.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Also print per-app lines for every strategy.
    #[arg(long)]
    pub per_app: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    setup: &'a sim::Setup,
    reports: &'a [Report],
    best_policy: Option<(&'a str, f64)>,
    best_fixed: Option<(&'a str, f64)>,
    /// Best policy's SLO satisfaction over the best fixed placement's.
    ratio: Option<f64>,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::from_path(p).with_context(|| format!("config {}", p.display()))?,
        None => Config::embedded_defaults(),
    };
    let workload = Workload::from_path(&args.workload)?;
    let cores = match args.cores.unwrap_or(cfg.scheduler.cpu_cores) {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let setup = sim::setup(
        &workload,
        &cfg.devices,
        sim::SetupOptions {
            queue_limit: cfg.scheduler.queue_limit,
            cpu_cores: cores,
            measure_cpu: !args.prior_cpu,
        },
    )?;
    let reports = sim::compare(&setup, !args.no_migration);
    let best = sim::best(&reports);
    let ratio = best.map(|((_, p), (_, f))| if f > 0.0 { p / f } else { f64::INFINITY });
    if args.json {
        let out = Output {
            setup: &setup,
            reports: &reports,
            best_policy: best.map(|b| b.0),
            best_fixed: best.map(|b| b.1),
            ratio,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", table(&setup, &reports, args.per_app));
    if let Some(((pn, p), (fname, f))) = best {
        println!(
            "\nbest policy {pn} {p:.1}% vs best fixed placement {fname} {f:.1}% SLO satisfaction: {}",
            match ratio {
                Some(r) if r.is_finite() => format!("{r:.2}x"),
                _ => "fixed placements meet no deadline".into(),
            }
        );
    }
    Ok(())
}

fn table(s: &sim::Setup, reports: &[Report], per_app: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "workload {} ({} s, seed {}); emulated device from the config's profiles, {} cpu cores",
        s.name, s.duration_s, s.seed, s.cpu_cores
    );
    for a in &s.apps {
        let stages: Vec<String> = a
            .planned
            .iter()
            .map(|st| {
                st.options
                    .iter()
                    .map(|o| format!("{}:{:.2}ms", o.processor, o.service_s * 1e3))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        let rate = if a.back_to_back {
            "back-to-back".to_string()
        } else {
            format!("{:>5.1} fps", a.fps)
        };
        let deadline = a
            .deadline_ms
            .map_or("none".to_string(), |d| format!("{d:.1} ms"));
        let _ = writeln!(
            o,
            "  app {:<12} {rate}  deadline {deadline:>8}  all-cpu {:>7.2} ms ({})  stages {}",
            a.name,
            a.all_cpu_s * 1e3,
            a.cpu_source,
            stages.join(" -> ")
        );
    }
    let procs: Vec<String> = reports
        .first()
        .map(|r| r.utilisation.keys().cloned().collect())
        .unwrap_or_default();
    let w = reports
        .iter()
        .map(|r| r.strategy.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = write!(
        o,
        "\n{:<w$} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "strategy", "SLO %", "thr fps", "p50 ms", "p99 ms", "rejected"
    );
    for p in &procs {
        let _ = write!(o, " {:>6}", format!("{p}%"));
    }
    o.push('\n');
    for r in reports {
        let _ = write!(
            o,
            "{:<w$} {:>7.1} {:>9.1} {:>9.2} {:>9.2} {:>9}",
            r.strategy,
            r.overall.slo_pct,
            r.overall.throughput_fps,
            r.overall.p50_ms,
            r.overall.p99_ms,
            r.overall.rejected
        );
        for p in &procs {
            let _ = write!(
                o,
                " {:>6.1}",
                100.0 * r.utilisation.get(p).copied().unwrap_or(0.0)
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "\nSLO % per app");
    let _ = write!(o, "{:<w$}", "strategy");
    for a in &s.apps {
        let _ = write!(o, " {:>12}", a.name);
    }
    o.push('\n');
    for r in reports {
        let _ = write!(o, "{:<w$}", r.strategy);
        for (_, st) in &r.apps {
            let _ = write!(o, " {:>12.1}", st.slo_pct);
        }
        o.push('\n');
    }
    if per_app {
        for r in reports {
            let _ = writeln!(o, "\n{}", r.strategy);
            for (name, st) in &r.apps {
                let _ = writeln!(
                    o,
                    "  {:<12} frames {:>5} met {:>5} rejected {:>5} thr {:>6.1} fps p50 {:>8.2} ms p99 {:>8.2} ms",
                    name, st.frames, st.met, st.rejected, st.throughput_fps, st.p50_ms, st.p99_ms
                );
            }
        }
    }
    o
}
