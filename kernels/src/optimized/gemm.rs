//! Float32 GEMM against weights packed once at prepare: `C = act(A · B + bias)`.
//!
//! Why our own rather than a crate: every GEMM here multiplies activations by constant
//! weights with M in the thousands and K, N small (16..1152). Packing B once at prepare
//! and never packing A (rows are read in place, or from a small im2col tile) avoids the
//! per-call packing of both operands that general-purpose crates do; bias and the
//! fused activation are applied while the accumulators are still in registers.
//! Measured on this machine's Zen 4 (see docs/PERFORMANCE.md): the packed kernel beats
//! `matrixmultiply::sgemm` followed by a bias/activation pass on these shapes.
//!
//! Layout: B is split into panels of [`NR`] columns; panel `p` holds `k` rows of `NR`
//! floats (`B[kk][p*NR + j]`, zero past `n`), then its `NR` bias values. A micro-kernel
//! computes up to [`MR`] rows × `NR` columns, with rows given as pointers so the same
//! kernel serves plain matrices and im2col tiles.

use switchyard_interpreter::{Activation, KernelError};

use super::pool::ThreadPool;

/// Columns per packed panel (two AVX2 vectors).
pub const NR: usize = 16;
/// The most rows any micro-kernel takes per call (the size of the row-pointer arrays).
/// Each ISA has its own count, [`Isa::mr`].
pub const MR: usize = 12;

/// Which micro-kernel family runs, chosen once at prepare from the running CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust over fixed-size lanes; LLVM vectorises it to the baseline ISA (SSE2 on
    /// x86-64, NEON on aarch64).
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// One 512-bit register per row of a panel; 32 registers allow 12 rows.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Rows per micro-kernel call. AVX2: 5 rows × 2 vectors keep 10 accumulators, 2
    /// weight vectors and a broadcast in the 16 registers (6 rows made LLVM spill one).
    /// AVX-512: 12 accumulators of 16 lanes, enough independent FMAs to hide latency.
    pub fn mr(self) -> usize {
        match self {
            Isa::Portable => 5,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => 5,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
        }
    }

    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    }
}

/// The clamp a fused activation reduces to, or `None` for activations that are not a
/// clamp (TANH, SIGN_BIT), which the optimized kernels leave to the reference.
pub fn clamp_of(act: Activation) -> Option<(f32, f32)> {
    match act {
        Activation::None | Activation::Relu | Activation::Relu6 | Activation::ReluN1To1 => {
            Some(act.float_range())
        }
        Activation::Tanh | Activation::SignBit => None,
    }
}

/// Weights (and bias) packed for the micro-kernels.
#[derive(Clone, Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs `w` laid out as `[n][k]` (output-major: TFLite's FULLY_CONNECTED weights and
    /// CONV_2D filters `[out][kh][kw][in]` flattened) with an optional bias of `n`.
    pub fn from_nk(
        w: &[f32],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, KernelError> {
        if w.len() != n * k || bias.is_some_and(|b| b.len() != n) {
            return Err(KernelError::shape(format!(
                "weights of {} values (bias {:?}) do not match n={n}, k={k}",
                w.len(),
                bias.map(|b| b.len())
            )));
        }
        Ok(Self::pack(n, k, |kk, j| w[j * k + kk], bias))
    }

    /// Packs `w` laid out as `[k][n]` (BATCH_MATMUL's right operand).
    pub fn from_kn(
        w: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, KernelError> {
        if w.len() != n * k || bias.is_some_and(|b| b.len() != n) {
            return Err(KernelError::shape(format!(
                "weights of {} values do not match k={k}, n={n}",
                w.len()
            )));
        }
        Ok(Self::pack(n, k, |kk, j| w[kk * n + j], bias))
    }

    fn pack(n: usize, k: usize, at: impl Fn(usize, usize) -> f32, bias: Option<&[f32]>) -> Self {
        let panels = n.div_ceil(NR);
        let stride = (k + 1) * NR;
        let mut data = vec![0.0f32; panels * stride];
        for p in 0..panels {
            let panel = &mut data[p * stride..(p + 1) * stride];
            let cols = NR.min(n - p * NR);
            for kk in 0..k {
                for j in 0..cols {
                    panel[kk * NR + j] = at(kk, p * NR + j);
                }
            }
            if let Some(b) = bias {
                panel[k * NR..k * NR + cols].copy_from_slice(&b[p * NR..p * NR + cols]);
            }
        }
        PackedB { k, n, data }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// A borrowed view, what the kernels take.
    pub fn as_ref(&self) -> PackedRef<'_> {
        PackedRef {
            k: self.k,
            n: self.n,
            data: &self.data,
        }
    }

    /// Bytes held, for memory reports.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// Floats a packing of a `k × n` matrix takes (see [`PackedB`]).
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * (k + 1) * NR
}

/// Packs a matrix known only at run time (BATCH_MATMUL's right operand, weights passed
/// into a subgraph) into `buf`, which must hold [`packed_len`]`(k, n)` floats; no bias.
/// `w` is `[k][n]` when `transposed` is false, `[n][k]` when true.
pub fn pack_runtime(
    buf: &mut [f32],
    w: &[f32],
    k: usize,
    n: usize,
    transposed: bool,
) -> Result<(), KernelError> {
    if buf.len() != packed_len(k, n) || w.len() != k * n {
        return Err(KernelError::shape(format!(
            "packing k={k}, n={n}: {} source and {} packed floats",
            w.len(),
            buf.len()
        )));
    }
    let stride = (k + 1) * NR;
    for (p, panel) in buf.chunks_exact_mut(stride).enumerate() {
        let c0 = p * NR;
        let cols = NR.min(n - c0);
        if transposed {
            // Column j of the panel is row c0 + j of w, contiguous in kk.
            if cols < NR {
                panel.fill(0.0);
            }
            for j in 0..cols {
                let src = &w[(c0 + j) * k..(c0 + j + 1) * k];
                for (kk, &v) in src.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        } else {
            for (kk, dst) in panel.chunks_exact_mut(NR).take(k).enumerate() {
                dst[..cols].copy_from_slice(&w[kk * n + c0..kk * n + c0 + cols]);
                dst[cols..].fill(0.0);
            }
        }
        panel[k * NR..].fill(0.0);
    }
    Ok(())
}

/// Packed weights as the micro-kernels read them: owned by a [`PackedB`], or a packing
/// made at run time by [`pack_runtime`].
#[derive(Clone, Copy, Debug)]
pub struct PackedRef<'a> {
    pub k: usize,
    pub n: usize,
    data: &'a [f32],
}

impl<'a> PackedRef<'a> {
    /// A view of `data`, which must hold [`packed_len`]`(k, n)` floats.
    pub fn new(k: usize, n: usize, data: &'a [f32]) -> Result<Self, KernelError> {
        if data.len() != packed_len(k, n) {
            return Err(KernelError::shape(format!(
                "packed k={k}, n={n} needs {} floats, has {}",
                packed_len(k, n),
                data.len()
            )));
        }
        Ok(PackedRef { k, n, data })
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &'a [f32] {
        let stride = (self.k + 1) * NR;
        &self.data[p * stride..(p + 1) * stride]
    }
}

/// Computes `rows` (≤ `isa.mr()`) output rows × panel `p`. `a[r]` points at `k` floats of row r,
/// `c[r]` at the output row's first column of this panel (`nr` valid columns).
///
/// # Safety
/// `a[r]` must be readable for `packed.k` floats and `c[r]` writable for `nr` floats,
/// for `r < rows`; `rows <= isa.mr()`, `nr <= NR`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_kernel(
    isa: Isa,
    rows: usize,
    a: &[*const f32; MR],
    packed: PackedRef<'_>,
    p: usize,
    c: &[*mut f32; MR],
    nr: usize,
    clamp: (f32, f32),
) {
    let w = packed.panel(p);
    let k = packed.k;
    macro_rules! dispatch {
        ($f:ident, $($r:literal)+) => {
            match rows {
                $($r => $f::<$r>(k, a, w, c, nr, clamp),)+
                _ => {}
            }
        };
    }
    match isa {
        // SAFETY: forwarded from this function's contract; the AVX2 kernel is only
        // selected when the CPU reported avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { dispatch!(kernel_avx2, 1 2 3 4 5) },
        // SAFETY: as above, for avx512f.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dispatch!(kernel_avx512, 1 2 3 4 5 6 7 8 9 10 11 12) },
        // SAFETY: forwarded from this function's contract.
        Isa::Portable => unsafe { dispatch!(kernel_portable, 1 2 3 4 5) },
    }
}

/// # Safety
/// As [`panel_kernel`]; `w` holds `(k + 1) * NR` floats.
unsafe fn kernel_portable<const R: usize>(
    k: usize,
    a: &[*const f32; MR],
    w: &[f32],
    c: &[*mut f32; MR],
    nr: usize,
    (lo, hi): (f32, f32),
) {
    let mut acc = [[0.0f32; NR]; R];
    let bias = &w[k * NR..(k + 1) * NR];
    for row in acc.iter_mut() {
        row.copy_from_slice(bias);
    }
    for kk in 0..k {
        let b: &[f32; NR] = w[kk * NR..(kk + 1) * NR].try_into().unwrap_or(&[0.0; NR]);
        for r in 0..R {
            // SAFETY: a[r] is readable for k floats (contract).
            let av = unsafe { *a[r].add(kk) };
            for j in 0..NR {
                acc[r][j] += av * b[j];
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate().take(nr) {
            // SAFETY: c[r] is writable for nr floats (contract).
            unsafe { *c[r].add(j) = v.max(lo).min(hi) };
        }
    }
}

/// # Safety
/// As [`panel_kernel`], and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize>(
    k: usize,
    a: &[*const f32; MR],
    w: &[f32],
    c: &[*mut f32; MR],
    nr: usize,
    (lo, hi): (f32, f32),
) {
    use std::arch::x86_64::*;
    let wp = w.as_ptr();
    // SAFETY: w holds (k + 1) * NR floats, so every load below is in bounds; a[r] and
    // c[r] are valid per the contract; unaligned loads/stores are used throughout.
    unsafe {
        let b0 = _mm256_loadu_ps(wp.add(k * NR));
        let b1 = _mm256_loadu_ps(wp.add(k * NR + 8));
        let mut acc0 = [b0; R];
        let mut acc1 = [b1; R];
        for kk in 0..k {
            let w0 = _mm256_loadu_ps(wp.add(kk * NR));
            let w1 = _mm256_loadu_ps(wp.add(kk * NR + 8));
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*a[r].add(kk));
                acc0[r] = _mm256_fmadd_ps(av, w0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(av, w1, acc1[r]);
            }
        }
        let vlo = _mm256_set1_ps(lo);
        let vhi = _mm256_set1_ps(hi);
        for r in 0..R {
            let v0 = _mm256_min_ps(_mm256_max_ps(acc0[r], vlo), vhi);
            let v1 = _mm256_min_ps(_mm256_max_ps(acc1[r], vlo), vhi);
            if nr == NR {
                _mm256_storeu_ps(c[r], v0);
                _mm256_storeu_ps(c[r].add(8), v1);
            } else {
                let mut tmp = [0.0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), c[r], nr);
            }
        }
    }
}

/// # Safety
/// As [`panel_kernel`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512<const R: usize>(
    k: usize,
    a: &[*const f32; MR],
    w: &[f32],
    c: &[*mut f32; MR],
    nr: usize,
    (lo, hi): (f32, f32),
) {
    use std::arch::x86_64::*;
    let wp = w.as_ptr();
    // SAFETY: w holds (k + 1) * NR floats, so every load below is in bounds; a[r] and
    // c[r] are valid per the contract; the partial store is masked to nr lanes.
    unsafe {
        let bias = _mm512_loadu_ps(wp.add(k * NR));
        let mut acc = [bias; R];
        for kk in 0..k {
            let wv = _mm512_loadu_ps(wp.add(kk * NR));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a[r].add(kk)), wv, acc[r]);
            }
        }
        let vlo = _mm512_set1_ps(lo);
        let vhi = _mm512_set1_ps(hi);
        let mask: __mmask16 = if nr >= NR {
            0xFFFF
        } else {
            ((1u32 << nr) - 1) as u16
        };
        for r in 0..R {
            let v = _mm512_min_ps(_mm512_max_ps(acc[r], vlo), vhi);
            _mm512_mask_storeu_ps(c[r], mask, v);
        }
    }
}

/// How a GEMM is cut into tasks: blocks of rows, or (when there are few rows, as in a
/// FULLY_CONNECTED with batch 1) groups of panels.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    pub row_block: usize,
    pub row_tasks: usize,
    pub panel_group: usize,
    pub panel_tasks: usize,
}

impl Split {
    pub fn new(m: usize, mr: usize, panels: usize, threads: usize) -> Split {
        let row_blocks = m.div_ceil(mr).max(1);
        if threads <= 1 {
            return Split {
                row_block: row_blocks * mr,
                row_tasks: 1,
                panel_group: panels.max(1),
                panel_tasks: 1,
            };
        }
        // A few tasks per thread absorb uneven progress (other load on the machine).
        let want = threads * 4;
        if row_blocks >= want || row_blocks >= panels {
            let per = row_blocks.div_ceil(want).max(1);
            Split {
                row_block: per * mr,
                row_tasks: row_blocks.div_ceil(per),
                panel_group: panels.max(1),
                panel_tasks: 1,
            }
        } else {
            let per = panels.div_ceil(threads * 2).max(1);
            Split {
                row_block: row_blocks * mr,
                row_tasks: 1,
                panel_group: per,
                panel_tasks: panels.div_ceil(per),
            }
        }
    }

    pub fn tasks(&self) -> usize {
        self.row_tasks * self.panel_tasks
    }

    /// Rows and panels of task `t`.
    pub fn task(&self, t: usize, m: usize, panels: usize) -> (usize, usize, usize, usize) {
        let (rt, pt) = (t / self.panel_tasks, t % self.panel_tasks);
        let r0 = (rt * self.row_block).min(m);
        let r1 = (r0 + self.row_block).min(m);
        let p0 = (pt * self.panel_group).min(panels);
        let p1 = (p0 + self.panel_group).min(panels);
        (r0, r1, p0, p1)
    }
}

/// A raw output pointer that tasks on several threads write through, each to rows or
/// columns no other task touches.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer; a method call makes closures capture the whole (Sync) wrapper
    /// rather than its raw-pointer field.
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint elements (see each use) and the pool joins them all
// before the owning slice is used again.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// `C[m][n] = clamp(A[m][k] · B + bias)` with A rows `lda` floats apart and C rows
/// `ldc` apart, split across the pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    pool: &ThreadPool,
    m: usize,
    a: &[f32],
    lda: usize,
    packed: PackedRef<'_>,
    c: &mut [f32],
    ldc: usize,
    clamp: (f32, f32),
) -> Result<(), KernelError> {
    if m == 0 || packed.n == 0 {
        return Ok(());
    }
    check_gemm(m, a, lda, packed, c, ldc)?;
    let panels = packed.panels();
    let split = Split::new(m, isa.mr(), panels, pool.threads());
    let cptr = SendPtr(c.as_mut_ptr());
    let aptr = a.as_ptr() as usize;
    pool.run(split.tasks(), &|t| {
        let (r0, r1, p0, p1) = split.task(t, m, panels);
        // SAFETY: A and C were checked to hold m rows (check_gemm); this task alone
        // writes rows r0..r1 × panels p0..p1 of C.
        unsafe {
            gemm_block(
                isa,
                aptr as *const f32,
                lda,
                packed,
                cptr.get(),
                ldc,
                (r0, r1),
                (p0, p1),
                clamp,
            )
        };
    });
    Ok(())
}

/// [`gemm`] on the calling thread only, for work that is already one task of a split
/// (a batch of BATCH_MATMUL).
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    isa: Isa,
    m: usize,
    a: &[f32],
    lda: usize,
    packed: PackedRef<'_>,
    c: &mut [f32],
    ldc: usize,
    clamp: (f32, f32),
) -> Result<(), KernelError> {
    if m == 0 || packed.n == 0 {
        return Ok(());
    }
    check_gemm(m, a, lda, packed, c, ldc)?;
    // SAFETY: checked above; `c` is borrowed mutably for the whole call.
    unsafe {
        gemm_block(
            isa,
            a.as_ptr(),
            lda,
            packed,
            c.as_mut_ptr(),
            ldc,
            (0, m),
            (0, packed.panels()),
            clamp,
        )
    };
    Ok(())
}

fn check_gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    packed: PackedRef<'_>,
    c: &[f32],
    ldc: usize,
) -> Result<(), KernelError> {
    let (k, n) = (packed.k, packed.n);
    if lda < k || ldc < n || a.len() < (m - 1) * lda + k || c.len() < (m - 1) * ldc + n {
        return Err(KernelError::shape(format!(
            "gemm m={m} k={k} n={n}: A has {} (lda {lda}), C has {} (ldc {ldc})",
            a.len(),
            c.len()
        )));
    }
    Ok(())
}

/// Rows `r0..r1` × panels `p0..p1` of C.
///
/// # Safety
/// `a` must be readable for rows `r0..r1` (`lda` apart, `packed.k` floats each) and `c`
/// writable for the same rows (`ldc` apart) at columns `p0*NR .. min(p1*NR, n)`, with no
/// other thread touching that block.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn gemm_block(
    isa: Isa,
    a: *const f32,
    lda: usize,
    packed: PackedRef<'_>,
    c: *mut f32,
    ldc: usize,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
    clamp: (f32, f32),
) {
    let n = packed.n;
    let mr = isa.mr();
    let mut r = r0;
    while r < r1 {
        let rows = mr.min(r1 - r);
        let mut ap = [std::ptr::null::<f32>(); MR];
        for (i, p) in ap.iter_mut().enumerate() {
            // SAFETY: row r + min(i, rows - 1) < r1, inside A (contract).
            *p = unsafe { a.add((r + i.min(rows - 1)) * lda) };
        }
        for p in p0..p1 {
            let nr = NR.min(n - p * NR);
            let mut cr = [std::ptr::null_mut::<f32>(); MR];
            for (i, q) in cr.iter_mut().enumerate() {
                // SAFETY: as for A; columns p*NR .. p*NR+nr <= n <= ldc.
                *q = unsafe { c.add((r + i.min(rows - 1)) * ldc + p * NR) };
            }
            // SAFETY: pointers built above are in bounds for k (A) and nr (C) floats.
            unsafe { panel_kernel(isa, rows, &ap, packed, p, &cr, nr, clamp) };
        }
        r += rows;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The plain triple loop every optimized path is compared with.
    pub fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        w_nk: &[f32],
        bias: Option<&[f32]>,
        clamp: (f32, f32),
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j]) as f64;
                for kk in 0..k {
                    s += a[i * k + kk] as f64 * w_nk[j * k + kk] as f64;
                }
                c[i * n + j] = (s as f32).max(clamp.0).min(clamp.1);
            }
        }
        c
    }

    /// Float agreement: |x - y| <= tol * max(1, |y|) (relative, absolute near zero).
    pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "index {i}: got {x}, want {y}"
            );
        }
    }

    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every kernel family this CPU can run.
    pub fn isas() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2Fma);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn gemm_matches_naive(m in 1usize..60, k in 1usize..70, n in 1usize..50,
                              threads in 1usize..4, bias in any::<bool>(), relu in any::<bool>(),
                              seed in 0u64..1000) {
            let a = values(m * k, seed);
            let w = values(n * k, seed + 1);
            let b = values(n, seed + 2);
            let bias = bias.then_some(&b[..]);
            let clamp = if relu { (0.0, 6.0) } else { (f32::NEG_INFINITY, f32::INFINITY) };
            let want = naive(m, k, n, &a, &w, bias, clamp);
            let packed = PackedB::from_nk(&w, n, k, bias).unwrap();
            let pool = ThreadPool::new(threads);
            for isa in isas() {
                let mut c = vec![f32::NAN; m * n];
                gemm(isa, &pool, m, &a, k, packed.as_ref(), &mut c, n, clamp).unwrap();
                assert_close(&c, &want, 1e-5);
            }
        }
    }

    #[test]
    fn kn_packing_is_the_transpose() {
        let (k, n) = (5, 19);
        let w_nk = values(n * k, 3);
        let mut w_kn = vec![0.0; k * n];
        for j in 0..n {
            for kk in 0..k {
                w_kn[kk * n + j] = w_nk[j * k + kk];
            }
        }
        let a = PackedB::from_nk(&w_nk, n, k, None).unwrap();
        let b = PackedB::from_kn(&w_kn, k, n, None).unwrap();
        assert_eq!(a.data, b.data);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(PackedB::from_nk(&[0.0; 5], 2, 3, None).is_err());
        let p = PackedB::from_nk(&[0.0; 6], 2, 3, None).unwrap();
        let pool = ThreadPool::new(1);
        let mut c = vec![0.0; 2];
        let clamp = (f32::NEG_INFINITY, f32::INFINITY);
        assert!(
            gemm(
                Isa::Portable,
                &pool,
                2,
                &[0.0; 5],
                3,
                p.as_ref(),
                &mut c,
                2,
                clamp
            )
            .is_err()
        );
    }
}
