//! Typed errors of the interpreter: model loading, kernel preparation/evaluation, and
//! running a graph. Each carries enough context (op, node, shapes) to act on.

use thiserror::Error;

use crate::control::BudgetExceeded;
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
    #[error("cannot hold the model: {0}")]
    Alloc(#[from] crate::tensor::AllocError),
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
    /// A run's input differs from the input's current shape in a dimension the model's
    /// shape signature does not mark dynamic. Resizing must be asked for explicitly.
    #[error(
        "input {index}: shape {got:?} differs from the model's {expected:?} in a dimension \
         that is not dynamic; resize the input explicitly to change it"
    )]
    InputShape {
        index: usize,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// An allocation would take a session past its memory limit, or the system refused it.
    #[error("memory: {what} needs {requested} bytes with {used} of the {limit}-byte limit in use")]
    Memory {
        what: String,
        requested: usize,
        used: usize,
        limit: usize,
    },
    /// A run or prepare used up its budget of nodes or time.
    #[error("{0}")]
    Budget(#[from] BudgetExceeded),
    /// The run's cancellation flag was raised (e.g. the client went away).
    #[error("the run was cancelled")]
    Cancelled,
}
