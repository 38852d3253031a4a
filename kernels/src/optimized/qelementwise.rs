//! Optimized int8 elementwise arithmetic: the reference kernels' integer formulas in
//! branch-free loops that LLVM vectorises under each path's target features, so the
//! results are the reference's (and LiteRT's) bit for bit.

use super::qgemm::QIsa;
use crate::quant::multiply_by_quantized_multiplier;

/// Which binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QBinary {
    Add,
    Sub,
    Mul,
}

/// TFLite's quantized ADD/SUB/MUL parameters.
#[derive(Clone, Copy, Debug)]
pub struct QArith {
    pub zp1: i32,
    pub zp2: i32,
    pub zp_out: i32,
    pub m1: (i32, i32),
    pub m2: (i32, i32),
    pub m_out: (i32, i32),
    pub act_min: i32,
    pub act_max: i32,
    pub left_shift: i32,
}

#[inline(always)]
fn one(op: QBinary, p: &QArith, x: i8, y: i8) -> i8 {
    let (x, y) = (i32::from(x) - p.zp1, i32::from(y) - p.zp2);
    let v = match op {
        QBinary::Add | QBinary::Sub => {
            let sx = multiply_by_quantized_multiplier(x << p.left_shift, p.m1.0, p.m1.1);
            let sy = multiply_by_quantized_multiplier(y << p.left_shift, p.m2.0, p.m2.1);
            // Saturating: hostile scales can put each rescaled operand near 2^31.
            let raw = if op == QBinary::Add {
                sx.saturating_add(sy)
            } else {
                sx.saturating_sub(sy)
            };
            multiply_by_quantized_multiplier(raw, p.m_out.0, p.m_out.1).saturating_add(p.zp_out)
        }
        QBinary::Mul => {
            multiply_by_quantized_multiplier(x * y, p.m_out.0, p.m_out.1).saturating_add(p.zp_out)
        }
    };
    v.clamp(p.act_min, p.act_max) as i8
}

#[inline(always)]
fn run(op: QBinary, p: &QArith, a: &[i8], b: &[i8], out: &mut [i8]) {
    match op {
        QBinary::Add => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = one(QBinary::Add, p, x, y);
            }
        }
        QBinary::Sub => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = one(QBinary::Sub, p, x, y);
            }
        }
        QBinary::Mul => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = one(QBinary::Mul, p, x, y);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(op: QBinary, p: &QArith, a: &[i8], b: &[i8], out: &mut [i8]) {
    run(op, p, a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn run_avx512(op: QBinary, p: &QArith, a: &[i8], b: &[i8], out: &mut [i8]) {
    run(op, p, a, b, out)
}

/// `out[i] = op(a[i], b[i])` over same-length slices (the shortest bounds the loop).
pub fn binary_i8(op: QBinary, p: &QArith, a: &[i8], b: &[i8], out: &mut [i8], isa: QIsa) {
    match isa {
        // SAFETY: `isa` was detected on (or forced by a test for) this CPU.
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => unsafe { run_avx2(op, p, a, b, out) },
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx512 | QIsa::Avx512Vnni => unsafe { run_avx512(op, p, a, b, out) },
        QIsa::Portable => run(op, p, a, b, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path gives the scalar formula's bytes on all 65536 operand pairs.
    #[test]
    fn every_path_matches_the_scalar_formula_on_all_pairs() {
        let p = QArith {
            zp1: -3,
            zp2: 7,
            zp_out: -1,
            m1: (1_518_500_250, -1),
            m2: (1_789_569_707, 0),
            m_out: (1_288_490_189, -19),
            act_min: -128,
            act_max: 100,
            left_shift: 20,
        };
        let a: Vec<i8> = (0..65536u32).map(|i| (i & 0xff) as u8 as i8).collect();
        let b: Vec<i8> = (0..65536u32).map(|i| (i >> 8) as u8 as i8).collect();
        for op in [QBinary::Add, QBinary::Sub, QBinary::Mul] {
            let want: Vec<i8> = a.iter().zip(&b).map(|(&x, &y)| one(op, &p, x, y)).collect();
            for isa in QIsa::available() {
                let mut out = vec![0i8; a.len()];
                binary_i8(op, &p, &a, &b, &mut out, isa);
                assert_eq!(out, want, "{op:?} {isa:?}");
            }
        }
    }
}
