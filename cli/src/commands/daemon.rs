//! Subcommands that talk to `switchyardd`: `models`, `tenants`, `status`, and the daemon
//! path of `run`. Every one takes `--socket` (default: `SWITCHYARD_SOCKET` or the daemon's
//! default path) and `--json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_client::{DataType, ModelInfo, TenantInfo, blocking::Client};
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
    DataType::try_from(code)
        .map(|d| d.short_name())
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

pub(crate) fn to_wire(d: DType) -> anyhow::Result<DataType> {
    Ok(match d {
        DType::F32 => DataType::Float32,
        DType::F16 => DataType::Float16,
        DType::I32 => DataType::Int32,
        DType::U8 => DataType::Uint8,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
        DType::I16 => DataType::Int16,
        DType::I8 => DataType::Int8,
        DType::F64 => DataType::Float64,
        DType::U64 => DataType::Uint64,
        DType::U32 => DataType::Uint32,
        DType::U16 => DataType::Uint16,
        other => bail!("{other} tensors cannot be sent to the daemon"),
    })
}

pub(crate) fn from_wire(d: DataType) -> anyhow::Result<DType> {
    Ok(match d {
        DataType::Float32 => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Int32 => DType::I32,
        DataType::Uint8 => DType::U8,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        DataType::Int16 => DType::I16,
        DataType::Int8 => DType::I8,
        DataType::Float64 => DType::F64,
        DataType::Uint64 => DType::U64,
        DataType::Uint32 => DType::U32,
        DataType::Uint16 => DType::U16,
        DataType::Unspecified => bail!("the daemon sent an output without a type"),
    })
}

/// `switchyard run MODEL --inputs ... --out DIR` through the daemon: loads the model
/// (reusing the daemon's copy if this tenant or another loaded the same bytes), runs it
/// with inline tensors or, with `shm`, through a shared-memory region, and writes
/// `DIR/output_<i>.npy` like `--local`.
pub fn run_model(
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    daemon: &DaemonArgs,
    shm: bool,
    keep: bool,
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
    let info = client
        .load_model_file(model)
        .with_context(|| format!("loading {}", model.display()))?;
    let result = run_loaded(&mut client, &info, inputs, out, daemon, shm);
    if !keep
        && !held_before.contains(&info.id)
        && let Err(e) = client.unload(&info.id)
    {
        tracing::warn!("could not unload {}: {e}", info.id);
    }
    result
}

fn run_loaded(
    client: &mut Client,
    info: &ModelInfo,
    inputs: &[PathBuf],
    out: &Path,
    daemon: &DaemonArgs,
    shm: bool,
) -> anyhow::Result<()> {
    let tensors = inputs
        .iter()
        .map(|p| {
            let t = npy::read(p).with_context(|| format!("reading {}", p.display()))?;
            switchyard_client::Tensor::new(
                to_wire(t.dtype)?,
                t.shape.iter().map(|&d| d as u64).collect(),
                t.data.as_slice().to_vec(),
            )
            .map_err(Into::into)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (outputs, timing) = if shm {
        run_via_shm(client, info, &tensors)?
    } else {
        let r = client
            .run(&info.id, &tensors)
            .context("running the model")?;
        (r.outputs, r.timing)
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (i, t) in outputs.iter().enumerate() {
        let path = out.join(format!("output_{i}.npy"));
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        npy::write(&path, from_wire(t.dtype)?, &shape, &t.data)
            .with_context(|| format!("writing {}", path.display()))?;
        if !daemon.json {
            println!("{}: {} {:?}", path.display(), t.dtype.short_name(), shape);
        }
        written.push(json!({"path": path, "dtype": t.dtype.short_name(), "shape": shape}));
    }
    if daemon.json {
        let v = json!({
            "model": info.id, "outputs": written,
            "queue_us": timing.queue_us, "run_us": timing.run_us, "shm": shm,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

type Outputs = (Vec<switchyard_client::Tensor>, switchyard_client::Timing);

fn run_via_shm(
    client: &mut Client,
    info: &ModelInfo,
    inputs: &[switchyard_client::Tensor],
) -> anyhow::Result<Outputs> {
    const ALIGN: u64 = 64;
    let align = |n: u64| n.div_ceil(ALIGN) * ALIGN;
    // Output slots are sized from the model's stored shapes, with room to spare for
    // outputs whose shape depends on the inputs; the daemon refuses a slot too small.
    let out_sizes: Vec<u64> = info
        .outputs
        .iter()
        .map(|t| {
            let dt = DataType::try_from(t.dtype).unwrap_or(DataType::Float32);
            dt.byte_len(&t.shape).unwrap_or(0) as u64 * 2 + 4096
        })
        .collect();
    let total: u64 = inputs
        .iter()
        .map(|t| align(t.data.len() as u64))
        .sum::<u64>()
        + out_sizes.iter().map(|&s| align(s)).sum::<u64>();
    let mut region = client.create_region(total.max(1) as usize)?;
    let mut offset = 0u64;
    let mut refs = Vec::new();
    for t in inputs {
        refs.push(region.write_tensor(offset, t)?);
        offset += align(t.data.len() as u64);
    }
    let mut slots = Vec::new();
    for &s in &out_sizes {
        slots.push(region.slot(offset, s)?);
        offset += align(s);
    }
    let r = client
        .run_shm(&info.id, &refs, &slots)
        .context("running the model")?;
    let mut outputs = Vec::new();
    for (t, dest) in r.outputs.into_iter().zip(&r.shm) {
        let data = match dest {
            Some(d) => region.read(d)?.to_vec(),
            None => t.data,
        };
        outputs.push(switchyard_client::Tensor { data, ..t });
    }
    Ok((outputs, r.timing))
}
