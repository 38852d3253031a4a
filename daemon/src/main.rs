//! `switchyardd`: reads the config, binds, serves until SIGINT/SIGTERM.
//! Exit codes: 0 after a clean shutdown, 64 for an invalid config or arguments, 1 for
//! any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use switchyard_config::Config;

/// Invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "switchyardd",
    version,
    about = "The Switchyard on-device ML daemon"
)]
struct Args {
    /// TOML config file; without it the embedded defaults are used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `daemon.socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Config::from_toml_str(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => Config::embedded_defaults(),
    };
    if let Some(s) = &args.socket {
        cfg.daemon.socket = s.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    switchyard_daemon::registry::pin_malloc_thresholds();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyardd: invalid config: {}", report(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyardd: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft descriptor limit to the hard one: the listeners' connection budgets
/// (`[daemon.limits]`) bound what clients may hold, and the rest is headroom for models,
/// workers and logs.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit");
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.daemon.worker_threads)
        .thread_name("switchyardd")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let listeners = switchyard_daemon::bind(&cfg.daemon).await?;
        switchyard_daemon::run(cfg, listeners, shutdown_signal()).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(Into::into)
}

/// The error and its causes, each printed once: library errors often embed their
/// source in their own message (so that a gRPC status carries it), and `{:#}` would
/// then print that source a second time.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
