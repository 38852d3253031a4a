//! switchyard-interpreter: reads `.tflite` models and runs them.
//!
//! Layout:
//! - [`schema`]: our own subset of the TFLite flatbuffer schema, verified before use
//! - [`model`]: the graph IR ([`Model`], [`Subgraph`], [`TensorDef`], [`Node`]) built from it
//! - [`ops`]: operator identities and typed options
//! - [`kernel`]: the contract with kernel providers ([`OpResolver`], [`OpKernel`])
//! - [`planner`]: arena memory planning
//! - [`executor`]: the [`Interpreter`] (prepare, constant folding, control flow, variables)
//! - [`tensor`], [`npy`]: tensors, aligned buffers, `.npy` files
//! - [`builder`]: writes small `.tflite` models (single-op test models)
//!
//! The interpreter knows no kernels itself: `switchyard-delegates` provides the CPU
//! resolver.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchyard_interpreter::{Interpreter, InterpreterOptions, Model, OpResolver};
//! # fn resolver() -> Arc<dyn OpResolver> { unimplemented!() }
//! let model = Arc::new(Model::from_path("model.tflite")?);
//! let mut it = Interpreter::new(model, resolver(), InterpreterOptions::default())?;
//! it.invoke()?;
//! let y = it.output(0)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod builder;
pub mod delegate;
pub mod error;
pub mod executor;
pub mod kernel;
pub mod model;
pub mod npy;
pub mod ops;
pub mod planner;
pub mod schema;
pub mod sparsity;
pub mod tensor;

pub use delegate::{
    CompiledPartition, Delegate, DelegateError, ExecReport, FloatPrecision, NodeSupportCtx,
    Partition, PartitionCtx, PartitionOptions, PartitionReport, PlacedPartition, ProcessorKind,
    Support,
};
pub use error::{KernelError, ModelError, RunError};
pub use executor::{Interpreter, InterpreterOptions, StepProfile};
pub use kernel::{OpKernel, OpResolver, PrepareCtx, PreparedKernel, TensorMeta};
pub use model::{Model, Node, Subgraph, TensorDef};
pub use ops::{Activation, BuiltinOp, OpKind, OpOptions, Padding};
pub use tensor::{AlignedBuf, DType, Quant, Tensor, TensorView, TensorViewMut};
