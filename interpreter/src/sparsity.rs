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

/// How many times larger than its stored values a densified tensor may be.
const MAX_EXPANSION: usize = 256;
/// Dense sizes below this are always accepted.
const EXPANSION_FLOOR: usize = 16 << 20;

/// Expands sparse `values` into a dense buffer of `shape`.
///
/// Every dense level's size is checked against the dimension it stands for, so the walk
/// visits at most one position per dense element plus one per stored CSR index: the
/// work is bounded by the (already bounded) dense size, and the walk is a loop, not a
/// recursion, so no metadata can make it deep.
pub fn densify(
    sp: &Sparsity,
    shape: &[usize],
    dtype: DType,
    values: &[u8],
) -> Result<AlignedBuf, String> {
    let rank = shape.len();
    if sp.block_map.len() > rank {
        return Err(format!(
            "sparsity has {} block dimensions for rank {rank}",
            sp.block_map.len()
        ));
    }
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
    // Level of each expanded dimension (original dims, then block dims).
    let mut level_of = vec![0usize; levels];
    for (level, &d) in sp.traversal_order.iter().enumerate() {
        level_of[d] = level;
    }
    let mut block_size = vec![1usize; rank];
    for (j, &orig) in sp.block_map.iter().enumerate() {
        if orig >= rank {
            return Err(format!("block map entry {orig} out of rank {rank}"));
        }
        if block_size[orig] != 1 {
            return Err(format!("dimension {orig} is blocked twice"));
        }
        match sp.dims[level_of[rank + j]] {
            SparseDim::Dense { size } if size > 0 && shape[orig].is_multiple_of(size) => {
                block_size[orig] = size
            }
            _ => {
                return Err(format!(
                    "block dimension {j} must be dense with a size dividing {}",
                    shape[orig]
                ));
            }
        }
    }
    // What each expanded dimension spans: blocks along an original dimension, elements
    // within a block.
    let extent: Vec<usize> = (0..levels)
        .map(|d| {
            if d < rank {
                shape[d] / block_size[d]
            } else {
                block_size[sp.block_map[d - rank]]
            }
        })
        .collect();
    for (level, dim) in sp.dims.iter().enumerate() {
        let d = sp.traversal_order[level];
        match dim {
            SparseDim::Dense { size } if *size != extent[d] => {
                return Err(format!(
                    "dense level {level} has size {size}, but dimension {d} spans {}",
                    extent[d]
                ));
            }
            SparseDim::Csr { segments, .. } if segments.windows(2).any(|w| w[0] > w[1]) => {
                return Err(format!("CSR level {level} has decreasing segments"));
            }
            _ => {}
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
    let mut out = AlignedBuf::try_zeroed(total).map_err(|e| e.to_string())?;
    let mut walk = Walk {
        sp,
        shape,
        elem,
        block_size,
        extent,
        index: vec![0; levels],
        src: values,
        next_src: 0,
        dst: out.as_mut_slice(),
    };
    walk.run()?;
    Ok(out)
}

struct Walk<'a> {
    sp: &'a Sparsity,
    shape: &'a [usize],
    elem: usize,
    /// For each original dimension: its block size (1 when not blocked).
    block_size: Vec<usize>,
    /// For each expanded dimension: how many positions it has.
    extent: Vec<usize>,
    /// Current index per expanded dimension (original dims, then block dims).
    index: Vec<usize>,
    src: &'a [u8],
    next_src: usize,
    dst: &'a mut [u8],
}

/// Where the walk stands on one traversal level: the next position and the end, plus
/// the parent position (a dense level's children are numbered `parent * size + i`).
#[derive(Clone, Copy, Default)]
struct Cursor {
    next: usize,
    end: usize,
    parent: usize,
}

impl Walk<'_> {
    /// Positions `[next, end)` of `level` under `parent`.
    fn enter(&self, level: usize, parent: usize) -> Result<Cursor, String> {
        match &self.sp.dims[level] {
            SparseDim::Dense { size } => Ok(Cursor {
                next: 0,
                end: *size,
                parent,
            }),
            SparseDim::Csr { segments, indices } => {
                match (
                    segments.get(parent),
                    parent.checked_add(1).and_then(|p| segments.get(p)),
                ) {
                    (Some(&lo), Some(&hi)) if lo <= hi && hi <= indices.len() => Ok(Cursor {
                        next: lo,
                        end: hi,
                        parent,
                    }),
                    _ => Err("CSR segments out of range".into()),
                }
            }
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let levels = self.sp.dims.len();
        if levels == 0 {
            return self.emit();
        }
        let mut cursors = vec![Cursor::default(); levels];
        cursors[0] = self.enter(0, 0)?;
        let mut level = 0;
        loop {
            let c = cursors[level];
            if c.next == c.end {
                if level == 0 {
                    return Ok(());
                }
                level -= 1;
                continue;
            }
            cursors[level].next += 1;
            let dim = self.sp.traversal_order[level];
            let (index, child) = match &self.sp.dims[level] {
                SparseDim::Dense { size } => (
                    c.next,
                    c.parent
                        .checked_mul(*size)
                        .and_then(|p| p.checked_add(c.next))
                        .ok_or("sparse position overflows")?,
                ),
                SparseDim::Csr { indices, .. } => (
                    *indices.get(c.next).ok_or("CSR index out of range")?,
                    c.next,
                ),
            };
            if index >= self.extent[dim] {
                return Err(format!(
                    "sparse index {index} outside the {} positions of dimension {dim}",
                    self.extent[dim]
                ));
            }
            self.index[dim] = index;
            if level + 1 == levels {
                self.emit()?;
            } else {
                level += 1;
                cursors[level] = self.enter(level, child)?;
            }
        }
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
        let dst = self
            .dst
            .get_mut(flat * self.elem..(flat + 1) * self.elem)
            .ok_or("sparse element outside the dense tensor")?;
        dst.copy_from_slice(value);
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

    /// A model with one sparse constant of `shape`, for the loader's checks.
    fn sparse_model(shape: &[usize], sp: crate::builder::SparsitySpec) -> Vec<u8> {
        let mut mb = crate::builder::ModelBuilder::new();
        let sg = mb.main();
        let w = sg.tensor("w", DType::F32, shape);
        sg.set_sparsity(w, sp, vec![0; 16]);
        let x = sg.tensor("x", DType::F32, &[1]);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[x]);
        mb.finish()
    }

    fn load_error(bytes: &[u8]) -> String {
        match crate::model::Model::from_bytes(bytes) {
            Ok(_) => panic!("the sparse tensor was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_long_block_map_is_an_error_not_a_stack_overflow() {
        // 50,000 block dimensions of one dense element each: before, densify recursed
        // once per level and overflowed the stack (the whole daemon, or `inspect`, died).
        use crate::builder::{SparseDimSpec, SparsitySpec};
        let levels = 50_001;
        let sp = SparsitySpec {
            traversal_order: (0..levels as i32).collect(),
            block_map: vec![0; levels - 1],
            dims: vec![SparseDimSpec::Dense(1); levels],
        };
        let e = load_error(&sparse_model(&[1], sp));
        assert!(e.contains("block map has more than"), "{e}");
    }

    #[test]
    fn dense_sizes_must_match_the_shape() {
        // Two huge dense levels over an empty last one: before, densify counted to
        // 2^62 without ever writing an element.
        use crate::builder::{SparseDimSpec, SparsitySpec};
        let sp = SparsitySpec {
            traversal_order: vec![0, 1, 2],
            block_map: vec![],
            dims: vec![
                SparseDimSpec::Dense(i32::MAX),
                SparseDimSpec::Dense(i32::MAX),
                SparseDimSpec::Dense(0),
            ],
        };
        let started = std::time::Instant::now();
        let e = load_error(&sparse_model(&[1, 1, 0], sp));
        assert!(e.contains("dense level 0 has size 2147483647"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Block sizes must divide the dimension they block.
        let sp = SparsitySpec {
            traversal_order: vec![0, 1],
            block_map: vec![0],
            dims: vec![SparseDimSpec::Dense(1), SparseDimSpec::Dense(3)],
        };
        let e = load_error(&sparse_model(&[4], sp));
        assert!(e.contains("block dimension 0"), "{e}");
    }

    #[test]
    fn a_written_sparse_model_loads_back_dense() {
        use crate::builder::{SparseDimSpec, SparsitySpec};
        // [[1, 0, 2], [0, 0, 3]] as CSR.
        let mut mb = crate::builder::ModelBuilder::new();
        let sg = mb.main();
        let w = sg.tensor("w", DType::F32, &[2, 3]);
        let values: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        sg.set_sparsity(
            w,
            SparsitySpec {
                traversal_order: vec![0, 1],
                block_map: vec![],
                dims: vec![
                    SparseDimSpec::Dense(2),
                    SparseDimSpec::Csr {
                        segments: vec![0, 2, 3],
                        indices: vec![0, 2, 2],
                    },
                ],
            },
            values,
        );
        sg.set_inputs(&[]);
        sg.set_outputs(&[w]);
        let m = crate::model::Model::from_bytes(&mb.finish()).unwrap();
        let t = &m.subgraphs[0].tensors[0];
        assert!(t.was_sparse);
        let dense = t.data.as_ref().unwrap().dense().unwrap();
        let f: &[f32] = bytemuck::cast_slice(&dense[..]);
        assert_eq!(f, &[1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
    }
}
