//! switchyard-client: the library apps link to run models through `switchyardd`.
//!
//! Layout:
//! - [`Client`]: a connection (Unix socket, or TCP with a bearer token added by the
//!   [`BearerAuth`] interceptor); `load` returns a [`Model`] handle.
//! - [`Model`] and [`Run`]: a loaded model and one run built up before it is sent
//!   (inputs inline or in shared memory, outputs inline or into shared memory,
//!   priority, deadline, explicit resize, request id). [`Outputs`] is what comes back.
//! - [`Session`]: one stream's state over a model in the daemon (`Model::open_session`);
//!   runs on it continue the stream, `reset` starts afresh.
//! - [`DType`], [`Tensor`], [`TensorSpec`]: the crate's own types; nothing here
//!   carries wire codes.
//! - [`ShmPool`]: a sealed memfd registered with the daemon, carved into
//!   [`ShmSlice`]s; [`ShmRegion`] is the raw region underneath.
//! - [`FastChannel`]: a run channel (`Model::fast_channel`): runs whose tensors are in
//!   a pool go through a shared-memory mailbox instead of gRPC, same checks and
//!   scheduling in the daemon, a fraction of the per-request cost.
//! - [`blocking`]: the same API for apps without an async runtime.
//!
//! ```no_run
//! # fn demo() -> Result<(), switchyard_client::ClientError> {
//! use switchyard_client::{DType, Priority, Run, Tensor, blocking::Client};
//! let client = Client::connect_unix("/run/switchyard/switchyard.sock")?;
//! let model = client.load("models/tfm_sine_float.tflite")?;
//! let x = Tensor::from_slice(&[1, 1], &[0.5f32])?;
//! let out = model.run(Run::new().input(x).priority(Priority::Interactive))?;
//! assert_eq!(out.tensors[0].dtype, DType::Float32);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod client;
mod dtype;
mod fastpath;
mod model;
mod pool;
mod shm;

pub mod blocking;

pub use client::{BearerAuth, Client, RunOptions, RunOutput, Tensor};
pub use dtype::{DType, Element};
pub use fastpath::{DEFAULT_SPIN, FastChannel, FastOutput, FastOutputs};
pub use model::{
    Model, ModelMeta, Output, OutputData, Outputs, Priority, Run, Session, TensorSpec, Timing,
};
pub use pool::{ShmPool, ShmSlice, ShmTensor};
pub use shm::ShmRegion;
pub use switchyard_proto::v1::{
    MemoryInfo, ModelInfo, SessionInfo, ShmRef, StatusResponse, TenantInfo, TensorInfo,
};

/// The wire enum's old name, kept so code written against it compiles; it is
/// [`DType`] now.
#[deprecated(note = "use `DType`")]
pub type DataType = DType;

/// Wire types of the old entry points ([`RunOptions`], [`RunOutput`]).
pub mod wire {
    pub use switchyard_proto::v1::{Priority, Timing};
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {why}")]
    Connect { target: String, why: String },
    /// The daemon refused or failed the request; `code` says why (e.g. `NotFound`).
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("shared memory: {0}")]
    Shm(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

// Not `#[from]`: that would also make the status the error's source, and printed error
// chains would repeat its message.
impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> ClientError {
        ClientError::Status(s)
    }
}

impl ClientError {
    /// The gRPC status code when the daemon answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}
