//! `switchyard session ...`: sessions in the daemon (one stream's state each).
//!
//! - `session stream MODEL --input SEQ.npy --out DIR`: opens a session, runs each step
//!   of SEQ (axis 0) in order on it, writes the outputs stacked along a new axis 0 as
//!   `DIR/output_<i>.npy`, and closes the session: a stateful model (a streaming
//!   wake-word detector) sees one continuous stream, exactly as one LiteRT interpreter
//!   invoked step after step.
//! - `session list`: this tenant's open sessions (any process of the same uid).
//! - `session reset ID`, `session close ID`.
//!
//! A session is closed by the daemon when the process that opened it exits, so a
//! session outlives one command only when an app (not this CLI) opened it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use switchyard_client::blocking::{Model, Session};
use switchyard_client::{DType as ClientDType, Run, SessionInfo, Tensor};
use switchyard_interpreter::npy;

use super::daemon::{DaemonArgs, connect, from_client, to_client};

#[derive(Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: SessionCommand,
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Run a sequence of steps through one session of a single-input model.
    Stream(StreamArgs),
    /// This tenant's open sessions.
    List {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Start a session's stream afresh.
    Reset {
        id: u64,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Close a session and free its memory.
    Close {
        id: u64,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

#[derive(Args)]
pub struct StreamArgs {
    /// Path to a .tflite model with one input.
    pub model: PathBuf,
    /// The steps as one .npy: axis 0 counts steps, each step has the model's input
    /// shape.
    #[arg(long)]
    pub input: PathBuf,
    /// Directory for output_<i>.npy (each stacked over the steps).
    #[arg(long)]
    pub out: PathBuf,
    /// Reset the stream after this many steps (0: never).
    #[arg(long, default_value_t = 0)]
    pub reset_every: usize,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

fn session_json(s: &SessionInfo) -> Value {
    json!({"id": s.id, "model_id": s.model_id, "memory_bytes": s.memory_bytes, "runs": s.runs})
}

pub fn run(args: SessionArgs) -> anyhow::Result<()> {
    match args.command {
        SessionCommand::Stream(a) => stream(a),
        SessionCommand::List { daemon } => {
            let mut c = connect(&daemon.socket)?;
            let sessions = c.list_sessions()?;
            if daemon.json {
                let v: Vec<Value> = sessions.iter().map(session_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>6} {:<18} {:>12} {:>8}", "ID", "MODEL", "MEMORY", "RUNS");
                for s in &sessions {
                    println!(
                        "{:>6} {:<18} {:>12} {:>8}",
                        s.id, s.model_id, s.memory_bytes, s.runs
                    );
                }
            }
            Ok(())
        }
        SessionCommand::Reset { id, daemon } => {
            connect(&daemon.socket)?.reset_session(id)?;
            Ok(())
        }
        SessionCommand::Close { id, daemon } => {
            connect(&daemon.socket)?.close_session(id)?;
            Ok(())
        }
    }
}

fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let seq =
        npy::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let Some((&steps, step_shape)) = seq.shape.split_first() else {
        bail!("{}: a sequence needs a step axis", args.input.display());
    };
    let client = connect(&args.daemon.socket)?;
    let mut raw = connect(&args.daemon.socket)?;
    let held_before: Vec<String> = raw
        .list_models()
        .context("listing models")?
        .into_iter()
        .map(|m| m.id)
        .collect();
    let model = client
        .load(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let result = stream_loaded(&model, &seq, steps, step_shape, &args);
    // Like `run`, leave the daemon as found: unload what this command loaded.
    if !held_before.iter().any(|id| id == model.id())
        && let Err(e) = raw.unload(model.id())
    {
        tracing::warn!("could not unload {}: {e}", model.id());
    }
    result
}

fn stream_loaded(
    model: &Model,
    seq: &switchyard_interpreter::Tensor,
    steps: usize,
    step_shape: &[usize],
    args: &StreamArgs,
) -> anyhow::Result<()> {
    if model.inputs().len() != 1 {
        bail!(
            "session stream feeds single-input models; this one has {} inputs",
            model.inputs().len()
        );
    }
    let dtype = to_client(seq.dtype)?;
    let shape: Vec<u64> = step_shape.iter().map(|&d| d as u64).collect();
    let step_bytes = seq.data.len() / steps.max(1);
    let session = model.open_session().context("opening a session")?;
    let result = run_steps(
        &session,
        &seq.data.as_slice()[..steps * step_bytes],
        (dtype, &shape, step_bytes),
        args.reset_every,
    );
    let id = session.id();
    if let Err(e) = session.close() {
        tracing::warn!("could not close session {id}: {e}");
    }
    let outputs = result?;
    write_stacked(&args.out, steps, &outputs, args.daemon.json)?;
    Ok(())
}

type StepOutputs = Vec<Vec<Tensor>>;

fn run_steps(
    session: &Session,
    data: &[u8],
    (dtype, shape, step_bytes): (ClientDType, &[u64], usize),
    reset_every: usize,
) -> anyhow::Result<StepOutputs> {
    let mut out = Vec::new();
    for (t, chunk) in data.chunks(step_bytes.max(1)).enumerate() {
        if reset_every > 0 && t > 0 && t % reset_every == 0 {
            session.reset()?;
        }
        let x = Tensor::new(dtype, shape.to_vec(), chunk.to_vec())?;
        let r = session
            .run(Run::new().input(x))
            .with_context(|| format!("step {t}"))?;
        let tensors = r
            .tensors
            .into_iter()
            .map(|o| {
                o.into_tensor()
                    .context("the daemon sent a shared-memory output")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.push(tensors);
    }
    Ok(out)
}

fn write_stacked(
    out: &Path,
    steps: usize,
    outputs: &StepOutputs,
    json: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let n = outputs.first().map_or(0, Vec::len);
    let mut written = Vec::new();
    for i in 0..n {
        let first = &outputs[0][i];
        let mut shape = vec![steps];
        shape.extend(first.shape.iter().map(|&d| d as usize));
        let mut data = Vec::with_capacity(first.data.len() * steps);
        for step in outputs {
            let t = step.get(i).context("a step returned fewer outputs")?;
            if t.shape != first.shape || t.dtype != first.dtype {
                bail!("output {i} changes shape between steps; cannot stack it");
            }
            data.extend_from_slice(&t.data);
        }
        let path = out.join(format!("output_{i}.npy"));
        npy::write(&path, from_client(first.dtype), &shape, &data)
            .with_context(|| format!("writing {}", path.display()))?;
        if !json {
            println!(
                "{}: {} {:?}",
                path.display(),
                first.dtype.short_name(),
                shape
            );
        }
        written.push(json!({"path": path, "dtype": first.dtype.short_name(), "shape": shape}));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"steps": steps, "outputs": written}))?
        );
    }
    Ok(())
}
