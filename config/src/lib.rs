//! switchyard-config: typed configuration for the daemon and the scheduler.
#![forbid(unsafe_code)]

pub mod daemon;

pub use daemon::DaemonConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid TOML: {0}")]
    Parse(String),
    #[error("config field `{field}` is invalid: {why}")]
    Invalid { field: String, why: String },
}
