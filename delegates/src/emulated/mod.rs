//! Emulated DSP and NPU: device models standing in for accelerators a build machine
//! does not have.
//!
//! Each is a capability model plus a timing model around bit-exact integer math:
//! - **capabilities**: which ops, dtypes and shapes the device accepts ([`dsp`]:
//!   quantized int8/uint8 only; [`npu`]: int8 only, static shapes, and a partition's
//!   weights plus live activations must fit its on-chip memory);
//! - **arithmetic**: a compiled partition runs the CPU *reference* kernels, so outputs
//!   are bit-exact with the CPU reference — an emulated device never changes numbers
//!   unless its profile injects faults;
//! - **timing**: every execution advances the device's own [`VirtualClock`] by the
//!   profile's cost (MACs and element operations counted from shapes, dispatch
//!   overhead, bytes moved to and from the device) and reports it as
//!   `ExecReport::device_time`; optionally wall time follows the virtual time scaled by
//!   a factor (off by default; demos turn it on);
//! - **faults**: the profile's `fault` section makes executions return perturbed
//!   outputs, hang until their deadline (bounded even without one) or fail, drawn from
//!   a seeded generator so runs are reproducible.
//!
//! They are labelled emulated everywhere: the name ("dsp (emulated)"), `is_emulated()`
//! and the fingerprint.

pub mod clock;
pub mod cost;
pub mod dsp;
pub mod npu;
mod program;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::{DeviceProfile, DeviceProfiles};
use switchyard_interpreter::{
    CompiledPartition, DType, Delegate, DelegateError, ExecReport, NodeSupportCtx, PartitionCtx,
    PartitionOptions, ProcessorKind, Support, TensorView, TensorViewMut,
};

pub use clock::{Fault, FaultGen, VirtualClock};
pub use cost::Work;

use program::Program;

/// Longest an injected hang blocks when the caller gave no deadline.
pub const DEFAULT_HANG_LIMIT: Duration = Duration::from_secs(2);

/// Which device an [`EmulatedDelegate`] models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedKind {
    Dsp,
    Npu,
}

/// An emulated DSP or NPU driven by a [`DeviceProfile`].
pub struct EmulatedDelegate {
    kind: EmulatedKind,
    name: &'static str,
    profile: DeviceProfile,
    clock: Arc<VirtualClock>,
    faults: Arc<FaultGen>,
    time_scale: f64,
    hang_limit: Duration,
}

impl EmulatedDelegate {
    /// The emulated DSP: quantized ops only.
    pub fn dsp(profile: DeviceProfile) -> EmulatedDelegate {
        EmulatedDelegate::new(EmulatedKind::Dsp, profile)
    }

    /// The emulated NPU: int8 only, static shapes, limited on-chip memory.
    pub fn npu(profile: DeviceProfile) -> EmulatedDelegate {
        EmulatedDelegate::new(EmulatedKind::Npu, profile)
    }

    /// The enabled emulated devices of a configuration (DSP first), as the daemon
    /// offers them when no vendor plugin replaces them.
    pub fn from_profiles(profiles: &DeviceProfiles) -> Vec<EmulatedDelegate> {
        let mut out = Vec::new();
        if profiles.dsp.enabled {
            out.push(EmulatedDelegate::dsp(profiles.dsp.clone()));
        }
        if profiles.npu.enabled {
            out.push(EmulatedDelegate::npu(profiles.npu.clone()));
        }
        out
    }

    pub fn new(kind: EmulatedKind, profile: DeviceProfile) -> EmulatedDelegate {
        EmulatedDelegate {
            kind,
            name: match kind {
                EmulatedKind::Dsp => "dsp (emulated)",
                EmulatedKind::Npu => "npu (emulated)",
            },
            faults: Arc::new(FaultGen::new(&profile.fault)),
            profile,
            clock: Arc::new(VirtualClock::default()),
            time_scale: 0.0,
            hang_limit: DEFAULT_HANG_LIMIT,
        }
    }

    /// Makes each execution last at least `scale` times its device time in wall time
    /// (0 turns pacing off, the default). Demos use it so an emulated device is as slow
    /// as its profile says; tests leave it off.
    pub fn with_time_scale(mut self, scale: f64) -> EmulatedDelegate {
        self.time_scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        self
    }

    /// Bounds an injected hang when no deadline is given (default [`DEFAULT_HANG_LIMIT`]).
    pub fn with_hang_limit(mut self, limit: Duration) -> EmulatedDelegate {
        self.hang_limit = limit;
        self
    }

    pub fn emulated_kind(&self) -> EmulatedKind {
        self.kind
    }

    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// Total device time of every execution so far.
    pub fn device_clock(&self) -> Duration {
        self.clock.now()
    }

    /// Refuses partitions the device cannot hold (the NPU's on-chip memory).
    fn check_fits(&self, program: &Program) -> Result<(), DelegateError> {
        let limit = self.profile.on_chip_memory_bytes;
        if self.kind != EmulatedKind::Npu || limit == 0 {
            return Ok(());
        }
        let weights = program.constant_bytes();
        let activations = program.peak_activation_bytes();
        let need = weights.saturating_add(activations) as u64;
        if need > limit {
            return Err(DelegateError::Compile {
                delegate: self.name.into(),
                what: format!(
                    "partition needs {need} bytes of on-chip memory ({weights} of weights + \
                     {activations} of live activations at peak); the device has {limit}; \
                     split it into smaller partitions"
                ),
            });
        }
        Ok(())
    }
}

impl Delegate for EmulatedDelegate {
    fn name(&self) -> &str {
        self.name
    }

    fn kind(&self) -> ProcessorKind {
        match self.kind {
            EmulatedKind::Dsp => ProcessorKind::Dsp,
            EmulatedKind::Npu => ProcessorKind::Npu,
        }
    }

    fn is_emulated(&self) -> bool {
        true
    }

    /// Names the device model and driver version, and any injected faults: turning
    /// faults on or off makes a different device as far as the allowlist is concerned.
    fn fingerprint(&self) -> String {
        let f = &self.profile.fault;
        let mut s = format!(
            "{} emulated; model={}; driver={}",
            self.kind_name(),
            self.profile.model_name,
            self.profile.driver_version
        );
        if !self.faults.is_off() {
            s.push_str(&format!(
                "; faults(wrong={}, hang={}, error={}, seed={})",
                f.wrong_result_rate, f.hang_rate, f.error_rate, f.seed
            ));
        }
        s
    }

    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        match self.kind {
            EmulatedKind::Dsp => dsp::supports(ctx),
            EmulatedKind::Npu => npu::supports(ctx, &self.profile),
        }
    }

    /// The NPU's dispatch overhead is the largest: one-node partitions rarely pay off.
    fn partition_options(&self) -> PartitionOptions {
        match self.kind {
            EmulatedKind::Dsp => PartitionOptions {
                min_nodes_per_partition: 1,
                max_partitions: 16,
            },
            EmulatedKind::Npu => PartitionOptions {
                min_nodes_per_partition: 2,
                max_partitions: 8,
            },
        }
    }

    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let _span = tracing::debug_span!("emulated_compile", delegate = self.name).entered();
        // `compile` may be handed nodes `supports` never saw; re-check each one.
        for &n in &ctx.partition.nodes {
            let node = ctx
                .subgraph
                .nodes
                .get(n)
                .ok_or_else(|| DelegateError::Compile {
                    delegate: self.name.into(),
                    what: format!("node {n} does not exist"),
                })?;
            let sctx = support_ctx(ctx, node);
            if let Support::Unsupported(why) = self.supports(&sctx) {
                return Err(DelegateError::Unsupported {
                    delegate: self.name.into(),
                    what: format!("node {n}: {why}"),
                });
            }
        }
        let program = Program::compile(ctx, self.name)?;
        self.check_fits(&program)?;
        let mut work = Work::default();
        for n in program.nodes() {
            let node = &ctx.subgraph.nodes[n];
            work = work + cost::node_work(node, |t| ctx.shapes.get(t).cloned().unwrap_or_default());
        }
        let moved: usize = program
            .inputs
            .iter()
            .chain(program.output_infos())
            .map(|t| t.byte_len())
            .sum();
        work.bytes = moved as f64;
        Ok(Box::new(EmulatedPartition {
            name: self.name,
            device_time: work.device_time(&self.profile),
            work,
            program,
            clock: self.clock.clone(),
            faults: self.faults.clone(),
            time_scale: self.time_scale,
            hang_limit: self.hang_limit,
        }))
    }
}

impl EmulatedDelegate {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            EmulatedKind::Dsp => "dsp",
            EmulatedKind::Npu => "npu",
        }
    }
}

/// Builds the `supports` view of one node from a compile context.
fn support_ctx<'a>(
    ctx: &PartitionCtx<'a>,
    node: &'a switchyard_interpreter::Node,
) -> NodeSupportCtx<'a> {
    let (sg, shapes, constant) = (ctx.subgraph, ctx.shapes, ctx.constant);
    let meta = move |t: usize| {
        let def = &sg.tensors[t];
        switchyard_interpreter::TensorMeta {
            dtype: def.dtype,
            shape: shapes.get(t).map_or(def.shape.as_slice(), |s| s.as_slice()),
            quant: def.quant.as_ref(),
            data: constant(t),
            name: &def.name,
        }
    };
    NodeSupportCtx {
        subgraph: sg,
        node,
        inputs: node
            .inputs
            .iter()
            .map(|t| t.filter(|&t| t < sg.tensors.len()).map(meta))
            .collect(),
        outputs: node
            .outputs
            .iter()
            .filter(|&&t| t < sg.tensors.len())
            .map(|&t| meta(t))
            .collect(),
    }
}

pub(crate) use switchyard_kernels::support::node_tensors;

/// What the descriptors say about `kind` running this node; an op without a `kind`
/// entry is refused in the device's name.
pub(crate) fn by_descriptor(kind: ProcessorKind, name: &str, ctx: &NodeSupportCtx<'_>) -> Support {
    let has_rule = switchyard_kernels::descriptor(&ctx.node.op)
        .and_then(|d| d.rule(kind))
        .is_some();
    if !has_rule {
        return Support::Unsupported(format!("{name} does not run {}", ctx.node.op));
    }
    switchyard_kernels::supports(kind, ctx)
}

/// A partition compiled for an emulated device.
struct EmulatedPartition {
    name: &'static str,
    program: Program,
    work: Work,
    device_time: Duration,
    clock: Arc<VirtualClock>,
    faults: Arc<FaultGen>,
    time_scale: f64,
    hang_limit: Duration,
}

impl EmulatedPartition {
    fn timeout(&self, started: Instant) -> DelegateError {
        DelegateError::Timeout {
            delegate: self.name.into(),
            after: started.elapsed(),
        }
    }
}

impl CompiledPartition for EmulatedPartition {
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError> {
        let started = Instant::now();
        let _span = tracing::debug_span!(
            "emulated_execute",
            delegate = self.name,
            macs = self.work.macs,
            elements = self.work.elements
        )
        .entered();
        let fault = self.faults.draw();
        match fault {
            Fault::Hang => {
                let limit = deadline.unwrap_or(started + self.hang_limit);
                clock::sleep_until(limit, None);
                return Err(self.timeout(started));
            }
            Fault::Error => {
                return Err(DelegateError::Execute {
                    delegate: self.name.into(),
                    what: "injected fault: the device reported an error".into(),
                });
            }
            Fault::WrongResult | Fault::None => {}
        }
        self.program.run(inputs, outputs)?;
        if fault == Fault::WrongResult {
            for out in outputs.iter_mut() {
                perturb(out, self.faults.next_u64());
            }
        }
        self.clock.advance(self.device_time);
        if self.time_scale > 0.0 {
            let wall = self.device_time.mul_f64(self.time_scale);
            if !clock::sleep_until(started + wall, deadline) {
                return Err(self.timeout(started));
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(self.timeout(started));
        }
        Ok(ExecReport {
            device_time: Some(self.device_time),
        })
    }
}

/// Corrupts an output the way a miscompiled kernel would: a stride of elements, starting
/// at a random one, moved far from their value.
fn perturb(out: &mut TensorViewMut<'_>, r: u64) {
    let size = out.dtype.size().max(1);
    let n = out.bytes.len() / size;
    if n == 0 {
        return;
    }
    let start = (r as usize) % n;
    for i in (start..n).step_by(3).chain(std::iter::once(start)) {
        let e = &mut out.bytes[i * size..(i + 1) * size];
        match out.dtype {
            DType::F32 => {
                let v = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                e.copy_from_slice(&(v * 1.5 + 1.0).to_le_bytes());
            }
            // Flipping bit 5 moves an 8-bit value by 32 quantization steps.
            _ => e[0] ^= 0x20,
        }
    }
}

#[cfg(test)]
mod tests;
