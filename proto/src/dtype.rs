//! Element sizes and names of wire data types, shared by the daemon and the client so
//! both check tensor byte lengths the same way.

use crate::v1::DataType;

impl DataType {
    /// Bytes per element; `None` for `Unspecified`.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Unspecified => return None,
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Float16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Float32 | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Int64 | DataType::Float64 | DataType::Uint64 => 8,
        })
    }

    /// Byte length of a tensor of this type and shape, or `None` on overflow or an
    /// unspecified type.
    pub fn byte_len(self, shape: &[u64]) -> Option<usize> {
        let mut n = self.element_size()?;
        for &d in shape {
            n = n.checked_mul(usize::try_from(d).ok()?)?;
        }
        Some(n)
    }

    /// The numpy-style name (`float32`, `int8`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            DataType::Unspecified => "unspecified",
            DataType::Float32 => "float32",
            DataType::Float16 => "float16",
            DataType::Int32 => "int32",
            DataType::Uint8 => "uint8",
            DataType::Int64 => "int64",
            DataType::Bool => "bool",
            DataType::Int16 => "int16",
            DataType::Int8 => "int8",
            DataType::Float64 => "float64",
            DataType::Uint64 => "uint64",
            DataType::Uint32 => "uint32",
            DataType::Uint16 => "uint16",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_len_checks_overflow() {
        assert_eq!(DataType::Float32.byte_len(&[1, 2, 3]), Some(24));
        assert_eq!(DataType::Int8.byte_len(&[]), Some(1));
        assert_eq!(DataType::Float32.byte_len(&[u64::MAX, 2]), None);
        assert_eq!(DataType::Unspecified.byte_len(&[1]), None);
    }
}
