//! Writes every single-op case of `switchyard_testkit::single_op` to a temporary directory
//! and has `scripts/probe_litert.py` ask LiteRT's built-in resolver which it accepts;
//! the answer is written to the JSON file named on the command line
//! (docs/coverage/litert_builtin.json in the repository).
//!
//! usage: cargo run -p switchyard-testkit --bin litert_probe -- OUT.json [CASES_DIR]
//! With CASES_DIR the cases (models, inputs, LiteRT's outputs) are kept there.

use std::path::Path;
use std::process::ExitCode;

use switchyard_testkit::single_op::{all_cases, probe_litert};

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: litert_probe OUT.json");
        return ExitCode::from(2);
    };
    let result = match std::env::args().nth(2) {
        Some(keep) => std::fs::create_dir_all(&keep)
            .map_err(|e| e.to_string())
            .and_then(|()| probe_litert(&all_cases(), Path::new(&keep), Path::new(&out), true)),
        None => tempfile::tempdir()
            .map_err(|e| e.to_string())
            .and_then(|dir| probe_litert(&all_cases(), dir.path(), Path::new(&out), false)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("litert_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
