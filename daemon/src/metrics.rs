//! Counters and histograms of served requests, rendered in the Prometheus text format
//! for the optional `/metrics` endpoint (`daemon.metrics`) and the `GetMetrics` RPC that
//! `switchyard top` polls.
//!
//! Who sees what: per-tenant and per-model series go to admins for every tenant and to
//! a tenant for itself only (otherwise the endpoint would reopen the cross-tenant leak
//! that ids and `ListTenants` close); daemon-wide aggregates (uptime, models, in
//! flight, processor busy time, allowlist decisions) go to everyone who may connect.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_interpreter::ProcessorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::DaemonError;
use crate::service::State;
use crate::tenant::{TenantId, lock};

/// Histogram bucket bounds in seconds (Prometheus `le`).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Per-model series kept; beyond that new models are counted under `model="(other)"`
/// so a tenant loading many models cannot grow the daemon's memory through metrics.
const MAX_SERIES: usize = 4096;
/// Largest HTTP request head read from a scraper.
const MAX_REQUEST: usize = 8192;

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, us: u64) {
        let s = us as f64 / 1e6;
        for (c, &b) in self.counts.iter_mut().zip(&BUCKETS) {
            if s <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

#[derive(Clone, Debug, Default)]
struct ModelSeries {
    name: String,
    ok: u64,
    failed: u64,
    queue: Histogram,
    run: Histogram,
    /// Requests that ran, by the processor the arbiter ran them on.
    on: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct Inner {
    models: BTreeMap<(TenantId, String), ModelSeries>,
    refusals: BTreeMap<(TenantId, &'static str), u64>,
    busy_us: BTreeMap<&'static str, u64>,
}

/// The daemon's request metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Whose series a reader may see.
#[derive(Clone, Debug, PartialEq)]
pub enum Viewer {
    /// An admin: every tenant.
    All,
    /// A tenant: its own series.
    Tenant(TenantId),
    /// No identity (a TCP scrape without a token): daemon-wide figures only.
    Anonymous,
}

impl Viewer {
    fn sees(&self, t: &TenantId) -> bool {
        match self {
            Viewer::All => true,
            Viewer::Tenant(me) => me == t,
            Viewer::Anonymous => false,
        }
    }
}

/// The refusal reason a failed request is counted under, or `None` for a request that
/// ran and failed.
pub fn refusal_reason(e: &DaemonError) -> Option<&'static str> {
    Some(match e {
        DaemonError::Quota { quota, .. } => match *quota {
            "in_flight" => "quota_in_flight",
            "regions" | "region_bytes" => "quota_regions",
            _ => "quota",
        },
        DaemonError::Rejected(r) => {
            use switchyard_scheduler::arbiter::Refusal;
            match r {
                Refusal::Deadline { .. } => "deadline",
                Refusal::Expired { .. } => "expired",
                Refusal::QueueFull { .. } => "queue_full",
                Refusal::Stopped => "stopped",
                Refusal::NoProcessor { .. } | Refusal::Failed(_) => return None,
            }
        }
        DaemonError::NotFound { .. } => "not_found",
        DaemonError::Unauthenticated(_) | DaemonError::PermissionDenied(_) => "unauthenticated",
        DaemonError::InvalidArgument(_) | DaemonError::Shm(_) => "invalid_argument",
        _ => return None,
    })
}

impl Metrics {
    /// A request that ran (successfully or not) on `processor`.
    #[allow(clippy::too_many_arguments)]
    pub fn ran(
        &self,
        tenant: &TenantId,
        model: &str,
        name: &str,
        ok: bool,
        queue_us: u64,
        run_us: u64,
        processor: ProcessorKind,
    ) {
        let mut inner = lock(&self.inner);
        let mut key = (tenant.clone(), model.to_owned());
        if !inner.models.contains_key(&key) && inner.models.len() >= MAX_SERIES {
            key.1 = "(other)".into();
        }
        let s = inner.models.entry(key).or_default();
        if s.name.is_empty() {
            s.name = name.chars().take(64).collect();
        }
        if ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        s.queue.observe(queue_us);
        s.run.observe(run_us);
        *s.on.entry(processor.name()).or_default() += 1;
        *inner.busy_us.entry(processor.name()).or_default() += run_us;
    }

    /// A request refused before it ran.
    pub fn refused(&self, tenant: &TenantId, reason: &'static str) {
        let mut inner = lock(&self.inner);
        if inner.refusals.len() < MAX_SERIES
            || inner.refusals.contains_key(&(tenant.clone(), reason))
        {
            *inner.refusals.entry((tenant.clone(), reason)).or_default() += 1;
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (c, b) in h.counts.iter().zip(BUCKETS) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// The Prometheus text exposition of what `viewer` may see.
pub fn render(state: &State, viewer: &Viewer) -> String {
    let mut o = String::new();
    let tenants = state.tenants.snapshot();
    let _ = writeln!(
        o,
        "# HELP switchyard_uptime_seconds Seconds since the daemon started."
    );
    let _ = writeln!(o, "# TYPE switchyard_uptime_seconds gauge");
    let _ = writeln!(
        o,
        "switchyard_uptime_seconds {}",
        state.started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        o,
        "# HELP switchyard_models_prepared Prepared models (shared between tenants)."
    );
    let _ = writeln!(o, "# TYPE switchyard_models_prepared gauge");
    let _ = writeln!(o, "switchyard_models_prepared {}", state.registry.live());
    let _ = writeln!(
        o,
        "# HELP switchyard_in_flight Requests admitted and not finished."
    );
    let _ = writeln!(o, "# TYPE switchyard_in_flight gauge");
    let _ = writeln!(
        o,
        "switchyard_in_flight {}",
        tenants.iter().map(|t| t.in_flight).sum::<usize>()
    );
    let _ = writeln!(
        o,
        "# HELP switchyard_regions Registered shared-memory regions."
    );
    let _ = writeln!(o, "# TYPE switchyard_regions gauge");
    let _ = writeln!(o, "switchyard_regions {}", state.regions.count());

    let inner = lock(&state.metrics.inner);
    let _ = writeln!(
        o,
        "# HELP switchyard_processor_busy_seconds_total Time requests ran, by the processor they ran on."
    );
    let _ = writeln!(o, "# TYPE switchyard_processor_busy_seconds_total counter");
    for (p, us) in &inner.busy_us {
        let _ = writeln!(
            o,
            "switchyard_processor_busy_seconds_total{{processor=\"{p}\"}} {}",
            *us as f64 / 1e6
        );
    }
    let mut decisions: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for (key, e) in state.registry.placer.entries() {
        let processor = key
            .rsplit_once('@')
            .map(|(_, p)| p.to_owned())
            .unwrap_or_default();
        let verdict = match e.verdict {
            switchyard_scheduler::allowlist::Verdict::Allowed => "allowed",
            switchyard_scheduler::allowlist::Verdict::Blocked => "blocked",
        };
        *decisions.entry((processor, verdict)).or_default() += 1;
    }
    let _ = writeln!(
        o,
        "# HELP switchyard_allowlist_decisions Learned allowlist entries by processor and verdict."
    );
    let _ = writeln!(o, "# TYPE switchyard_allowlist_decisions gauge");
    for ((p, v), n) in &decisions {
        let _ = writeln!(
            o,
            "switchyard_allowlist_decisions{{processor=\"{}\",verdict=\"{v}\"}} {n}",
            label(p)
        );
    }

    let _ = writeln!(
        o,
        "# HELP switchyard_requests_total Requests that ran, by tenant, model and outcome."
    );
    let _ = writeln!(o, "# TYPE switchyard_requests_total counter");
    for ((t, m), s) in inner.models.iter().filter(|((t, _), _)| viewer.sees(t)) {
        let l = format!(
            "tenant=\"{}\",model=\"{}\",name=\"{}\"",
            label(&t.to_string()),
            label(m),
            label(&s.name)
        );
        let _ = writeln!(
            o,
            "switchyard_requests_total{{{l},outcome=\"ok\"}} {}",
            s.ok
        );
        let _ = writeln!(
            o,
            "switchyard_requests_total{{{l},outcome=\"failed\"}} {}",
            s.failed
        );
    }
    let _ = writeln!(
        o,
        "# HELP switchyard_model_processor_runs_total Requests that ran, by tenant, model and the processor the arbiter ran them on (migration runs a model placed on an accelerator on the cpu when that finishes first)."
    );
    let _ = writeln!(o, "# TYPE switchyard_model_processor_runs_total counter");
    for ((t, m), s) in inner.models.iter().filter(|((t, _), _)| viewer.sees(t)) {
        for (p, n) in &s.on {
            let _ = writeln!(
                o,
                "switchyard_model_processor_runs_total{{tenant=\"{}\",model=\"{}\",name=\"{}\",processor=\"{p}\"}} {n}",
                label(&t.to_string()),
                label(m),
                label(&s.name)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP switchyard_refusals_total Requests refused before running, by tenant and reason."
    );
    let _ = writeln!(o, "# TYPE switchyard_refusals_total counter");
    for ((t, r), n) in inner.refusals.iter().filter(|((t, _), _)| viewer.sees(t)) {
        let _ = writeln!(
            o,
            "switchyard_refusals_total{{tenant=\"{}\",reason=\"{r}\"}} {n}",
            label(&t.to_string())
        );
    }
    for (metric, help, pick) in [
        (
            "switchyard_queue_seconds",
            "Time from arrival to the start of the run (arbiter queue and interpreter wait).",
            0,
        ),
        (
            "switchyard_run_seconds",
            "Time setting inputs, invoking and collecting outputs.",
            1,
        ),
    ] {
        let _ = writeln!(o, "# HELP {metric} {help}");
        let _ = writeln!(o, "# TYPE {metric} histogram");
        for ((t, m), s) in inner.models.iter().filter(|((t, _), _)| viewer.sees(t)) {
            let l = format!(
                "tenant=\"{}\",model=\"{}\"",
                label(&t.to_string()),
                label(m)
            );
            histogram(
                &mut o,
                metric,
                &l,
                if pick == 0 { &s.queue } else { &s.run },
            );
        }
    }
    drop(inner);

    let _ = writeln!(o, "# HELP switchyard_tenant_models Models a tenant holds.");
    let _ = writeln!(o, "# TYPE switchyard_tenant_models gauge");
    let _ = writeln!(
        o,
        "# HELP switchyard_tenant_model_bytes Bytes of the models a tenant holds."
    );
    let _ = writeln!(o, "# TYPE switchyard_tenant_model_bytes gauge");
    let _ = writeln!(
        o,
        "# HELP switchyard_tenant_regions Shared-memory regions a tenant holds."
    );
    let _ = writeln!(o, "# TYPE switchyard_tenant_regions gauge");
    let _ = writeln!(
        o,
        "# HELP switchyard_tenant_region_bytes Bytes of a tenant's shared-memory regions."
    );
    let _ = writeln!(o, "# TYPE switchyard_tenant_region_bytes gauge");
    let _ = writeln!(
        o,
        "# HELP switchyard_tenant_in_flight A tenant's requests in flight."
    );
    let _ = writeln!(o, "# TYPE switchyard_tenant_in_flight gauge");
    for t in tenants.iter().filter(|t| viewer.sees(&t.id)) {
        let l = format!("tenant=\"{}\"", label(&t.id.to_string()));
        let regions = state.regions.of(&t.id);
        let _ = writeln!(o, "switchyard_tenant_models{{{l}}} {}", t.models);
        let _ = writeln!(o, "switchyard_tenant_model_bytes{{{l}}} {}", t.model_bytes);
        let _ = writeln!(o, "switchyard_tenant_regions{{{l}}} {}", regions.len());
        let _ = writeln!(
            o,
            "switchyard_tenant_region_bytes{{{l}}} {}",
            regions.iter().map(|r| r.len() as u64).sum::<u64>()
        );
        let _ = writeln!(o, "switchyard_tenant_in_flight{{{l}}} {}", t.in_flight);
    }
    o
}

/// Where the endpoint listens.
pub enum MetricsListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl MetricsListener {
    /// Binds `daemon.metrics` (`host:port` or `unix:/path`).
    pub async fn bind(spec: &str, mode: u32) -> Result<MetricsListener, DaemonError> {
        match spec.strip_prefix("unix:") {
            Some(path) => {
                let path = std::path::PathBuf::from(path);
                let l = crate::server::bind_unix(&path, mode)?;
                Ok(MetricsListener::Unix(l, path))
            }
            None => tokio::net::TcpListener::bind(spec)
                .await
                .map(MetricsListener::Tcp)
                .map_err(|e| DaemonError::io(format!("binding the metrics endpoint {spec}"), e)),
        }
    }
}

/// Serves `GET /metrics` until `stop` turns true. One request per connection.
pub async fn serve(listener: MetricsListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = accept(&listener, &state) => a,
        };
        match accepted {
            Ok((stream, viewer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &state, viewer).await {
                        debug!(error = %e, "metrics scrape failed");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

type Stream = Box<dyn Io>;
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The connection and, on the Unix socket, who is on the other end (TCP readers are
/// identified by their token when the request arrives).
async fn accept(l: &MetricsListener, state: &State) -> std::io::Result<(Stream, Option<Viewer>)> {
    match l {
        MetricsListener::Tcp(t) => {
            let (s, _) = t.accept().await?;
            Ok((Box::new(s), None))
        }
        MetricsListener::Unix(u, _) => {
            let (s, _) = u.accept().await?;
            let viewer = match s.peer_cred() {
                Ok(c) if state.config.admin_uids.contains(&c.uid()) => Viewer::All,
                Ok(c) => Viewer::Tenant(TenantId::Uid(c.uid())),
                Err(_) => Viewer::Anonymous,
            };
            Ok((Box::new(s), Some(viewer)))
        }
    }
}

async fn answer(mut s: Stream, state: &State, viewer: Option<Viewer>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST {
                return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await;
    let (status, body) = match read {
        Ok(Ok(())) => respond(&head, state, viewer),
        _ => ("400 Bad Request", "bad request\n".to_owned()),
    };
    let ctype = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

fn respond(head: &[u8], state: &State, viewer: Option<Viewer>) -> (&'static str, String) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "GET" {
        return ("405 Method Not Allowed", "only GET\n".into());
    }
    if path != "/metrics" {
        return ("404 Not Found", "see /metrics\n".into());
    }
    let viewer = match viewer {
        Some(v) => v,
        None => {
            let token = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| v.trim().strip_prefix("Bearer ").map(str::to_owned));
            match token {
                None => Viewer::Anonymous,
                Some(t) => match state.token_caller(&t) {
                    Some(c) if c.admin => Viewer::All,
                    Some(c) => Viewer::Tenant(c.tenant),
                    None => return ("401 Unauthorized", "unknown token\n".into()),
                },
            }
        }
    };
    ("200 OK", render(state, &viewer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(700); // 0.7 ms
        h.observe(30_000); // 30 ms
        assert_eq!(h.counts[0], 0); // <= 0.5 ms
        assert_eq!(h.counts[1], 1); // <= 1 ms
        assert_eq!(h.counts[5], 1); // <= 25 ms
        assert_eq!(h.counts[6], 2); // <= 50 ms
        assert_eq!(h.count, 2);
        assert_eq!(h.sum_us, 30_700);
    }

    #[test]
    fn tenants_see_only_their_own_series() {
        let m = Metrics::default();
        let (a, b) = (TenantId::Uid(1), TenantId::Uid(2));
        m.ran(&a, "aaaa", "face", true, 10, 100, ProcessorKind::Cpu);
        m.refused(&b, "deadline");
        let inner = lock(&m.inner);
        let seen = |v: &Viewer| {
            inner.models.keys().filter(|(t, _)| v.sees(t)).count()
                + inner.refusals.keys().filter(|(t, _)| v.sees(t)).count()
        };
        assert_eq!(seen(&Viewer::All), 2);
        assert_eq!(seen(&Viewer::Tenant(a.clone())), 1);
        assert_eq!(seen(&Viewer::Tenant(TenantId::Uid(3))), 0);
        assert_eq!(seen(&Viewer::Anonymous), 0);
        assert_eq!(inner.busy_us.get("cpu"), Some(&100));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
