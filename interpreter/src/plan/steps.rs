//! What a prepared subgraph is made of: where each tensor lives, the steps that run, and
//! for each step the precomputed places of its inputs and outputs.
//!
//! Everything here is immutable once prepared and shared by every session of the plan.
//! A session supplies the mutable parts (arena, heap tensors, variable tensors) and reads
//! the offsets from here, so a step costs no lookup, search or allocation at run time.

use std::ops::Range;
use std::sync::Arc;

use crate::delegate::CompiledPartition;
use crate::error::KernelError;
use crate::kernel::OpKernel;
use crate::model::Subgraph;
use crate::planner::{ArenaPlan, Lifetime};
use crate::tensor::AlignedBuf;

/// Where a tensor's bytes are during a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    /// Omitted optional tensor, or a tensor no step touches.
    Absent,
    /// Constant data in the model.
    Const,
    /// A value computed at prepare time (folded node output, resource handle), held by
    /// the prepared subgraph.
    Folded(usize),
    /// A range of the session's arena.
    Arena(Range<usize>),
    /// A session-owned buffer whose shape is only known at run time.
    Heap(usize),
    /// A persistent, session-owned variable tensor (old-style state such as LSTM's).
    Var(usize),
}

/// One subgraph prepared for one set of input shapes.
pub(crate) struct Prepared {
    pub si: usize,
    pub input_shapes: Vec<Vec<usize>>,
    /// Shape of every tensor; for `Loc::Heap` tensors the stored shape (the session
    /// keeps the real one).
    pub shapes: Vec<Vec<usize>>,
    pub locs: Vec<Loc>,
    pub folded: Vec<AlignedBuf>,
    pub arena: ArenaPlan,
    pub arena_requests: Vec<Lifetime>,
    /// Tensor of each `Loc::Heap` slot.
    pub heap_tensors: Vec<usize>,
    pub steps: Vec<Step>,
    /// Nodes that run at every invoke, in run order.
    pub run_nodes: Vec<usize>,
    /// Bytes held by folded values.
    pub folded_bytes: usize,
    /// Bytes the kernels report holding (packed weights).
    pub kernel_bytes: usize,
}

impl Prepared {
    /// Shape of output `k` when it is fixed at prepare time.
    pub fn static_output_shape(&self, sg: &Subgraph, k: usize) -> Option<&[usize]> {
        let t = *sg.outputs.get(k)?;
        match self.locs.get(t)? {
            Loc::Heap(_) => None,
            _ => self.shapes.get(t).map(Vec::as_slice),
        }
    }

    pub fn arena_bytes(&self) -> usize {
        self.arena.high_water
    }
}

/// A subgraph called by control flow, with its plan at the shapes known at prepare time
/// (`None` when those shapes were not known; the session prepares it when called).
pub(crate) struct Callee {
    pub si: usize,
    pub prepared: Option<Arc<Prepared>>,
}

/// One unit of work of a prepared subgraph.
pub(crate) enum Step {
    Kernel {
        node: usize,
        kernel: Box<dyn OpKernel>,
        io: StepIo,
    },
    /// Prepared at every run because an output shape depends on runtime values.
    Lazy {
        node: usize,
    },
    If {
        node: usize,
        then_branch: Callee,
        else_branch: Callee,
    },
    While {
        node: usize,
        cond: Callee,
        body: Callee,
    },
    CallOnce {
        node: usize,
        init: Callee,
    },
    ReadVariable {
        node: usize,
    },
    AssignVariable {
        node: usize,
    },
    /// Nodes placed on a delegate; `fallback` holds their CPU steps, run when the
    /// delegate is missing, fails, times out, or to validate it.
    Partition(Box<PartitionStep>),
}

pub(crate) struct PartitionStep {
    pub placement: usize,
    pub compiled: Option<Box<dyn CompiledPartition>>,
    pub fallback: Vec<Step>,
    /// Views of the partition's boundary tensors: inputs, then outputs.
    pub io: StepIo,
}

impl Step {
    /// The node this step stands for (a partition: its first node).
    pub fn node(&self) -> usize {
        match self {
            Step::Kernel { node, .. }
            | Step::Lazy { node }
            | Step::If { node, .. }
            | Step::While { node, .. }
            | Step::CallOnce { node, .. }
            | Step::ReadVariable { node }
            | Step::AssignVariable { node } => *node,
            Step::Partition(p) => p.fallback.first().map_or(0, Step::node),
        }
    }

    /// Nodes this step runs (one, or all of a partition's).
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Step::Partition(p) => p.fallback.iter().map(Step::node).collect(),
            other => vec![other.node()],
        }
    }

    /// Short name for profiles.
    pub fn kernel_name(&self) -> &str {
        match self {
            Step::Kernel { kernel, .. } => kernel.name(),
            Step::Lazy { .. } => "lazy",
            Step::Partition(_) => "partition",
            _ => "control",
        }
    }
}

/// Where one input of a step reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InLoc {
    /// Omitted optional input, or one the kernel updates in place (passed as an output).
    None,
    Const,
    Folded(usize),
    /// A range of the arena piece `gap` (the arena minus the step's arena outputs).
    Gap {
        gap: usize,
        range: Range<usize>,
    },
    Heap(usize),
    Var(usize),
}

/// Where one output of a step writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutLoc {
    /// The `rank`-th arena output by offset.
    Arena(usize),
    Heap(usize),
    Var(usize),
}

/// The precomputed views of one step: which tensor each input and output is and where
/// its bytes are, with the arena split around the outputs so that inputs and outputs
/// are disjoint slices.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepIo {
    pub ins: Vec<(usize, InLoc)>,
    pub outs: Vec<(usize, OutLoc)>,
    /// Arena ranges of the outputs in increasing offset order, with the output position.
    pub arena_outs: Vec<(usize, Range<usize>)>,
}

impl StepIo {
    /// Views for reading `inputs` and writing `written`. Inputs at positions `skip` are
    /// passed as `None` (kernels that update an input in place get it among the outputs).
    pub fn build(
        locs: &[Loc],
        inputs: &[Option<usize>],
        written: &[usize],
        skip: &[usize],
    ) -> Result<StepIo, KernelError> {
        StepIo::build_with_scratch(locs, inputs, written, skip, &[])
    }

    /// [`StepIo::build`] where the `scratch` tensors are written to the given arena
    /// ranges instead of their places: a delegate partition recomputes values that were
    /// folded at prepare, and those stay read-only.
    pub fn build_with_scratch(
        locs: &[Loc],
        inputs: &[Option<usize>],
        written: &[usize],
        skip: &[usize],
        scratch: &[(usize, Range<usize>)],
    ) -> Result<StepIo, KernelError> {
        let mut outs = Vec::with_capacity(written.len());
        let mut arena_outs: Vec<(usize, Range<usize>)> = Vec::new();
        for (k, &t) in written.iter().enumerate() {
            if written[..k].contains(&t) {
                return Err(KernelError::invalid(format!(
                    "tensor {t} is written twice by one step"
                )));
            }
            if let Some((_, r)) = scratch.iter().find(|(s, _)| *s == t) {
                arena_outs.push((k, r.clone()));
                outs.push((t, OutLoc::Arena(0)));
                continue;
            }
            let loc = match locs.get(t) {
                Some(Loc::Arena(r)) => {
                    arena_outs.push((k, r.clone()));
                    OutLoc::Arena(0)
                }
                Some(Loc::Heap(h)) => OutLoc::Heap(*h),
                Some(Loc::Var(v)) => OutLoc::Var(*v),
                _ => {
                    return Err(KernelError::invalid(format!(
                        "output tensor {t} is not writable"
                    )));
                }
            };
            outs.push((t, loc));
        }
        arena_outs.sort_by_key(|(_, r)| r.start);
        for w in arena_outs.windows(2) {
            if w[0].1.end > w[1].1.start {
                return Err(KernelError::invalid("overlapping output tensors"));
            }
        }
        for (rank, (k, _)) in arena_outs.iter().enumerate() {
            outs[*k].1 = OutLoc::Arena(rank);
        }
        // Arena pieces between the outputs: gap g ends where output g starts.
        let gap_of = |r: &Range<usize>| -> Option<(usize, Range<usize>)> {
            let mut start = 0;
            for (g, (_, out)) in arena_outs.iter().enumerate() {
                if r.end <= out.start {
                    return (r.start >= start).then(|| (g, r.start - start..r.end - start));
                }
                start = out.end;
            }
            (r.start >= start).then(|| (arena_outs.len(), r.start - start..r.end - start))
        };
        let mut ins = Vec::with_capacity(inputs.len());
        for (k, t) in inputs.iter().enumerate() {
            let Some(t) = *t else {
                ins.push((usize::MAX, InLoc::None));
                continue;
            };
            if skip.contains(&k) {
                ins.push((t, InLoc::None));
                continue;
            }
            let loc = match locs.get(t) {
                Some(Loc::Const) => InLoc::Const,
                Some(Loc::Folded(f)) => InLoc::Folded(*f),
                Some(Loc::Arena(r)) => {
                    let (gap, range) = gap_of(r).ok_or_else(|| {
                        KernelError::invalid(format!("input tensor {t} overlaps an output"))
                    })?;
                    InLoc::Gap { gap, range }
                }
                Some(Loc::Heap(_) | Loc::Var(_)) if written.contains(&t) => {
                    return Err(KernelError::invalid(format!(
                        "tensor {t} is both input and output"
                    )));
                }
                Some(Loc::Heap(h)) => InLoc::Heap(*h),
                Some(Loc::Var(v)) => InLoc::Var(*v),
                // A tensor nothing writes reads as empty, as an omitted one would.
                Some(Loc::Absent) | None => InLoc::None,
            };
            ins.push((t, loc));
        }
        Ok(StepIo {
            ins,
            outs,
            arena_outs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_placed_in_the_gaps_between_outputs() {
        let locs = vec![
            Loc::Arena(0..64),
            Loc::Arena(64..128),
            Loc::Arena(128..192),
            Loc::Const,
            Loc::Var(0),
        ];
        // Reads 0 and 2 and the constant, writes 1 and the variable.
        let io = StepIo::build(&locs, &[Some(0), Some(2), Some(3), None], &[1, 4], &[]).unwrap();
        assert_eq!(io.arena_outs, vec![(0, 64..128)]);
        assert_eq!(io.outs, vec![(1, OutLoc::Arena(0)), (4, OutLoc::Var(0))]);
        assert_eq!(
            io.ins,
            vec![
                (
                    0,
                    InLoc::Gap {
                        gap: 0,
                        range: 0..64
                    }
                ),
                (
                    2,
                    InLoc::Gap {
                        gap: 1,
                        range: 0..64
                    }
                ),
                (3, InLoc::Const),
                (usize::MAX, InLoc::None),
            ]
        );
    }

    #[test]
    fn overlapping_and_unwritable_outputs_are_refused() {
        let locs = vec![Loc::Arena(0..64), Loc::Arena(32..96), Loc::Const];
        assert!(StepIo::build(&locs, &[], &[0, 1], &[]).is_err());
        assert!(StepIo::build(&locs, &[], &[2], &[]).is_err());
        assert!(StepIo::build(&locs, &[Some(1)], &[0], &[]).is_err());
        assert!(StepIo::build(&locs, &[], &[0, 0], &[]).is_err());
    }
}
