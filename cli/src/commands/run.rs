//! `switchyard run [--local] [--resize] MODEL --inputs a.npy[,b.npy] --out DIR`: run a
//! model through the daemon (or, with `--local`, in this process) and write
//! `DIR/output_<i>.npy` in subgraph-0 output order.
//!
//! Shapes are strict, locally and in the daemon: an input whose shape differs from the
//! model's in a dimension its shape signature does not mark dynamic is refused, unless
//! `--resize` asks for the model to be resized to the inputs first (as LiteRT's
//! `resize_tensor_input` does).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{Interpreter, InterpreterOptions, Model, RunError, npy};

#[derive(Args)]
pub struct RunArgs {
    /// Path to a .tflite model.
    pub model: PathBuf,
    /// Input tensors as .npy files, comma separated, in the model's input order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub inputs: Vec<PathBuf>,
    /// Directory for output_<i>.npy files (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Run in this process instead of through the daemon.
    #[arg(long)]
    pub local: bool,
    /// Resize the model's inputs to the given tensors' shapes before running (locally,
    /// or by the daemon). Without it, an input that differs from the model's shape in a
    /// dimension that is not dynamic is refused.
    #[arg(long)]
    pub resize: bool,
    /// Kernel threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Use the reference kernels (slow, the correctness oracle).
    #[arg(long)]
    pub reference: bool,
    /// Through the daemon: pass tensors in a shared-memory region instead of inline.
    #[arg(long, conflicts_with = "local")]
    pub shm: bool,
    /// Through the daemon: leave the model loaded afterwards (it stays this tenant's, as
    /// after a client's load), instead of unloading what this run loaded.
    #[arg(long, conflicts_with = "local")]
    pub keep: bool,
    #[command(flatten)]
    pub daemon: super::daemon::DaemonArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.local {
        return super::daemon::run_model(
            &args.model,
            &args.inputs,
            &args.out,
            &args.daemon,
            args.shm,
            args.keep,
            args.resize,
        );
    }
    let model = Arc::new(
        Model::from_path(&args.model)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let resolver = if args.reference {
        CpuResolver::reference()
    } else {
        CpuResolver::optimized()
    };
    let options = InterpreterOptions {
        threads: args.threads.max(1),
        ..Default::default()
    };
    let inputs = args
        .inputs
        .iter()
        .map(|p| npy::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut interpreter =
        Interpreter::new(model, Arc::new(resolver), options).context("preparing the model")?;
    if args.resize {
        for (i, t) in inputs.iter().enumerate() {
            let (_, current) = interpreter.input_info(i)?;
            if current != t.shape {
                interpreter
                    .resize_input(i, t.shape.clone())
                    .with_context(|| format!("resizing input {i} to {:?}", t.shape))?;
            }
        }
    }
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    let outputs = interpreter.run(&views).map_err(|e| match e {
        e @ RunError::InputShape { .. } => anyhow::Error::new(e)
            .context("running the model (pass --resize to resize the model to the inputs)"),
        e => anyhow::Error::new(e).context("running the model"),
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (i, t) in outputs.iter().enumerate() {
        let path = args.out.join(format!("output_{i}.npy"));
        npy::write(&path, t.dtype, &t.shape, t.data.as_slice())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}: {} {:?}", path.display(), t.dtype, t.shape);
    }
    Ok(())
}
