//! Sparse constant tensors (TFLite `SparsityParameters`): each traversal level is dense or
//! CSR; trailing levels may be block dimensions mapped onto original dimensions by
//! `block_map`. We expand them to dense data once, at load.

use crate::tensor::{AlignedBuf, DType, element_count};

#[derive(Clone, Debug)]
pub enum SparseDim {
    Dense {
        size: usize,
    },
    Csr {
        segments: Vec<usize>,
        indices: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
pub struct Sparsity {
    /// Order in which the (original + block) dimensions are stored.
    pub traversal_order: Vec<usize>,
    /// For each block dimension, which original dimension it subdivides.
    pub block_map: Vec<usize>,
    /// One entry per traversal level.
    pub dims: Vec<SparseDim>,
}

struct Walk<'a> {
    sp: &'a Sparsity,
    shape: &'a [usize],
    elem: usize,
    /// For each original dimension: its block size (1 when not blocked).
    block_size: Vec<usize>,
    /// Current index per expanded dimension (original dims, then block dims).
    index: Vec<usize>,
    src: &'a [u8],
    next_src: usize,
    dst: &'a mut [u8],
}

/// How many times larger than its stored values a densified tensor may be.
const MAX_EXPANSION: usize = 256;
/// Dense sizes below this are always accepted.
const EXPANSION_FLOOR: usize = 16 << 20;

/// Expands sparse `values` into a dense buffer of `shape`.
pub fn densify(
    sp: &Sparsity,
    shape: &[usize],
    dtype: DType,
    values: &[u8],
) -> Result<AlignedBuf, String> {
    let rank = shape.len();
    let levels = sp.traversal_order.len();
    if levels != rank + sp.block_map.len() || sp.dims.len() != levels {
        return Err(format!(
            "sparsity has {levels} traversal levels and {} dim entries for rank {rank} with {} block dims",
            sp.dims.len(),
            sp.block_map.len()
        ));
    }
    let mut seen = vec![false; levels];
    for &d in &sp.traversal_order {
        if d >= levels || std::mem::replace(&mut seen[d], true) {
            return Err(format!("bad traversal order {:?}", sp.traversal_order));
        }
    }
    let mut block_size = vec![1usize; rank];
    for (j, &orig) in sp.block_map.iter().enumerate() {
        if orig >= rank {
            return Err(format!("block map entry {orig} out of rank {rank}"));
        }
        let level = sp
            .traversal_order
            .iter()
            .position(|&d| d == rank + j)
            .unwrap_or(0);
        match sp.dims[level] {
            SparseDim::Dense { size } if size > 0 => block_size[orig] = size,
            _ => return Err("block dimensions must be dense with a positive size".into()),
        }
    }
    let elem = dtype.size();
    let total = element_count(shape)
        .and_then(|n| n.checked_mul(elem))
        .ok_or("dense shape overflows")?;
    // Sparse weights are at most a few times smaller than dense ones; a dense size far
    // beyond the stored values is a corrupted shape, and allocating it could abort.
    let limit = values
        .len()
        .saturating_mul(MAX_EXPANSION)
        .max(EXPANSION_FLOOR);
    if total > limit {
        return Err(format!(
            "dense shape {shape:?} needs {total} bytes from {} stored bytes (limit {limit})",
            values.len()
        ));
    }
    let mut out = AlignedBuf::zeroed(total);
    let mut walk = Walk {
        sp,
        shape,
        elem,
        block_size,
        index: vec![0; levels],
        src: values,
        next_src: 0,
        dst: out.as_mut_slice(),
    };
    walk.level(0, 0)?;
    Ok(out)
}

impl Walk<'_> {
    fn level(&mut self, level: usize, parent: usize) -> Result<(), String> {
        if level == self.sp.dims.len() {
            return self.emit();
        }
        let dim = self.sp.traversal_order[level];
        match &self.sp.dims[level] {
            SparseDim::Dense { size } => {
                for i in 0..*size {
                    self.index[dim] = i;
                    self.level(level + 1, parent * size + i)?;
                }
            }
            SparseDim::Csr { segments, indices } => {
                let (lo, hi) = match (segments.get(parent), segments.get(parent + 1)) {
                    (Some(&lo), Some(&hi)) if lo <= hi && hi <= indices.len() => (lo, hi),
                    _ => return Err("CSR segments out of range".into()),
                };
                for (k, &idx) in indices[lo..hi].iter().enumerate() {
                    self.index[dim] = idx;
                    self.level(level + 1, lo + k)?;
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<(), String> {
        let rank = self.shape.len();
        let mut flat = 0usize;
        for d in 0..rank {
            let mut i = self.index[d] * self.block_size[d];
            if let Some(j) = self.sp.block_map.iter().position(|&o| o == d) {
                i += self.index[rank + j];
            }
            if i >= self.shape[d] {
                return Err(format!(
                    "sparse index {i} outside dimension {d} of {:?}",
                    self.shape
                ));
            }
            flat = flat * self.shape[d] + i;
        }
        let src = self.next_src * self.elem;
        let value = self
            .src
            .get(src..src + self.elem)
            .ok_or("sparse tensor has fewer values than its indices need")?;
        self.dst[flat * self.elem..(flat + 1) * self.elem].copy_from_slice(value);
        self.next_src += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_matrix_densifies() {
        // [[1, 0, 2], [0, 0, 3]] stored row-major CSR.
        let sp = Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dims: vec![
                SparseDim::Dense { size: 2 },
                SparseDim::Csr {
                    segments: vec![0, 2, 3],
                    indices: vec![0, 2, 2],
                },
            ],
        };
        let vals: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = densify(&sp, &[2, 3], DType::F32, &vals).unwrap();
        let f: &[f32] = bytemuck::cast_slice(out.as_slice());
        assert_eq!(f, &[1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
    }

    #[test]
    fn block_sparse_densifies() {
        // 2x4 matrix with 1x2 blocks; block (0,1) and (1,0) present.
        let sp = Sparsity {
            traversal_order: vec![0, 1, 2],
            block_map: vec![1],
            dims: vec![
                SparseDim::Dense { size: 2 },
                SparseDim::Csr {
                    segments: vec![0, 1, 2],
                    indices: vec![1, 0],
                },
                SparseDim::Dense { size: 2 },
            ],
        };
        let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = densify(&sp, &[2, 4], DType::F32, &vals).unwrap();
        let f: &[f32] = bytemuck::cast_slice(out.as_slice());
        assert_eq!(f, &[0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn truncated_values_error() {
        let sp = Sparsity {
            traversal_order: vec![0],
            block_map: vec![],
            dims: vec![SparseDim::Dense { size: 4 }],
        };
        assert!(densify(&sp, &[4], DType::F32, &[0; 8]).is_err());
    }
}
