//! Subcommands that talk to `switchyardd`: `models`, `tenants`, `status`, and the daemon
//! path of `run`. Every one takes `--socket` (default: `SWITCHYARD_SOCKET` or the daemon's
//! default path) and `--json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_client::blocking::{Client, Model};
use switchyard_client::{
    DType as ClientDType, ModelInfo, OutputData, Run, TenantInfo, Tensor, Timing,
};
use switchyard_interpreter::{DType, npy};

#[derive(Args, Clone)]
pub struct DaemonArgs {
    /// The daemon's gRPC Unix socket.
    #[arg(long, default_value_os_t = switchyard_config::daemon::default_socket_path())]
    pub socket: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

pub fn connect(socket: &Path) -> anyhow::Result<Client> {
    Client::connect_unix(socket)
        .with_context(|| format!("is switchyardd running on {}?", socket.display()))
}

fn dtype_name(code: i32) -> &'static str {
    ClientDType::try_from(code)
        .map(|d| d.name())
        .unwrap_or("unknown")
}

fn model_json(m: &ModelInfo) -> Value {
    let tensors = |ts: &[switchyard_client::TensorInfo]| -> Vec<Value> {
        ts.iter()
            .map(|t| json!({"name": t.name, "dtype": dtype_name(t.dtype), "shape": t.shape}))
            .collect()
    };
    json!({
        "id": m.id, "name": m.name, "sha256": m.sha256, "bytes": m.bytes,
        "arena_bytes": m.arena_bytes, "plan_bytes": m.plan_bytes, "stateful": m.stateful,
        "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs),
    })
}

fn tenant_json(t: &TenantInfo) -> Value {
    let c = t.counters.unwrap_or_default();
    json!({
        "id": t.id, "uid": t.uid, "pids": t.pids, "models": t.models,
        "model_bytes": t.model_bytes, "arena_bytes": t.arena_bytes, "plan_bytes": t.plan_bytes,
        "sessions": t.sessions, "session_bytes": t.session_bytes,
        "regions": t.regions, "region_bytes": t.region_bytes,
        "requests": c.requests, "failed": c.failed, "rejected": c.rejected,
        "in_flight": c.in_flight, "queue_us_total": c.queue_us_total,
        "run_us_total": c.run_us_total, "last_queue_us": c.last_queue_us,
        "last_run_us": c.last_run_us,
    })
}

fn print_tenants(ts: &[TenantInfo]) {
    println!(
        "{:<20} {:>6} {:>12} {:>8} {:>13} {:>7} {:>9} {:>7} {:>9} {:>10}",
        "TENANT",
        "MODELS",
        "MODEL BYTES",
        "SESSIONS",
        "SESSION BYTES",
        "REGIONS",
        "REQUESTS",
        "FAILED",
        "IN FLIGHT",
        "AVG RUN"
    );
    for t in ts {
        let c = t.counters.unwrap_or_default();
        let avg = if c.requests > 0 {
            format!(
                "{:.2} ms",
                c.run_us_total as f64 / c.requests as f64 / 1000.0
            )
        } else {
            "-".into()
        };
        println!(
            "{:<20} {:>6} {:>12} {:>8} {:>13} {:>7} {:>9} {:>7} {:>9} {:>10}",
            t.id,
            t.models,
            t.plan_bytes,
            t.sessions,
            t.session_bytes,
            t.regions,
            c.requests,
            c.failed,
            c.in_flight,
            avg
        );
    }
}

pub fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.daemon.socket)?;
    let models = client.list_models()?;
    if args.daemon.json {
        let v: Vec<Value> = models.iter().map(model_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<18} {:<32} {:>10} {:>12} {:>13} {:>8}",
        "ID", "NAME", "BYTES", "PLAN BYTES", "SESSION BYTES", "STATEFUL"
    );
    for m in &models {
        println!(
            "{:<18} {:<32} {:>10} {:>12} {:>13} {:>8}",
            m.id,
            m.name,
            m.bytes,
            m.plan_bytes,
            m.arena_bytes,
            if m.stateful { "yes" } else { "no" }
        );
    }
    Ok(())
}

pub fn tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.daemon.socket)?;
    let ts = client.tenants()?;
    if args.daemon.json {
        let v: Vec<Value> = ts.iter().map(tenant_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_tenants(&ts);
    }
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.daemon.socket)?;
    let s = client.status()?;
    if args.daemon.json {
        let v = json!({
            "version": s.version, "uptime_ms": s.uptime_ms, "models": s.models,
            "in_flight": s.in_flight, "regions": s.regions, "requests": s.requests,
            "tenants": s.tenants.iter().map(tenant_json).collect::<Vec<_>>(),
            "memory": s.memory.map(|m| json!({
                "models": m.models, "model_bytes": m.model_bytes, "plan_bytes": m.plan_bytes,
                "sessions": m.sessions, "session_bytes": m.session_bytes,
                "pooled_sessions": m.pooled_sessions, "pooled_bytes": m.pooled_bytes,
                "charged_bytes": m.charged_bytes,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("switchyardd {}", s.version);
    println!("uptime     {:.1} s", s.uptime_ms as f64 / 1000.0);
    println!("models     {} prepared (shared between tenants)", s.models);
    println!("in flight  {}", s.in_flight);
    println!("regions    {}", s.regions);
    println!("requests   {}", s.requests);
    if let Some(m) = s.memory {
        println!(
            "memory     {} models: {} model + {} plan bytes; {} sessions: {} bytes; \
             {} pooled: {} bytes (tenants are charged {} bytes together)",
            m.models,
            m.model_bytes,
            m.plan_bytes,
            m.sessions,
            m.session_bytes,
            m.pooled_sessions,
            m.pooled_bytes,
            m.charged_bytes
        );
    }
    println!();
    print_tenants(&s.tenants);
    Ok(())
}

/// `switchyard run MODEL --inputs ... --out DIR` through the daemon: loads the model
/// (reusing the daemon's copy if this tenant or another loaded the same bytes), runs it
/// with inline tensors or, with `shm`, through a shared-memory pool, and writes
/// `DIR/output_<i>.npy` like `--local`. An input shape that differs from the model's is
/// refused unless `resize`.
pub fn run_model(
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    daemon: &DaemonArgs,
    shm: bool,
    keep: bool,
    resize: bool,
) -> anyhow::Result<()> {
    let mut client = connect(&daemon.socket)?;
    // A one-shot run leaves the daemon as it found it: the model is unloaded afterwards
    // unless this tenant already held it (an app of the same uid may be using it).
    let held_before = client
        .list_models()
        .context("listing models")?
        .into_iter()
        .map(|m| m.id)
        .collect::<Vec<_>>();
    let loaded = client
        .load(model)
        .with_context(|| format!("loading {}", model.display()))?;
    let result = run_loaded(&client, &loaded, inputs, out, daemon, shm, resize);
    if !keep
        && !held_before.iter().any(|id| id == loaded.id())
        && let Err(e) = client.unload(loaded.id())
    {
        tracing::warn!("could not unload {}: {e}", loaded.id());
    }
    result
}

fn run_loaded(
    client: &Client,
    model: &Model,
    inputs: &[PathBuf],
    out: &Path,
    daemon: &DaemonArgs,
    shm: bool,
    resize: bool,
) -> anyhow::Result<()> {
    let tensors = inputs
        .iter()
        .map(|p| {
            let t = npy::read(p).with_context(|| format!("reading {}", p.display()))?;
            Tensor::new(
                to_client(t.dtype)?,
                t.shape.iter().map(|&d| d as u64).collect(),
                t.data.as_slice().to_vec(),
            )
            .map_err(Into::into)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (outputs, timing) = if shm {
        run_via_shm(client, model, tensors, resize)?
    } else {
        let run = tensors
            .into_iter()
            .fold(Run::new().resize(resize), |r, t| r.input(t));
        let r = model.run(run).context("running the model")?;
        let timing = r.timing;
        let ts = r
            .tensors
            .into_iter()
            .map(|o| {
                o.into_tensor()
                    .context("the daemon sent a shared-memory output")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        (ts, timing)
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (i, t) in outputs.iter().enumerate() {
        let path = out.join(format!("output_{i}.npy"));
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        npy::write(&path, from_client(t.dtype), &shape, &t.data)
            .with_context(|| format!("writing {}", path.display()))?;
        if !daemon.json {
            println!("{}: {} {:?}", path.display(), t.dtype, shape);
        }
        written.push(json!({"path": path, "dtype": t.dtype.name(), "shape": shape}));
    }
    if daemon.json {
        let v = json!({
            "model": model.id(), "outputs": written,
            "queue_us": timing.queue.as_micros() as u64,
            "run_us": timing.run.as_micros() as u64, "shm": shm,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

fn run_via_shm(
    client: &Client,
    model: &Model,
    inputs: Vec<Tensor>,
    resize: bool,
) -> anyhow::Result<(Vec<Tensor>, Timing)> {
    // Output slots are sized from the model's stored shapes, with room to spare for
    // outputs whose shape depends on the inputs; the daemon refuses a slot too small.
    let out_sizes: Vec<usize> = model
        .outputs()
        .iter()
        .map(|t| t.byte_len().saturating_mul(2).saturating_add(4096))
        .collect();
    let total = inputs
        .iter()
        .map(|t| t.data.len().div_ceil(64) * 64)
        .sum::<usize>()
        + out_sizes.iter().map(|s| s.div_ceil(64) * 64).sum::<usize>();
    let pool = client.shm_pool(total.max(64))?;
    let ins = inputs
        .iter()
        .map(|t| pool.tensor(t))
        .collect::<Result<Vec<_>, _>>()?;
    let slots = out_sizes
        .iter()
        .map(|&s| pool.alloc(s))
        .collect::<Result<Vec<_>, _>>()?;
    let run = ins
        .iter()
        .fold(Run::new().resize(resize), |r, t| r.input_shm(t));
    let run = slots.iter().fold(run, |r, s| r.output_shm(s));
    let r = model.run(run).context("running the model")?;
    let mut outputs = Vec::new();
    for (o, slot) in r.tensors.into_iter().zip(&slots) {
        let data = match &o.data {
            OutputData::Shm(d) => slot.prefix(d.length)?.to_vec(),
            OutputData::Inline(b) => b.clone(),
        };
        outputs.push(Tensor::new(o.dtype, o.shape, data)?);
    }
    Ok((outputs, r.timing))
}

pub(crate) fn to_client(d: DType) -> anyhow::Result<ClientDType> {
    Ok(match d {
        DType::F32 => ClientDType::Float32,
        DType::F16 => ClientDType::Float16,
        DType::I32 => ClientDType::Int32,
        DType::U8 => ClientDType::Uint8,
        DType::I64 => ClientDType::Int64,
        DType::Bool => ClientDType::Bool,
        DType::I16 => ClientDType::Int16,
        DType::I8 => ClientDType::Int8,
        DType::F64 => ClientDType::Float64,
        DType::U64 => ClientDType::Uint64,
        DType::U32 => ClientDType::Uint32,
        DType::U16 => ClientDType::Uint16,
        other => bail!("{other} tensors cannot be sent to the daemon"),
    })
}

pub(crate) fn from_client(d: ClientDType) -> DType {
    match d {
        ClientDType::Float32 => DType::F32,
        ClientDType::Float16 => DType::F16,
        ClientDType::Int32 => DType::I32,
        ClientDType::Uint8 => DType::U8,
        ClientDType::Int64 => DType::I64,
        ClientDType::Bool => DType::Bool,
        ClientDType::Int16 => DType::I16,
        ClientDType::Int8 => DType::I8,
        ClientDType::Float64 => DType::F64,
        ClientDType::Uint64 => DType::U64,
        ClientDType::Uint32 => DType::U32,
        ClientDType::Uint16 => DType::U16,
    }
}
