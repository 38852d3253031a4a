//! Handing a step its tensors: the hot path of every run.
//!
//! A step's views were fixed at prepare ([`StepIo`]): which arena pieces, constants,
//! heap or variable tensors it reads and writes. Here the arena is split around the
//! step's outputs with `split_at_mut` (which proves to the compiler that outputs are
//! disjoint from each other and from every input), heap and variable outputs are lent
//! out of their slots for the call, and the views go to the kernel in stack arrays: no
//! allocation, search or lookup per step for the usual node (at most
//! [`MAX_INLINE_INPUTS`] inputs and [`MAX_INLINE_OUTPUTS`] outputs).

use std::sync::Arc;
use std::time::Duration;

use super::memory::MBuf;
use crate::error::KernelError;
use crate::model::Subgraph;
use crate::plan::Prepared;
use crate::plan::steps::{InLoc, Loc, OutLoc, StepIo};
use crate::tensor::{DType, TensorView, TensorViewMut};

/// Inputs a step may have for its views to live on the stack.
pub(crate) const MAX_INLINE_INPUTS: usize = 8;
/// Outputs (including tensors updated in place) likewise.
pub(crate) const MAX_INLINE_OUTPUTS: usize = 4;

/// A heap tensor of a session: its shape is only known at run time.
#[derive(Default)]
pub(crate) struct HeapTensor {
    pub shape: Vec<usize>,
    pub buf: MBuf,
}

/// A session's state for one subgraph at one prepared shape set.
pub(crate) struct SgState {
    pub prepared: Arc<Prepared>,
    pub arena: MBuf,
    pub heap: Vec<HeapTensor>,
    /// Time and count per step while profiling.
    pub timings: Vec<(Duration, u64)>,
}

/// Bytes of tensor `t` (empty for absent tensors).
pub(crate) fn tensor_bytes<'a>(
    sg: &'a Subgraph,
    st: &'a SgState,
    vars: &'a [MBuf],
    t: usize,
) -> &'a [u8] {
    let p = &*st.prepared;
    match p.locs.get(t) {
        Some(Loc::Const) => sg
            .tensors
            .get(t)
            .and_then(|d| d.data.as_ref())
            .map_or(&[], |d| d.as_slice()),
        Some(Loc::Folded(f)) => p.folded.get(*f).map_or(&[], |b| b.as_slice()),
        Some(Loc::Arena(r)) => st.arena.as_slice().get(r.clone()).unwrap_or_default(),
        Some(Loc::Heap(h)) => st.heap.get(*h).map_or(&[], |h| h.buf.as_slice()),
        Some(Loc::Var(v)) => vars.get(*v).map_or(&[], |b| b.as_slice()),
        Some(Loc::Absent) | None => &[],
    }
}

/// Bytes written to output `k` of a step.
pub(crate) fn written_bytes<'a>(
    st: &'a SgState,
    vars: &'a [MBuf],
    io: &StepIo,
    k: usize,
) -> &'a [u8] {
    match io.outs.get(k).map(|(_, loc)| loc) {
        Some(OutLoc::Arena(rank)) => io
            .arena_outs
            .get(*rank)
            .and_then(|(_, r)| st.arena.as_slice().get(r.clone()))
            .unwrap_or_default(),
        Some(OutLoc::Heap(h)) => st.heap.get(*h).map_or(&[], |h| h.buf.as_slice()),
        Some(OutLoc::Var(v)) => vars.get(*v).map_or(&[], |b| b.as_slice()),
        None => &[],
    }
}

/// Current shape of tensor `t`.
pub(crate) fn tensor_shape(st: &SgState, t: usize) -> &[usize] {
    let p = &*st.prepared;
    match p.locs.get(t) {
        Some(Loc::Heap(h)) => st.heap.get(*h).map_or(&[], |h| h.shape.as_slice()),
        _ => p.shapes.get(t).map_or(&[], Vec::as_slice),
    }
}

/// A read view of tensor `t`.
pub(crate) fn tensor_view<'a>(
    sg: &'a Subgraph,
    st: &'a SgState,
    vars: &'a [MBuf],
    t: usize,
) -> TensorView<'a> {
    let def = &sg.tensors[t];
    TensorView {
        dtype: def.dtype,
        shape: tensor_shape(st, t),
        quant: def.quant.as_ref(),
        bytes: tensor_bytes(sg, st, vars, t),
    }
}

fn placeholder<'a>() -> TensorViewMut<'a> {
    TensorViewMut {
        dtype: DType::U8,
        shape: &[],
        quant: None,
        bytes: &mut [],
    }
}

/// Calls `f` with the views of `io`'s inputs and outputs.
#[inline]
pub(crate) fn with_io<R>(
    sg: &Subgraph,
    st: &mut SgState,
    vars: &mut [MBuf],
    io: &StepIo,
    f: impl FnOnce(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    // The usual node writes one arena tensor from one to three inputs: views sized
    // exactly, nothing to lend.
    if io.outs.len() == 1 && io.arena_outs.len() == 1 {
        match io.ins.len() {
            1 => return arena_only::<1, R>(sg, st, vars, io, f),
            2 => return arena_only::<2, R>(sg, st, vars, io, f),
            3 => return arena_only::<3, R>(sg, st, vars, io, f),
            _ => {}
        }
    }
    let (n_in, n_out, n_gaps) = (io.ins.len(), io.outs.len(), io.arena_outs.len() + 1);
    if n_in <= MAX_INLINE_INPUTS && n_out <= MAX_INLINE_OUTPUTS {
        let mut taken: [MBuf; MAX_INLINE_OUTPUTS] = Default::default();
        lend(io, &mut st.heap, vars, &mut taken[..n_out]);
        let result = {
            let mut ins = [None; MAX_INLINE_INPUTS];
            let mut outs: [TensorViewMut<'_>; MAX_INLINE_OUTPUTS] =
                std::array::from_fn(|_| placeholder());
            let mut gaps: [&[u8]; MAX_INLINE_OUTPUTS + 1] = [&[]; MAX_INLINE_OUTPUTS + 1];
            views(
                sg,
                &st.prepared,
                st.arena.as_mut_slice(),
                &st.heap,
                vars,
                io,
                &mut taken[..n_out],
                &mut gaps[..n_gaps],
                &mut ins[..n_in],
                &mut outs[..n_out],
                f,
            )
        };
        give_back(io, &mut st.heap, vars, &mut taken[..n_out]);
        result
    } else {
        let mut taken: Vec<MBuf> = (0..n_out).map(|_| MBuf::default()).collect();
        lend(io, &mut st.heap, vars, &mut taken);
        let result = {
            let mut ins = vec![None; n_in];
            let mut outs: Vec<TensorViewMut<'_>> = (0..n_out).map(|_| placeholder()).collect();
            let mut gaps: Vec<&[u8]> = vec![&[]; n_gaps];
            views(
                sg,
                &st.prepared,
                st.arena.as_mut_slice(),
                &st.heap,
                vars,
                io,
                &mut taken,
                &mut gaps,
                &mut ins,
                &mut outs,
                f,
            )
        };
        give_back(io, &mut st.heap, vars, &mut taken);
        result
    }
}

/// One arena output, `N` inputs: the hot path of most steps.
#[inline]
fn arena_only<const N: usize, R>(
    sg: &Subgraph,
    st: &mut SgState,
    vars: &[MBuf],
    io: &StepIo,
    f: impl FnOnce(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    let mut ins = [None; N];
    let mut outs = [placeholder()];
    let mut gaps: [&[u8]; 2] = [&[]; 2];
    views(
        sg,
        &st.prepared,
        st.arena.as_mut_slice(),
        &st.heap,
        vars,
        io,
        &mut [],
        &mut gaps,
        &mut ins,
        &mut outs,
        f,
    )
}

/// Moves heap and variable outputs out of their slots for the call.
fn lend(io: &StepIo, heap: &mut [HeapTensor], vars: &mut [MBuf], taken: &mut [MBuf]) {
    for ((_, loc), slot) in io.outs.iter().zip(taken.iter_mut()) {
        match loc {
            OutLoc::Heap(h) => {
                if let Some(h) = heap.get_mut(*h) {
                    *slot = std::mem::take(&mut h.buf);
                }
            }
            OutLoc::Var(v) => {
                if let Some(v) = vars.get_mut(*v) {
                    *slot = std::mem::take(v);
                }
            }
            OutLoc::Arena(_) => {}
        }
    }
}

fn give_back(io: &StepIo, heap: &mut [HeapTensor], vars: &mut [MBuf], taken: &mut [MBuf]) {
    for ((_, loc), slot) in io.outs.iter().zip(taken.iter_mut()) {
        match loc {
            OutLoc::Heap(h) => {
                if let Some(h) = heap.get_mut(*h) {
                    h.buf = std::mem::take(slot);
                }
            }
            OutLoc::Var(v) => {
                if let Some(v) = vars.get_mut(*v) {
                    *v = std::mem::take(slot);
                }
            }
            OutLoc::Arena(_) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn views<'a, R>(
    sg: &'a Subgraph,
    prepared: &'a Prepared,
    arena: &'a mut [u8],
    heap: &'a [HeapTensor],
    vars: &'a [MBuf],
    io: &StepIo,
    taken: &'a mut [MBuf],
    gaps: &mut [&'a [u8]],
    ins: &mut [Option<TensorView<'a>>],
    outs: &mut [TensorViewMut<'a>],
    f: impl FnOnce(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    let broken = || KernelError::invalid("step views do not fit the arena");
    let shape_of = |t: usize| prepared.shapes.get(t).map_or(&[][..], Vec::as_slice);
    let mut rest = arena;
    let mut cursor = 0;
    for (rank, (k, range)) in io.arena_outs.iter().enumerate() {
        let gap_len = range.start.checked_sub(cursor).ok_or_else(broken)?;
        let (gap, tail) = rest.split_at_mut_checked(gap_len).ok_or_else(broken)?;
        let (out, tail) = tail.split_at_mut_checked(range.len()).ok_or_else(broken)?;
        *gaps.get_mut(rank).ok_or_else(broken)? = gap;
        let t = io.outs.get(*k).ok_or_else(broken)?.0;
        let def = sg.tensors.get(t).ok_or_else(broken)?;
        *outs.get_mut(*k).ok_or_else(broken)? = TensorViewMut {
            dtype: def.dtype,
            shape: shape_of(t),
            quant: def.quant.as_ref(),
            bytes: out,
        };
        rest = tail;
        cursor = range.end;
    }
    *gaps.last_mut().ok_or_else(broken)? = rest;
    for ((slot, (t, loc)), buf) in outs.iter_mut().zip(&io.outs).zip(taken.iter_mut()) {
        let shape = match loc {
            OutLoc::Arena(_) => continue,
            OutLoc::Heap(h) => heap.get(*h).map_or(&[][..], |h| h.shape.as_slice()),
            OutLoc::Var(_) => shape_of(*t),
        };
        let def = sg.tensors.get(*t).ok_or_else(broken)?;
        *slot = TensorViewMut {
            dtype: def.dtype,
            shape,
            quant: def.quant.as_ref(),
            bytes: buf.as_mut_slice(),
        };
    }
    for (slot, (t, loc)) in ins.iter_mut().zip(&io.ins) {
        let (bytes, shape): (&[u8], &[usize]) = match loc {
            InLoc::None => continue,
            InLoc::Const => (
                sg.tensors
                    .get(*t)
                    .and_then(|d| d.data.as_ref())
                    .map_or(&[], |d| d.as_slice()),
                shape_of(*t),
            ),
            InLoc::Folded(f) => (
                prepared.folded.get(*f).ok_or_else(broken)?.as_slice(),
                shape_of(*t),
            ),
            InLoc::Gap { gap, range } => (
                gaps.get(*gap)
                    .and_then(|g| g.get(range.clone()))
                    .ok_or_else(broken)?,
                shape_of(*t),
            ),
            InLoc::Heap(h) => {
                let h = heap.get(*h).ok_or_else(broken)?;
                (h.buf.as_slice(), h.shape.as_slice())
            }
            InLoc::Var(v) => (vars.get(*v).ok_or_else(broken)?.as_slice(), shape_of(*t)),
        };
        let def = sg.tensors.get(*t).ok_or_else(broken)?;
        *slot = Some(TensorView {
            dtype: def.dtype,
            shape,
            quant: def.quant.as_ref(),
            bytes,
        });
    }
    f(ins, outs)
}
