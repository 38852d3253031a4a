//! The learned allowlist: which (model or op signature, processor, driver) may run.
//!
//! Vendor drivers differ per device and per version, so nothing is trusted from a
//! table: on first use the daemon runs the partition on the delegate and on the CPU
//! reference together (validation mode), and allows the delegate only when its outputs
//! match (float: relative 1e-3; quantized: 1 step) and it is faster than the CPU as the
//! CPU would serve the same nodes (optimized kernels, the serving thread count, warm;
//! the reference kernels are the accuracy oracle, never the speed bar). Errors and
//! timeouts block it. Decisions are stored as JSON (temp file + rename, so a crash
//! never leaves half a file) and reloaded at start; a changed driver fingerprint makes
//! the old decision stale, so the partition is validated again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{
    FloatPrecision, Interpreter, InterpreterOptions, Model, PlacedPartition, Tensor, TensorView,
};

use crate::SchedError;

/// The allowlist's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Blocked,
}

/// One decision, with the evidence behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub fingerprint: String,
    pub verdict: Verdict,
    /// Why, in words (shown by `switchyard placement`).
    pub reason: String,
    pub max_error: f64,
    pub tolerance: f64,
    /// Mean seconds per warm run on the delegate (device clock when it has one), and on
    /// the CPU for the same partition as requests are served there.
    pub delegate_s: f64,
    pub cpu_s: f64,
    pub runs: u64,
    pub failures: u64,
    pub timeouts: u64,
}

/// What the allowlist knows about a key for the current fingerprint.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup<'a> {
    Allowed(&'a Entry),
    Blocked(&'a Entry),
    /// Never validated.
    Unknown,
    /// Validated with another driver fingerprint: validate again.
    Stale(&'a Entry),
}

/// Key of a decision: what ran (model sha256, or an op signature shared by models) and
/// where (delegate name).
pub fn key(subject: &str, processor: &str) -> String {
    format!("{subject}@{processor}")
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

/// Decisions, optionally persisted at a path.
#[derive(Debug, Default)]
pub struct Allowlist {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

const FILE_VERSION: u32 = 1;

impl Allowlist {
    pub fn in_memory() -> Allowlist {
        Allowlist::default()
    }

    /// Loads the decisions stored at `path` (none yet when the file does not exist).
    pub fn open(path: impl Into<PathBuf>) -> Result<Allowlist, SchedError> {
        let path = path.into();
        let err = |what: String| SchedError::Allowlist {
            path: path.display().to_string(),
            what,
        };
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: File =
                    serde_json::from_slice(&bytes).map_err(|e| err(format!("corrupt: {e}")))?;
                if file.version != FILE_VERSION {
                    return Err(err(format!(
                        "version {} is not {FILE_VERSION}",
                        file.version
                    )));
                }
                file.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Allowlist {
            path: Some(path),
            entries,
        })
    }

    pub fn lookup(&self, key: &str, fingerprint: &str) -> Lookup<'_> {
        match self.entries.get(key) {
            None => Lookup::Unknown,
            Some(e) if e.fingerprint != fingerprint => Lookup::Stale(e),
            Some(e) if e.verdict == Verdict::Allowed => Lookup::Allowed(e),
            Some(e) => Lookup::Blocked(e),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Records a decision and persists the list when it has a path.
    pub fn record(&mut self, key: &str, entry: Entry) -> Result<(), SchedError> {
        tracing::info!(key, verdict = ?entry.verdict, reason = %entry.reason, "allowlist decision");
        self.entries.insert(key.to_string(), entry);
        self.save()
    }

    /// Writes the list atomically: a temporary file in the same directory, then rename.
    pub fn save(&self) -> Result<(), SchedError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |what: String| SchedError::Allowlist {
            path: path.display().to_string(),
            what,
        };
        let file = File {
            version: FILE_VERSION,
            entries: self.entries.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        let tmp = tmp_path(path);
        std::fs::write(&tmp, json).map_err(|e| err(format!("write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| err(format!("rename: {e}")))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// How strict validation is.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub float_relative: f64,
    /// For delegates that compute in fp16 (`Delegate::float_precision`).
    pub half_float_relative: f64,
    pub quantized_steps: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            float_relative: 1e-3,
            half_float_relative: 1e-2,
            quantized_steps: 1.0,
        }
    }
}

/// Benchmarks and validates one placed partition against the CPU reference: one warm-up
/// and `runs` timed invokes in validation mode on `inputs`, then judges accuracy,
/// failures (the warm-up's included) and speed against `cpu_s`, the same nodes' time on
/// the CPU as served (see [`crate::graph::GraphInfo::measure_cpu`]).
pub fn validate_partition(
    model: Arc<Model>,
    placed: PlacedPartition,
    inputs: &[Tensor],
    runs: u32,
    tolerance: Tolerance,
    cpu_s: f64,
) -> Result<Entry, SchedError> {
    let fingerprint = placed.delegate.fingerprint();
    let sg = &model.subgraphs[0];
    let quantized = placed.partition.outputs.iter().all(|&t| {
        sg.tensors
            .get(t)
            .is_some_and(|d| d.dtype.is_quantized_int())
    });
    let half = placed.delegate.float_precision() == FloatPrecision::F16;
    let tol = if quantized {
        tolerance.quantized_steps
    } else if half {
        tolerance.half_float_relative
    } else {
        tolerance.float_relative
    };
    let mut it = Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions {
            max_nodes_per_run: crate::graph::LOAD_RUN_MAX_NODES,
            ..InterpreterOptions::default()
        },
        vec![placed],
    )?;
    it.set_validation(true);
    let views: Vec<TensorView<'_>> = inputs.iter().map(Tensor::view).collect();
    let report = |it: &Interpreter| {
        it.partition_reports()
            .first()
            .cloned()
            .ok_or_else(|| SchedError::Invalid("no partition report".into()))
    };
    it.run(&views)?;
    let warm = report(&it)?;
    for _ in 0..runs.max(1) {
        it.run(&views)?;
    }
    let r = report(&it)?;
    let timeouts = if r
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("timed out"))
    {
        r.failures
    } else {
        0
    };
    let per = |d: Duration, n: u64| d.as_secs_f64() / n.max(1) as f64;
    let delegate_s = if r.runs > warm.runs {
        per(
            r.device_time.saturating_sub(warm.device_time),
            r.runs - warm.runs,
        )
    } else {
        per(r.device_time, r.runs)
    };
    let (verdict, reason) = if let Some(e) = &r.compile_error {
        (Verdict::Blocked, format!("compile failed: {e}"))
    } else if timeouts > 0 {
        (
            Verdict::Blocked,
            format!("{timeouts} of {} runs timed out", r.runs + r.failures),
        )
    } else if r.failures > 0 {
        (
            Verdict::Blocked,
            format!(
                "{} of {} runs failed: {}",
                r.failures,
                r.runs + r.failures,
                r.last_error.clone().unwrap_or_default()
            ),
        )
    } else if r.max_validation_error.is_nan() || r.max_validation_error > tol {
        (
            Verdict::Blocked,
            format!(
                "wrong results: error {:.3e} exceeds tolerance {tol:.0e}{}",
                r.max_validation_error,
                if quantized { " steps" } else { " (relative)" }
            ),
        )
    } else if delegate_s >= cpu_s {
        (
            Verdict::Blocked,
            format!(
                "accurate but not faster: {:.3} ms vs {:.3} ms on the cpu",
                delegate_s * 1e3,
                cpu_s * 1e3
            ),
        )
    } else {
        (
            Verdict::Allowed,
            format!(
                "accurate (error {:.1e}) and faster: {:.3} ms vs {:.3} ms on the cpu",
                r.max_validation_error,
                delegate_s * 1e3,
                cpu_s * 1e3
            ),
        )
    };
    // Which precision was judged is part of the evidence `switchyard allowlist` shows.
    let reason = if half {
        format!("fp16: {reason}")
    } else {
        reason
    };
    Ok(Entry {
        fingerprint,
        verdict,
        reason,
        max_error: r.max_validation_error,
        tolerance: tol,
        delegate_s,
        cpu_s,
        runs: r.runs,
        failures: r.failures,
        timeouts,
    })
}

/// Runs the validation (and benchmark) of one candidate partition. The daemon runs it
/// in a worker process, so a driver that crashes or hangs there is blocked instead of
/// taking the daemon down; tools and tests run it in process ([`InProcess`]). Blocking;
/// implementations must be callable from any thread, including background tasks.
pub trait Validator: Send + Sync {
    /// `cpu_s` is the partition's CPU time as served (see [`validate_partition`]).
    fn validate(
        &self,
        model: Arc<Model>,
        placed: PlacedPartition,
        inputs: &[Tensor],
        runs: u32,
        tolerance: Tolerance,
        cpu_s: f64,
    ) -> Result<Entry, SchedError>;
}

/// Validation in this process: [`validate_partition`].
pub struct InProcess;

impl Validator for InProcess {
    fn validate(
        &self,
        model: Arc<Model>,
        placed: PlacedPartition,
        inputs: &[Tensor],
        runs: u32,
        tolerance: Tolerance,
        cpu_s: f64,
    ) -> Result<Entry, SchedError> {
        validate_partition(model, placed, inputs, runs, tolerance, cpu_s)
    }
}

/// Looks the key up and validates when the decision is unknown or stale; returns the
/// current decision. `cpu_s` is the partition's CPU time as served.
#[allow(clippy::too_many_arguments)]
pub fn check_or_validate(
    list: &mut Allowlist,
    subject: &str,
    model: Arc<Model>,
    placed: PlacedPartition,
    inputs: &[Tensor],
    runs: u32,
    tolerance: Tolerance,
    cpu_s: f64,
) -> Result<Entry, SchedError> {
    check_or_validate_with(
        &InProcess, list, subject, model, placed, inputs, runs, tolerance, cpu_s,
    )
}

/// [`check_or_validate`] with validation run by `validator`.
#[allow(clippy::too_many_arguments)]
pub fn check_or_validate_with(
    validator: &dyn Validator,
    list: &mut Allowlist,
    subject: &str,
    model: Arc<Model>,
    placed: PlacedPartition,
    inputs: &[Tensor],
    runs: u32,
    tolerance: Tolerance,
    cpu_s: f64,
) -> Result<Entry, SchedError> {
    let k = key(subject, placed.delegate.name());
    let fp = placed.delegate.fingerprint();
    match list.lookup(&k, &fp) {
        Lookup::Allowed(e) | Lookup::Blocked(e) => return Ok(e.clone()),
        Lookup::Unknown | Lookup::Stale(_) => {}
    }
    let entry = validator.validate(model, placed, inputs, runs, tolerance, cpu_s)?;
    list.record(&k, entry.clone())?;
    Ok(entry)
}

#[cfg(test)]
mod tests;
