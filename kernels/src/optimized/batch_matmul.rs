//! Float32 BATCH_MATMUL on the packed GEMM of `gemm.rs`.
//!
//! The right operand is usually an activation (attention's `Q·Kᵀ` and `P·V`), so it is
//! packed at eval time, once per batch, into a per-thread buffer; packing costs `k·n`
//! moves against `m·k·n` multiply-adds. A constant right operand (a filterbank) is
//! packed once at prepare. `adj_x` copies the left operand into row-major rows first.
//! Batches go to the pool one per task when there are enough of them; otherwise each
//! batch's GEMM is split across the pool.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use switchyard_interpreter::{KernelError, OpKernel, TensorView, TensorViewMut, kernel::input};

use super::gemm::{Isa, PackedRef, SendPtr, gemm, gemm_serial, pack_runtime, packed_len};
use super::pool::ThreadPool;
use crate::util::broadcast_strides;

thread_local! {
    /// Packed right operand and transposed left operand of the batch this thread runs.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Grows `v` to `len` floats without aborting on allocation failure.
fn ensure_len(v: &mut Vec<f32>, len: usize) -> Result<(), KernelError> {
    if v.len() < len {
        v.try_reserve_exact(len - v.len()).map_err(|_| {
            KernelError::invalid(format!("cannot allocate {len} floats of scratch"))
        })?;
        v.resize(len, 0.0);
    }
    Ok(())
}

/// A prepared float BATCH_MATMUL.
pub struct BatchMatmulF32 {
    m: usize,
    k: usize,
    n: usize,
    adj_x: bool,
    adj_y: bool,
    /// Output matrices (the product of the output's batch dimensions).
    out_batches: usize,
    /// The output's batch dimensions, with each operand's element stride along them
    /// (zero where it broadcasts). Offsets are derived per batch at run time rather
    /// than tabled at prepare: the batch dimensions come from the model, and a table
    /// could outgrow the tensors themselves.
    out_batch: Vec<usize>,
    lhs_strides: Vec<usize>,
    rhs_strides: Vec<usize>,
    lhs_len: usize,
    rhs_len: usize,
    out_len: usize,
    /// The right operand packed at prepare, one packing per rhs batch, when constant.
    packed_rhs: Option<Vec<f32>>,
    isa: Isa,
    pool: Arc<ThreadPool>,
    name: &'static str,
}

/// The shape of one BATCH_MATMUL node, as prepare validated it.
pub struct MatmulShape<'a> {
    pub lhs_batch: &'a [usize],
    pub rhs_batch: &'a [usize],
    pub out_batch: &'a [usize],
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub adj_x: bool,
    pub adj_y: bool,
}

impl BatchMatmulF32 {
    /// `rhs` is the right operand's values when they are known at prepare.
    pub fn new(
        s: &MatmulShape<'_>,
        rhs: Option<&[f32]>,
        isa: Isa,
        pool: Arc<ThreadPool>,
    ) -> Result<Self, KernelError> {
        let (m, k, n) = (s.m, s.k, s.n);
        let count = |b: &[usize], per: usize| {
            b.iter()
                .try_fold(per, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| KernelError::shape("BATCH_MATMUL operand size overflows"))
        };
        let lhs_len = count(s.lhs_batch, m.saturating_mul(k))?;
        let rhs_len = count(s.rhs_batch, k.saturating_mul(n))?;
        let out_len = count(s.out_batch, m.saturating_mul(n))?;
        let (mk, kn) = (m * k, k * n);
        let out_batches = count(s.out_batch, 1)?;
        let scaled = |b: &[usize], per: usize| -> Vec<usize> {
            broadcast_strides(b, s.out_batch)
                .into_iter()
                .map(|st| st * per)
                .collect()
        };
        let (lhs_strides, rhs_strides) = (scaled(s.lhs_batch, mk), scaled(s.rhs_batch, kn));
        let packed_rhs = match rhs {
            Some(w) if w.len() == rhs_len && kn > 0 => {
                let pl = packed_len(k, n);
                let mut buf = Vec::new();
                ensure_len(&mut buf, pl * (rhs_len / kn))?;
                for (dst, src) in buf.chunks_exact_mut(pl).zip(w.chunks_exact(kn)) {
                    pack_runtime(dst, src, k, n, s.adj_y)?;
                }
                Some(buf)
            }
            _ => None,
        };
        let name = match isa {
            Isa::Portable => "batch_matmul/f32/gemm/portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => "batch_matmul/f32/gemm/avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "batch_matmul/f32/gemm/avx512",
        };
        Ok(BatchMatmulF32 {
            m,
            k,
            n,
            adj_x: s.adj_x,
            adj_y: s.adj_y,
            out_batches,
            out_batch: s.out_batch.to_vec(),
            lhs_strides,
            rhs_strides,
            lhs_len,
            rhs_len,
            out_len,
            packed_rhs,
            isa,
            pool,
            name,
        })
    }

    /// Element offsets (output, lhs, rhs) of output matrix `o`, broadcasting resolved.
    fn batch(&self, mut o: usize) -> (usize, usize, usize) {
        let out = o * self.m * self.n;
        let (mut l, mut r) = (0, 0);
        for d in (0..self.out_batch.len()).rev() {
            let dim = self.out_batch[d].max(1);
            let i = o % dim;
            o /= dim;
            l += i * self.lhs_strides[d];
            r += i * self.rhs_strides[d];
        }
        (out, l, r)
    }

    /// Bytes of the prepare-time packing.
    pub fn packed_bytes(&self) -> usize {
        self.packed_rhs.as_ref().map_or(0, |p| p.len() * 4)
    }

    /// Computes the output matrix at `ob` from lhs at `lb` and rhs at `rb`; `pool` splits
    /// the GEMM when given.
    ///
    /// # Safety
    /// `out` must point at `out_len` floats, and no other thread may touch the `m·n`
    /// floats from `ob` while this runs.
    unsafe fn one(
        &self,
        lhs: &[f32],
        rhs: &[f32],
        out: SendPtr,
        (ob, lb, rb): (usize, usize, usize),
        pool: Option<&ThreadPool>,
    ) -> Result<(), KernelError> {
        let (m, k, n) = (self.m, self.k, self.n);
        let clamp = (f32::NEG_INFINITY, f32::INFINITY);
        // SAFETY: the caller guarantees the block is ours and inside the output.
        let c = unsafe { std::slice::from_raw_parts_mut(out.get().add(ob), m * n) };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (pack_buf, a_buf) = &mut *s;
            let a_src = &lhs[lb..lb + m * k];
            let a: &[f32] = if self.adj_x {
                ensure_len(a_buf, m * k)?;
                // a_src is [k][m]: row i of A is column i.
                for (i, row) in a_buf.chunks_exact_mut(k).take(m).enumerate() {
                    for (kk, v) in row.iter_mut().enumerate() {
                        *v = a_src[kk * m + i];
                    }
                }
                &a_buf[..m * k]
            } else {
                a_src
            };
            let pl = packed_len(k, n);
            let packed = match &self.packed_rhs {
                Some(p) => {
                    let b = rb / (k * n);
                    PackedRef::new(k, n, &p[b * pl..(b + 1) * pl])?
                }
                None => {
                    ensure_len(pack_buf, pl)?;
                    pack_runtime(&mut pack_buf[..pl], &rhs[rb..rb + k * n], k, n, self.adj_y)?;
                    PackedRef::new(k, n, &pack_buf[..pl])?
                }
            };
            match pool {
                Some(pool) => gemm(self.isa, pool, m, a, k, packed, c, n, clamp),
                None => gemm_serial(self.isa, m, a, k, packed, c, n, clamp),
            }
        })
    }
}

impl OpKernel for BatchMatmulF32 {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let lhs = input(inputs, 0)?.f32s()?;
        let rhs = input(inputs, 1)?.f32s()?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .f32s_mut()?;
        if lhs.len() != self.lhs_len || rhs.len() != self.rhs_len || out.len() != self.out_len {
            return Err(KernelError::shape(format!(
                "BATCH_MATMUL expects {}, {} and {} floats, got {}, {} and {}",
                self.lhs_len,
                self.rhs_len,
                self.out_len,
                lhs.len(),
                rhs.len(),
                out.len()
            )));
        }
        if self.k == 0 {
            out.fill(0.0);
            return Ok(());
        }
        if self.m == 0 || self.n == 0 {
            return Ok(());
        }
        let ptr = SendPtr(out.as_mut_ptr());
        let threads = self.pool.threads();
        if threads > 1 && self.out_batches >= threads {
            let failed = AtomicBool::new(false);
            self.pool.run(self.out_batches, &|t| {
                // SAFETY: output matrices of distinct batches do not overlap, and
                // `out` holds out_len floats (checked above).
                if unsafe { self.one(lhs, rhs, ptr, self.batch(t), None) }.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
            });
            if failed.load(Ordering::Relaxed) {
                return Err(KernelError::invalid(
                    "BATCH_MATMUL could not allocate its scratch",
                ));
            }
        } else {
            let pool = (threads > 1).then_some(&*self.pool);
            for o in 0..self.out_batches {
                // SAFETY: batches run one after another here; bounds as above.
                unsafe { self.one(lhs, rhs, ptr, self.batch(o), pool)? };
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.name
    }

    fn memory_bytes(&self) -> usize {
        self.packed_bytes()
    }
}
