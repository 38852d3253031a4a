//! The client's own element type, so apps never see the wire's `i32` codes.

use std::fmt;
use std::str::FromStr;

use switchyard_proto::v1::DataType as Wire;

use crate::ClientError;

/// Element type of a tensor. Names follow numpy (`float32`, `int8`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Float32,
    Float16,
    Int32,
    Uint8,
    Int64,
    Bool,
    Int16,
    Int8,
    Float64,
    Uint64,
    Uint32,
    Uint16,
}

const ALL: [DType; 12] = [
    DType::Float32,
    DType::Float16,
    DType::Int32,
    DType::Uint8,
    DType::Int64,
    DType::Bool,
    DType::Int16,
    DType::Int8,
    DType::Float64,
    DType::Uint64,
    DType::Uint32,
    DType::Uint16,
];

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::Uint8 | DType::Int8 => 1,
            DType::Float16 | DType::Int16 | DType::Uint16 => 2,
            DType::Float32 | DType::Int32 | DType::Uint32 => 4,
            DType::Int64 | DType::Float64 | DType::Uint64 => 8,
        }
    }

    /// The numpy name.
    pub fn name(self) -> &'static str {
        self.to_wire().short_name()
    }

    /// Byte length of a tensor of this type and shape; `None` on overflow.
    pub fn byte_len(self, shape: &[u64]) -> Option<usize> {
        self.to_wire().byte_len(shape)
    }

    /// Same as [`DType::size`], for code written against the wire enum.
    pub fn element_size(self) -> Option<usize> {
        Some(self.size())
    }

    /// Same as [`DType::name`], for code written against the wire enum.
    pub fn short_name(self) -> &'static str {
        self.name()
    }

    pub fn to_wire(self) -> Wire {
        match self {
            DType::Float32 => Wire::Float32,
            DType::Float16 => Wire::Float16,
            DType::Int32 => Wire::Int32,
            DType::Uint8 => Wire::Uint8,
            DType::Int64 => Wire::Int64,
            DType::Bool => Wire::Bool,
            DType::Int16 => Wire::Int16,
            DType::Int8 => Wire::Int8,
            DType::Float64 => Wire::Float64,
            DType::Uint64 => Wire::Uint64,
            DType::Uint32 => Wire::Uint32,
            DType::Uint16 => Wire::Uint16,
        }
    }

    /// `None` for `Unspecified`.
    pub fn from_wire(w: Wire) -> Option<DType> {
        ALL.into_iter().find(|d| d.to_wire() == w)
    }
}

/// From the wire's numeric code (as in `TensorInfo.dtype`).
impl TryFrom<i32> for DType {
    type Error = ClientError;

    fn try_from(code: i32) -> Result<DType, ClientError> {
        Wire::try_from(code)
            .ok()
            .and_then(DType::from_wire)
            .ok_or_else(|| ClientError::Invalid(format!("unknown data type code {code}")))
    }
}

impl FromStr for DType {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<DType, ClientError> {
        ALL.into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| ClientError::Invalid(format!("unknown data type `{s}`")))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust element types that map to a [`DType`] (little-endian on the wire).
pub trait Element: Copy {
    const DTYPE: DType;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

element!(f32, DType::Float32);
element!(f64, DType::Float64);
element!(i8, DType::Int8);
element!(u8, DType::Uint8);
element!(i16, DType::Int16);
element!(u16, DType::Uint16);
element!(i32, DType::Int32);
element!(u32, DType::Uint32);
element!(i64, DType::Int64);
element!(u64, DType::Uint64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_through_wire_code_and_name() {
        for d in ALL {
            assert_eq!(DType::try_from(d.to_wire() as i32).unwrap(), d);
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert_eq!(d.element_size(), d.to_wire().element_size());
        }
        assert!(DType::try_from(0).is_err());
        assert!(DType::try_from(99).is_err());
        assert!("float8".parse::<DType>().is_err());
    }
}
