//! The scheduler's section: how the allowlist judges a delegate, how measurements
//! replace the profile priors, and how the arbiter shares the processors.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[scheduler]`: partitioning, allowlist and arbiter settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Where learned allowlist decisions are kept across restarts; empty keeps them in
    /// memory only.
    pub allowlist_path: String,
    /// Validation runs per (partition, processor) on first use.
    pub validation_runs: u32,
    /// A delegate execution slower than this is a hang: it times out and the partition
    /// re-runs on the CPU.
    pub partition_timeout_ms: u64,
    /// Largest accepted float error, relative to the CPU output's largest magnitude.
    pub float_tolerance: f64,
    /// Largest accepted float error of a delegate that computes in fp16 (the GPU's
    /// `gpu-fp16`), relative to the CPU output's largest magnitude.
    pub half_float_tolerance: f64,
    /// Largest accepted quantized error, in quantization steps.
    pub quantized_tolerance_steps: f64,
    /// Recent served runs the cost model keeps per (model or partition, processor,
    /// threads); its estimate is their age-weighted median.
    pub estimate_window: usize,
    /// Age in seconds at which a measured run weighs half as much as a new one: how
    /// fast an outlier (a hang, a cold start) or an old figure fades.
    pub estimate_half_life_s: f64,
    /// Jobs one tenant may hold queued on one processor; more are refused with a reason.
    pub queue_limit: usize,
    /// CPU cores the arbiter runs requests on side by side; 0: every core of the
    /// machine.
    pub cpu_cores: usize,
    /// Let a request run where it finishes first (an accelerator or the CPU), given the
    /// queues.
    pub migration: bool,
    /// Answer a first load once the model's CPU plan is ready and validate its
    /// accelerators in the background, switching the placement when validation allows
    /// one. Off: the load answers only after validation (the placement is final then).
    pub validate_in_background: bool,
    /// A request without a deadline is ordered as if due this long after it became
    /// ready (and priority classes are this far apart): the bound on how long the
    /// policies let it wait behind others.
    pub aging_ms: u64,
    /// Fraction of a processor's servers (CPU cores) background requests may hold at
    /// once; at least one. Realtime work finds the others free.
    pub background_share: f64,
    /// Fraction of a processor's time background requests get when they have work
    /// queued, however busy the other classes keep it.
    pub background_reserve: f64,
    /// Requests expected to take at most this many milliseconds may run on one extra
    /// thread beside the busy CPU cores (the OS time-slices it), so a wake-word frame
    /// never waits behind a long inference; 0 disables it.
    pub express_ms: f64,
    /// Policy the arbiter starts with: "priority", "edf", "least-slack" or "fair-share".
    pub policy: String,
    /// Fair-share weight per tenant id (`uid:1000`, or a token's tenant name); tenants
    /// not listed weigh 1.
    pub tenant_weights: std::collections::BTreeMap<String, f64>,
}

/// The policies `SchedulerConfig::policy` may name.
pub const POLICIES: [&str; 4] = ["priority", "edf", "least-slack", "fair-share"];

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            allowlist_path: String::new(),
            validation_runs: 3,
            partition_timeout_ms: 2000,
            float_tolerance: 1e-3,
            half_float_tolerance: 1e-2,
            quantized_tolerance_steps: 1.0,
            estimate_window: 16,
            estimate_half_life_s: 1.0,
            queue_limit: 64,
            cpu_cores: 0,
            migration: true,
            validate_in_background: true,
            aging_ms: 500,
            background_share: 0.5,
            background_reserve: 0.15,
            express_ms: 2.0,
            policy: "least-slack".into(),
            tenant_weights: Default::default(),
        }
    }
}

impl SchedulerConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (t, w) in &self.tenant_weights {
            if !(w.is_finite() && *w > 0.0) {
                return Err(ConfigError::invalid(
                    format!("scheduler.tenant_weights.{t}"),
                    "must be a positive number",
                ));
            }
        }
        if self.validation_runs == 0 {
            return Err(ConfigError::invalid(
                "scheduler.validation_runs",
                "must be at least 1",
            ));
        }
        if self.partition_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "scheduler.partition_timeout_ms",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            ("float_tolerance", self.float_tolerance),
            ("half_float_tolerance", self.half_float_tolerance),
            ("quantized_tolerance_steps", self.quantized_tolerance_steps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::invalid(
                    format!("scheduler.{key}"),
                    format!("must be a finite number >= 0, is {v}"),
                ));
            }
        }
        if self.estimate_window == 0 || self.estimate_window > 1024 {
            return Err(ConfigError::invalid(
                "scheduler.estimate_window",
                format!("must be in [1, 1024], is {}", self.estimate_window),
            ));
        }
        if !(self.estimate_half_life_s.is_finite() && self.estimate_half_life_s > 0.0) {
            return Err(ConfigError::invalid(
                "scheduler.estimate_half_life_s",
                format!(
                    "must be a positive number, is {}",
                    self.estimate_half_life_s
                ),
            ));
        }
        for (key, v) in [
            ("background_share", self.background_share),
            ("background_reserve", self.background_reserve),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(ConfigError::invalid(
                    format!("scheduler.{key}"),
                    format!("must be in [0, 1], is {v}"),
                ));
            }
        }
        if !(self.express_ms.is_finite() && (0.0..=1000.0).contains(&self.express_ms)) {
            return Err(ConfigError::invalid(
                "scheduler.express_ms",
                format!("must be in [0, 1000], is {}", self.express_ms),
            ));
        }
        if self.cpu_cores > 1024 {
            return Err(ConfigError::invalid(
                "scheduler.cpu_cores",
                format!("must be at most 1024, is {}", self.cpu_cores),
            ));
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::invalid(
                "scheduler.queue_limit",
                "must be at least 1",
            ));
        }
        if !POLICIES.contains(&self.policy.as_str()) {
            return Err(ConfigError::invalid(
                "scheduler.policy",
                format!("must be one of {POLICIES:?}, is {:?}", self.policy),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn unknown_policy_is_refused_by_name() {
        let err = Config::from_toml_str("[scheduler]\npolicy = \"random\"\n").unwrap_err();
        assert!(err.to_string().contains("scheduler.policy"), "{err}");
    }

    #[test]
    fn tenant_weights_must_be_positive() {
        let ok = crate::Config::from_toml_str("[scheduler.tenant_weights]\n\"uid:1000\" = 2.0\n")
            .unwrap();
        assert_eq!(ok.scheduler.tenant_weights.get("uid:1000"), Some(&2.0));
        let err = crate::Config::from_toml_str("[scheduler.tenant_weights]\n\"uid:1\" = 0.0\n")
            .unwrap_err();
        assert!(err.to_string().contains("tenant_weights.uid:1"), "{err}");
    }

    #[test]
    fn learning_and_background_settings_are_checked_by_name() {
        let err = Config::from_toml_str("[scheduler]\nestimate_half_life_s = 0.0\n").unwrap_err();
        assert!(
            err.to_string().contains("scheduler.estimate_half_life_s"),
            "{err}"
        );
        let err = Config::from_toml_str("[scheduler]\nbackground_share = 1.5\n").unwrap_err();
        assert!(
            err.to_string().contains("scheduler.background_share"),
            "{err}"
        );
    }
}
