//! int8 GEMM against weights packed at prepare, with LiteRT's per-channel
//! requantization fused: `C[m][n] = requant_n(Σ_k A[m][k]·W[n][k] + bias'_n)`.
//!
//! Arithmetic (bit-exact with TFLite's int8 CONV_2D and FULLY_CONNECTED): TFLite sums
//! `W·(A + input_offset)` in int32. Since int32 addition wraps, that sum equals
//! `Σ W·A + input_offset·Σ_k W` modulo 2^32, so the column sums fold into the bias at
//! prepare and the inner loop multiplies raw int8 values. Padding taps of a convolution
//! must then hold the input zero point (so `A + input_offset` is 0), which the im2col
//! gather writes.
//!
//! Layout: A rows are widened to int16 once per tile (reused across every panel of
//! columns); W is packed in panels of [`QNR`] columns, each holding, for every pair of
//! `k`, the 16 columns' `(W[n][2k], W[n][2k+1])` int16 pairs. One multiply-add of a
//! broadcast A pair against a panel row (`vpmaddwd` on AVX2 and AVX-512, `vpdpwssd` with
//! AVX-512 VNNI, `smlal` pairs where LLVM lowers the portable loop to NEON) then adds
//! two products per lane into int32 accumulators. Products of int16-widened int8 values
//! and their pair sums cannot overflow int16×int16→int32 madd, so every path is exact.
//!
//! Requantization (round half up after the doubling high multiply, as ruy does for
//! LiteRT's int8 CONV_2D/FULLY_CONNECTED) runs per 16-lane block on 64-bit lanes, which
//! LLVM vectorises under each path's target features.

// Lane and row loops index several fixed-size arrays in step; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use switchyard_interpreter::KernelError;

/// Columns per packed panel: two AVX2 or one AVX-512 int32 vector.
pub const QNR: usize = 16;
/// Most rows one micro-kernel call takes.
pub const QMR: usize = 12;

/// Which micro-kernel family runs; chosen at prepare, forced by tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// Plain Rust over 16 lanes (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// `vpmaddwd` on 256-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// `vpmaddwd` on 512-bit vectors (AVX-512BW).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// `vpdpwssd` (AVX-512 VNNI): multiply-add and accumulate in one instruction.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

thread_local! {
    static FORCED: std::cell::Cell<Option<QIsa>> = const { std::cell::Cell::new(None) };
}

impl QIsa {
    /// Runs `f` with every int8 kernel prepared on this thread using `isa` (which must
    /// run on this CPU: take it from [`QIsa::available`]): how tests and benchmarks pin
    /// each path whatever the machine's best one is.
    pub fn forced<R>(isa: QIsa, f: impl FnOnce() -> R) -> R {
        let before = FORCED.with(|c| c.replace(Some(isa)));
        let out = f();
        FORCED.with(|c| c.set(before));
        out
    }

    /// The best path this CPU runs (or the one [`QIsa::forced`] pins).
    pub fn detect() -> QIsa {
        if let Some(isa) = FORCED.with(|c| c.get()) {
            return isa;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let bw = std::arch::is_x86_feature_detected!("avx512bw");
            if bw && std::arch::is_x86_feature_detected!("avx512vnni") {
                return QIsa::Avx512Vnni;
            }
            if bw {
                return QIsa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return QIsa::Avx2;
            }
        }
        QIsa::Portable
    }

    /// Every path this CPU runs (for tests that force each one).
    pub fn available() -> Vec<QIsa> {
        let mut v = vec![QIsa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(QIsa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512bw") {
                v.push(QIsa::Avx512);
                if std::arch::is_x86_feature_detected!("avx512vnni") {
                    v.push(QIsa::Avx512Vnni);
                }
            }
        }
        v
    }

    /// Rows per micro-kernel call: as many accumulators as the register file holds.
    pub fn mr(self) -> usize {
        match self {
            QIsa::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => 6,
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512 | QIsa::Avx512Vnni => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QIsa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => "avx512vnni",
        }
    }
}

/// Per-output-channel requantization, padded to whole panels.
#[derive(Clone, Debug)]
pub struct Requant {
    pub multiplier: Vec<i32>,
    /// `max(shift, 0)` and `max(-shift, 0)` of TFLite's signed shift.
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    pub output_offset: i32,
    pub act_min: i32,
    pub act_max: i32,
}

/// Packed weights and the folded bias of one int8 GEMM.
#[derive(Clone, Debug)]
pub struct PackedQ {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to even (pairs).
    pub kp: usize,
    panels: Vec<i16>,
    /// `bias[n] + input_offset · Σ_k W[n][k]`, wrapping, padded to whole panels.
    bias: Vec<i32>,
    pub requant: Requant,
}

fn alloc<T: Clone>(n: usize, v: T) -> Result<Vec<T>, KernelError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| KernelError::invalid(format!("cannot allocate {n} packed values")))?;
    out.resize(n, v);
    Ok(out)
}

impl PackedQ {
    /// `w` is `[n][k]` int8; `bias` `[n]` int32 or none; per-channel `multiplier` and
    /// signed `shift` (TFLite's convention).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: &[i8],
        n: usize,
        k: usize,
        bias: Option<&[i32]>,
        input_offset: i32,
        multiplier: &[i32],
        shift: &[i32],
        output_offset: i32,
        act_min: i32,
        act_max: i32,
    ) -> Result<PackedQ, KernelError> {
        if w.len() != n * k
            || bias.is_some_and(|b| b.len() != n)
            || multiplier.len() != n
            || shift.len() != n
        {
            return Err(KernelError::shape("int8 GEMM operands disagree with n, k"));
        }
        let kp = k.next_multiple_of(2);
        let panels_n = n.div_ceil(QNR);
        let padded = panels_n * QNR;
        let mut panels = alloc(panels_n * kp * QNR, 0i16)?;
        for p in 0..panels_n {
            let base = p * kp * QNR;
            for j in 0..QNR {
                let col = p * QNR + j;
                if col >= n {
                    continue;
                }
                let row = &w[col * k..col * k + k];
                for (kk, &v) in row.iter().enumerate() {
                    panels[base + (kk / 2) * 2 * QNR + j * 2 + (kk % 2)] = i16::from(v);
                }
            }
        }
        let mut folded = alloc(padded, 0i32)?;
        for (c, f) in folded.iter_mut().enumerate().take(n) {
            let sum = w[c * k..c * k + k]
                .iter()
                .fold(0i32, |a, &v| a.wrapping_add(i32::from(v)));
            *f = bias
                .map_or(0, |b| b[c])
                .wrapping_add(sum.wrapping_mul(input_offset));
        }
        let mut m = alloc(padded, 0i32)?;
        let mut left = alloc(padded, 0i32)?;
        let mut right = alloc(padded, 0i32)?;
        for c in 0..n {
            m[c] = multiplier[c];
            left[c] = shift[c].max(0);
            right[c] = (-shift[c]).max(0);
            if left[c] > 30 || right[c] > 31 {
                return Err(KernelError::unsupported(format!(
                    "requantization shift {} out of range",
                    shift[c]
                )));
            }
        }
        Ok(PackedQ {
            n,
            k,
            kp,
            panels,
            bias: folded,
            requant: Requant {
                multiplier: m,
                left,
                right,
                output_offset,
                act_min,
                act_max,
            },
        })
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(QNR)
    }

    pub fn bytes(&self) -> usize {
        self.panels.len() * 2 + self.bias.len() * 16
    }

    /// Weights alone, for kernels that scale the raw int32 sums themselves (the hybrid
    /// kernels, whose input zero point is only known per run): no bias, and a
    /// requantization that [`PackedQ::panel_acc`] never applies.
    pub fn raw(w: &[i8], n: usize, k: usize) -> Result<PackedQ, KernelError> {
        let ones = alloc(n, 1i32 << 30)?;
        let zeros = alloc(n, 0i32)?;
        PackedQ::new(w, n, k, None, 0, &ones, &zeros, 0, -128, 127)
    }

    /// The raw sums `Σ_k a[r][k]·W[c][k]` of panel `p` (columns `p*QNR ..`), without bias.
    ///
    /// # Safety
    /// `a[..rows]` each point to `kp` readable int16 values (zero past `k`); `isa` runs
    /// on this CPU.
    pub unsafe fn panel_acc(
        &self,
        isa: QIsa,
        a: &[*const i16; QMR],
        rows: usize,
        p: usize,
        acc: &mut [[i32; QNR]; QMR],
    ) {
        let b = unsafe { self.panels.as_ptr().add(p * self.kp * QNR) };
        let kp2 = self.kp / 2;
        // SAFETY: forwarded from the caller; `b` is panel `p` of `kp * QNR` values.
        unsafe {
            match isa {
                QIsa::Portable => micro_portable(kp2, a, rows, b, acc),
                #[cfg(target_arch = "x86_64")]
                QIsa::Avx2 => micro_avx2(kp2, a, rows, b, acc),
                #[cfg(target_arch = "x86_64")]
                QIsa::Avx512 => micro_avx512(kp2, a, rows, b, acc, false),
                #[cfg(target_arch = "x86_64")]
                QIsa::Avx512Vnni => micro_avx512(kp2, a, rows, b, acc, true),
            }
        }
    }

    /// Rows `a[r]` (each `kp` int16 values, zero past `k`) times panel `p`, requantized
    /// into `out[r][p*QNR ..]` (only the first `n` columns are written).
    ///
    /// # Safety
    /// `a[..rows]` each point to `kp` readable int16 values and `out[..rows]` to `n`
    /// writable bytes; `isa` runs on this CPU.
    pub unsafe fn panel(
        &self,
        isa: QIsa,
        a: &[*const i16; QMR],
        rows: usize,
        p: usize,
        out: &[*mut i8; QMR],
    ) {
        let mut acc = [[0i32; QNR]; QMR];
        // SAFETY: forwarded from the caller.
        unsafe { self.panel_acc(isa, a, rows, p, &mut acc) };
        let c0 = p * QNR;
        let cols = (self.n - c0).min(QNR);
        let rq = &self.requant;
        let lanes = Lanes {
            bias: &self.bias[c0..c0 + QNR],
            m: &rq.multiplier[c0..c0 + QNR],
            left: &rq.left[c0..c0 + QNR],
            right: &rq.right[c0..c0 + QNR],
        };
        for r in 0..rows {
            let mut o = [0i8; QNR];
            // SAFETY: the requantizer only needs the features `isa` was detected with.
            unsafe {
                match isa {
                    QIsa::Portable => requant_half_up(&acc[r], &lanes, rq, &mut o),
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Avx2 => requant_avx2(&acc[r], &lanes, rq, &mut o),
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Avx512 | QIsa::Avx512Vnni => requant_avx512(&acc[r], &lanes, rq, &mut o),
                }
            }
            // SAFETY: `out[r]` holds `n` bytes and `c0 + cols <= n`.
            unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), out[r].add(c0), cols) };
        }
    }
}

/// `Σ a[i]·b[i]` over int8 vectors (the shorter length), in wrapping int32: LiteRT's
/// hybrid dot product, exact in any order. `avx2` (from [`crate::optimized::qgemm::QIsa`]
/// at prepare, so tests can force either path) picks 16-lane `vpmaddwd` steps.
pub fn dot_i8(a: &[i8], b: &[i8], avx2: bool) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only set where AVX2 was detected (or a test forced a path
        // detected on this CPU).
        return unsafe { dot_i8_avx2(a, b) };
    }
    let _ = avx2;
    a.iter().zip(b).fold(0i32, |s, (&x, &y)| {
        s.wrapping_add(i32::from(x) * i32::from(y))
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n` bytes lie in both slices.
        unsafe {
            let x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
            let y0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            let x1 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(i + 16) as *const __m128i));
            let y1 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(i + 16) as *const __m128i));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, y1));
        }
        i += 32;
    }
    if i + 16 <= n {
        // SAFETY: `i + 16 <= n` bytes lie in both slices.
        unsafe {
            let x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
            let y0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));
        }
        i += 16;
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256(acc, 1),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    let mut total = _mm_cvtsi128_si32(s);
    for (&x, &y) in a[i..n].iter().zip(&b[i..n]) {
        total = total.wrapping_add(i32::from(x) * i32::from(y));
    }
    total
}

/// Per-lane constants of one panel.
pub struct Lanes<'a> {
    pub bias: &'a [i32],
    pub m: &'a [i32],
    pub left: &'a [i32],
    pub right: &'a [i32],
}

/// TFLite's ruy-path requantization: doubling high multiply, then a rounding right
/// shift that rounds half up; plus output offset and clamp.
#[inline(always)]
fn requant_half_up(acc: &[i32; QNR], l: &Lanes<'_>, rq: &Requant, out: &mut [i8; QNR]) {
    for j in 0..QNR {
        let x = acc[j].wrapping_add(l.bias[j]);
        let a = i64::from(x.wrapping_mul(1i32.wrapping_shl(l.left[j] as u32)));
        let ab = a * i64::from(l.m[j]);
        let nudge = if ab >= 0 {
            1i64 << 30
        } else {
            1 - (1i64 << 30)
        };
        let v = ab + nudge;
        // Division by 2^31 truncating toward zero.
        let high = (v + ((v >> 63) & ((1i64 << 31) - 1))) >> 31;
        let round = (1i64 << l.right[j]) >> 1;
        let r = ((high + round) >> l.right[j]) as i32;
        out[j] = r
            .wrapping_add(rq.output_offset)
            .clamp(rq.act_min, rq.act_max) as i8;
    }
}

/// [`requant_half_up`] on 16 lanes with AVX2: the doubling high multiply as two
/// `vpmuldq` (even and odd lanes) on 64-bit products, the division by 2^31 toward zero as
/// a bias on negative products and a logical shift (bits 31..62 are all that survive the
/// cast to int32, and they do not depend on the shift's sign fill).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn requant_avx2(acc: &[i32; QNR], l: &Lanes<'_>, rq: &Requant, out: &mut [i8; QNR]) {
    use std::arch::x86_64::*;
    // SAFETY: every slice holds QNR = 16 values (two 8-lane vectors); AVX2 is enabled.
    unsafe {
        let ld = |s: &[i32], h: usize| _mm256_loadu_si256(s.as_ptr().add(8 * h) as *const __m256i);
        let mut half = [_mm256_setzero_si256(); 2];
        for (h, v) in half.iter_mut().enumerate() {
            let x = _mm256_add_epi32(ld(acc, h), ld(l.bias, h));
            *v = requant8_avx2(x, ld(l.m, h), ld(l.left, h), ld(l.right, h));
        }
        let packed = clamp_pack16_avx2(half[0], half[1], rq.output_offset, rq.act_min, rq.act_max);
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, packed);
    }
}

/// Eight lanes of [`requant_half_up`] up to (not including) the output offset and
/// clamp; `left` is at most 30 and `right` at most 31, as [`PackedQ::new`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn requant8_avx2(
    x: std::arch::x86_64::__m256i,
    m: std::arch::x86_64::__m256i,
    left: std::arch::x86_64::__m256i,
    right: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let a = _mm256_sllv_epi32(x, left);
    let zero = _mm256_setzero_si256();
    let nudge_pos = _mm256_set1_epi64x(1 << 30);
    let nudge_neg_extra = _mm256_set1_epi64x(1 - (1i64 << 31));
    let low31 = _mm256_set1_epi64x((1i64 << 31) - 1);
    let high = |p: __m256i| {
        let nudge = _mm256_add_epi64(
            nudge_pos,
            _mm256_and_si256(_mm256_cmpgt_epi64(zero, p), nudge_neg_extra),
        );
        let v = _mm256_add_epi64(p, nudge);
        let v = _mm256_add_epi64(v, _mm256_and_si256(_mm256_cmpgt_epi64(zero, v), low31));
        _mm256_srli_epi64(v, 31)
    };
    let even = high(_mm256_mul_epi32(a, m));
    let odd = high(_mm256_mul_epi32(
        _mm256_srli_epi64(a, 32),
        _mm256_srli_epi64(m, 32),
    ));
    let h = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b1010_1010);
    // floor((h + round) / 2^right) without overflow: (h >> right) plus the carry out of
    // the low bits, which sum below 2^32 as unsigned.
    let one = _mm256_set1_epi32(1);
    let pow = _mm256_sllv_epi32(one, right);
    let mask = _mm256_sub_epi32(pow, one);
    let round = _mm256_srli_epi32(pow, 1);
    let carry = _mm256_srlv_epi32(_mm256_add_epi32(_mm256_and_si256(h, mask), round), right);
    _mm256_add_epi32(_mm256_srav_epi32(h, right), carry)
}

/// Adds the output offset to 16 int32 lanes, clamps them into `[act_min, act_max]`
/// (inside int8, so the saturating packs are exact) and packs them in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn clamp_pack16_avx2(
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
    offset: i32,
    act_min: i32,
    act_max: i32,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let (off, mn, mx) = (
        _mm256_set1_epi32(offset),
        _mm256_set1_epi32(act_min),
        _mm256_set1_epi32(act_max),
    );
    let fix = |v: __m256i| _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, off), mn), mx);
    let w = _mm256_permute4x64_epi64(_mm256_packs_epi32(fix(lo), fix(hi)), 0b11_01_10_00);
    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn requant_avx512(acc: &[i32; QNR], l: &Lanes<'_>, rq: &Requant, out: &mut [i8; QNR]) {
    requant_half_up(acc, l, rq, out)
}

/// Portable micro-kernel: int32 lanes over int16 pairs.
///
/// # Safety
/// As [`PackedQ::panel`].
unsafe fn micro_portable(
    kp2: usize,
    a: &[*const i16; QMR],
    rows: usize,
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
) {
    // SAFETY: `b` holds `kp2 * 2 * QNR` values; each `a[r]` `2 * kp2`.
    let b = unsafe { std::slice::from_raw_parts(b, kp2 * 2 * QNR) };
    for r in 0..rows.min(QMR) {
        let ar = unsafe { std::slice::from_raw_parts(a[r], kp2 * 2) };
        let mut c = [0i32; QNR];
        for (pair, brow) in ar.chunks_exact(2).zip(b.chunks_exact(2 * QNR)) {
            let (a0, a1) = (i32::from(pair[0]), i32::from(pair[1]));
            for j in 0..QNR {
                let p = a0 * i32::from(brow[2 * j]) + a1 * i32::from(brow[2 * j + 1]);
                c[j] = c[j].wrapping_add(p);
            }
        }
        acc[r] = c;
    }
}

/// Dispatches `rows` (at most [`QMR`]) to the row-count-specialised kernel: a single
/// streaming row must not pay for six (or twelve) rows of multiply-adds.
macro_rules! by_rows {
    ($rows:expr, $f:ident, $($n:literal)+; $args:tt) => {
        match $rows {
            $( $n => $f::<$n> $args, )+
            _ => {}
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn micro_avx2(
    kp2: usize,
    a: &[*const i16; QMR],
    rows: usize,
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
) {
    // Six rows at a time: 12 accumulators, 2 panel vectors, 1 broadcast.
    let mut r0 = 0;
    while r0 < rows.min(QMR) {
        let n = (rows.min(QMR) - r0).min(6);
        // SAFETY: forwarded from the caller; rows r0..r0 + n exist in `a` and `acc`.
        unsafe { by_rows!(n, micro_avx2_r, 1 2 3 4 5 6; (kp2, a, r0, b, acc)) };
        r0 += n;
    }
}

/// `R` rows of [`micro_avx2`] starting at row `r0`.
///
/// # Safety
/// As [`PackedQ::panel`]; `r0 + R <= QMR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn micro_avx2_r<const R: usize>(
    kp2: usize,
    a: &[*const i16; QMR],
    r0: usize,
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
) {
    use std::arch::x86_64::*;
    let rp: [*const i16; R] = std::array::from_fn(|i| a[r0 + i]);
    let mut c = [[_mm256_setzero_si256(); 2]; R];
    for kk in 0..kp2 {
        // SAFETY: panel row `kk` is 32 int16 values; row pointers hold `2 * kp2`.
        unsafe {
            let b0 = _mm256_loadu_si256(b.add(kk * 32) as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(kk * 32 + 16) as *const __m256i);
            for i in 0..R {
                let av = _mm256_set1_epi32((rp[i].add(2 * kk) as *const i32).read_unaligned());
                c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(av, b0));
                c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(av, b1));
            }
        }
    }
    for i in 0..R {
        // SAFETY: `acc[r0 + i]` is 16 int32s.
        unsafe {
            let dst = acc[r0 + i].as_mut_ptr() as *mut __m256i;
            _mm256_storeu_si256(dst, c[i][0]);
            _mm256_storeu_si256(dst.add(1), c[i][1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn micro_avx512(
    kp2: usize,
    a: &[*const i16; QMR],
    rows: usize,
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
    vnni: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            by_rows!(rows, micro_avx512_vnni, 1 2 3 4 5 6 7 8 9 10 11 12; (kp2, a, b, acc));
        } else {
            by_rows!(rows, micro_avx512_madd, 1 2 3 4 5 6 7 8 9 10 11 12; (kp2, a, b, acc));
        }
    }
}

/// `R` rows of the AVX-512 kernel with `vpdpwssd`.
///
/// # Safety
/// As [`PackedQ::panel`]; `R <= rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn micro_avx512_vnni<const R: usize>(
    kp2: usize,
    a: &[*const i16; QMR],
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
) {
    use std::arch::x86_64::*;
    let rp: [*const i16; R] = std::array::from_fn(|i| a[i]);
    let mut c = [_mm512_setzero_si512(); R];
    for kk in 0..kp2 {
        // SAFETY: as in `micro_avx2_r`.
        unsafe {
            let bv = _mm512_loadu_si512(b.add(kk * 32) as *const _);
            for i in 0..R {
                let av = _mm512_set1_epi32((rp[i].add(2 * kk) as *const i32).read_unaligned());
                c[i] = _mm512_dpwssd_epi32(c[i], av, bv);
            }
        }
    }
    for i in 0..R {
        // SAFETY: `acc[i]` is 16 int32s.
        unsafe { _mm512_storeu_si512(acc[i].as_mut_ptr() as *mut _, c[i]) };
    }
}

/// `R` rows of the AVX-512BW kernel with `vpmaddwd` and an add.
///
/// # Safety
/// As [`PackedQ::panel`]; `R <= rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn micro_avx512_madd<const R: usize>(
    kp2: usize,
    a: &[*const i16; QMR],
    b: *const i16,
    acc: &mut [[i32; QNR]; QMR],
) {
    use std::arch::x86_64::*;
    let rp: [*const i16; R] = std::array::from_fn(|i| a[i]);
    let mut c = [_mm512_setzero_si512(); R];
    for kk in 0..kp2 {
        // SAFETY: as in `micro_avx2_r`.
        unsafe {
            let bv = _mm512_loadu_si512(b.add(kk * 32) as *const _);
            for i in 0..R {
                let av = _mm512_set1_epi32((rp[i].add(2 * kk) as *const i32).read_unaligned());
                c[i] = _mm512_add_epi32(c[i], _mm512_madd_epi16(av, bv));
            }
        }
    }
    for i in 0..R {
        // SAFETY: `acc[i]` is 16 int32s.
        unsafe { _mm512_storeu_si512(acc[i].as_mut_ptr() as *mut _, c[i]) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// TFLite's arithmetic, written plainly.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[i8],
        w: &[i8],
        m: usize,
        n: usize,
        k: usize,
        bias: &[i32],
        in_off: i32,
        mult: &[i32],
        shift: &[i32],
        out_off: i32,
    ) -> Vec<i8> {
        let mut out = vec![0i8; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut acc = bias[c];
                for kk in 0..k {
                    acc = acc.wrapping_add(
                        i32::from(w[c * k + kk]).wrapping_mul(i32::from(a[r * k + kk]) + in_off),
                    );
                }
                let left = shift[c].max(0);
                let right = (-shift[c]).max(0);
                let high = crate::quant::saturating_rounding_doubling_high_mul(
                    acc.wrapping_mul(1 << left),
                    mult[c],
                );
                let v = if right == 0 {
                    high
                } else {
                    ((i64::from(high) + (1i64 << (right - 1))) >> right) as i32
                };
                out[r * n + c] = v.wrapping_add(out_off).clamp(-128, 127) as i8;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_path_matches_the_plain_arithmetic(
            m in 1usize..20, n in 1usize..40, k in 1usize..70, seed in 0u64..1000,
            in_off in -127i32..128, out_off in -128i32..128,
        ) {
            let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) as u32 };
            let a: Vec<i8> = (0..m * k).map(|_| next() as i8).collect();
            let w: Vec<i8> = (0..n * k).map(|_| next() as i8).collect();
            let bias: Vec<i32> = (0..n).map(|_| (next() % 20001) as i32 - 10000).collect();
            let mult: Vec<i32> = (0..n).map(|_| (1 << 30) + (next() % (1 << 30)) as i32).collect();
            let shift: Vec<i32> = (0..n).map(|_| -((next() % 12) as i32) + 1).collect();
            let want = reference(&a, &w, m, n, k, &bias, in_off, &mult, &shift, out_off);
            let packed = PackedQ::new(&w, n, k, Some(&bias), in_off, &mult, &shift, out_off, -128, 127).unwrap();
            for isa in QIsa::available() {
                let mut rows16: Vec<Vec<i16>> = (0..m).map(|r| {
                    let mut v: Vec<i16> = a[r * k..r * k + k].iter().map(|&x| i16::from(x)).collect();
                    v.resize(packed.kp, 0);
                    v
                }).collect();
                let mut out = vec![0i8; m * n];
                let mr = isa.mr();
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(mr);
                    let mut ap = [rows16[r0].as_ptr(); QMR];
                    let mut op = [out.as_mut_ptr(); QMR];
                    for i in 0..rows {
                        ap[i] = rows16[r0 + i].as_ptr();
                        op[i] = unsafe { out.as_mut_ptr().add((r0 + i) * n) };
                    }
                    for p in 0..packed.panels() {
                        unsafe { packed.panel(isa, &ap, rows, p, &op) };
                    }
                    r0 += rows;
                }
                rows16.clear();
                prop_assert_eq!(&out, &want, "{}", isa.name());
            }
        }
    }
}
