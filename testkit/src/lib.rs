//! switchyard-testkit: what tests need to compare Switchyard with LiteRT.
//!
//! LiteRT runs in the project's Python venv (`.venv`, made by `scripts/setup.sh`) through
//! `scripts/litert_run.py`, on the very same `.tflite` bytes and inputs. A test that needs
//! LiteRT and cannot find it fails with instructions; it never skips silently.
#![forbid(unsafe_code)]

pub mod single_op;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use switchyard_interpreter::{
    DType, Interpreter, InterpreterOptions, Model, OpResolver, Tensor, npy,
};

/// The repository root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The venv's Python, or a panic telling how to create it.
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "LiteRT venv missing at {}: run scripts/setup.sh first (the README's test command does)",
        p.display()
    );
    p
}

/// Directory of the anchor models fetched by `scripts/fetch_models.py`.
pub fn models_dir() -> PathBuf {
    repo_root().join("models")
}

/// Directory of golden outputs made by `scripts/make_golden.py`.
pub fn golden_dir() -> PathBuf {
    repo_root().join("golden")
}

/// Which LiteRT kernels to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteRtKernels {
    /// Built-in kernels without the default XNNPACK delegate (the oracle for per-op tests).
    Builtin,
    /// As LiteRT ships: XNNPACK on.
    Xnnpack,
}

/// Runs `model` in LiteRT on `inputs` and returns its outputs in subgraph-0 order.
pub fn litert_run(
    model: &[u8],
    inputs: &[Tensor],
    kernels: LiteRtKernels,
) -> Result<Vec<Tensor>, String> {
    let mut outs = litert_run_seq(model, std::slice::from_ref(&inputs.to_vec()), kernels, None)?;
    outs.pop()
        .ok_or_else(|| "LiteRT returned no invokes".to_string())
}

/// Invokes `model` once per entry of `invokes` on one LiteRT interpreter, so that state
/// (resource variables, CALL_ONCE, variable tensors) carries from one invoke to the next,
/// and returns every invoke's outputs. With `signature`, runs that signature instead of
/// subgraph 0; its inputs and outputs are then in the order of their names (sorted).
pub fn litert_run_seq(
    model: &[u8],
    invokes: &[Vec<Tensor>],
    kernels: LiteRtKernels,
    signature: Option<&str>,
) -> Result<Vec<Vec<Tensor>>, String> {
    if invokes.is_empty() {
        return Err("no invokes to run".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let model_path = dir.path().join("model.tflite");
    std::fs::write(&model_path, model).map_err(|e| e.to_string())?;
    let mut input_paths = Vec::new();
    for (k, inputs) in invokes.iter().enumerate() {
        for (i, t) in inputs.iter().enumerate() {
            let p = dir.path().join(format!("input_{k}_{i}.npy"));
            npy::write(&p, t.dtype, &t.shape, t.data.as_slice()).map_err(|e| e.to_string())?;
            input_paths.push(p.display().to_string());
        }
    }
    let out_dir = dir.path().join("out");
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts/litert_run.py"))
        .arg("--model")
        .arg(&model_path)
        .arg("--out")
        .arg(&out_dir)
        .arg("--invokes")
        .arg(invokes.len().to_string());
    if !input_paths.is_empty() {
        cmd.arg("--inputs").arg(input_paths.join(","));
    }
    if kernels == LiteRtKernels::Xnnpack {
        cmd.arg("--xnnpack");
    }
    if let Some(key) = signature {
        cmd.arg("--signature").arg(key);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start LiteRT: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "LiteRT failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let read_dir = |dir: &Path| -> Result<Vec<Tensor>, String> {
        let mut outputs = Vec::new();
        for i in 0.. {
            let p = dir.join(format!("output_{i}.npy"));
            if !p.exists() {
                break;
            }
            outputs.push(npy::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        Ok(outputs)
    };
    if invokes.len() == 1 {
        return Ok(vec![read_dir(&out_dir)?]);
    }
    (0..invokes.len())
        .map(|k| read_dir(&out_dir.join(format!("invoke_{k}"))))
        .collect()
}

/// Runs `model` in Switchyard with `resolver`.
pub fn switchyard_run(
    model: &[u8],
    inputs: &[Tensor],
    resolver: Arc<dyn OpResolver>,
) -> Result<Vec<Tensor>, String> {
    let model = Arc::new(Model::from_bytes(model).map_err(|e| e.to_string())?);
    let mut it = Interpreter::new(model, resolver, InterpreterOptions::default())
        .map_err(|e| e.to_string())?;
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    it.run(&views).map_err(|e| e.to_string())
}

/// How close two outputs must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// `|a - e| <= rel * max(|e|, 0.1 * max|E|)`: relative per element, with a floor
    /// of a tenth of the tensor's magnitude. An element near zero is the difference of
    /// much larger partial sums, so its error scales with the tensor, not with itself;
    /// without the floor, summation order alone fails it.
    Float {
        rel: f64,
    },
    /// Integer outputs within `steps` quantization steps.
    Steps(i64),
    Exact,
}

/// The bar: float within 1e-4 relative, quantized within one step, rest exact.
pub fn default_tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 | DType::F16 | DType::F64 => Tolerance::Float { rel: 1e-4 },
        DType::I8 | DType::U8 | DType::I16 => Tolerance::Steps(1),
        _ => Tolerance::Exact,
    }
}

/// Element values as f64, for comparison.
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    let b = t.data.as_slice();
    match t.dtype {
        DType::F32 => bytemuck::cast_slice::<u8, f32>(b)
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::F64 => bytemuck::cast_slice::<u8, f64>(b).to_vec(),
        DType::F16 => bytemuck::cast_slice::<u8, half::f16>(b)
            .iter()
            .map(|v| v.to_f64())
            .collect(),
        DType::I32 => bytemuck::cast_slice::<u8, i32>(b)
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::I64 => bytemuck::cast_slice::<u8, i64>(b)
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::I16 => bytemuck::cast_slice::<u8, i16>(b)
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::I8 => b.iter().map(|&v| v as i8 as f64).collect(),
        DType::U8 | DType::Bool => b.iter().map(|&v| v as f64).collect(),
        _ => b.iter().map(|&v| v as f64).collect(),
    }
}

/// Compares `actual` with `expected`; the error says where and by how much they differ.
pub fn compare(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), String> {
    if actual.dtype != expected.dtype {
        return Err(format!(
            "dtype {} != expected {}",
            actual.dtype, expected.dtype
        ));
    }
    if actual.shape != expected.shape {
        return Err(format!(
            "shape {:?} != expected {:?}",
            actual.shape, expected.shape
        ));
    }
    let a = to_f64(actual);
    let e = to_f64(expected);
    let max_abs = e.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut failures = 0usize;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = match tol {
            Tolerance::Float { rel } => {
                if x.is_nan() || y.is_nan() {
                    x.is_nan() && y.is_nan()
                } else if x.is_infinite() || y.is_infinite() {
                    x == y
                } else {
                    (x - y).abs() <= rel * y.abs().max(0.1 * max_abs)
                }
            }
            Tolerance::Steps(s) => (x - y).abs() <= s as f64,
            Tolerance::Exact => x == y,
        };
        if !ok {
            failures += 1;
            let d = (x - y).abs();
            if worst.is_none_or(|(_, _, wd)| d > wd) {
                worst = Some((i, x, d));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, x, d)) => Err(format!(
            "{failures} of {} elements differ ({tol:?}); worst at flat index {i}: got {x}, expected {}, |diff| {d:.3e}, max|expected| {max_abs:.3e}",
            a.len(),
            e[i]
        )),
    }
}

/// Deterministic pseudo-random numbers (xorshift64*), so tests need no RNG crate and
/// every run sees the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
}

/// A random tensor: floats uniform in [lo, hi); integers uniform in [lo, hi] clamped to
/// the dtype's range; bools 0/1.
pub fn random_tensor(dtype: DType, shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let bytes: Vec<u8> = match dtype {
        DType::F32 => (0..n)
            .flat_map(|_| rng.uniform(lo, hi).to_le_bytes())
            .collect(),
        DType::F16 => (0..n)
            .flat_map(|_| half::f16::from_f32(rng.uniform(lo, hi)).to_le_bytes())
            .collect(),
        DType::I32 => (0..n)
            .flat_map(|_| (rng.int(lo as i64, hi as i64) as i32).to_le_bytes())
            .collect(),
        DType::I64 => (0..n)
            .flat_map(|_| rng.int(lo as i64, hi as i64).to_le_bytes())
            .collect(),
        DType::I16 => (0..n)
            .flat_map(|_| {
                (rng.int((lo as i64).max(-32768), (hi as i64).min(32767)) as i16).to_le_bytes()
            })
            .collect(),
        DType::I8 => (0..n)
            .map(|_| rng.int((lo as i64).max(-128), (hi as i64).min(127)) as i8 as u8)
            .collect(),
        DType::U8 => (0..n)
            .map(|_| rng.int((lo as i64).max(0), (hi as i64).min(255)) as u8)
            .collect(),
        DType::Bool => (0..n).map(|_| rng.int(0, 1) as u8).collect(),
        other => panic!("random_tensor: unsupported dtype {other}"),
    };
    Tensor::from_bytes(dtype, shape.to_vec(), &bytes).expect("sizes agree by construction")
}

/// Runs `model` in LiteRT's built-in kernels and in Switchyard with each resolver, and
/// asserts every output agrees within `default_tolerance` (or `tol` when given).
/// Panics with a message naming the case, resolver, output and worst element.
pub fn assert_matches_litert(
    case: &str,
    model: &[u8],
    inputs: &[Tensor],
    resolvers: &[(&str, Arc<dyn OpResolver>)],
    tol: Option<Tolerance>,
) {
    let expected =
        litert_run(model, inputs, LiteRtKernels::Builtin).unwrap_or_else(|e| panic!("{case}: {e}"));
    for (name, resolver) in resolvers {
        let actual = switchyard_run(model, inputs, resolver.clone())
            .unwrap_or_else(|e| panic!("{case} [{name}]: {e}"));
        assert_eq!(
            actual.len(),
            expected.len(),
            "{case} [{name}]: output count"
        );
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            let t = tol.unwrap_or_else(|| default_tolerance(e.dtype));
            if let Err(msg) = compare(a, e, t) {
                panic!("{case} [{name}] output {i}: {msg}");
            }
        }
    }
}

/// Invokes `model` once per entry of `invokes` on one LiteRT interpreter and on one
/// Switchyard interpreter per resolver, and asserts every invoke's outputs agree: the
/// check for stateful models (variables, CALL_ONCE, LSTM state).
pub fn assert_matches_litert_seq(
    case: &str,
    model: &[u8],
    invokes: &[Vec<Tensor>],
    resolvers: &[(&str, Arc<dyn OpResolver>)],
    tol: Option<Tolerance>,
) {
    let expected = litert_run_seq(model, invokes, LiteRtKernels::Builtin, None)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    for (name, resolver) in resolvers {
        let model =
            Arc::new(Model::from_bytes(model).unwrap_or_else(|e| panic!("{case} [{name}]: {e}")));
        let mut it = Interpreter::new(model, resolver.clone(), InterpreterOptions::default())
            .unwrap_or_else(|e| panic!("{case} [{name}]: {e}"));
        for (k, (inputs, expected)) in invokes.iter().zip(&expected).enumerate() {
            let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
            let actual = it
                .run(&views)
                .unwrap_or_else(|e| panic!("{case} [{name}] invoke {k}: {e}"));
            assert_eq!(
                actual.len(),
                expected.len(),
                "{case} [{name}] invoke {k}: output count"
            );
            for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
                let t = tol.unwrap_or_else(|| default_tolerance(e.dtype));
                if let Err(msg) = compare(a, e, t) {
                    panic!("{case} [{name}] invoke {k} output {i}: {msg}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reports_worst_element() {
        let a = Tensor::from_f32(vec![3], &[1.0, 2.0, 3.5]).unwrap();
        let e = Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap();
        let err = compare(&a, &e, Tolerance::Float { rel: 1e-4 }).unwrap_err();
        assert!(err.contains("index 2"), "{err}");
        assert!(compare(&e, &e, Tolerance::Exact).is_ok());
    }

    #[test]
    fn quantized_tolerance_is_one_step() {
        let a = Tensor::from_bytes(DType::I8, vec![2], &[10u8, 20]).unwrap();
        let one_off = Tensor::from_bytes(DType::I8, vec![2], &[11u8, 20]).unwrap();
        let two_off = Tensor::from_bytes(DType::I8, vec![2], &[12u8, 20]).unwrap();
        assert!(compare(&one_off, &a, Tolerance::Steps(1)).is_ok());
        assert!(compare(&two_off, &a, Tolerance::Steps(1)).is_err());
    }
}
