//! Machinery shared by the data-movement ops (the reshape family, concatenation, split,
//! slices, transpose, pad, gather, depth/space). They never look at element values, so
//! they move elements of `elem` bytes and one kernel serves every fixed-size dtype.
//!
//! The reference and optimized modes share these kernels: a strided copy already runs as
//! `memcpy` over the longest contiguous runs, which is all an optimized copy would do.
//! Every copy checks the extent of both walks against the buffers before touching them,
//! so a shape that disagrees with a buffer is an error, never an out-of-bounds index.

use switchyard_interpreter::{DType, KernelError, TensorMeta, TensorView};

/// Bytes per element of a dtype that data-movement ops can carry. Strings (variable
/// length) and resource handles are refused.
pub fn movable_elem(dtype: DType) -> Result<usize, KernelError> {
    match dtype {
        DType::Str | DType::Resource | DType::Variant => Err(KernelError::dtype(
            "a fixed-size numeric or bool type",
            dtype,
        )),
        d => Ok(d.size()),
    }
}

/// Requires the output dtype to equal the input dtype (data movement never converts).
pub fn same_dtype(input: DType, output: DType) -> Result<(), KernelError> {
    if input != output {
        return Err(KernelError::invalid(format!(
            "output dtype {output} differs from input dtype {input}"
        )));
    }
    Ok(())
}

/// Reads an integer tensor's data (int32, int64 or int16) as `i64`s without requiring
/// alignment.
pub fn ints_of(dtype: DType, bytes: &[u8], what: &str) -> Result<Vec<i64>, KernelError> {
    let values = match dtype {
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        DType::I16 => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        other => {
            return Err(KernelError::dtype(format!("int32 or int64 {what}"), other));
        }
    };
    Ok(values)
}

/// The values of a shape-like input (a shape, axis, begin/end, paddings, ...): known at
/// prepare for constants, otherwise [`KernelError::NeedsValues`] so that the executor
/// prepares the node again at run time, when the values are there.
pub fn known_ints(meta: &TensorMeta<'_>, what: &str) -> Result<Vec<i64>, KernelError> {
    let bytes = meta.data.ok_or(KernelError::NeedsValues)?;
    let values = ints_of(meta.dtype, bytes, what)?;
    if values.len() != meta.element_count() {
        return Err(KernelError::shape(format!(
            "{what} of shape {:?} holds {} values",
            meta.shape,
            values.len()
        )));
    }
    Ok(values)
}

/// Like [`known_ints`] for a tensor that must hold exactly one value (axis inputs may be
/// scalars or one-element vectors).
pub fn known_scalar(meta: &TensorMeta<'_>, what: &str) -> Result<i64, KernelError> {
    match known_ints(meta, what)?.as_slice() {
        [v] => Ok(*v),
        other => Err(KernelError::shape(format!(
            "{what} must hold one value, holds {}",
            other.len()
        ))),
    }
}

/// Number of elements of `shape`, with overflow as an error.
pub fn count(shape: &[usize]) -> Result<usize, KernelError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError::shape(format!("shape {shape:?} overflows")))
}

/// Row-major element strides of `shape`.
pub fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Where the elements of one side of a copy live: element `(i0, i1, ...)` of the walked
/// shape is at `offset + Σ ik * strides[k]` (in elements, not bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub offset: usize,
    pub strides: Vec<isize>,
}

impl Walk {
    /// The dense row-major layout of `shape`.
    pub fn contiguous(shape: &[usize]) -> Walk {
        Walk {
            offset: 0,
            strides: row_major_strides(shape)
                .into_iter()
                .map(|s| s as isize)
                .collect(),
        }
    }

    /// Lowest and highest element index this walk reaches over `shape` (which must have
    /// no zero dimension).
    fn extent(&self, shape: &[usize]) -> Option<(i128, i128)> {
        let mut lo = self.offset as i128;
        let mut hi = lo;
        for (&n, &s) in shape.iter().zip(&self.strides) {
            let reach = (n as i128 - 1).checked_mul(s as i128)?;
            if reach < 0 {
                lo = lo.checked_add(reach)?;
            } else {
                hi = hi.checked_add(reach)?;
            }
        }
        Some((lo, hi))
    }

    fn check(
        &self,
        shape: &[usize],
        len: usize,
        elem: usize,
        what: &str,
    ) -> Result<(), KernelError> {
        if self.strides.len() != shape.len() {
            return Err(KernelError::invalid(format!(
                "{what} walk has {} strides for rank {}",
                self.strides.len(),
                shape.len()
            )));
        }
        let fits = self
            .extent(shape)
            .is_some_and(|(lo, hi)| lo >= 0 && (hi + 1) * (elem as i128) <= len as i128);
        if !fits {
            return Err(KernelError::shape(format!(
                "{what} walk over {shape:?} leaves its {len}-byte buffer"
            )));
        }
        Ok(())
    }
}

/// Copies the elements of `shape` from `src` (laid out by `from`) to `dst` (laid out by
/// `to`), `elem` bytes each.
pub fn copy_strided(
    src: &[u8],
    from: &Walk,
    dst: &mut [u8],
    to: &Walk,
    shape: &[usize],
    elem: usize,
) -> Result<(), KernelError> {
    if shape.contains(&0) || elem == 0 {
        return Ok(());
    }
    from.check(shape, src.len(), elem, "source")?;
    to.check(shape, dst.len(), elem, "destination")?;
    // Drop unit dimensions and merge neighbours that are contiguous in both walks, so
    // the innermost loop is as long as possible.
    // Ranks up to 8 (all TFLite tensors in practice) keep the loop state on the stack:
    // this runs on every slice, concatenation and transpose of every invoke.
    const INLINE: usize = 8;
    let mut dims_inline = [(0usize, 0isize, 0isize); INLINE];
    let mut idx_inline = [0usize; INLINE];
    let (mut dims_heap, mut idx_heap) = (Vec::new(), Vec::new());
    let (dims_buf, idx_buf): (&mut [(usize, isize, isize)], &mut [usize]) = if shape.len() <= INLINE
    {
        (&mut dims_inline, &mut idx_inline)
    } else {
        dims_heap.resize(shape.len(), (0, 0, 0));
        idx_heap.resize(shape.len(), 0);
        (&mut dims_heap, &mut idx_heap)
    };
    let mut len = 0usize;
    for ((&n, &s), &d) in shape.iter().zip(&from.strides).zip(&to.strides) {
        if n == 1 {
            continue;
        }
        match len.checked_sub(1).map(|l| &mut dims_buf[l]) {
            Some(last) if last.1 == s * n as isize && last.2 == d * n as isize => {
                *last = (last.0 * n, s, d);
            }
            _ => {
                dims_buf[len] = (n, s, d);
                len += 1;
            }
        }
    }
    let (inner_n, inner_s, inner_d) = match len.checked_sub(1) {
        Some(l) => {
            len = l;
            dims_buf[l]
        }
        None => (1, 1, 1),
    };
    let dims = &dims_buf[..len];
    let idx = &mut idx_buf[..len];
    let contiguous = inner_s == 1 && inner_d == 1;
    let (mut s, mut d) = (from.offset as isize, to.offset as isize);
    loop {
        // In bounds: both walks were checked against their buffers above.
        if contiguous {
            let (so, dof) = (s as usize * elem, d as usize * elem);
            let run = inner_n * elem;
            dst[dof..dof + run].copy_from_slice(&src[so..so + run]);
        } else {
            let run = (s, inner_s, d, inner_d, inner_n);
            // A fixed element size turns each copy into one load and one store instead
            // of a memcpy call (transposes move one element at a time).
            match elem {
                1 => strided_run::<1>(src, dst, run),
                2 => strided_run::<2>(src, dst, run),
                4 => strided_run::<4>(src, dst, run),
                8 => strided_run::<8>(src, dst, run),
                _ => {
                    for j in 0..inner_n as isize {
                        let so = (s + j * inner_s) as usize * elem;
                        let dof = (d + j * inner_d) as usize * elem;
                        dst[dof..dof + elem].copy_from_slice(&src[so..so + elem]);
                    }
                }
            }
        }
        let mut k = dims.len();
        loop {
            if k == 0 {
                return Ok(());
            }
            k -= 1;
            let (n, ss, ds) = dims[k];
            idx[k] += 1;
            s += ss;
            d += ds;
            if idx[k] < n {
                break;
            }
            idx[k] = 0;
            s -= ss * n as isize;
            d -= ds * n as isize;
        }
    }
}

/// The innermost loop of [`copy_strided`] for `N`-byte elements: `n` elements from
/// element `s` of `src` (stride `ss`) to element `d` of `dst` (stride `ds`).
#[inline]
fn strided_run<const N: usize>(
    src: &[u8],
    dst: &mut [u8],
    (s, ss, d, ds, n): (isize, isize, isize, isize, usize),
) {
    for j in 0..n as isize {
        let so = (s + j * ss) as usize * N;
        let dof = (d + j * ds) as usize * N;
        dst[dof..dof + N].copy_from_slice(&src[so..so + N]);
    }
}

/// The byte length a tensor of `shape` must have.
pub fn byte_len(shape: &[usize], elem: usize) -> Result<usize, KernelError> {
    count(shape)?
        .checked_mul(elem)
        .ok_or_else(|| KernelError::shape(format!("shape {shape:?} overflows")))
}

/// Checks an eval-time buffer against the shape prepare computed. `what` is only
/// formatted on error: this runs on every step of small data-movement ops.
pub fn expect_bytes(
    what: impl std::fmt::Display,
    bytes: usize,
    shape: &[usize],
    elem: usize,
) -> Result<(), KernelError> {
    let want = byte_len(shape, elem)?;
    if bytes != want {
        return Err(KernelError::shape(format!(
            "{what} has {bytes} bytes, shape {shape:?} needs {want}"
        )));
    }
    Ok(())
}

/// Input `i` of an eval call, with its byte length checked against `shape`.
pub fn checked_input<'a, 'b>(
    inputs: &'b [Option<TensorView<'a>>],
    i: usize,
    shape: &[usize],
    elem: usize,
) -> Result<&'b TensorView<'a>, KernelError> {
    let x = switchyard_interpreter::kernel::input(inputs, i)?;
    expect_bytes(format_args!("input {i}"), x.bytes.len(), shape, elem)?;
    Ok(x)
}

/// Fills `dst` with copies of the `elem`-byte `value`.
pub fn fill(dst: &mut [u8], value: &[u8]) {
    if value.iter().all(|&b| b == 0) {
        dst.fill(0);
    } else if !value.is_empty() {
        for chunk in dst.chunks_exact_mut(value.len()) {
            chunk.copy_from_slice(value);
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! Helpers for the data-movement ops' tests.

    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpResolver, Tensor};
    use switchyard_testkit::{random_tensor, switchyard_run};

    use crate::CpuResolver;

    pub fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    /// Values spanning the dtype's range, so a misplaced byte shows.
    pub fn data(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
        let (lo, hi) = match dtype {
            DType::F32 => (-100.0, 100.0),
            DType::I32 | DType::I64 => (-100000.0, 100000.0),
            DType::I16 => (-32768.0, 32767.0),
            _ => (-128.0, 255.0),
        };
        random_tensor(dtype, shape, seed, lo, hi)
    }

    /// An int32 tensor, e.g. a runtime shape input.
    pub fn ints(shape: &[usize], values: &[i32]) -> Tensor {
        Tensor::from_bytes(DType::I32, shape.to_vec(), bytemuck::cast_slice(values))
            .expect("test tensor sizes agree")
    }

    /// Runs `model` on both resolvers and returns the error each gives (both must fail,
    /// neither may panic), checking each message contains `needle`.
    pub fn expect_error(model: &ModelBuilder, inputs: &[Tensor], needle: &str) {
        let bytes = model.finish();
        for (name, r) in resolvers() {
            match switchyard_run(&bytes, inputs, r) {
                Ok(out) => panic!("[{name}] expected an error containing {needle:?}, got {out:?}"),
                Err(e) => assert!(
                    e.contains(needle),
                    "[{name}] error {e:?} does not mention {needle:?}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, Model, OpKind, Tensor};
    use switchyard_testkit::{Tolerance, assert_matches_litert, models_dir, random_tensor};

    use super::testing::resolvers;
    use super::*;

    /// Every data-movement node of the real models, cut out into a single-op model with
    /// its real constants, shapes, quantization, options and version, on random inputs,
    /// must match LiteRT exactly. DENSIFY is left out: its input is sparse in the file
    /// and our writer stores dense data.
    #[test]
    fn real_model_nodes_match_litert() {
        use BuiltinOp as B;
        let ours = [
            B::Reshape,
            B::Squeeze,
            B::ExpandDims,
            B::Concatenation,
            B::Pack,
            B::Split,
            B::SplitV,
            B::Unpack,
            B::StridedSlice,
            B::Slice,
            B::Transpose,
            B::Gather,
            B::Pad,
            B::PadV2,
            B::MirrorPad,
            B::DepthToSpace,
            B::SpaceToDepth,
        ];
        let mut entries: Vec<_> = std::fs::read_dir(models_dir())
            .expect("models/ missing: run scripts/setup.sh")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
            .collect();
        entries.sort();
        let mut checked = 0;
        for path in entries {
            let model = Model::from_path(&path).unwrap();
            let sg = &model.subgraphs[0];
            for node in &sg.nodes {
                let Some(op) = node.builtin().filter(|b| ours.contains(b)) else {
                    continue;
                };
                let mut mb = ModelBuilder::new();
                let b = mb.main();
                let mut graph_inputs = Vec::new();
                let mut inputs = Vec::new();
                let mut skip = false;
                let mut ins = Vec::new();
                for t in &node.inputs {
                    let Some(t) = *t else {
                        ins.push(None);
                        continue;
                    };
                    let def = &sg.tensors[t];
                    let k = b.tensor(&def.name, def.dtype, &def.shape);
                    if let Some(q) = &def.quant {
                        b.set_quant(k, q.clone());
                    }
                    match &def.data {
                        Some(d) => b.spec_mut(k).data = Some(d.as_slice().to_vec()),
                        None if matches!(def.dtype, DType::I32 | DType::I64) => skip = true,
                        None => {
                            graph_inputs.push(k);
                            let (lo, hi) = if def.dtype == DType::F32 {
                                (-1.0, 1.0)
                            } else {
                                (-128.0, 255.0)
                            };
                            inputs.push(random_tensor(def.dtype, &def.shape, t as u64, lo, hi));
                        }
                    }
                    ins.push(Some(k));
                }
                if skip || graph_inputs.is_empty() {
                    continue;
                }
                let outs: Vec<usize> = node
                    .outputs
                    .iter()
                    .map(|&t| {
                        let def = &sg.tensors[t];
                        let k = b.tensor(&def.name, def.dtype, &def.shape);
                        if let Some(q) = &def.quant {
                            b.set_quant(k, q.clone());
                        }
                        k
                    })
                    .collect();
                b.op_versioned(
                    OpKind::Builtin(op),
                    node.version,
                    &ins,
                    &outs,
                    node.options.clone(),
                );
                b.set_inputs(&graph_inputs);
                b.set_outputs(&outs);
                let name = format!(
                    "{} node {} {op:?}",
                    path.file_stem().unwrap_or_default().to_string_lossy(),
                    node.index
                );
                let inputs: Vec<Tensor> = inputs;
                assert_matches_litert(
                    &name,
                    &mb.finish(),
                    &inputs,
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
                checked += 1;
            }
        }
        // The anchor models hold dozens of such nodes; finding none means a broken setup.
        assert!(checked >= 20, "only {checked} real nodes checked");
        eprintln!("checked {checked} real data-movement nodes");
    }

    #[test]
    fn strided_copy_reverses_and_transposes() {
        // 2x3 matrix of u16, read transposed and with the columns reversed.
        let src: Vec<u8> = (0u16..6).flat_map(|v| v.to_le_bytes()).collect();
        let mut dst = vec![0u8; 12];
        let from = Walk {
            offset: 2,
            strides: vec![-1, 3],
        };
        copy_strided(
            &src,
            &from,
            &mut dst,
            &Walk::contiguous(&[3, 2]),
            &[3, 2],
            2,
        )
        .unwrap();
        let got: Vec<u16> = dst
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, vec![2, 5, 1, 4, 0, 3]);
    }

    #[test]
    fn walks_outside_the_buffer_are_errors() {
        let src = vec![0u8; 8];
        let mut dst = vec![0u8; 8];
        let from = Walk {
            offset: 0,
            strides: vec![-1],
        };
        let to = Walk::contiguous(&[2]);
        assert!(copy_strided(&src, &from, &mut dst, &to, &[2], 4).is_err());
        assert!(copy_strided(&src, &to, &mut dst, &to, &[3], 4).is_err());
        assert!(copy_strided(&src, &to, &mut dst, &to, &[0], 4).is_ok());
    }

    #[test]
    fn unaligned_ints_are_read() {
        let bytes = [0u8, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(ints_of(DType::I32, &bytes[1..], "x").unwrap(), vec![1, -1]);
        assert!(ints_of(DType::F32, &bytes[1..], "x").is_err());
    }
}
