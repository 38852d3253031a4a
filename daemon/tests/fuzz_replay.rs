//! The fuzz targets' corpora replayed as ordinary tests (issue 10): every committed seed
//! and every saved crash input under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`,
//! the single-op models of every operator, and the real models in `models/` when they
//! are there, each through the same function libFuzzer calls (`switchyard_daemon::fuzzing`).
//! CI needs no nightly toolchain and no instrumented build for this; `scripts/fuzz.sh`
//! does the fuzzing itself.
//!
//! A crash input that a fix made harmless stays in `fuzz/artifacts/` for good: this test
//! is its regression test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_daemon::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("model", fuzzing::model),
    ("run", fuzzing::run),
    ("grpc_request", fuzzing::grpc_request),
    ("shm_side", fuzzing::shm_side),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files of `dir`, sorted (missing directory: none).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Runs `target` on `input`, naming the input when it panics, and checks it answered
/// within libFuzzer's `-timeout=10` that `scripts/fuzz.sh` uses.
fn replay(name: &str, what: &str, target: Target, input: &[u8]) {
    let t = Instant::now();
    if let Err(p) = std::panic::catch_unwind(|| target(input)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("fuzz target `{name}` panicked on {what}: {msg}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "fuzz target `{name}` took {:?} on {what}",
        t.elapsed()
    );
}

fn replay_dirs(name: &str, target: Target) -> usize {
    let fuzz = root().join("fuzz");
    let mut n = 0;
    for dir in [
        fuzz.join("corpus").join(name),
        fuzz.join("artifacts").join(name),
    ] {
        for f in files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            replay(name, &f.display().to_string(), target, &bytes);
            n += 1;
        }
    }
    n
}

/// Single-op models of every operator and dtype the test kit builds, as the `model`
/// target sees them and, behind an input seed, as the `run` target does.
fn single_op_seeds() -> Vec<(String, Vec<u8>)> {
    switchyard_testkit::single_op::all_cases()
        .into_iter()
        .map(|c| (format!("{:?}-{}-{}", c.op, c.dtype, c.variant), c.model))
        .collect()
}

/// The real models present (fetched by scripts/fetch_models.py; absent: none).
fn real_models(max_bytes: u64) -> Vec<PathBuf> {
    let mut v = files(&root().join("models"));
    v.retain(|p| {
        p.extension().is_some_and(|e| e == "tflite")
            && std::fs::metadata(p).is_ok_and(|m| m.len() <= max_bytes)
    });
    v
}

fn with_seed(seed: u64, model: &[u8]) -> Vec<u8> {
    let mut v = seed.to_le_bytes().to_vec();
    v.extend_from_slice(model);
    v
}

#[test]
fn committed_corpora_and_crashes_replay_cleanly() {
    for (name, target) in TARGETS {
        let n = replay_dirs(name, target);
        eprintln!("{name}: {n} committed inputs replayed");
        assert!(n > 0, "fuzz/corpus/{name} has no seeds");
    }
}

#[test]
fn single_op_models_replay_through_model_and_run() {
    let seeds = single_op_seeds();
    assert!(seeds.len() > 100, "only {} single-op models", seeds.len());
    for (what, model) in &seeds {
        replay("model", what, fuzzing::model, model);
        replay("run", what, fuzzing::run, &with_seed(0x5eed, model));
    }
}

/// Real models, and a few cheap mutations of each (the bytes libFuzzer would start from).
#[test]
fn real_models_and_mutations_replay_through_model_and_run() {
    let models = real_models(300 << 10);
    eprintln!("{} real models", models.len());
    for path in models {
        let bytes = std::fs::read(&path).unwrap();
        let what = path.display().to_string();
        replay("model", &what, fuzzing::model, &bytes);
        replay("run", &what, fuzzing::run, &with_seed(1, &bytes));
        // Deterministic byte flips spread over the file, where the flatbuffer offsets,
        // shapes and buffers are.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..16 {
            let mut m = bytes.clone();
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng as usize) % m.len().max(1);
                if let Some(b) = m.get_mut(at) {
                    *b ^= (rng >> 32) as u8 | 1;
                }
            }
            let w = format!("{what} mutation {k}");
            replay("model", &w, fuzzing::model, &m);
            replay("run", &w, fuzzing::run, &with_seed(k, &m));
        }
    }
}

/// Writes the seed corpora to `$SWITCHYARD_FUZZ_SEEDS/<target>/` (scripts/fuzz.sh):
/// single-op and real models for `model` and `run`.
#[test]
#[ignore = "run by scripts/fuzz.sh to seed the corpora"]
fn write_seeds() {
    let Some(out) = std::env::var_os("SWITCHYARD_FUZZ_SEEDS") else {
        panic!("set SWITCHYARD_FUZZ_SEEDS to the directory to write to");
    };
    let out = PathBuf::from(out);
    for t in ["model", "run"] {
        std::fs::create_dir_all(out.join(t)).unwrap();
    }
    let mut all = single_op_seeds();
    for p in real_models(u64::MAX) {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        all.push((name, std::fs::read(&p).unwrap()));
    }
    for (i, (name, model)) in all.iter().enumerate() {
        let file: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        std::fs::write(out.join("model").join(format!("{i:04}-{file}")), model).unwrap();
        std::fs::write(
            out.join("run").join(format!("{i:04}-{file}")),
            with_seed(i as u64, model),
        )
        .unwrap();
    }
    eprintln!("{} seeds per model target in {}", all.len(), out.display());
}
