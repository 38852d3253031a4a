//! Device profiles: what a processor can do and how fast, in numbers a cost model and
//! an emulated device can both use.
//!
//! The DSP and NPU of a real board are not on a build machine, so the emulated
//! delegates run on a virtual clock driven by these numbers; the same numbers are the
//! scheduler's priors for every processor until measurements replace them.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Injected faults, so tests and demos can prove that a misbehaving accelerator ends up
/// blocked by the allowlist and never loses a request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultInjection {
    /// Probability that one execution returns perturbed outputs.
    pub wrong_result_rate: f64,
    /// Probability that one execution hangs (never finishes before its deadline).
    pub hang_rate: f64,
    /// Probability that one execution returns an error.
    pub error_rate: f64,
    /// Seed of the fault generator, so runs are reproducible.
    pub seed: u64,
}

/// One processor's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceProfile {
    /// Whether the daemon offers this processor at all.
    pub enabled: bool,
    /// Shown in fingerprints and the CLI, e.g. "hexagon-like dsp".
    pub model_name: String,
    /// Driver version string; a change re-triggers allowlist validation.
    pub driver_version: String,
    pub clock_mhz: f64,
    /// Multiply-accumulates per cycle for convolutions and matrix products.
    pub macs_per_cycle: f64,
    /// Simple element operations per cycle (add, activation, copy).
    pub elementwise_per_cycle: f64,
    /// Fixed cost of starting one partition on the device.
    pub dispatch_overhead_us: f64,
    /// Host <-> device bandwidth for partition inputs and outputs, in GB/s.
    pub transfer_gbps: f64,
    /// On-chip memory for weights and activations; 0 means unlimited (shared DRAM).
    pub on_chip_memory_bytes: u64,
    pub fault: FaultInjection,
}

impl DeviceProfile {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let positive = [
            ("clock_mhz", self.clock_mhz),
            ("macs_per_cycle", self.macs_per_cycle),
            ("elementwise_per_cycle", self.elementwise_per_cycle),
            ("transfer_gbps", self.transfer_gbps),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(
                    format!("{key}.{name}"),
                    format!("must be a positive number, is {v}"),
                ));
            }
        }
        if !(self.dispatch_overhead_us.is_finite() && self.dispatch_overhead_us >= 0.0) {
            return Err(ConfigError::invalid(
                format!("{key}.dispatch_overhead_us"),
                "must be >= 0",
            ));
        }
        let rates = [
            ("wrong_result_rate", self.fault.wrong_result_rate),
            ("hang_rate", self.fault.hang_rate),
            ("error_rate", self.fault.error_rate),
        ];
        for (name, v) in rates {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::invalid(
                    format!("{key}.fault.{name}"),
                    format!("must be a probability in [0, 1], is {v}"),
                ));
            }
        }
        Ok(())
    }

    /// Seconds the device needs for `macs` multiply-accumulates and `elements` simple
    /// element operations, plus dispatch and moving `bytes` across.
    pub fn estimate_seconds(&self, macs: f64, elements: f64, bytes: f64) -> f64 {
        let hz = self.clock_mhz * 1e6;
        self.dispatch_overhead_us * 1e-6
            + macs / (self.macs_per_cycle * hz)
            + elements / (self.elementwise_per_cycle * hz)
            + bytes / (self.transfer_gbps * 1e9)
    }
}

impl Default for DeviceProfile {
    fn default() -> Self {
        DeviceProfiles::default().cpu
    }
}

/// The processors of one device. Defaults describe a mid-range embedded board; the DSP
/// and NPU are emulated unless a vendor plugin replaces them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceProfiles {
    pub cpu: DeviceProfile,
    pub gpu: DeviceProfile,
    /// Emulated: quantized ops only.
    pub dsp: DeviceProfile,
    /// Emulated: int8 only, static shapes, limited on-chip memory.
    pub npu: DeviceProfile,
}

impl Default for DeviceProfiles {
    fn default() -> Self {
        DeviceProfiles {
            cpu: DeviceProfile {
                enabled: true,
                model_name: "host cpu".into(),
                driver_version: "switchyard-cpu".into(),
                clock_mhz: 2000.0,
                macs_per_cycle: 8.0,
                elementwise_per_cycle: 4.0,
                dispatch_overhead_us: 0.0,
                transfer_gbps: 1000.0,
                on_chip_memory_bytes: 0,
                fault: FaultInjection::default(),
            },
            gpu: DeviceProfile {
                enabled: true,
                model_name: "gpu".into(),
                driver_version: "wgpu".into(),
                clock_mhz: 600.0,
                macs_per_cycle: 64.0,
                elementwise_per_cycle: 32.0,
                dispatch_overhead_us: 150.0,
                transfer_gbps: 8.0,
                on_chip_memory_bytes: 0,
                fault: FaultInjection::default(),
            },
            dsp: DeviceProfile {
                enabled: true,
                model_name: "emulated vector dsp".into(),
                driver_version: "emulated-dsp-1.0".into(),
                clock_mhz: 1000.0,
                macs_per_cycle: 128.0,
                elementwise_per_cycle: 64.0,
                dispatch_overhead_us: 60.0,
                transfer_gbps: 4.0,
                on_chip_memory_bytes: 0,
                fault: FaultInjection::default(),
            },
            npu: DeviceProfile {
                enabled: true,
                model_name: "emulated int8 npu".into(),
                driver_version: "emulated-npu-1.0".into(),
                clock_mhz: 800.0,
                macs_per_cycle: 512.0,
                elementwise_per_cycle: 64.0,
                dispatch_overhead_us: 120.0,
                transfer_gbps: 4.0,
                on_chip_memory_bytes: 2 << 20,
                fault: FaultInjection::default(),
            },
        }
    }
}

/// A partial `[devices.<name>]` section overrides only the keys it names; the rest keep
/// that processor's own defaults (not a generic profile's), so `[devices.npu.fault]`
/// alone still describes the NPU.
impl<'de> Deserialize<'de> for DeviceProfiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            cpu: Option<toml::Table>,
            gpu: Option<toml::Table>,
            dsp: Option<toml::Table>,
            npu: Option<toml::Table>,
        }
        let raw = Raw::deserialize(d)?;
        let mut out = DeviceProfiles::default();
        for (base, patch) in [
            (&mut out.cpu, raw.cpu),
            (&mut out.gpu, raw.gpu),
            (&mut out.dsp, raw.dsp),
            (&mut out.npu, raw.npu),
        ] {
            if let Some(patch) = patch {
                *base = overlay(base, patch).map_err(serde::de::Error::custom)?;
            }
        }
        Ok(out)
    }
}

fn overlay(base: &DeviceProfile, patch: toml::Table) -> Result<DeviceProfile, String> {
    fn merge(into: &mut toml::Table, patch: toml::Table) {
        for (k, v) in patch {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut table = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    merge(&mut table, patch);
    table.try_into().map_err(|e: toml::de::Error| e.to_string())
}

impl DeviceProfiles {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.cpu.validate("devices.cpu")?;
        self.gpu.validate("devices.gpu")?;
        self.dsp.validate("devices.dsp")?;
        self.npu.validate("devices.npu")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_adds_compute_dispatch_and_transfer() {
        let p = DeviceProfiles::default().npu;
        let idle = p.estimate_seconds(0.0, 0.0, 0.0);
        assert!((idle - 120e-6).abs() < 1e-12);
        let busy = p.estimate_seconds(1e9, 0.0, 4e6);
        assert!(busy > idle + 1e9 / (512.0 * 800e6));
    }

    #[test]
    fn a_partial_section_keeps_that_processors_defaults() {
        let cfg = crate::Config::from_toml_str(
            "[devices.npu.fault]\nwrong_result_rate = 1.0\n[devices.dsp]\nclock_mhz = 5.0\n",
        )
        .unwrap();
        let d = DeviceProfiles::default();
        assert_eq!(cfg.devices.npu.driver_version, d.npu.driver_version);
        assert_eq!(
            cfg.devices.npu.on_chip_memory_bytes,
            d.npu.on_chip_memory_bytes
        );
        assert_eq!(cfg.devices.npu.fault.wrong_result_rate, 1.0);
        assert_eq!(cfg.devices.dsp.clock_mhz, 5.0);
        assert_eq!(cfg.devices.dsp.model_name, d.dsp.model_name);
        let err = crate::Config::from_toml_str("[devices.npu]\nclok_mhz = 1.0\n").unwrap_err();
        assert!(err.to_string().contains("clok_mhz"), "{err}");
    }

    #[test]
    fn fault_rates_must_be_probabilities() {
        let mut p = DeviceProfiles::default();
        p.npu.fault.hang_rate = 1.5;
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("devices.npu.fault.hang_rate"), "{err}");
    }
}
