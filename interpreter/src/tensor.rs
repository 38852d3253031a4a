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

/// Buffers from this size up take whole pages from the kernel (an anonymous private
/// mapping) instead of the heap: the pages are zero when first touched and not resident
/// before, so a large buffer (a session's arena) costs nothing until it is written and
/// nothing on open, and dropping it returns the memory to the system at once instead of
/// leaving a hole in the allocator's heap. Smaller buffers, made per request, stay on
/// the heap where allocation is cheaper than a system call.
const PAGES_FROM: usize = 1 << 20;

/// Where an [`AlignedBuf`]'s bytes live.
enum Storage {
    Lines(Vec<Line>),
    /// At least [`PAGES_FROM`] bytes, page-aligned; `len` may be below the mapping's.
    Pages(memmap2::MmapMut),
}

/// A zero-initialised byte buffer whose start is 64-byte aligned, so it can be viewed as
/// a slice of any element type and fed to SIMD code.
pub struct AlignedBuf {
    storage: Storage,
    len: usize,
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf {
            storage: Storage::Lines(Vec::new()),
            len: 0,
        }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        AlignedBuf::from_bytes(self.as_slice())
    }
}

/// An allocation the system refused (or one too large to ask for): returned instead of
/// aborting the process, so a hostile size costs one request, not the daemon.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("cannot allocate {bytes} bytes")]
pub struct AllocError {
    pub bytes: usize,
}

/// Zeroed heap lines for `len` bytes, or an error when the memory cannot be had.
fn try_lines(len: usize) -> Result<Vec<Line>, AllocError> {
    let mut lines = Vec::new();
    lines
        .try_reserve_exact(len.div_ceil(64))
        .map_err(|_| AllocError { bytes: len })?;
    lines.resize(len.div_ceil(64), Line([0; 64]));
    Ok(lines)
}

impl AlignedBuf {
    /// Infallible constructor for sizes the caller has already bounded (test data, small
    /// metadata). Anything sized by a model or a client goes through [`AlignedBuf::try_zeroed`].
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf::try_zeroed(len).unwrap_or_else(|_| AlignedBuf {
            storage: Storage::Lines(vec![Line([0; 64]); len.div_ceil(64)]),
            len,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(bytes.len());
        buf.as_mut_slice().copy_from_slice(bytes);
        buf
    }

    /// A zeroed buffer, or an error when the memory cannot be had. Large buffers are
    /// fresh pages that become resident only where they are written.
    pub fn try_zeroed(len: usize) -> Result<AlignedBuf, AllocError> {
        let storage = if len >= PAGES_FROM {
            Storage::Pages(memmap2::MmapMut::map_anon(len).map_err(|_| AllocError { bytes: len })?)
        } else {
            Storage::Lines(try_lines(len)?)
        };
        Ok(AlignedBuf { storage, len })
    }

    /// A copy of `bytes`, or an error when the memory cannot be had.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<AlignedBuf, AllocError> {
        let mut buf = AlignedBuf::try_zeroed(bytes.len())?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(buf)
    }

    /// Bytes the storage holds without moving.
    fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Lines(l) => l.len() * 64,
            Storage::Pages(m) => m.len(),
        }
    }

    /// [`AlignedBuf::resize`] that reports a refused allocation instead of aborting.
    pub fn try_resize(&mut self, len: usize) -> Result<(), AllocError> {
        if len > self.capacity() {
            if len >= PAGES_FROM || matches!(self.storage, Storage::Pages(_)) {
                // Moves to fresh pages (a heap buffer's growth would copy as well).
                let mut grown = AlignedBuf::try_zeroed(len)?;
                let keep = self.len;
                grown.as_mut_slice()[..keep].copy_from_slice(self.as_slice());
                *self = grown;
                return Ok(());
            }
            if let Storage::Lines(lines) = &mut self.storage {
                lines
                    .try_reserve_exact(len.div_ceil(64) - lines.len())
                    .map_err(|_| AllocError { bytes: len })?;
            }
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
        match &self.storage {
            Storage::Lines(l) => &bytemuck::cast_slice::<Line, u8>(l)[..self.len],
            Storage::Pages(m) => &m[..self.len],
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Lines(l) => &mut bytemuck::cast_slice_mut::<Line, u8>(l)[..self.len],
            Storage::Pages(m) => &mut m[..self.len],
        }
    }

    /// Resizes to `len` bytes; contents are preserved up to the shorter length and new
    /// bytes are zero.
    pub fn resize(&mut self, len: usize) {
        if len > self.capacity() && (len >= PAGES_FROM || matches!(self.storage, Storage::Pages(_)))
        {
            let mut grown = AlignedBuf::zeroed(len);
            let keep = self.len;
            grown.as_mut_slice()[..keep].copy_from_slice(self.as_slice());
            *self = grown;
            return;
        }
        if let Storage::Lines(lines) = &mut self.storage {
            lines.resize(len.div_ceil(64), Line([0; 64]));
        }
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
    fn large_buffers_are_zero_pages_that_keep_contents_across_resizes() {
        let mut b = AlignedBuf::try_zeroed(3 * PAGES_FROM + 5).unwrap();
        assert!(matches!(b.storage, Storage::Pages(_)));
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[PAGES_FROM] = 7;
        let last = b.len() - 1;
        b.as_mut_slice()[last] = 9;
        let copy = b.clone();
        assert_eq!(copy.as_slice(), b.as_slice());
        // Shrinking keeps the pages; growing again within them reads zeros past the old
        // length, not what was there before.
        b.resize(PAGES_FROM + 1);
        b.resize(3 * PAGES_FROM + 5);
        assert_eq!((b.as_slice()[PAGES_FROM], b.as_slice()[last]), (7, 0));
        // Growing past the mapping moves to a larger one with the contents.
        b.try_resize(4 * PAGES_FROM).unwrap();
        assert_eq!(b.as_slice()[PAGES_FROM], 7);
        // A small heap buffer grown past the threshold moves to pages.
        let mut s = AlignedBuf::from_bytes(&[1, 2, 3]);
        s.try_resize(PAGES_FROM).unwrap();
        assert!(matches!(s.storage, Storage::Pages(_)));
        assert_eq!(&s.as_slice()[..4], &[1, 2, 3, 0]);
        assert!(s.try_resize(usize::MAX / 2).is_err());
        assert_eq!(s.len(), PAGES_FROM);
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
