//! STRIDED_SLICE (begin/end/ellipsis/new-axis/shrink-axis masks, `offset`, negative
//! strides) and SLICE (begin and size, size -1 meaning "to the end").
//!
//! Prepare turns the index inputs into one strided walk over the input (start offset and
//! a signed stride per input dimension), using LiteRT's rules for clamping, masks and
//! `offset`; eval is then a single strided copy into the dense output. Index inputs known
//! only at run time make the node lazy (prepared again with their values).
//!
//! Where LiteRT leaves the output unwritten we choose instead: a shrunk axis takes the
//! element at its start whatever the stride's sign, a shrunk index outside the axis is an
//! error, and with `offset` the output holds what the clamped range reads.

use switchyard_interpreter::{
    BuiltinOp, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorMeta,
    TensorView, TensorViewMut, ops::StridedSliceOptions,
};

use super::movement::{
    Walk, checked_input, copy_strided, count, expect_bytes, known_ints, movable_elem,
    row_major_strides, same_dtype,
};
use crate::registry::OpDescriptor;
use crate::support;

/// STRIDED_SLICE, SLICE.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::StridedSlice, prepare)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Slice, prepare),
];

/// A strided walk over the input that produces the output in row-major order.
struct Sliced {
    elem: usize,
    in_shape: Vec<usize>,
    walk: Walk,
    /// One entry per input dimension: how many elements the walk takes there.
    walk_shape: Vec<usize>,
    /// The dense output layout of `walk_shape`, made once at prepare.
    out_walk: Walk,
}

impl OpKernel for Sliced {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = checked_input(inputs, 0, &self.in_shape, self.elem)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        expect_bytes("output", out.bytes.len(), &self.walk_shape, self.elem)?;
        copy_strided(
            x.bytes,
            &self.walk,
            out.bytes,
            &self.out_walk,
            &self.walk_shape,
            self.elem,
        )
    }

    fn name(&self) -> &str {
        "slice"
    }
}

/// One spec entry of a strided slice after the ellipsis is expanded.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// A dimension of length 1 inserted into the output.
    NewAxis,
    /// The whole input dimension (from the ellipsis or past the end of the spec).
    Full,
    Index {
        begin: i64,
        end: i64,
        stride: i64,
        begin_masked: bool,
        end_masked: bool,
        shrink: bool,
    },
}

fn bit(mask: i32, i: usize) -> bool {
    i < 32 && mask & (1 << i) != 0
}

/// Expands the spec (with its masks) to one entry per effective dimension (input
/// dimensions plus inserted axes), the way LiteRT reads it:
/// - the ellipsis covers the input dimensions the other entries leave, but always at
///   least one, and spec entries beyond the effective rank are dropped (TensorFlow
///   would reject such specs; LiteRT accepts them, and so do we);
/// - a new-axis bit on the ellipsis entry is ignored;
/// - dimensions past the end of the spec are taken whole.
///
/// Mask bits beyond the spec's length are ignored.
fn expand_spec(
    begin: &[i64],
    end: &[i64],
    strides: &[i64],
    o: &StridedSliceOptions,
    rank: usize,
) -> Result<Vec<Entry>, KernelError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Ellipsis,
        NewAxis,
        Spec,
    }
    let n = begin.len();
    let low = |mask: i32| if n >= 32 { mask } else { mask & ((1 << n) - 1) };
    let (ellipsis_mask, new_axis_mask) = (low(o.ellipsis_mask), low(o.new_axis_mask));
    if ellipsis_mask.count_ones() > 1 {
        return Err(KernelError::invalid(format!(
            "ellipsis_mask {ellipsis_mask:#b} has more than one ellipsis"
        )));
    }
    let new_axes = (0..n)
        .filter(|&i| bit(new_axis_mask, i) && !bit(ellipsis_mask, i))
        .count();
    let effective = rank + new_axes;

    let mut kinds = vec![Kind::Spec; effective];
    let (mut ellipsis_start, mut expanded) = (effective, 0usize);
    let mut i = 0;
    while i < effective {
        if bit(ellipsis_mask, i) {
            ellipsis_start = i;
            let wanted = (i + 1 + new_axes + rank) as i64 - n as i64;
            let end = (wanted.min(effective as i64).max(0) as usize).max(i + 1);
            expanded = end - i - 1;
            kinds[i..end].fill(Kind::Ellipsis);
            i = end;
            continue;
        }
        if bit(new_axis_mask, i - expanded) {
            kinds[i] = Kind::NewAxis;
        }
        i += 1;
    }

    let mut entries = Vec::with_capacity(effective);
    let mut added_ellipsis = 0;
    for (i, kind) in kinds.into_iter().enumerate() {
        let entry = match kind {
            Kind::Ellipsis => {
                added_ellipsis = i - ellipsis_start;
                Entry::Full
            }
            Kind::NewAxis => Entry::NewAxis,
            Kind::Spec if i >= n + expanded => Entry::Full,
            Kind::Spec => {
                let k = i - added_ellipsis;
                let (Some(&begin), Some(&end), Some(&stride)) =
                    (begin.get(k), end.get(k), strides.get(k))
                else {
                    return Err(KernelError::invalid(format!(
                        "slice spec entry {k} is missing"
                    )));
                };
                Entry::Index {
                    begin,
                    end,
                    stride,
                    begin_masked: bit(o.begin_mask, k),
                    end_masked: bit(o.end_mask, k),
                    shrink: bit(o.shrink_axis_mask, k),
                }
            }
        };
        entries.push(entry);
    }
    let consumed = entries
        .iter()
        .filter(|e| !matches!(e, Entry::NewAxis))
        .count();
    if consumed != rank {
        return Err(KernelError::invalid(format!(
            "slice spec of {n} entries with masks {o:?} does not fit a rank-{rank} input"
        )));
    }
    Ok(entries)
}

/// LiteRT's start index along one axis: negative counts from the end, then clamp to the
/// range the stride direction allows, then the begin mask wins.
fn start_for_axis(begin: i64, stride: i64, masked: bool, size: i64) -> i64 {
    let mut start = if begin < 0 { begin + size } else { begin };
    start = if stride > 0 {
        start.clamp(0, size)
    } else {
        start.clamp(-1, size - 1)
    };
    if masked {
        start = if stride > 0 { 0 } else { size - 1 };
    }
    start
}

/// LiteRT's end index along one axis; with `offset` the end is relative to the start.
fn end_for_axis(end: i64, start: i64, stride: i64, masked: bool, offset: bool, size: i64) -> i64 {
    let mut stop = if offset {
        end.saturating_add(start)
    } else {
        end
    };
    if stop < 0 {
        stop = stop.saturating_add(size);
    }
    stop = if stride > 0 {
        stop.clamp(0, size)
    } else {
        stop.clamp(-1, size - 1)
    };
    if masked {
        stop = if stride > 0 { size } else { -1 };
    }
    stop
}

/// Output shape and input walk of a strided slice.
fn plan_strided_slice(
    shape: &[usize],
    begin: &[i64],
    end: &[i64],
    strides: &[i64],
    o: &StridedSliceOptions,
) -> Result<(Vec<usize>, Walk, Vec<usize>), KernelError> {
    let entries = expand_spec(begin, end, strides, o, shape.len())?;
    let in_strides = row_major_strides(shape);
    let mut out_shape = Vec::new();
    let mut walk = Walk {
        offset: 0,
        strides: Vec::with_capacity(shape.len()),
    };
    let mut walk_shape = Vec::with_capacity(shape.len());
    let mut d = 0usize;
    for e in entries {
        let (size, in_stride) = match e {
            Entry::NewAxis => {
                out_shape.push(1);
                continue;
            }
            _ => (
                shape[d] as i64,
                isize::try_from(in_strides[d]).unwrap_or(isize::MAX),
            ),
        };
        let (start, len, step) = match e {
            Entry::Full | Entry::NewAxis => (0, size, 1),
            Entry::Index {
                begin,
                end,
                stride,
                begin_masked,
                end_masked,
                shrink,
            } => {
                if stride == 0 {
                    return Err(KernelError::invalid(format!(
                        "stride of dimension {d} is 0"
                    )));
                }
                let start = start_for_axis(begin, stride, begin_masked, size);
                if shrink {
                    if !(0..size).contains(&start) {
                        return Err(KernelError::shape(format!(
                            "shrunk index {begin} is out of range for dimension {d} of size {size}"
                        )));
                    }
                    (start, 1, 1)
                } else {
                    let stop = end_for_axis(end, start, stride, end_masked, o.offset, size);
                    let span = stop - start;
                    // ceil(span / stride), never negative.
                    let len = if (span > 0) == (stride > 0) && span != 0 {
                        (span.abs() + stride.abs() - 1) / stride.abs()
                    } else {
                        0
                    };
                    (start, len, stride)
                }
            }
        };
        let keep = !matches!(e, Entry::Index { shrink: true, .. });
        if keep {
            out_shape.push(len as usize);
        }
        walk_shape.push(len as usize);
        // Saturating: a shape with a zero dimension has no elements whatever its other
        // dimensions, so those (hostile) may be near usize::MAX; such a walk never reads.
        walk.offset = walk
            .offset
            .saturating_add((start.max(0) as usize).saturating_mul(in_strides[d]));
        walk.strides.push((step as isize).saturating_mul(in_stride));
        d += 1;
    }
    // An empty output never reads, so an offset at the very end is harmless.
    Ok((out_shape, walk, walk_shape))
}

/// Reads a 1-D index input of `len` values.
fn index_vector(
    meta: &TensorMeta<'_>,
    what: &str,
    len: Option<usize>,
) -> Result<Vec<i64>, KernelError> {
    if meta.shape.len() != 1 {
        return Err(KernelError::shape(format!(
            "{what} must be a vector, has shape {:?}",
            meta.shape
        )));
    }
    let v = known_ints(meta, what)?;
    if let Some(len) = len.filter(|&len| v.len() != len) {
        return Err(KernelError::shape(format!(
            "{what} has {} values, expected {len}",
            v.len()
        )));
    }
    Ok(v)
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let elem = movable_elem(x.dtype)?;
    same_dtype(x.dtype, ctx.output(0)?.dtype)?;
    count(x.shape)?;
    let (out_shape, walk, walk_shape) = match ctx.op().builtin() {
        Some(BuiltinOp::StridedSlice) => {
            ctx.expect_arity(3, 4, 1)?;
            let begin = index_vector(&ctx.input(1)?, "begin", None)?;
            let n = begin.len();
            let end = index_vector(&ctx.input(2)?, "end", Some(n))?;
            let strides = match ctx.optional_input(3) {
                Some(s) => index_vector(&s, "strides", Some(n))?,
                None => vec![1; n],
            };
            let options = match &ctx.node.options {
                OpOptions::StridedSlice(o) => o.clone(),
                _ => StridedSliceOptions::default(),
            };
            plan_strided_slice(x.shape, &begin, &end, &strides, &options)?
        }
        Some(BuiltinOp::Slice) => {
            ctx.expect_arity(3, 3, 1)?;
            let rank = x.shape.len();
            let begin = index_vector(&ctx.input(1)?, "begin", Some(rank))?;
            let size = index_vector(&ctx.input(2)?, "size", Some(rank))?;
            let strides = row_major_strides(x.shape);
            let mut walk = Walk {
                offset: 0,
                strides: strides
                    .iter()
                    .map(|&s| isize::try_from(s).unwrap_or(isize::MAX))
                    .collect(),
            };
            let mut shape = Vec::with_capacity(rank);
            for d in 0..rank {
                let dim = x.shape[d] as i64;
                let b = begin[d];
                let s = if size[d] == -1 { dim - b } else { size[d] };
                if b < 0 || s < 0 || b > dim || s > dim - b {
                    return Err(KernelError::shape(format!(
                        "slice of dimension {d} (size {dim}) from {b} with size {} is out of range",
                        size[d]
                    )));
                }
                // Saturating, as in `plan_strided_slice`: only an empty input can
                // have strides this large, and its walk never reads.
                walk.offset = walk
                    .offset
                    .saturating_add((b as usize).saturating_mul(strides[d]));
                shape.push(s as usize);
            }
            (shape.clone(), walk, shape)
        }
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a slice",
                ctx.op()
            )));
        }
    };
    Ok(PreparedKernel::new(
        vec![out_shape],
        Sliced {
            elem,
            in_shape: x.shape.to_vec(),
            walk,
            out_walk: Walk::contiguous(&walk_shape),
            walk_shape,
        },
    ))
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpKind, Quant, Tensor};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    struct Case {
        shape: Vec<usize>,
        begin: Vec<i32>,
        end: Vec<i32>,
        strides: Vec<i32>,
        o: StridedSliceOptions,
    }

    fn case(shape: &[usize], begin: &[i32], end: &[i32], strides: &[i32]) -> Case {
        Case {
            shape: shape.to_vec(),
            begin: begin.to_vec(),
            end: end.to_vec(),
            strides: strides.to_vec(),
            o: StridedSliceOptions::default(),
        }
    }

    fn model(c: &Case, dtype: DType, constant: bool, version: i32) -> ModelBuilder {
        let b: Vec<i64> = c.begin.iter().map(|&v| v as i64).collect();
        let e: Vec<i64> = c.end.iter().map(|&v| v as i64).collect();
        let s: Vec<i64> = c.strides.iter().map(|&v| v as i64).collect();
        let (out, _, _) = plan_strided_slice(&c.shape, &b, &e, &s, &c.o).unwrap();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, &c.shape);
        let n = c.begin.len();
        let idx: Vec<usize> = [
            ("begin", &c.begin),
            ("end", &c.end),
            ("strides", &c.strides),
        ]
        .into_iter()
        .map(|(name, v)| {
            if constant {
                sg.constant_i32(name, &[n], v)
            } else {
                sg.tensor(name, DType::I32, &[n])
            }
        })
        .collect();
        let y = sg.tensor("y", dtype, &out);
        if dtype.is_quantized_int() {
            sg.set_quant(x, Quant::per_tensor(0.3, 4));
            sg.set_quant(y, Quant::per_tensor(0.3, 4));
        }
        sg.op_versioned(
            OpKind::Builtin(BuiltinOp::StridedSlice),
            version,
            &[Some(x), Some(idx[0]), Some(idx[1]), Some(idx[2])],
            &[y],
            OpOptions::StridedSlice(c.o.clone()),
        );
        if constant {
            sg.set_inputs(&[x]);
        } else {
            sg.set_inputs(&[x, idx[0], idx[1], idx[2]]);
        }
        sg.set_outputs(&[y]);
        mb
    }

    fn check(c: &Case, dtype: DType, constant: bool, label: &str) {
        let mut inputs = vec![data(dtype, &c.shape, 11)];
        if !constant {
            for v in [&c.begin, &c.end, &c.strides] {
                inputs.push(ints(&[v.len()], v));
            }
        }
        let version = if dtype == DType::I8 { 2 } else { 1 };
        assert_matches_litert(
            &format!("STRIDED_SLICE {label} {dtype} const={constant}"),
            &model(c, dtype, constant, version).finish(),
            &inputs,
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    fn masks(
        begin: i32,
        end: i32,
        ellipsis: i32,
        new_axis: i32,
        shrink: i32,
    ) -> StridedSliceOptions {
        StridedSliceOptions {
            begin_mask: begin,
            end_mask: end,
            ellipsis_mask: ellipsis,
            new_axis_mask: new_axis,
            shrink_axis_mask: shrink,
            offset: false,
        }
    }

    fn cases() -> Vec<(&'static str, Case)> {
        let s = [3usize, 4, 5];
        vec![
            ("plain", case(&s, &[1, 0, 1], &[3, 4, 4], &[1, 2, 1])),
            (
                "negative indices",
                case(&s, &[-2, -4, -1], &[-1, -1, -6], &[1, 1, -1]),
            ),
            (
                "negative strides",
                case(&s, &[2, 3, 4], &[0, 0, 0], &[-1, -2, -3]),
            ),
            (
                "out of range clamps",
                case(&s, &[-10, 1, 7], &[10, 100, -10], &[1, 1, -1]),
            ),
            ("short spec", case(&s, &[1], &[2], &[1])),
            (
                "begin mask",
                Case {
                    o: masks(0b101, 0, 0, 0, 0),
                    ..case(&s, &[2, 1, 3], &[3, 3, 5], &[1, 1, 1])
                },
            ),
            (
                "end mask",
                Case {
                    o: masks(0, 0b110, 0, 0, 0),
                    ..case(&s, &[0, 1, 3], &[2, 0, 0], &[1, 1, -1])
                },
            ),
            (
                "shrink axis",
                Case {
                    o: masks(0, 0, 0, 0, 0b101),
                    ..case(&s, &[1, 0, -1], &[2, 4, 0], &[1, 1, 1])
                },
            ),
            (
                "ellipsis first",
                Case {
                    o: masks(0, 0, 0b1, 0, 0),
                    ..case(&s, &[0, 1], &[0, 4], &[1, 2])
                },
            ),
            (
                "ellipsis middle",
                Case {
                    o: masks(0, 0, 0b10, 0, 0b1),
                    ..case(&s, &[1, 0, 2], &[2, 0, 5], &[1, 1, 1])
                },
            ),
            (
                "new axis",
                Case {
                    o: masks(0, 0, 0, 0b101, 0),
                    ..case(&s, &[0, 1, 0, 2], &[1, 3, 1, 4], &[1, 1, 1, 1])
                },
            ),
            (
                "new axis and ellipsis",
                Case {
                    o: masks(0, 0, 0b10, 0b1, 0),
                    ..case(&s, &[0, 0, 1], &[1, 0, 3], &[1, 1, 1])
                },
            ),
            (
                "offset",
                Case {
                    o: StridedSliceOptions {
                        offset: true,
                        ..Default::default()
                    },
                    ..case(&s, &[1, -3, 0], &[2, 2, 5], &[1, 1, 2])
                },
            ),
            ("empty", case(&s, &[2, 0, 0], &[1, 4, 5], &[1, 1, 1])),
        ]
    }

    #[test]
    fn strided_slice_matches_litert_float() {
        for (label, c) in cases() {
            check(&c, DType::F32, true, label);
        }
    }

    #[test]
    fn strided_slice_matches_litert_other_dtypes() {
        let (_, c) = &cases()[1];
        for dtype in [
            DType::I8,
            DType::U8,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::Bool,
        ] {
            check(c, dtype, true, "negative indices");
        }
        let (_, c) = &cases()[7];
        check(c, DType::I8, true, "shrink axis");
    }

    #[test]
    fn strided_slice_with_runtime_indices_matches_litert() {
        for i in [0, 2, 7, 12] {
            let (label, c) = &cases()[i];
            check(c, DType::F32, false, label);
        }
    }

    fn slice_model(
        shape: &[usize],
        begin: &[i32],
        size: &[i32],
        out: &[usize],
        dtype: DType,
        constant: bool,
    ) -> ModelBuilder {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, shape);
        let (b, s) = if constant {
            (
                sg.constant_i32("begin", &[begin.len()], begin),
                sg.constant_i32("size", &[size.len()], size),
            )
        } else {
            (
                sg.tensor("begin", DType::I32, &[begin.len()]),
                sg.tensor("size", DType::I32, &[size.len()]),
            )
        };
        let y = sg.tensor("y", dtype, out);
        sg.op(
            OpKind::Builtin(BuiltinOp::Slice),
            &[Some(x), Some(b), Some(s)],
            &[y],
            OpOptions::None,
        );
        if constant {
            sg.set_inputs(&[x]);
        } else {
            sg.set_inputs(&[x, b, s]);
        }
        sg.set_outputs(&[y]);
        mb
    }

    #[test]
    fn slice_matches_litert() {
        let shape = [3usize, 4, 5];
        for (begin, size, out) in [
            ([1, 0, 2], [2, 4, 3], [2, 4, 3]),
            ([0, 1, 0], [-1, 2, -1], [3, 2, 5]),
            ([2, 3, 4], [1, 1, 1], [1, 1, 1]),
        ] {
            for dtype in [
                DType::F32,
                DType::I8,
                DType::U8,
                DType::I32,
                DType::I64,
                DType::Bool,
            ] {
                assert_matches_litert(
                    &format!("SLICE {begin:?} {size:?} {dtype}"),
                    &slice_model(&shape, &begin, &size, &out, dtype, true).finish(),
                    &[data(dtype, &shape, 3)],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
            let inputs: Vec<Tensor> = vec![
                data(DType::F32, &shape, 4),
                ints(&[3], &begin),
                ints(&[3], &size),
            ];
            assert_matches_litert(
                &format!("SLICE runtime {begin:?} {size:?}"),
                &slice_model(&shape, &begin, &size, &out, DType::F32, false).finish(),
                &inputs,
                &resolvers(),
                Some(Tolerance::Exact),
            );
        }
    }

    /// Random specs (masks, negative and out-of-range indices, negative strides) on
    /// random shapes: wherever we accept the spec, LiteRT must produce the same tensor.
    #[test]
    fn random_strided_slices_match_litert() {
        let mut rng = switchyard_testkit::Rng::new(42);
        let mut checked = 0;
        while checked < 40 {
            let rank = rng.int(1, 3) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| rng.int(1, 5) as usize).collect();
            let n = rng.int(1, rank as i64 + 1) as usize;
            let mut pick = |lo, hi| (0..n).map(|_| rng.int(lo, hi) as i32).collect::<Vec<_>>();
            let (begin, end) = (pick(-6, 6), pick(-6, 6));
            let strides: Vec<i32> = pick(-2, 2)
                .into_iter()
                .map(|v| if v == 0 { 1 } else { v })
                .collect();
            let mask = |rng: &mut switchyard_testkit::Rng, p: i64| {
                (0..n).fold(0i32, |m, i| if rng.int(0, 99) < p { m | 1 << i } else { m })
            };
            let ellipsis: i32 = mask(&mut rng, 15);
            // At most one ellipsis bit.
            let ellipsis = ellipsis & ellipsis.wrapping_neg();
            let o = masks(
                mask(&mut rng, 30),
                mask(&mut rng, 30),
                ellipsis,
                mask(&mut rng, 15),
                mask(&mut rng, 25),
            );
            let b: Vec<i64> = begin.iter().map(|&v| v as i64).collect();
            let e: Vec<i64> = end.iter().map(|&v| v as i64).collect();
            let st: Vec<i64> = strides.iter().map(|&v| v as i64).collect();
            let Ok((out, _, _)) = plan_strided_slice(&shape, &b, &e, &st, &o) else {
                continue;
            };
            // LiteRT handles at most 5 effective dimensions, and writes nothing for a
            // shrunk axis with a negative stride (its loop runs from start to start + 1
            // downwards); we take the element at the start there.
            let negative_shrink = (0..n).any(|i| {
                strides[i] < 0
                    && bit(o.shrink_axis_mask, i)
                    && !bit(o.ellipsis_mask | o.new_axis_mask, i)
            });
            if out.len() > 5 || out.iter().product::<usize>() == 0 || negative_shrink {
                continue;
            }
            let c = Case {
                shape,
                begin,
                end,
                strides,
                o,
            };
            check(
                &c,
                DType::F32,
                true,
                &format!("random {:?} {:?} {:?} {:?}", c.begin, c.end, c.strides, c.o),
            );
            checked += 1;
        }
    }

    #[test]
    fn bad_slices_are_errors() {
        let x = data(DType::F32, &[3, 4, 5], 1);
        let mut c = case(&[3, 4, 5], &[0, 0, 0], &[1, 1, 1], &[1, 1, 1]);
        let mut mb = model(&c, DType::F32, true, 1);
        mb.main().spec_mut(3).data = Some(bytemuck::cast_slice(&[1i32, 0, 1]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "stride of dimension 1 is 0");
        c.o.shrink_axis_mask = 0b10;
        let mut mb = model(&c, DType::F32, true, 1);
        mb.main().spec_mut(1).data = Some(bytemuck::cast_slice(&[0i32, 4, 0]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "out of range");
        let five = case(&[3, 4, 5], &[0, 0, 0, 0], &[1, 1, 1, 1], &[1, 1, 1, 1]);
        let b: Vec<i64> = vec![0; 4];
        // LiteRT drops spec entries past the input's rank.
        let (out, _, _) = plan_strided_slice(&five.shape, &b, &[1; 4], &[1; 4], &five.o).unwrap();
        assert_eq!(out, vec![1, 1, 1]);
        assert!(
            plan_strided_slice(&[3], &[0, 0], &[1, 1], &[1, 1], &masks(0, 0, 0b11, 0, 0)).is_err()
        );
        // Runtime indices that are out of range fail the run.
        let c = case(&[3, 4, 5], &[0, 0, 0], &[1, 1, 1], &[1, 1, 1]);
        expect_error(
            &model(&c, DType::F32, false, 1),
            &[
                x.clone(),
                ints(&[3], &[0, 0, 0]),
                ints(&[3], &[1, 1, 1]),
                ints(&[3], &[1, 0, 1]),
            ],
            "stride of dimension 1 is 0",
        );
        let mb = slice_model(
            &[3, 4, 5],
            &[0, 0, 0],
            &[1, 1, 1],
            &[1, 1, 1],
            DType::F32,
            false,
        );
        expect_error(
            &mb,
            &[x.clone(), ints(&[3], &[0, 2, 0]), ints(&[3], &[1, 3, 1])],
            "out of range",
        );
        expect_error(
            &mb,
            &[x, ints(&[3], &[-1, 0, 0]), ints(&[3], &[1, 1, 1])],
            "out of range",
        );
    }

    /// Found by fuzzing: an empty input whose other dimensions are huge made the walk's
    /// offset and strides overflow. It has no elements, so the plan is an empty walk.
    #[test]
    fn an_empty_input_with_huge_dimensions_plans_without_overflow() {
        let huge = 1usize << 40;
        let (out, _, walk_shape) = plan_strided_slice(
            &[0, huge, huge, huge],
            &[0, 3, 5, 1],
            &[0, 4, 6, 2],
            &[1, 1, -1, 1],
            &StridedSliceOptions::default(),
        )
        .unwrap();
        assert_eq!(out.iter().product::<usize>(), 0);
        assert_eq!(walk_shape[0], 0);
    }
}
