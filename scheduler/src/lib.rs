//! switchyard-scheduler: decides where each part of a model runs and in which order the
//! requests of many apps get the processors.
//!
//! Layout:
//! - [`graph`]: what a prepared CPU interpreter knows about a model (resolved shapes,
//!   nodes folded at prepare, constant values), the input of everything below
//! - [`capability`]: the small trait the partitioner asks ("can you run this node?"),
//!   implemented for real delegates and for the profile rules the simulator uses
//! - [`partition`]: supported nodes grouped into connected partitions per delegate
//! - [`cost`]: expected latency per (partition, processor): profile priors, then
//!   measurements as served (robust, decaying), plus tensor transfers between processors
//! - [`allowlist`]: learned, persisted decisions on which delegate may run what
//! - [`placement`]: the cheapest allowed plan and a per-node explanation
//! - [`decide`]: the whole decision for one model with real delegates (validate
//!   unknown candidates, measure, plan), as the daemon makes it on first load
//! - [`arbiter`]: per-processor queues on servers (CPU cores), pure scheduling
//!   policies, admission control in the policy's order, job migration, background caps,
//!   and a tokio wrapper for the daemon
//! - [`serving`]: the serving policy of a loaded model: which processors a request may
//!   take and what each costs now, learned from every served run
//! - [`sim`], [`workload`]: a virtual-clock simulator comparing policies with fixed
//!   placements on a workload of apps with frame rates and deadlines
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchyard_interpreter::Model;
//! use switchyard_scheduler::{graph::GraphInfo, partition, capability::Capability};
//! let model = Arc::new(Model::from_path("model.tflite")?);
//! let info = GraphInfo::analyse(model)?;
//! let caps: Vec<Box<dyn Capability>> = switchyard_scheduler::capability::profile_rules(
//!     &switchyard_config::DeviceProfiles::default());
//! let parts = partition::partition(&info, &caps);
//! println!("{} candidate partitions", parts.candidates.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod arbiter;
pub mod capability;
pub mod cost;
pub mod decide;
mod error;
pub mod graph;
pub mod partition;
pub mod placement;
pub mod serving;
pub mod sim;
#[cfg(test)]
pub(crate) mod testing;
pub mod workload;

pub use error::SchedError;
pub use switchyard_interpreter::ProcessorKind;

/// Serializes a processor as its name ("cpu", "gpu", "dsp", "npu").
pub(crate) fn ser_kind<S: serde::Serializer>(k: &ProcessorKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

pub(crate) fn ser_opt_kind<S: serde::Serializer>(
    k: &Option<ProcessorKind>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.serialize_str(k.name()),
        None => s.serialize_none(),
    }
}
