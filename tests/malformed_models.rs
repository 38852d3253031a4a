//! Malformed and truncated models get a clear error, never a panic: every real model is
//! cut at many lengths and corrupted at many positions, and each result must be an `Err`
//! with a message, or a model that prepares and runs (or fails to) without panicking.

use std::sync::Arc;

use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{Interpreter, InterpreterOptions, Model};
use switchyard_testkit::Rng;
use switchyard_tests::{MODELS, model_path};

/// Loads, and if that works prepares and runs once on zero inputs. Returns whether the
/// bytes were refused at load time.
fn load_and_try(bytes: &[u8]) -> bool {
    load_and_maybe_run(bytes, true)
}

fn load_and_maybe_run(bytes: &[u8], run: bool) -> bool {
    match Model::from_bytes(bytes) {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error must say something");
            true
        }
        Ok(model) => {
            let options = InterpreterOptions {
                max_while_iterations: 1000,
                ..Default::default()
            };
            if let Ok(mut it) =
                Interpreter::new(Arc::new(model), Arc::new(CpuResolver::optimized()), options)
                && run
            {
                let _ = it.invoke();
            }
            false
        }
    }
}

#[test]
fn truncated_models_are_refused_with_an_error() {
    for stem in MODELS {
        let bytes = std::fs::read(model_path(stem)).expect("model");
        let n = bytes.len();
        for cut in [0, 1, 3, 4, 7, 8, 16, 64, 1000, n / 4, n / 2, n - 100, n - 1] {
            if cut >= n {
                continue;
            }
            let refused = load_and_try(&bytes[..cut]);
            // Cutting the header or the root table must be caught by the verifier.
            if cut < 64 {
                assert!(refused, "{stem}: {cut} bytes of {n} were accepted");
            }
        }
    }
}

/// Corruptions tried per model: a quick pass in CI; set SWITCHYARD_FUZZ_ITERS for a
/// deeper local run.
fn corruptions_per_model() -> usize {
    std::env::var("SWITCHYARD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[test]
fn corrupted_models_never_panic() {
    let mut rng = Rng::new(7);
    for stem in MODELS {
        let bytes = std::fs::read(model_path(stem)).expect("model");
        // The flatbuffer tables sit at the start and the end (metadata, tensors and
        // operators); constant weights fill the middle. Corrupt the structure, where
        // a bad offset or length hurts most.
        let structure: Vec<usize> = (0..bytes.len().min(4096))
            .chain(bytes.len().saturating_sub(8192)..bytes.len())
            .collect();
        for case in 0..corruptions_per_model() {
            let mut bad = bytes.clone();
            for _ in 0..1 + rng.int(0, 3) {
                let pos = structure[rng.int(0, structure.len() as i64 - 1) as usize];
                bad[pos] = rng.int(0, 255) as u8;
            }
            if std::env::var_os("SWITCHYARD_FUZZ_TRACE").is_some() {
                eprintln!("{stem}: {:?}", diff_positions(&bytes, &bad));
            }
            // Running big models with the reference kernels takes seconds: every
            // corruption is loaded and prepared, one in five also runs.
            load_and_maybe_run(&bad, case % 5 == 0);
        }
    }
}

#[test]
fn garbage_is_not_a_model() {
    let mut rng = Rng::new(3);
    for len in [0usize, 4, 8, 12, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.int(0, 255) as u8).collect();
        assert!(load_and_try(&bytes), "{len} random bytes were accepted");
    }
    assert!(Model::from_path("/nonexistent/model.tflite").is_err());
}

/// Positions and new values where `bad` differs from `good` (to reproduce a failure).
fn diff_positions(good: &[u8], bad: &[u8]) -> Vec<(usize, u8)> {
    good.iter()
        .zip(bad)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (_, b))| (i, *b))
        .collect()
}
