//! `switchyard inspect MODEL`: what is inside a `.tflite` file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{
    BuiltinOp, DType, Model, Node, OpResolver, PrepareCtx, Subgraph, TensorMeta,
};

#[derive(Args)]
pub struct InspectArgs {
    /// Path to a .tflite model.
    pub model: PathBuf,
    /// List every node, not only the operator summary.
    #[arg(long)]
    pub nodes: bool,
    /// Print JSON instead of text (with, per operator and dtype key, whether each CPU
    /// registry prepares it: "coverage").
    #[arg(long)]
    pub json: bool,
}

/// The dtype signature a kernel is chosen by, as LiteRT's builtin resolver sees it: the
/// first non-constant input's dtype; `hybrid_int8` for float activations with constant
/// int8/uint8 weights (dynamic-range models); `a->b` for the conversion ops, whose
/// kernel depends on both ends. The same keys name the rows of
/// docs/coverage/litert_builtin.json.
pub fn dtype_key(sg: &Subgraph, n: &Node) -> String {
    let def = |t: usize| sg.tensors.get(t);
    let inputs: Vec<_> = n.inputs.iter().flatten().filter_map(|&t| def(t)).collect();
    let base = inputs
        .iter()
        .find(|d| !d.is_const() && !matches!(d.dtype, DType::Resource | DType::Variant))
        .or(inputs.first())
        .map(|d| d.dtype);
    let Some(base) = base else {
        return "none".to_string();
    };
    let out = n.outputs.first().and_then(|&t| def(t)).map(|d| d.dtype);
    let conversion = matches!(
        n.op.to_string().as_str(),
        "QUANTIZE" | "DEQUANTIZE" | "CAST"
    );
    if conversion && let Some(out) = out {
        return format!("{}->{}", base.name(), out.name());
    }
    let hybrid = base == DType::F32
        && inputs
            .iter()
            .any(|d| d.is_const() && matches!(d.dtype, DType::I8 | DType::U8));
    if hybrid {
        return "hybrid_int8".to_string();
    }
    base.name().to_string()
}

/// Ops the interpreter runs itself (control flow and resource variables), not a kernel.
fn runs_in_interpreter(n: &Node) -> bool {
    use BuiltinOp as B;
    matches!(
        n.builtin(),
        Some(
            B::While
                | B::If
                | B::CallOnce
                | B::VarHandle
                | B::ReadVariable
                | B::AssignVariable
                | B::Call
        )
    )
}

/// Whether `resolver` prepares this very node (its stored shapes, constants, options):
/// "ok", "interpreter" for the ops the interpreter runs itself, or the refusal.
fn prepares(resolver: &dyn OpResolver, sg: &Subgraph, n: &Node) -> String {
    if runs_in_interpreter(n) {
        return "interpreter".to_string();
    }
    // Constant inputs as dense bytes (a sparse one expanded for this node).
    let values: Vec<(usize, std::borrow::Cow<'_, [u8]>)> = n
        .inputs
        .iter()
        .flatten()
        .filter_map(|&t| {
            let data = sg.tensors.get(t)?.data.as_ref()?;
            Some((t, data.dense().unwrap_or_default()))
        })
        .collect();
    let meta = |t: usize| {
        sg.tensors.get(t).map(|d| TensorMeta {
            dtype: d.dtype,
            shape: &d.shape,
            quant: d.quant.as_ref(),
            data: d
                .data
                .as_ref()
                .map(|c| match values.iter().find(|v| v.0 == t) {
                    Some((_, v)) => &v[..],
                    None => c.as_slice(),
                }),
            name: &d.name,
        })
    };
    let ctx = PrepareCtx {
        node: n,
        inputs: n.inputs.iter().map(|i| i.and_then(meta)).collect(),
        outputs: n.outputs.iter().filter_map(|&o| meta(o)).collect(),
        intermediates: switchyard_interpreter::kernel::intermediate_metas(sg, n),
        threads: 1,
    };
    match resolver.prepare(&ctx) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let model = Model::from_path(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let mut report = Vec::new();
    for (si, sg) in model.subgraphs.iter().enumerate() {
        let mut ops: BTreeMap<String, (usize, bool, BTreeMap<String, usize>)> = BTreeMap::new();
        // Per op and dtype key: does each CPU registry prepare the first such node?
        let mut cover: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        let (reference, optimized) = (CpuResolver::reference(), CpuResolver::optimized());
        for n in &sg.nodes {
            let e = ops.entry(n.op.to_string()).or_insert((
                0,
                CpuResolver::knows(&n.op),
                BTreeMap::new(),
            ));
            e.0 += 1;
            let key = dtype_key(sg, n);
            *e.2.entry(key.clone()).or_default() += 1;
            cover
                .entry(n.op.to_string())
                .or_default()
                .entry(key)
                .or_insert_with(|| {
                    serde_json::json!({
                        "reference": prepares(&reference, sg, n),
                        "optimized": prepares(&optimized, sg, n),
                    })
                });
        }
        let io = |ts: &[usize]| -> Vec<serde_json::Value> {
            ts.iter()
                .map(|&t| {
                    let d = &sg.tensors[t];
                    serde_json::json!({"name": d.name, "dtype": d.dtype.name(), "shape": d.shape, "signature": d.shape_signature})
                })
                .collect()
        };
        let nodes: Vec<serde_json::Value> = if args.nodes {
            sg.nodes
                .iter()
                .map(|n| serde_json::json!({"index": n.index, "op": n.op.to_string(), "version": n.version,
                    "inputs": n.inputs, "outputs": n.outputs, "options": format!("{:?}", n.options)}))
                .collect()
        } else {
            vec![]
        };
        report.push(serde_json::json!({
            "subgraph": si, "name": sg.name, "tensors": sg.tensors.len(), "nodes": sg.nodes.len(),
            "inputs": io(&sg.inputs), "outputs": io(&sg.outputs),
            "ops": ops.iter().map(|(k, (n, s, d))| serde_json::json!({"op": k, "count": n, "cpu": s, "dtypes": d, "coverage": cover.get(k)})).collect::<Vec<_>>(),
            "node_list": nodes,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} bytes, {} subgraph(s)",
        args.model.display(),
        model.byte_len,
        model.subgraphs.len()
    );
    for (si, sg) in model.subgraphs.iter().enumerate() {
        println!(
            "subgraph {si} {:?}: {} tensors, {} nodes",
            sg.name,
            sg.tensors.len(),
            sg.nodes.len()
        );
        for (kind, ts) in [("input", &sg.inputs), ("output", &sg.outputs)] {
            for &t in ts.iter() {
                let d = &sg.tensors[t];
                println!(
                    "  {kind} {t}: {} {} {:?} sig {:?}",
                    d.name, d.dtype, d.shape, d.shape_signature
                );
            }
        }
        // Per op and dtype key: its count and, when a CPU registry refuses the first such
        // node, why.
        let mut ops: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
        let (reference, optimized) = (CpuResolver::reference(), CpuResolver::optimized());
        for n in &sg.nodes {
            let e = ops
                .entry((n.op.to_string(), dtype_key(sg, n)))
                .or_insert_with(|| {
                    let (r, o) = (prepares(&reference, sg, n), prepares(&optimized, sg, n));
                    let note = match (r.as_str(), o.as_str()) {
                        ("ok" | "interpreter", "ok" | "interpreter") => String::new(),
                        _ if r == o => format!("  [no CPU kernel: {r}]"),
                        _ => format!("  [reference: {r}; optimized: {o}]"),
                    };
                    (0, note)
                });
            e.0 += 1;
        }
        for ((op, dtype), (count, note)) in ops {
            println!("  {count:>4} x {op} ({dtype}){note}");
        }
        if args.nodes {
            for n in &sg.nodes {
                println!(
                    "  node {:>3} {} v{} in {:?} out {:?} {:?}",
                    n.index, n.op, n.version, n.inputs, n.outputs, n.options
                );
            }
        }
    }
    Ok(())
}
