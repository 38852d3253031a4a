//! switchyard-client: the library apps link to run models through `switchyardd`.
//!
//! Layout:
//! - [`Client`]: async API over gRPC (Unix socket, or TCP with a bearer token).
//! - [`ShmRegion`]: a sealed memfd shared with the daemon, for tensors that should not
//!   be copied through the socket.
//! - [`blocking::Client`]: the same API for apps without an async runtime.
//!
//! ```no_run
//! # fn demo() -> Result<(), switchyard_client::ClientError> {
//! use switchyard_client::{DataType, Tensor, blocking::Client};
//! let mut client = Client::connect_unix("/run/switchyard/switchyard.sock")?;
//! let model = client.load_model_file("models/tfm_sine_float.tflite")?;
//! let x = Tensor::from_f32(vec![1, 1], &[0.5]);
//! let out = client.run(&model.id, &[x])?;
//! assert_eq!(out.outputs[0].dtype, DataType::Float32);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod client;
mod shm;

pub mod blocking;

pub use client::{Client, RunOptions, RunOutput, Tensor};
pub use shm::ShmRegion;
pub use switchyard_proto::DataType;
pub use switchyard_proto::v1::{
    MemoryInfo, ModelInfo, Priority, SessionInfo, ShmRef, StatusResponse, TenantInfo, TensorInfo,
    Timing,
};

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
