//! `switchyard allowlist [--json]`: the daemon's learned decisions — which model
//! partition may run on which processor with which driver, and the evidence.

use clap::Args;

#[derive(Args)]
pub struct AllowlistArgs {
    /// `--socket` and `--json`.
    #[command(flatten)]
    pub daemon: super::daemon::DaemonArgs,
}

pub fn run(args: AllowlistArgs) -> anyhow::Result<()> {
    let mut client = super::daemon::connect(&args.daemon.socket)?;
    let list = client.allowlist()?;
    if args.daemon.json {
        let entries: Vec<serde_json::Value> = list
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "subject": e.subject,
                    "processor": e.processor,
                    "fingerprint": e.fingerprint,
                    "verdict": e.verdict,
                    "reason": e.reason,
                    "delegate_ms": e.delegate_ms,
                    "cpu_ms": e.cpu_ms,
                    "max_error": e.max_error,
                    "runs": e.runs,
                    "failures": e.failures,
                    "timeouts": e.timeouts,
                })
            })
            .collect();
        let doc = serde_json::json!({ "path": list.path, "entries": entries });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} decisions ({})",
        list.entries.len(),
        if list.path.is_empty() {
            "in memory"
        } else {
            &list.path
        }
    );
    for e in &list.entries {
        let subject = e.subject.get(..24).unwrap_or(&e.subject);
        println!(
            "{:<8} {:<18} {subject}…  delegate {:.3} ms  cpu {:.3} ms  error {:.2e}  [{}]\n         {}",
            e.verdict, e.processor, e.delegate_ms, e.cpu_ms, e.max_error, e.fingerprint, e.reason
        );
    }
    Ok(())
}
