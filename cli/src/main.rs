//! `switchyard`: the user and admin command line.
//!
//! Layout: `main.rs` parses arguments and dispatches; each subcommand lives in its own
//! module under `commands/`.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Run and inspect on-device ML models with Switchyard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on input tensors (.npy) and write its outputs as .npy files.
    Run(commands::run::RunArgs),
    /// Print a model's subgraphs, tensors and operators.
    Inspect(commands::inspect::InspectArgs),
    /// Measure a model's latency (median, p90) with a per-operator profile.
    Bench(commands::bench::BenchArgs),
    /// List this tenant's models in the daemon.
    Models(commands::daemon::ModelsArgs),
    /// List tenants of the daemon (all of them for an admin uid).
    Tenants(commands::daemon::TenantsArgs),
    /// Daemon status: uptime, models, requests in flight, per-tenant counters.
    Status(commands::daemon::StatusArgs),
    /// Sessions in the daemon: stream a sequence through one, list, reset, close.
    Session(commands::session::SessionArgs),
    /// Show where each node of a model runs (processor, partition, latency) and why.
    Placement(commands::placement::PlacementArgs),
    /// The daemon's learned allowlist: processor, driver, verdict, latency, reason.
    Allowlist(commands::allowlist::AllowlistArgs),
    /// The daemon's metrics live: requests, refusals, queue and run times, processors.
    Top(commands::top::TopArgs),
    /// Compare scheduling policies with fixed placements on a workload of apps.
    Simulate(commands::simulate::SimulateArgs),
    /// Run a workload's apps as real processes through one daemon and, in the same run,
    /// each with its own LiteRT interpreter; report SLO satisfaction, latency,
    /// throughput and memory side by side.
    Loadtest(commands::loadtest::LoadtestArgs),
    /// One app process of `loadtest` (started by it).
    #[command(hide = true)]
    LoadtestApp(commands::loadtest_app::LoadtestAppArgs),
    /// Write a chain of float32 ADD nodes (the executor-overhead benchmark model).
    #[command(hide = true)]
    MakeChainModel(commands::make_chain::MakeChainArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SWITCHYARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Models(args) => commands::daemon::models(args),
        Command::Tenants(args) => commands::daemon::tenants(args),
        Command::Status(args) => commands::daemon::status(args),
        Command::Session(args) => commands::session::run(args),
        Command::Placement(args) => commands::placement::run(args),
        Command::Allowlist(args) => commands::allowlist::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Top(args) => commands::top::run(args),
        Command::Loadtest(args) => commands::loadtest::run(args),
        Command::LoadtestApp(args) => commands::loadtest_app::run(args),
        Command::MakeChainModel(args) => commands::make_chain::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let inner = anyhow::Error::new(io).context(format!(
            "cannot read model file x: {}",
            std::io::Error::from(std::io::ErrorKind::NotFound)
        ));
        let e = inner.context("loading x");
        let text = super::report(&e);
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert!(
            text.starts_with("loading x: cannot read model file x"),
            "{text}"
        );
    }
}
