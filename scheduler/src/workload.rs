//! Workload files for the simulator and `switchyard loadtest`: apps with a model, a
//! frame rate (or back-to-back requests), a deadline, a priority class and a tenant
//! weight.
//!
//! ```toml
//! name = "contended"
//! duration_s = 10.0
//! seed = 7
//!
//! [[apps]]
//! name = "face"
//! tenant = "camera"
//! model = "../models/mp_face_detection_short_range.tflite"
//! fps = 30.0
//! deadline_ms = 33.0
//! priority = "realtime"
//!
//! [[apps]]
//! name = "embedding"
//! tenant = "indexer"
//! model = "../models/oww_embedding_model.tflite"
//! back_to_back = true        # the next request as soon as one returns; no deadline
//! priority = "background"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::SchedError;
use crate::arbiter::PriorityClass;

/// One app of a workload.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: String,
    pub tenant: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// Model path, relative to the workload file.
    pub model: PathBuf,
    /// Frames per second; unused for back-to-back apps.
    #[serde(default)]
    pub fps: f64,
    /// Relative deadline of each frame; none for back-to-back work.
    #[serde(default)]
    pub deadline_ms: Option<f64>,
    /// Sends its next request as soon as the previous one returns (batch work), instead
    /// of frames at `fps`.
    #[serde(default)]
    pub back_to_back: bool,
    #[serde(default)]
    pub priority: PriorityClass,
    /// Seconds the app runs; the workload's duration when absent.
    pub duration_s: Option<f64>,
    /// Seconds after the start when the app's first frame arrives.
    #[serde(default)]
    pub start_s: f64,
}

fn one() -> f64 {
    1.0
}

/// A whole workload.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub duration_s: f64,
    /// Seed of the arrival jitter and service-time noise, so runs repeat exactly.
    #[serde(default)]
    pub seed: u64,
    /// Intra-op threads each app's own interpreter uses in `switchyard loadtest`'s
    /// per-app baseline, and the most the daemon gives one request.
    #[serde(default = "one_thread")]
    pub threads: usize,
    pub apps: Vec<App>,
}

fn one_thread() -> usize {
    1
}

impl Workload {
    /// Reads and checks a workload file; model paths become relative to its folder.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Workload, SchedError> {
        let path = path.as_ref();
        let err = |what: String| SchedError::Workload {
            path: path.display().to_string(),
            what,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut w: Workload = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        w.validate().map_err(err)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for app in &mut w.apps {
            if app.model.is_relative() {
                app.model = dir.join(&app.model);
            }
        }
        Ok(w)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            return Err(format!(
                "duration_s must be in (0, 3600], is {}",
                self.duration_s
            ));
        }
        if self.apps.is_empty() {
            return Err("no apps".into());
        }
        if self.apps.len() > 64 {
            return Err(format!("{} apps; at most 64", self.apps.len()));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err(format!("threads must be in [1, 64], is {}", self.threads));
        }
        for a in &self.apps {
            let bad = |what: &str| Err(format!("app {:?}: {what}", a.name));
            let fps_ok = a.fps.is_finite() && a.fps > 0.0 && a.fps <= 1000.0;
            if !a.back_to_back && !fps_ok {
                return bad("fps must be in (0, 1000] (or back_to_back = true)");
            }
            if a.deadline_ms.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
                return bad("deadline_ms must be positive");
            }
            if !a.back_to_back && a.deadline_ms.is_none() {
                return bad("frames need deadline_ms (only back-to-back apps may omit it)");
            }
            if !(a.weight.is_finite() && a.weight > 0.0) {
                return bad("weight must be positive");
            }
            if !(a.start_s.is_finite() && a.start_s >= 0.0) {
                return bad("start_s must be >= 0");
            }
            if a.duration_s.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
                return bad("duration_s must be positive");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_bad_values_by_app() {
        let ok = r#"
name = "w"
duration_s = 2.0
[[apps]]
name = "a"
tenant = "t"
model = "m.tflite"
fps = 10.0
deadline_ms = 50.0
priority = "background"
"#;
        let w: Workload = toml::from_str(ok).unwrap();
        assert!(w.validate().is_ok());
        assert_eq!(w.apps[0].priority, PriorityClass::Background);
        assert_eq!(w.apps[0].weight, 1.0);
        let bad: Workload = toml::from_str(&ok.replace("fps = 10.0", "fps = 0.0")).unwrap();
        assert!(bad.validate().unwrap_err().contains("app \"a\""));
        let b2b: Workload = toml::from_str(
            &ok.replace("fps = 10.0", "back_to_back = true")
                .replace("deadline_ms = 50.0", ""),
        )
        .unwrap();
        assert!(b2b.validate().is_ok());
        assert_eq!(b2b.apps[0].deadline_ms, None);
        let no_deadline: Workload = toml::from_str(&ok.replace("deadline_ms = 50.0", "")).unwrap();
        assert!(no_deadline.validate().unwrap_err().contains("deadline_ms"));
        assert!(toml::from_str::<Workload>(&ok.replace("fps =", "fsp =")).is_err());
    }
}
