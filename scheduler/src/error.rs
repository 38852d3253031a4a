use switchyard_interpreter::{ModelError, RunError};
use thiserror::Error;

/// Everything the scheduler can refuse or fail at.
#[derive(Debug, Error)]
pub enum SchedError {
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("interpreter: {0}")]
    Run(#[from] RunError),
    #[error("subgraph {0} is not prepared")]
    NotPrepared(usize),
    #[error("allowlist file {path}: {what}")]
    Allowlist { path: String, what: String },
    #[error("workload {path}: {what}")]
    Workload { path: String, what: String },
    #[error("request refused: {0}")]
    Rejected(String),
    #[error("{0}")]
    Invalid(String),
}
