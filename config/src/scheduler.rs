//! The scheduler's section: how the allowlist judges a delegate, how fast measurements
//! replace the profile priors, and how much work the arbiter may queue.

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
    /// Weight of the newest measurement in the cost model's moving average.
    pub ewma_alpha: f64,
    /// Jobs one processor may hold queued; more are refused with a reason.
    pub queue_limit: usize,
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
            ewma_alpha: 0.2,
            queue_limit: 64,
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
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::invalid(
                "scheduler.ewma_alpha",
                format!("must be in (0, 1], is {}", self.ewma_alpha),
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
    fn alpha_must_be_a_weight() {
        let err = Config::from_toml_str("[scheduler]\newma_alpha = 0.0\n").unwrap_err();
        assert!(err.to_string().contains("scheduler.ewma_alpha"), "{err}");
    }
}
