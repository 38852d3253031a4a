//! Bounds-checked reads from a flatbuffer table whose type the verifier did not know
//! (builtin options, sparse index vectors). Every read checks its range, so a malformed
//! options table yields `None`/an error rather than an out-of-bounds read.

use super::slot;

/// A table read field by field with explicit bounds checks.
#[derive(Clone, Copy)]
pub struct OptionsTable<'a> {
    buf: &'a [u8],
    loc: usize,
}

/// A scalar type stored little-endian in a flatbuffer.
pub trait LeScalar: Copy {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! le_scalar {
    ($($t:ty),*) => {$(
        impl LeScalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..Self::SIZE]);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
le_scalar!(u8, i8, u16, i16, u32, i32, u64, i64, f32);

impl LeScalar for bool {
    const SIZE: usize = 1;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

fn read<T: LeScalar>(buf: &[u8], pos: usize) -> Option<T> {
    let end = pos.checked_add(T::SIZE)?;
    buf.get(pos..end).map(T::from_le)
}

impl<'a> OptionsTable<'a> {
    pub fn new(buf: &'a [u8], loc: usize) -> Self {
        OptionsTable { buf, loc }
    }

    /// Absolute position of field `id`, if present.
    fn field_pos(&self, id: u16) -> Option<usize> {
        let soffset: i32 = read(self.buf, self.loc)?;
        let vtable = (self.loc as i64).checked_sub(soffset as i64)?;
        let vtable = usize::try_from(vtable).ok()?;
        let vtable_len: u16 = read(self.buf, vtable)?;
        let s = slot(id);
        if s + 2 > vtable_len {
            return None;
        }
        let field_off: u16 = read(self.buf, vtable + s as usize)?;
        if field_off == 0 {
            return None;
        }
        self.loc.checked_add(field_off as usize)
    }

    /// Scalar field `id`, or `default` when absent or out of bounds.
    pub fn scalar<T: LeScalar>(&self, id: u16, default: T) -> T {
        self.field_pos(id)
            .and_then(|p| read::<T>(self.buf, p))
            .unwrap_or(default)
    }

    /// Position and length of the vector referenced by field `id`.
    fn vector_span(&self, id: u16, elem_size: usize) -> Option<(usize, usize)> {
        let pos = self.field_pos(id)?;
        let off: u32 = read(self.buf, pos)?;
        let vpos = pos.checked_add(off as usize)?;
        let len: u32 = read(self.buf, vpos)?;
        let start = vpos.checked_add(4)?;
        let end = start.checked_add((len as usize).checked_mul(elem_size)?)?;
        if end > self.buf.len() {
            return None;
        }
        Some((start, len as usize))
    }

    /// Vector-of-scalars field `id`, copied out; `None` when absent or malformed.
    pub fn vector<T: LeScalar>(&self, id: u16) -> Option<Vec<T>> {
        let (start, len) = self.vector_span(id, T::SIZE)?;
        (0..len)
            .map(|i| read::<T>(self.buf, start + i * T::SIZE))
            .collect()
    }

    /// String field `id`; `None` when absent, out of bounds or not UTF-8.
    pub fn string(&self, id: u16) -> Option<&'a str> {
        let (start, len) = self.vector_span(id, 1)?;
        std::str::from_utf8(&self.buf[start..start + len]).ok()
    }
}
