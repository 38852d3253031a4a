//! Shape arithmetic shared by the kernels: broadcasting, padding, axis normalisation.

use switchyard_interpreter::{KernelError, Padding};

/// NumPy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, KernelError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(KernelError::shape(format!(
                    "cannot broadcast {a:?} with {b:?}"
                )));
            }
        };
    }
    Ok(out)
}

/// Row-major strides of `shape` as seen from an output of rank `rank`, with stride 0 on
/// broadcast (size-1 or missing) dimensions.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let oi = i + rank - shape.len();
        strides[oi] = if shape[i] == 1 && out[oi] != 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// Calls `f(out_index, a_index, b_index)` for every element of the broadcast output.
pub fn for_each_broadcast(
    a: &[usize],
    b: &[usize],
    out: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let sa = broadcast_strides(a, out);
    let sb = broadcast_strides(b, out);
    let rank = out.len();
    let total: usize = out.iter().product();
    if total == 0 {
        return;
    }
    let mut idx = vec![0usize; rank];
    let (mut ia, mut ib) = (0usize, 0usize);
    for o in 0..total {
        f(o, ia, ib);
        // Increment the multi-index, updating both input offsets incrementally.
        for d in (0..rank).rev() {
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= sa[d] * out[d];
            ib -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// Output size and leading padding of one spatial dimension (TFLite's rules).
pub fn conv_output_size(
    input: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Result<(usize, usize), KernelError> {
    if stride == 0 || dilation == 0 || filter == 0 {
        return Err(KernelError::invalid(format!(
            "stride {stride}, dilation {dilation} and filter {filter} must be positive"
        )));
    }
    let effective = (filter - 1) * dilation + 1;
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => {
            if input < effective {
                return Err(KernelError::shape(format!(
                    "input size {input} is smaller than the effective filter {effective}"
                )));
            }
            (input - effective) / stride + 1
        }
    };
    let needed = (out.saturating_sub(1)) * stride + effective;
    let pad_total = needed.saturating_sub(input);
    let pad_before = match padding {
        Padding::Same => pad_total / 2,
        Padding::Valid => 0,
    };
    Ok((out, pad_before))
}

/// Normalises a possibly negative axis for a tensor of `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, KernelError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(KernelError::invalid(format!(
            "axis {axis} out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// Requires `shape` to have exactly `rank` dimensions.
pub fn expect_rank(what: &str, shape: &[usize], rank: usize) -> Result<(), KernelError> {
    if shape.len() != rank {
        return Err(KernelError::shape(format!(
            "{what} must have rank {rank}, has shape {shape:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes(&[2, 3], &[3, 2]).is_err());
    }

    #[test]
    fn broadcast_iteration_matches_naive() {
        let (a, b) = ([2usize, 1, 3], [4usize, 1]);
        let out = broadcast_shapes(&a, &b).unwrap();
        let mut seen = vec![];
        for_each_broadcast(&a, &b, &out, |o, ia, ib| seen.push((o, ia, ib)));
        assert_eq!(seen.len(), 24);
        // out index (i, j, k) -> a (i, 0, k), b (j, 0)
        for (o, ia, ib) in seen {
            let (i, j, k) = (o / 12, (o / 3) % 4, o % 3);
            assert_eq!(ia, i * 3 + k);
            assert_eq!(ib, j);
        }
    }

    #[test]
    fn same_and_valid_padding() {
        assert_eq!(conv_output_size(5, 3, 2, 1, Padding::Same).unwrap(), (3, 1));
        assert_eq!(
            conv_output_size(5, 3, 2, 1, Padding::Valid).unwrap(),
            (2, 0)
        );
        assert_eq!(conv_output_size(4, 3, 2, 1, Padding::Same).unwrap(), (2, 0));
        assert!(conv_output_size(2, 3, 1, 1, Padding::Valid).is_err());
    }
}
