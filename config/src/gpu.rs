//! The `[gpu]` section: which of the adapter's optional features the GPU delegate may
//! use. Every switch only turns a feature off; an adapter without a feature never uses
//! it. Whether the GPU is offered at all is `devices.gpu.enabled`.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[gpu]`: subgroups, fp16, the persisted pipeline cache, concurrent executions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// Subgroup operations in reductions, when the adapter has them.
    pub subgroups: bool,
    /// Offer the fp16 variant (`gpu-fp16`) when the adapter has `shader-f16`; the
    /// allowlist validates it (with `scheduler.half_float_tolerance`) and picks, per
    /// model, fp16 or fp32.
    pub fp16: bool,
    /// Keep the driver's compiled pipelines in `<daemon.state_dir>/gpu`, so a restart
    /// does not compile the shaders again.
    pub pipeline_cache: bool,
    /// Executions of one compiled partition that may run at once (each holds its own
    /// device buffers).
    pub max_resident_sets: usize,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            subgroups: true,
            fp16: true,
            pipeline_cache: true,
            max_resident_sets: 4,
        }
    }
}

impl GpuConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.max_resident_sets) {
            return Err(ConfigError::invalid(
                "gpu.max_resident_sets",
                format!("must be in 1..=64, is {}", self.max_resident_sets),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn switches_parse_and_limits_are_checked() {
        let cfg = Config::from_toml_str("[gpu]\nsubgroups = false\nfp16 = false\n").unwrap();
        assert!(!cfg.gpu.subgroups && !cfg.gpu.fp16 && cfg.gpu.pipeline_cache);
        let err = Config::from_toml_str("[gpu]\nmax_resident_sets = 0\n").unwrap_err();
        assert!(err.to_string().contains("gpu.max_resident_sets"), "{err}");
    }
}
