//! The daemon's one error type and its single mapping to gRPC status codes.

use switchyard_interpreter::{BudgetExceeded, ModelError, RunError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    // Caller identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Unknown ids and other tenants' ids produce the same error, so ids cannot be probed.
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },

    // Client input.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("malformed model: {0}")]
    Model(#[from] ModelError),
    #[error("model cannot be prepared: {0}")]
    Prepare(RunError),
    #[error("run failed: {0}")]
    Run(RunError),
    #[error("shared memory: {0}")]
    Shm(String),

    // Limits.
    #[error("quota `{quota}` exceeded (limit {limit}): {detail}")]
    Quota {
        quota: &'static str,
        limit: u64,
        detail: String,
    },

    // The daemon itself.
    #[error("invalid config: {0}")]
    Config(#[from] switchyard_config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Refused or dropped by the arbiter (full queue, hopeless deadline), or its run
    /// could not be carried out.
    #[error("refused by the arbiter: {0}")]
    Rejected(switchyard_scheduler::arbiter::Refusal),
    #[error("scheduler: {0}")]
    Scheduler(#[from] switchyard_scheduler::SchedError),
    #[error("delegate: {0}")]
    Delegate(#[from] switchyard_interpreter::DelegateError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DaemonError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>) -> DaemonError {
        DaemonError::InvalidArgument(what.into())
    }

    /// A run error; running out of session memory is the tenant's `arena_bytes` quota
    /// (every session's limit is set from it), reported with the figures.
    pub fn from_run(e: RunError) -> DaemonError {
        match e {
            RunError::Memory { .. } => DaemonError::from_memory(e),
            e => DaemonError::Run(e),
        }
    }

    /// [`RunError::Memory`] as the `arena_bytes` quota; other errors as run errors.
    pub fn from_memory(e: RunError) -> DaemonError {
        match e {
            RunError::Memory { limit, .. } => DaemonError::Quota {
                quota: "arena_bytes",
                limit: limit as u64,
                detail: format!("session memory: {e}"),
            },
            e => DaemonError::Run(e),
        }
    }
}

impl From<DaemonError> for tonic::Status {
    fn from(e: DaemonError) -> tonic::Status {
        use tonic::Code;
        let code = match &e {
            DaemonError::Unauthenticated(_) => Code::Unauthenticated,
            DaemonError::PermissionDenied(_) => Code::PermissionDenied,
            DaemonError::NotFound { .. } => Code::NotFound,
            DaemonError::InvalidArgument(_)
            | DaemonError::Model(_)
            | DaemonError::Prepare(_)
            | DaemonError::Shm(_) => Code::InvalidArgument,
            DaemonError::Run(RunError::Input { .. } | RunError::InputShape { .. }) => {
                Code::InvalidArgument
            }
            DaemonError::Run(RunError::Budget(BudgetExceeded::Deadline { .. })) => {
                Code::DeadlineExceeded
            }
            DaemonError::Run(RunError::Memory { .. } | RunError::Budget(_)) => {
                Code::ResourceExhausted
            }
            DaemonError::Run(RunError::Cancelled) => Code::Cancelled,
            DaemonError::Run(_) => Code::Internal,
            DaemonError::Quota { .. } => Code::ResourceExhausted,
            DaemonError::Rejected(r) => {
                use switchyard_scheduler::arbiter::Refusal;
                match r {
                    Refusal::Deadline { .. } | Refusal::Expired { .. } => Code::DeadlineExceeded,
                    Refusal::QueueFull { .. } => Code::ResourceExhausted,
                    Refusal::Stopped => Code::Unavailable,
                    Refusal::NoProcessor { .. } | Refusal::Failed(_) => Code::Internal,
                }
            }
            DaemonError::Config(_)
            | DaemonError::Io { .. }
            | DaemonError::Transport(_)
            | DaemonError::Scheduler(_)
            | DaemonError::Delegate(_)
            | DaemonError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_maps_to_resource_exhausted_and_names_the_quota() {
        let s: tonic::Status = DaemonError::Quota {
            quota: "models",
            limit: 2,
            detail: "tenant holds 2 models".into(),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("`models`"), "{}", s.message());
    }

    #[test]
    fn not_found_message_does_not_depend_on_owner() {
        let a: tonic::Status = DaemonError::NotFound {
            kind: "model",
            id: "abc".into(),
        }
        .into();
        assert_eq!(a.code(), tonic::Code::NotFound);
        assert_eq!(a.message(), "model `abc` not found");
    }
}
