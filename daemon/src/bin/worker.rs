//! `switchyard-worker`: runs delegate validation and vendor plugins for `switchyardd`, out
//! of the daemon's address space (docs/worker.md). Started by the daemon only, with its
//! socket as descriptor `SWITCHYARD_WORKER_FD`; logs go to stderr like the daemon's.
//! Exit codes: 0 when the daemon hung up, 1 after a protocol error, 64 when not started
//! by a daemon.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match switchyard_daemon::worker::process::worker_socket() {
        Ok(socket) => switchyard_daemon::worker::serve::main_with_socket(socket),
        Err(e) => {
            eprintln!("switchyard-worker: {e}");
            ExitCode::from(64)
        }
    }
}
