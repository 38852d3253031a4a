//! switchyard-interpreter: reads `.tflite` models and runs them.
//!
//! Layout:
//! - [`schema`]: our own subset of the TFLite flatbuffer schema, verified before use
//! - [`model`]: the graph IR ([`Model`], [`Subgraph`], [`TensorDef`], [`Node`]) built from it
//! - [`ops`]: operator identities and typed options
//! - [`kernel`]: the contract with kernel providers ([`OpResolver`], [`OpKernel`])
//! - [`verify`]: graph checks at load (one producer per tensor, no read before write,
//!   no write into constants, no recursive subgraph calls)
//! - [`planner`]: arena memory planning
//! - [`plan`]: the immutable, shared [`Plan`] (prepare per input shape set, constant
//!   folding, delegate partitions), cached by (subgraph, input shapes)
//! - [`session`]: the per-stream [`Session`] (arenas, heap tensors, variables, CALL_ONCE;
//!   control flow, delegate fallback, stages), counted against [`SessionLimits`]
//! - [`control`]: [`RunControl`] and [`Budget`], checked between nodes
//! - [`interpreter`]: the [`Interpreter`] facade (one plan, one session)
//! - [`tensor`], [`npy`]: tensors, aligned buffers, `.npy` files
//! - [`builder`]: writes small `.tflite` models (single-op test models)
//!
//! The interpreter knows no kernels itself: `switchyard-delegates` provides the CPU
//! resolver.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchyard_interpreter::{Budget, Model, OpResolver, Plan, PlanOptions, SessionLimits};
//! # fn resolver() -> Arc<dyn OpResolver> { unimplemented!() }
//! let model = Arc::new(Model::from_path("model.tflite")?);
//! // Prepared once, shared by every session of every tenant.
//! let plan = Plan::new(model, resolver(), PlanOptions::default())?;
//! let mut session = plan.session(SessionLimits { max_bytes: 64 << 20 })?;
//! session.set_input(0, &[0u8; 16])?;
//! session.invoke(&mut Budget::nodes(100_000))?;
//! let y = session.output(0)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod builder;
pub mod control;
pub mod delegate;
pub mod error;
pub mod example_models;
pub mod interpreter;
pub mod kernel;
pub mod model;
pub mod npy;
pub mod ops;
pub mod plan;
pub mod planner;
pub mod schema;
pub mod session;
pub mod sparsity;
pub mod tensor;
pub mod verify;

pub use control::{Budget, BudgetExceeded, DEFAULT_MAX_NODES, RunControl};
pub use delegate::{
    CompiledPartition, Delegate, DelegateError, ExecReport, FloatPrecision, NodeSupportCtx,
    Partition, PartitionCtx, PartitionOptions, PartitionReport, PlacedPartition, ProcessorKind,
    Support,
};
pub use error::{KernelError, ModelError, RunError};
pub use interpreter::{Interpreter, InterpreterOptions, StepProfile};
pub use kernel::{OpKernel, OpResolver, PrepareCtx, PreparedKernel, TensorMeta};
pub use model::{Model, Node, Subgraph, TensorDef};
pub use ops::{Activation, BuiltinOp, OpKind, OpOptions, Padding};
pub use plan::{
    DEFAULT_MAX_NODE_WORK, MAX_TENSOR_BYTES, Plan, PlanOptions, PrepareLimits, TensorInfo,
};
pub use session::{MemoryPool, Session, SessionLimits, StageInfo, StageReport, StageTarget};
pub use tensor::{AlignedBuf, AllocError, DType, Quant, Tensor, TensorView, TensorViewMut};
