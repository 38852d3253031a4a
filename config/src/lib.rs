//! switchyard-config: typed configuration for the daemon and the scheduler.
//!
//! One TOML file, parsed into [`Config`] and validated before anything starts: a bad
//! value is an error naming its key, never a silent default. Every section has embedded
//! defaults sized for a small board (2 cores, a few hundred MiB for models), so an empty
//! file is a valid configuration.
//!
//! Layout:
//! - [`daemon`]: the `[daemon]` section — sockets, threads, tokens, per-tenant quotas.
//! - [`device`]: device profiles — clock, MACs per cycle, dispatch overhead, transfer
//!   bandwidth, on-chip memory, fault injection — used by the emulated DSP/NPU and as
//!   the cost model's priors for every processor.
//! - [`scheduler`]: allowlist tolerances, cost-model smoothing, arbiter queue limits.
//! - [`gpu`]: the GPU delegate's optional features (subgroups, fp16, pipeline cache).
//!
//! ```
//! let cfg = switchyard_config::Config::from_toml_str("[devices.npu]\nclock_mhz = 600.0\n")?;
//! assert_eq!(cfg.devices.npu.clock_mhz, 600.0);
//! # Ok::<(), switchyard_config::ConfigError>(())
//! ```
#![forbid(unsafe_code)]

pub mod daemon;
pub mod device;
pub mod gpu;
pub mod scheduler;

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use daemon::DaemonConfig;
pub use device::{DeviceProfile, DeviceProfiles, FaultInjection};
pub use gpu::GpuConfig;
pub use scheduler::SchedulerConfig;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid value for `{key}`: {why}")]
    Invalid { key: String, why: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            why: why.into(),
        }
    }
}

/// The whole configuration. Unknown keys are errors, so a typo cannot pass unnoticed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Processor profiles (emulated device models and cost-model priors).
    pub devices: DeviceProfiles,
    /// The daemon: sockets, threads, tokens, quotas.
    pub daemon: DaemonConfig,
    /// Partitioner, allowlist and arbiter settings.
    pub scheduler: SchedulerConfig,
    /// The GPU delegate's optional features.
    pub gpu: GpuConfig,
}

impl Config {
    /// The embedded defaults: what the daemon runs with when given no file.
    pub fn embedded_defaults() -> Config {
        Config::default()
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Checks every value is in range; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.devices.validate()?;
        self.daemon.validate()?;
        self.gpu.validate()?;
        self.scheduler.validate()
    }

    /// The configuration as TOML (for `--print-config` and docs).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_defaults() {
        assert_eq!(
            Config::from_toml_str("").unwrap(),
            Config::embedded_defaults()
        );
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = Config::embedded_defaults();
        assert_eq!(Config::from_toml_str(&cfg.to_toml_string()).unwrap(), cfg);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml_str("[devices.npu]\nclok_mhz = 1.0\n").unwrap_err();
        assert!(err.to_string().contains("clok_mhz"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let err = Config::from_toml_str("[devices.dsp]\nmacs_per_cycle = 0.0\n").unwrap_err();
        assert!(
            err.to_string().contains("devices.dsp.macs_per_cycle"),
            "{err}"
        );
    }
}
