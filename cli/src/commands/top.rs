//! `switchyard top`: the daemon's metrics live in the terminal — the same figures as
//! the Prometheus endpoint (requests, refusals by reason, queue and run time, processor
//! busy time, regions and bytes held), fetched over the gRPC socket with `GetMetrics`
//! every `--interval` seconds. A tenant sees its own rows; an admin every tenant's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;

#[derive(Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one screen and exit (for scripts and logs).
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub daemon: super::daemon::DaemonArgs,
}

/// One sample: metric name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset the daemon writes: no timestamps).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (head, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// Sum of samples named `name` whose labels match `filter`.
fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The upper bound of the bucket holding quantile `q` of a histogram (ms), from its
/// cumulative buckets.
fn quantile_ms(samples: &[Sample], metric: &str, tenant: &str, model: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| {
            s.name == format!("{metric}_bucket")
                && s.labels.get("tenant").map(String::as_str) == Some(tenant)
                && s.labels.get("model").map(String::as_str) == Some(model)
        })
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, s.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(b, _)| b * 1e3)
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("≤{x:.1}"),
        Some(_) => ">10000".into(),
        None => "-".into(),
    }
}

/// One screen of `top`.
pub fn screen(text: &str) -> String {
    let s = parse(text);
    let g = |n: &str| sum(&s, n, &[]);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "switchyard top — up {:.0}s, {} models prepared, {} in flight, {} regions",
        g("switchyard_uptime_seconds"),
        g("switchyard_models_prepared"),
        g("switchyard_in_flight"),
        g("switchyard_regions")
    );
    let _ = writeln!(o, "\nPROCESSOR  BUSY(s)");
    for p in s
        .iter()
        .filter(|x| x.name == "switchyard_processor_busy_seconds_total")
    {
        let _ = writeln!(
            o,
            "{:<10} {:>8.3}",
            p.labels.get("processor").map_or("?", |v| v),
            p.value
        );
    }
    let _ = writeln!(
        o,
        "\n{:<22} {:<17} {:<24} {:>7} {:>6} {:>11} {:>11} {:>11}",
        "TENANT", "MODEL", "NAME", "OK", "FAILED", "QUEUE p50ms", "RUN p50ms", "RUN p99ms"
    );
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    for x in s.iter().filter(|x| x.name == "switchyard_requests_total") {
        let key = (
            x.labels.get("tenant").cloned().unwrap_or_default(),
            x.labels.get("model").cloned().unwrap_or_default(),
        );
        rows.insert(key, x.labels.get("name").cloned().unwrap_or_default());
    }
    for ((tenant, model), name) in &rows {
        let f = [("tenant", tenant.as_str()), ("model", model.as_str())];
        let ok = sum(
            &s,
            "switchyard_requests_total",
            &[f[0], f[1], ("outcome", "ok")],
        );
        let failed = sum(
            &s,
            "switchyard_requests_total",
            &[f[0], f[1], ("outcome", "failed")],
        );
        let _ = writeln!(
            o,
            "{:<22} {:<17} {:<24} {:>7} {:>6} {:>11} {:>11} {:>11}",
            tenant,
            model,
            name.chars().take(24).collect::<String>(),
            ok,
            failed,
            ms(quantile_ms(
                &s,
                "switchyard_queue_seconds",
                tenant,
                model,
                0.5
            )),
            ms(quantile_ms(
                &s,
                "switchyard_run_seconds",
                tenant,
                model,
                0.5
            )),
            ms(quantile_ms(
                &s,
                "switchyard_run_seconds",
                tenant,
                model,
                0.99
            )),
        );
    }
    let _ = writeln!(o, "\n{:<22} {:<18} {:>7}", "TENANT", "REFUSED", "COUNT");
    for x in s.iter().filter(|x| x.name == "switchyard_refusals_total") {
        let _ = writeln!(
            o,
            "{:<22} {:<18} {:>7}",
            x.labels.get("tenant").map_or("", |v| v),
            x.labels.get("reason").map_or("", |v| v),
            x.value
        );
    }
    let _ = writeln!(
        o,
        "\n{:<22} {:>7} {:>12} {:>8} {:>13} {:>9}",
        "TENANT", "MODELS", "MODEL BYTES", "REGIONS", "REGION BYTES", "IN FLIGHT"
    );
    let mut tenants: Vec<&String> = s
        .iter()
        .filter(|x| x.name == "switchyard_tenant_models")
        .filter_map(|x| x.labels.get("tenant"))
        .collect();
    tenants.dedup();
    for t in tenants {
        let f = [("tenant", t.as_str())];
        let _ = writeln!(
            o,
            "{:<22} {:>7} {:>12} {:>8} {:>13} {:>9}",
            t,
            sum(&s, "switchyard_tenant_models", &f),
            sum(&s, "switchyard_tenant_model_bytes", &f),
            sum(&s, "switchyard_tenant_regions", &f),
            sum(&s, "switchyard_tenant_region_bytes", &f),
            sum(&s, "switchyard_tenant_in_flight", &f),
        );
    }
    let allowed = sum(
        &s,
        "switchyard_allowlist_decisions",
        &[("verdict", "allowed")],
    );
    let blocked = sum(
        &s,
        "switchyard_allowlist_decisions",
        &[("verdict", "blocked")],
    );
    let _ = writeln!(o, "\nallowlist: {allowed} allowed, {blocked} blocked");
    o
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let mut client = super::daemon::connect(&args.daemon.socket)?;
    let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 3600.0));
    loop {
        let text = client.metrics()?;
        if args.daemon.json || args.once {
            if args.daemon.json {
                print!("{text}");
            } else {
                print!("{}", screen(&text));
            }
            return Ok(());
        }
        // Clear the screen and home the cursor, then draw.
        print!("\x1b[2J\x1b[H{}", screen(&text));
        use std::io::Write;
        std::io::stdout().flush()?;
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_shows_rows_from_the_text_format() {
        let text = r#"# TYPE switchyard_uptime_seconds gauge
switchyard_uptime_seconds 12.5
switchyard_processor_busy_seconds_total{processor="cpu"} 0.25
switchyard_requests_total{tenant="uid:0",model="abcd",name="face \"x\"",outcome="ok"} 3
switchyard_requests_total{tenant="uid:0",model="abcd",name="face \"x\"",outcome="failed"} 1
switchyard_run_seconds_bucket{tenant="uid:0",model="abcd",le="0.005"} 1
switchyard_run_seconds_bucket{tenant="uid:0",model="abcd",le="0.01"} 4
switchyard_run_seconds_bucket{tenant="uid:0",model="abcd",le="+Inf"} 4
switchyard_refusals_total{tenant="uid:0",reason="deadline"} 2
"#;
        let s = parse(text);
        assert_eq!(s[2].labels["name"], "face \"x\"");
        assert_eq!(
            quantile_ms(&s, "switchyard_run_seconds", "uid:0", "abcd", 0.5),
            Some(10.0)
        );
        let screen = screen(text);
        assert!(
            screen.contains("up 12s") || screen.contains("up 13s"),
            "{screen}"
        );
        assert!(screen.contains("face \"x\""), "{screen}");
        assert!(
            screen
                .lines()
                .any(|l| l.contains("abcd") && l.contains(" 3 ") && l.contains("≤10.0")),
            "{screen}"
        );
        assert!(
            screen
                .lines()
                .any(|l| l.contains("deadline") && l.ends_with('2')),
            "{screen}"
        );
    }
}
