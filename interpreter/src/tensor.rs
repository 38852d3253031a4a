//! Element types, quantization parameters, shapes, and the owned tensor and aligned byte
//! buffer used everywhere data crosses an API boundary.

use std::fmt;

use bytemuck::{Pod, Zeroable};
use thiserror::Error;

use crate::error::KernelError;

/// Element type of a tensor, numbered as in the TFLite schema's `TensorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    I32,
    U8,
    I64,
    Str,
    Bool,
    I16,
    I8,
    F64,
    U64,
    Resource,
    Variant,
    U32,
    U16,
}

impl DType {
    /// Maps a schema `TensorType` code; `None` for types we do not handle (complex, int4, ...).
    pub fn from_schema(code: i8) -> Option<DType> {
        Some(match code {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::I32,
            3 => DType::U8,
            4 => DType::I64,
            5 => DType::Str,
            6 => DType::Bool,
            7 => DType::I16,
            9 => DType::I8,
            10 => DType::F64,
            12 => DType::U64,
            13 => DType::Resource,
            14 => DType::Variant,
            15 => DType::U32,
            16 => DType::U16,
            _ => return None,
        })
    }

    /// The schema code, for writing models.
    pub fn schema_code(self) -> i8 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::I32 => 2,
            DType::U8 => 3,
            DType::I64 => 4,
            DType::Str => 5,
            DType::Bool => 6,
            DType::I16 => 7,
            DType::I8 => 9,
            DType::F64 => 10,
            DType::U64 => 12,
            DType::Resource => 13,
            DType::Variant => 14,
            DType::U32 => 15,
            DType::U16 => 16,
        }
    }

    /// Bytes per element. Resource handles are stored as one `i32` id; strings have no
    /// fixed size and report 1 (their buffers are opaque bytes).
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 | DType::Str => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 | DType::Resource | DType::Variant => 4,
            DType::I64 | DType::F64 | DType::U64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::I32 => "int32",
            DType::U8 => "uint8",
            DType::I64 => "int64",
            DType::Str => "string",
            DType::Bool => "bool",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::F64 => "float64",
            DType::U64 => "uint64",
            DType::Resource => "resource",
            DType::Variant => "variant",
            DType::U32 => "uint32",
            DType::U16 => "uint16",
        }
    }

    pub fn is_quantized_int(self) -> bool {
        matches!(self, DType::I8 | DType::U8 | DType::I16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`, per tensor (one scale) or per
/// channel along `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub axis: usize,
}

impl Quant {
    pub fn per_tensor(scale: f32, zero_point: i64) -> Quant {
        Quant {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: 0,
        }
    }

    pub fn is_per_channel(&self) -> bool {
        self.scale.len() > 1
    }

    /// Scale of channel `c` (the single scale when per-tensor).
    pub fn scale_at(&self, c: usize) -> f32 {
        if self.scale.len() == 1 {
            self.scale[0]
        } else {
            self.scale[c]
        }
    }

    /// Zero point of channel `c` (0 when the model stores none).
    pub fn zero_point_at(&self, c: usize) -> i64 {
        match self.zero_point.len() {
            0 => 0,
            1 => self.zero_point[0],
            _ => self.zero_point[c],
        }
    }
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// One cache line: the unit of [`AlignedBuf`], so every buffer starts 64-byte aligned.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialised byte buffer whose start is 64-byte aligned, so it can be viewed as
/// a slice of any element type and fed to SIMD code.
#[derive(Clone, Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

/// An allocation the system refused (or one too large to ask for): returned instead of
/// aborting the process, so a hostile size costs one request, not the daemon.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("cannot allocate {bytes} bytes")]
pub struct AllocError {
    pub bytes: usize,
}

impl AlignedBuf {
    /// Infallible constructor for sizes the caller has already bounded (test data, small
    /// metadata). Anything sized by a model or a client goes through [`AlignedBuf::try_zeroed`].
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(bytes.len());
        buf.as_mut_slice().copy_from_slice(bytes);
        buf
    }

    /// A zeroed buffer, or an error when the memory cannot be had.
    pub fn try_zeroed(len: usize) -> Result<AlignedBuf, AllocError> {
        let mut lines = Vec::new();
        lines
            .try_reserve_exact(len.div_ceil(64))
            .map_err(|_| AllocError { bytes: len })?;
        lines.resize(len.div_ceil(64), Line([0; 64]));
        Ok(AlignedBuf { lines, len })
    }

    /// A copy of `bytes`, or an error when the memory cannot be had.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<AlignedBuf, AllocError> {
        let mut buf = AlignedBuf::try_zeroed(bytes.len())?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(buf)
    }

    /// [`AlignedBuf::resize`] that reports a refused allocation instead of aborting.
    pub fn try_resize(&mut self, len: usize) -> Result<(), AllocError> {
        let lines = len.div_ceil(64);
        if lines > self.lines.len() {
            self.lines
                .try_reserve_exact(lines - self.lines.len())
                .map_err(|_| AllocError { bytes: len })?;
        }
        self.resize(len);
        Ok(())
    }

    /// Typed constructor, e.g. from `&[f32]`.
    pub fn from_slice<T: Pod>(values: &[T]) -> AlignedBuf {
        AlignedBuf::from_bytes(bytemuck::cast_slice(values))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<Line, u8>(&self.lines)[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Line, u8>(&mut self.lines)[..self.len]
    }

    /// Resizes to `len` bytes; contents are preserved up to the shorter length and new
    /// bytes are zero.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(64), Line([0; 64]));
        if len > self.len {
            let old = self.len;
            self.len = len;
            self.as_mut_slice()[old..].fill(0);
        } else {
            self.len = len;
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// An owned tensor: what callers pass in and get back from an interpreter.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: AlignedBuf,
}

impl Tensor {
    /// Builds a tensor, checking that `bytes` holds exactly `shape` elements of `dtype`.
    pub fn from_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Tensor, KernelError> {
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| KernelError::shape(format!("shape {shape:?} overflows")))?;
        if expected != bytes.len() {
            return Err(KernelError::shape(format!(
                "{dtype} tensor of shape {shape:?} needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Tensor {
            dtype,
            shape,
            data: AlignedBuf::from_bytes(bytes),
        })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, KernelError> {
        Tensor::from_bytes(DType::F32, shape, bytemuck::cast_slice(values))
    }

    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            quant: None,
            bytes: self.data.as_slice(),
        }
    }

    pub fn element_count(&self) -> usize {
        self.data.len() / self.dtype.size().max(1)
    }
}

/// A read-only view of tensor data handed to a kernel.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub quant: Option<&'a Quant>,
    pub bytes: &'a [u8],
}

/// A writable view of an output tensor handed to a kernel.
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub quant: Option<&'a Quant>,
    pub bytes: &'a mut [u8],
}

macro_rules! typed_access {
    ($($get:ident, $get_mut:ident, $t:ty, [$($dt:ident),+]);* $(;)?) => {
        impl<'a> TensorView<'a> {
            $(
            #[doc = concat!("The data as `", stringify!($t), "`; errors on a dtype mismatch.")]
            pub fn $get(&self) -> Result<&'a [$t], KernelError> {
                if !matches!(self.dtype, $(DType::$dt)|+) {
                    return Err(KernelError::dtype(stringify!($t), self.dtype));
                }
                bytemuck::try_cast_slice(self.bytes)
                    .map_err(|e| KernelError::invalid(format!("misaligned tensor data: {e:?}")))
            }
            )*
        }
        impl<'a> TensorViewMut<'a> {
            $(
            #[doc = concat!("The data as mutable `", stringify!($t), "`; errors on a dtype mismatch.")]
            pub fn $get_mut(&mut self) -> Result<&mut [$t], KernelError> {
                if !matches!(self.dtype, $(DType::$dt)|+) {
                    return Err(KernelError::dtype(stringify!($t), self.dtype));
                }
                bytemuck::try_cast_slice_mut(self.bytes)
                    .map_err(|e| KernelError::invalid(format!("misaligned tensor data: {e:?}")))
            }
            )*
        }
    };
}

typed_access! {
    f32s, f32s_mut, f32, [F32];
    i32s, i32s_mut, i32, [I32, Resource];
    i64s, i64s_mut, i64, [I64];
    i8s, i8s_mut, i8, [I8];
    u8s, u8s_mut, u8, [U8, Bool];
    i16s, i16s_mut, i16, [I16];
    f16s, f16s_mut, half::f16, [F16];
}

impl TensorView<'_> {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Reads an integer tensor (int32 or int64) as `i64`s, e.g. for shape or axis inputs.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, KernelError> {
        match self.dtype {
            DType::I32 => Ok(self.i32s()?.iter().map(|&v| v as i64).collect()),
            DType::I64 => Ok(self.i64s()?.to_vec()),
            other => Err(KernelError::dtype("int32 or int64", other)),
        }
    }

    pub fn to_owned_tensor(&self) -> Tensor {
        Tensor {
            dtype: self.dtype,
            shape: self.shape.to_vec(),
            data: AlignedBuf::from_bytes(self.bytes),
        }
    }
}

impl TensorViewMut<'_> {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// A read-only view of the same data.
    pub fn as_view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: self.shape,
            quant: self.quant,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_and_resizable() {
        let mut b = AlignedBuf::zeroed(10);
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        b.as_mut_slice()[9] = 7;
        b.resize(100);
        assert_eq!(b.as_slice()[9], 7);
        assert_eq!(b.as_slice()[99], 0);
        b.resize(3);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn impossible_allocations_are_errors() {
        assert_eq!(
            AlignedBuf::try_zeroed(usize::MAX).unwrap_err(),
            AllocError { bytes: usize::MAX }
        );
        let mut b = AlignedBuf::try_zeroed(10).unwrap();
        assert!(b.try_resize(usize::MAX / 2).is_err());
        assert_eq!(b.len(), 10);
        b.try_resize(200).unwrap();
        assert_eq!(b.len(), 200);
    }

    #[test]
    fn typed_access_checks_dtype() {
        let t = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        assert_eq!(t.view().f32s().unwrap(), &[1.0, 2.0]);
        assert!(t.view().i32s().is_err());
    }

    #[test]
    fn tensor_size_is_checked() {
        assert!(Tensor::from_bytes(DType::F32, vec![3], &[0; 8]).is_err());
    }
}
