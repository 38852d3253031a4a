//! Writes every single-op case of `switchyard_testkit::single_op` to a temporary directory
//! and has `scripts/probe_litert.py` ask LiteRT's built-in resolver which it accepts;
//! the answer is written to the JSON file named on the command line
//! (docs/coverage/litert_builtin.json in the repository).
//!
//! usage: cargo run -p switchyard-testkit --bin litert_probe -- OUT.json

use std::process::{Command, ExitCode};

use switchyard_interpreter::npy;
use switchyard_testkit::single_op::all_cases;
use switchyard_testkit::{python, repo_root};

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: litert_probe OUT.json");
        return ExitCode::from(2);
    };
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("litert_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut manifest = Vec::new();
    for (i, case) in all_cases().iter().enumerate() {
        let model = format!("case_{i}.tflite");
        std::fs::write(dir.path().join(&model), &case.model).map_err(|e| e.to_string())?;
        let mut inputs = Vec::new();
        for (j, t) in case.inputs.iter().enumerate() {
            let name = format!("case_{i}_in{j}.npy");
            npy::write(dir.path().join(&name), t.dtype, &t.shape, t.data.as_slice())
                .map_err(|e| e.to_string())?;
            inputs.push(format!("\"{name}\""));
        }
        manifest.push(format!(
            "{{\"op\": \"{}\", \"dtype\": \"{}\", \"variant\": \"{}\", \"model\": \"{model}\", \"inputs\": [{}]}}",
            case.op.name(),
            case.dtype,
            case.variant,
            inputs.join(", ")
        ));
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        format!("[\n{}\n]\n", manifest.join(",\n")),
    )
    .map_err(|e| e.to_string())?;
    let status = Command::new(python())
        .arg(repo_root().join("scripts/probe_litert.py"))
        .arg(dir.path())
        .arg(out)
        .status()
        .map_err(|e| format!("cannot start Python: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("scripts/probe_litert.py failed: {status}"))
    }
}
