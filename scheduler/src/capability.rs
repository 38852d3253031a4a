//! "Can this processor run this node?" — the one question the partitioner asks.
//!
//! Real delegates answer through [`Delegate::supports`]. The simulator and
//! `switchyard placement` also need an answer for processors that are described only by
//! a device profile (no delegate built or merged yet, or a what-if profile), so the
//! question is a small trait with two implementations: any delegate, and
//! [`ProfileRules`]: the op descriptors' rules for each processor class
//! (`switchyard_kernels::supports`: float GPU, quantized-only DSP, int8-only NPU with
//! static shapes) plus what the profile adds (the NPU's on-chip memory).

use std::sync::Arc;

use switchyard_config::{DeviceProfile, DeviceProfiles};
use switchyard_interpreter::{Delegate, NodeSupportCtx, PartitionOptions, ProcessorKind, Support};

/// What the partitioner needs from a processor.
pub trait Capability: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> ProcessorKind;
    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support;
    fn partition_options(&self) -> PartitionOptions;
    /// The delegate that can actually run partitions, when there is one.
    fn delegate(&self) -> Option<Arc<dyn Delegate>> {
        None
    }
    /// Driver identity for the allowlist.
    fn fingerprint(&self) -> String;
}

impl Capability for Arc<dyn Delegate> {
    fn name(&self) -> &str {
        Delegate::name(self.as_ref())
    }
    fn kind(&self) -> ProcessorKind {
        Delegate::kind(self.as_ref())
    }
    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        Delegate::supports(self.as_ref(), ctx)
    }
    fn partition_options(&self) -> PartitionOptions {
        Delegate::partition_options(self.as_ref())
    }
    fn delegate(&self) -> Option<Arc<dyn Delegate>> {
        Some(self.clone())
    }
    fn fingerprint(&self) -> String {
        Delegate::fingerprint(self.as_ref())
    }
}

/// A processor described by its profile and its class's op/dtype rules.
pub struct ProfileRules {
    kind: ProcessorKind,
    name: String,
    profile: DeviceProfile,
}

/// Rules for every enabled accelerator of `profiles` (the CPU needs none: it runs all).
pub fn profile_rules(profiles: &DeviceProfiles) -> Vec<Box<dyn Capability>> {
    let mut out: Vec<Box<dyn Capability>> = Vec::new();
    for (kind, p) in [
        (ProcessorKind::Gpu, &profiles.gpu),
        (ProcessorKind::Dsp, &profiles.dsp),
        (ProcessorKind::Npu, &profiles.npu),
    ] {
        if p.enabled {
            out.push(Box::new(ProfileRules::new(kind, p.clone())));
        }
    }
    out
}

/// The partitioner's view of a device's accelerators.
pub type Capabilities = Vec<Box<dyn Capability>>;

/// The processors of a device as the scheduler sees them: the real delegates this
/// build has (the emulated DSP and NPU, from `switchyard-delegates`), and profile rules
/// for the enabled processors without one (the GPU until its delegate is wired in).
pub fn for_device(profiles: &DeviceProfiles) -> (Vec<Arc<dyn Delegate>>, Capabilities) {
    let delegates: Vec<Arc<dyn Delegate>> =
        switchyard_delegates::EmulatedDelegate::from_profiles(profiles)
            .into_iter()
            .map(|d| Arc::new(d) as Arc<dyn Delegate>)
            .collect();
    let mut caps: Vec<Box<dyn Capability>> = profile_rules(profiles)
        .into_iter()
        .filter(|c| delegates.iter().all(|d| d.kind() != c.kind()))
        .collect();
    caps.extend(
        delegates
            .iter()
            .map(|d| Box::new(d.clone()) as Box<dyn Capability>),
    );
    (delegates, caps)
}

/// The processors `switchyard placement` plans for: the delegates the daemon builds —
/// the emulated DSP and NPU from the profiles, and the real GPU delegates (fp32 and, where
/// the adapter has it, fp16) with the `[gpu]` options — and profile rules only for
/// enabled processors no delegate covers. Offline plans are thus made against the same
/// GPU as the daemon's, its support answers included.
pub fn for_config(cfg: &switchyard_config::Config) -> (Vec<Arc<dyn Delegate>>, Capabilities) {
    let mut delegates: Vec<Arc<dyn Delegate>> =
        switchyard_delegates::EmulatedDelegate::from_profiles(&cfg.devices)
            .into_iter()
            .map(|d| Arc::new(d) as Arc<dyn Delegate>)
            .collect();
    delegates.extend(
        switchyard_delegates::gpu::from_config(cfg, false)
            .into_iter()
            .map(|g| g as Arc<dyn Delegate>),
    );
    let mut caps: Vec<Box<dyn Capability>> = profile_rules(&cfg.devices)
        .into_iter()
        .filter(|c| delegates.iter().all(|d| d.kind() != c.kind()))
        .collect();
    caps.extend(
        delegates
            .iter()
            .map(|d| Box::new(d.clone()) as Box<dyn Capability>),
    );
    (delegates, caps)
}

impl ProfileRules {
    pub fn new(kind: ProcessorKind, profile: DeviceProfile) -> ProfileRules {
        let emulated = matches!(kind, ProcessorKind::Dsp | ProcessorKind::Npu);
        let name = if emulated {
            format!("{kind} (emulated)")
        } else {
            kind.to_string()
        };
        ProfileRules {
            kind,
            name,
            profile,
        }
    }
}

fn no(why: impl Into<String>) -> Support {
    Support::Unsupported(why.into())
}

impl Capability for ProfileRules {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProcessorKind {
        self.kind
    }

    fn fingerprint(&self) -> String {
        format!(
            "{}/{}",
            self.profile.model_name, self.profile.driver_version
        )
    }

    fn partition_options(&self) -> PartitionOptions {
        match self.kind {
            // Dispatch overhead dominates one-op partitions on a GPU.
            ProcessorKind::Gpu => PartitionOptions {
                min_nodes_per_partition: 2,
                max_partitions: 4,
            },
            _ => PartitionOptions {
                min_nodes_per_partition: 1,
                max_partitions: 8,
            },
        }
    }

    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        // Which ops and dtypes a processor class runs: the op descriptors' rules (custom
        // ops by name, such as MediaPipe's Convolution2DTransposeBias on the GPU), the
        // same the emulated devices and the GPU delegate answer with.
        if let Support::Unsupported(why) = switchyard_kernels::supports(self.kind, ctx) {
            return no(format!("{}: {why}", self.name));
        }
        if self.kind == ProcessorKind::Npu {
            let weights: usize = ctx
                .inputs
                .iter()
                .flatten()
                .filter_map(|m| m.data.map(<[u8]>::len))
                .sum();
            let limit = self.profile.on_chip_memory_bytes;
            if limit > 0 && weights as u64 > limit {
                return no(format!(
                    "weights of {weights} bytes exceed the npu's {limit} bytes of on-chip memory"
                ));
            }
        }
        Support::Supported
    }
}
