//! Running a placed partition: on its delegate, with the CPU steps as the fallback when
//! the delegate is missing, fails or times out, and as the oracle in validation mode.
//!
//! The delegate reads and writes the session's host tensors at the partition boundary;
//! its compiled partition (in the plan) keeps no state that outlives one execute, so any
//! session may run any stage on any allowed processor.

use std::time::Instant;

use super::io::{self, SgState, tensor_bytes};
use super::memory::MBuf;
use super::{Session, Value};
use crate::control::RunControl;
use crate::delegate::PartitionReport;
use crate::error::RunError;
use crate::model::Subgraph;
use crate::plan::steps::PartitionStep;
use crate::tensor::{DType, TensorView};

impl Session {
    /// Runs one partition; returns whether the delegate's results were kept.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_partition(
        &mut self,
        si: usize,
        sg: &Subgraph,
        st: &mut SgState,
        vars: &mut [MBuf],
        part: &PartitionStep,
        force_cpu: bool,
        ctl: &mut dyn RunControl,
    ) -> Result<bool, RunError> {
        let compiled = match &part.compiled {
            Some(c) if !force_cpu => c,
            _ => {
                self.run_fallback(si, sg, st, vars, part, ctl)?;
                return Ok(false);
            }
        };
        let plan = self.plan.clone();
        let placed = &plan.placements()[part.placement];
        let deadline = placed.timeout.map(|t| Instant::now() + t);
        let started = Instant::now();
        let result = io::with_io(sg, st, vars, &part.io, |ins, outs| {
            let ins: Vec<TensorView<'_>> = ins.iter().flatten().copied().collect();
            Ok(compiled.execute(&ins, outs, deadline))
        })
        .map_err(|e| RunError::Graph {
            subgraph: si,
            what: format!("partition on {}: {e}", placed.delegate.name()),
        })?;
        let elapsed = started.elapsed();
        match result {
            Ok(exec) => {
                self.record(part.placement, |r| {
                    r.runs += 1;
                    r.delegate_wall += elapsed;
                    r.device_time += exec.device_time.unwrap_or(elapsed);
                });
                self.executed += part.fallback.len() as u64;
                ctl.between_nodes(self.executed)?;
                if self.validate {
                    let part_outputs = &placed.partition.outputs;
                    // What the delegate wrote (recomputed folded values go to scratch).
                    let delegate_out: Vec<Value> = (0..part.io.outs.len())
                        .map(|k| {
                            let mut v = io::tensor_view(sg, st, vars, part.io.outs[k].0);
                            v.bytes = io::written_bytes(st, vars, &part.io, k);
                            Value::from_view(&v, &self.meter)
                        })
                        .collect::<Result<_, _>>()?;
                    self.run_fallback(si, sg, st, vars, part, ctl)?;
                    let mut worst = 0f64;
                    for (&t, d) in part_outputs.iter().zip(&delegate_out) {
                        let cpu = tensor_bytes(sg, st, vars, t);
                        worst = worst.max(output_error(d.dtype, d.data.as_slice(), cpu));
                    }
                    self.record(part.placement, |r| {
                        r.validations += 1;
                        r.max_validation_error = r.max_validation_error.max(worst);
                    });
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(delegate = placed.delegate.name(), error = %e, "delegate failed; re-running the partition on the CPU");
                let what = e.to_string();
                self.record(part.placement, |r| {
                    r.failures += 1;
                    r.last_error = Some(what.clone());
                });
                self.run_fallback(si, sg, st, vars, part, ctl)?;
                Ok(false)
            }
        }
    }

    fn run_fallback(
        &mut self,
        si: usize,
        sg: &Subgraph,
        st: &mut SgState,
        vars: &mut [MBuf],
        part: &PartitionStep,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        let started = Instant::now();
        for step in &part.fallback {
            self.run_step(si, sg, st, vars, step, false, ctl)?;
        }
        let spent = started.elapsed();
        self.record(part.placement, |r| r.cpu_wall += spent);
        Ok(())
    }

    /// Updates placement `p`'s report in this session and in the plan's aggregate.
    fn record(&mut self, p: usize, f: impl Fn(&mut PartitionReport)) {
        if let Some(r) = self.reports.get_mut(p) {
            f(r);
        }
        self.plan.update_report(p, f);
    }
}

/// Largest difference between a delegate's output and the CPU's: relative to the CPU
/// output's largest magnitude for floats, in steps for integers.
pub(crate) fn output_error(dtype: DType, delegate: &[u8], cpu: &[u8]) -> f64 {
    if delegate.len() != cpu.len() {
        return f64::INFINITY;
    }
    match dtype {
        DType::F32 => {
            let (Ok(a), Ok(b)) = (
                bytemuck::try_cast_slice::<u8, f32>(delegate),
                bytemuck::try_cast_slice::<u8, f32>(cpu),
            ) else {
                return f64::INFINITY;
            };
            let scale = b
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(f32::MIN_POSITIVE) as f64;
            a.iter()
                .zip(b)
                .map(|(x, y)| {
                    if x.is_nan() != y.is_nan() {
                        f64::INFINITY
                    } else {
                        ((x - y).abs() as f64) / scale
                    }
                })
                .fold(0f64, |m, v| if v.is_nan() { m } else { m.max(v) })
        }
        DType::I8 => delegate
            .iter()
            .zip(cpu)
            .map(|(&x, &y)| ((x as i8 as i32) - (y as i8 as i32)).abs() as f64)
            .fold(0f64, f64::max),
        DType::U8 | DType::Bool => delegate
            .iter()
            .zip(cpu)
            .map(|(&x, &y)| ((x as i32) - (y as i32)).abs() as f64)
            .fold(0f64, f64::max),
        _ => {
            if delegate == cpu {
                0.0
            } else {
                f64::INFINITY
            }
        }
    }
}
