//! Typed errors of the interpreter: model loading, kernel preparation/evaluation, and
//! running a graph. Each carries enough context (op, node, shapes) to act on.

use thiserror::Error;

use crate::tensor::DType;

/// Why a `.tflite` file was rejected at load time.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid TFLite flatbuffer: {0}")]
    Flatbuffer(#[from] flatbuffers::InvalidFlatbuffer),
    #[error("model has no subgraphs")]
    NoSubgraphs,
    #[error("subgraph {subgraph}: {what}")]
    Invalid { subgraph: usize, what: String },
    #[error("subgraph {subgraph}, tensor {tensor} ({name}): {what}")]
    Tensor {
        subgraph: usize,
        tensor: usize,
        name: String,
        what: String,
    },
    #[error("subgraph {subgraph}, node {node} ({op}): {what}")]
    Node {
        subgraph: usize,
        node: usize,
        op: String,
        what: String,
    },
}

/// Failure inside one operator's prepare or eval.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("shape: {0}")]
    Shape(String),
    #[error("expected {expected}, got {actual}")]
    DType { expected: String, actual: DType },
    #[error("{0}")]
    Invalid(String),
    /// The output shape depends on the value of a tensor that is not known before
    /// running; the executor then prepares this node at run time instead.
    #[error("output shape depends on runtime values")]
    NeedsValues,
}

impl KernelError {
    pub fn unsupported(msg: impl Into<String>) -> Self {
        KernelError::Unsupported(msg.into())
    }
    pub fn shape(msg: impl Into<String>) -> Self {
        KernelError::Shape(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        KernelError::Invalid(msg.into())
    }
    pub fn dtype(expected: impl Into<String>, actual: DType) -> Self {
        KernelError::DType {
            expected: expected.into(),
            actual,
        }
    }
}

/// Failure while preparing or running a model.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The kernel's message is part of this one (not a separate `source`), so that
    /// callers printing only `to_string()` — a gRPC status, a log line — see it once.
    #[error("subgraph {subgraph}, node {node} ({op}): {error}")]
    Node {
        subgraph: usize,
        node: usize,
        op: String,
        error: KernelError,
    },
    #[error("input {index}: {what}")]
    Input { index: usize, what: String },
    #[error("output {index}: {what}")]
    Output { index: usize, what: String },
    #[error("subgraph {subgraph}: {what}")]
    Graph { subgraph: usize, what: String },
}
