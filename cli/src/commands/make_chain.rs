//! `switchyard make-chain-model --nodes N --out chain.tflite` (hidden): writes a chain of
//! N float32 ADD nodes of one element each. Its run time per node is the executor's own
//! overhead, measured with `switchyard bench chain.tflite --local --threads 1` (see
//! docs/PERFORMANCE.md, "Executor overhead").

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use switchyard_interpreter::builder::add_chain;

#[derive(Args)]
pub struct MakeChainArgs {
    /// ADD nodes in the chain.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Elements per tensor.
    #[arg(long, default_value_t = 1)]
    pub elements: usize,
    /// Where to write the .tflite file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: MakeChainArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.elements == 0 {
        bail!("--nodes and --elements must be at least 1");
    }
    if args.nodes > 1_000_000 || args.elements > 1 << 20 {
        bail!("at most 1,000,000 nodes of at most 1,048,576 elements");
    }
    let bytes = add_chain(args.nodes, args.elements);
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {} float32 ADD nodes of {} element(s), {} bytes",
        args.out.display(),
        args.nodes,
        args.elements,
        bytes.len()
    );
    Ok(())
}
