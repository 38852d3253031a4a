//! Reading and writing NumPy `.npy` files (format versions 1–3, little-endian, C order),
//! the exchange format of the CLI and the golden tests.

use std::io::Write;

use thiserror::Error;

use crate::tensor::{DType, Tensor};

#[derive(Debug, Error)]
pub enum NpyError {
    #[error("not an .npy file (bad magic)")]
    BadMagic,
    #[error("truncated .npy file")]
    Truncated,
    #[error("unsupported .npy header: {0}")]
    Header(String),
    #[error("unsupported dtype {0}")]
    DType(String),
    #[error("data holds {actual} bytes, shape {shape:?} of {dtype} needs {expected}")]
    Size {
        shape: Vec<usize>,
        dtype: DType,
        expected: usize,
        actual: usize,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn dtype_descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::F64 => "<f8",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        _ => return None,
    })
}

fn descr_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "<f8" => DType::F64,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "<i2" => DType::I16,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "|b1" => DType::Bool,
        "<u2" => DType::U16,
        "<u4" => DType::U32,
        "<u8" => DType::U64,
        _ => return None,
    })
}

/// Value of `'key': value` in a header dict (a tiny parser for NumPy's fixed format).
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8]) -> Result<Tensor, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let major = bytes[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let raw = bytes.get(8..12).ok_or(NpyError::Truncated)?;
            (
                u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize,
                12,
            )
        }
        v => return Err(NpyError::Header(format!("format version {v}"))),
    };
    let header_end = header_start
        .checked_add(header_len)
        .ok_or(NpyError::Truncated)?;
    let header = bytes
        .get(header_start..header_end)
        .ok_or(NpyError::Truncated)?;
    let header = std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".into()))?;
    let descr = header_field(header, "descr").ok_or_else(|| NpyError::Header(header.into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = descr_dtype(descr).ok_or_else(|| NpyError::DType(descr.into()))?;
    if header_field(header, "fortran_order") == Some("True") {
        return Err(NpyError::Header("Fortran order is not supported".into()));
    }
    let shape_s = header_field(header, "shape").ok_or_else(|| NpyError::Header(header.into()))?;
    let shape = shape_s
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Header(format!("shape {shape_s}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = &bytes[header_end..];
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| NpyError::Header("shape overflows".into()))?;
    if data.len() != expected {
        return Err(NpyError::Size {
            shape,
            dtype,
            expected,
            actual: data.len(),
        });
    }
    Tensor::from_bytes(dtype, shape, data).map_err(|e| NpyError::Header(e.to_string()))
}

/// Reads an `.npy` file.
pub fn read(path: impl AsRef<std::path::Path>) -> Result<Tensor, NpyError> {
    parse(&std::fs::read(path)?)
}

/// Serialises a tensor as `.npy` (version 1) bytes.
pub fn to_bytes(dtype: DType, shape: &[usize], data: &[u8]) -> Result<Vec<u8>, NpyError> {
    let descr = dtype_descr(dtype).ok_or_else(|| NpyError::DType(dtype.name().into()))?;
    let shape_s = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Pad so the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Writes a tensor to an `.npy` file.
pub fn write(
    path: impl AsRef<std::path::Path>,
    dtype: DType,
    shape: &[usize],
    data: &[u8],
) -> Result<(), NpyError> {
    let bytes = to_bytes(dtype, shape, data)?;
    let mut f = std::fs::File::create(path)?;
    f.write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = Tensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let bytes = to_bytes(t.dtype, &t.shape, t.data.as_slice()).unwrap();
        assert_eq!((bytes.len() - 24) % 64, 0);
        let back = parse(&bytes).unwrap();
        assert_eq!(back.shape, vec![2, 3]);
        assert_eq!(back.view().f32s().unwrap(), t.view().f32s().unwrap());
    }

    #[test]
    fn scalar_and_vector_shapes() {
        for shape in [vec![], vec![5]] {
            let n: usize = shape.iter().product();
            let bytes = to_bytes(DType::I8, &shape, &vec![0u8; n]).unwrap();
            assert_eq!(parse(&bytes).unwrap().shape, shape);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"hello").is_err());
        let mut bytes = to_bytes(DType::F32, &[4], &[0; 16]).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(parse(&bytes), Err(NpyError::Size { .. })));
    }
}
