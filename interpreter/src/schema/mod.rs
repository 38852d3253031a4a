//! Our own subset of the TFLite flatbuffer schema, written from the format's published
//! field numbering (no generated or copied schema file).
//!
//! Only the tables the interpreter reads are declared. Every root table is checked by the
//! `flatbuffers` verifier (bounded depth, table count and apparent size) before any accessor
//! runs; builtin-option tables are reached through [`options::OptionsTable`], whose reads
//! are bounds-checked one by one, so an option table needs no schema-level verification.
//!
//! Layout:
//! - this file: the `fb_table!` macro and the model tables (Model, SubGraph, Tensor, ...)
//! - [`options`]: checked reader for builtin-option tables

// Accessors below dereference offsets inside a buffer that `verify_model` has checked;
// that is the only unsafe code in the crate.
#![allow(unsafe_code)]

pub mod options;

use flatbuffers::{
    Follow, ForwardsUOffset, InvalidFlatbuffer, Table, Vector, Verifiable, Verifier,
    VerifierOptions,
};

/// Slot of field `id` in a vtable (two u16 header entries, then one u16 per field).
pub(crate) const fn slot(id: u16) -> u16 {
    4 + 2 * id
}

/// Declares a read-only view over one flatbuffer table.
///
/// Field kinds: `scalar T = default`, `vec T` (vector of scalars), `tables T` (vector of
/// tables), `str`, `table T`, `opaque` (a table of unknown type, e.g. a union value).
macro_rules! fb_table {
    (
        $(#[$meta:meta])*
        $name:ident { $( $id:literal $field:ident : $kind:ident $($ty:ident)? $(= $default:expr)? ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            table: Table<'a>,
        }

        impl<'a> Follow<'a> for $name<'a> {
            type Inner = $name<'a>;
            unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
                // SAFETY: callers reach tables only through verified offsets.
                $name { table: unsafe { Table::new(buf, loc) } }
            }
        }

        impl Verifiable for $name<'_> {
            fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
                let tv = v.visit_table(pos)?;
                $( let tv = fb_table!(@verify tv, $id, $field, $kind $($ty)?); )*
                tv.finish();
                Ok(())
            }
        }

        #[allow(dead_code)]
        impl<'a> $name<'a> {
            $( fb_table!(@get $id, $field, $kind $($ty)? $(= $default)?); )*

            /// The underlying table (position and buffer), for diagnostics.
            pub fn raw(&self) -> Table<'a> {
                self.table
            }
        }
    };

    (@verify $tv:ident, $id:literal, $field:ident, scalar $ty:ident) => {
        $tv.visit_field::<$ty>(stringify!($field), slot($id), false)?
    };
    (@verify $tv:ident, $id:literal, $field:ident, vec $ty:ident) => {
        $tv.visit_field::<ForwardsUOffset<Vector<'_, $ty>>>(stringify!($field), slot($id), false)?
    };
    (@verify $tv:ident, $id:literal, $field:ident, tables $ty:ident) => {
        $tv.visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<$ty>>>>(
            stringify!($field), slot($id), false)?
    };
    (@verify $tv:ident, $id:literal, $field:ident, str) => {
        $tv.visit_field::<ForwardsUOffset<&str>>(stringify!($field), slot($id), false)?
    };
    (@verify $tv:ident, $id:literal, $field:ident, table $ty:ident) => {
        $tv.visit_field::<ForwardsUOffset<$ty>>(stringify!($field), slot($id), false)?
    };
    (@verify $tv:ident, $id:literal, $field:ident, opaque) => {
        $tv.visit_field::<ForwardsUOffset<OpaqueTable>>(stringify!($field), slot($id), false)?
    };

    (@get $id:literal, $field:ident, scalar $ty:ident = $default:expr) => {
        pub fn $field(&self) -> $ty {
            // SAFETY: the field was checked by this table's verifier.
            unsafe { self.table.get::<$ty>(slot($id), Some($default)) }.unwrap_or($default)
        }
    };
    (@get $id:literal, $field:ident, vec $ty:ident) => {
        pub fn $field(&self) -> Option<Vector<'a, $ty>> {
            // SAFETY: as above.
            unsafe { self.table.get::<ForwardsUOffset<Vector<'a, $ty>>>(slot($id), None) }
        }
    };
    (@get $id:literal, $field:ident, tables $ty:ident) => {
        pub fn $field(&self) -> Option<Vector<'a, ForwardsUOffset<$ty<'a>>>> {
            // SAFETY: as above.
            unsafe { self.table.get::<ForwardsUOffset<Vector<'a, ForwardsUOffset<$ty<'a>>>>>(slot($id), None) }
        }
    };
    (@get $id:literal, $field:ident, str) => {
        pub fn $field(&self) -> Option<&'a str> {
            // SAFETY: as above.
            unsafe { self.table.get::<ForwardsUOffset<&'a str>>(slot($id), None) }
        }
    };
    (@get $id:literal, $field:ident, table $ty:ident) => {
        pub fn $field(&self) -> Option<$ty<'a>> {
            // SAFETY: as above.
            unsafe { self.table.get::<ForwardsUOffset<$ty<'a>>>(slot($id), None) }
        }
    };
    (@get $id:literal, $field:ident, opaque) => {
        pub fn $field(&self) -> Option<options::OptionsTable<'a>> {
            // SAFETY: as above; the table's own fields are read with bounds checks.
            let t = unsafe { self.table.get::<ForwardsUOffset<Table<'a>>>(slot($id), None) };
            t.map(|t| options::OptionsTable::new(t.buf(), t.loc()))
        }
    };
}

/// A table whose type is not known to the verifier (a union value). Only its vtable is
/// checked; fields are then read through [`options::OptionsTable`]'s checked accessors.
pub struct OpaqueTable;

impl Verifiable for OpaqueTable {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?.finish();
        Ok(())
    }
}

fb_table!(
    /// Root table of a `.tflite` file.
    Model {
        0 version: scalar u32 = 0,
        1 operator_codes: tables OperatorCode,
        2 subgraphs: tables SubGraph,
        3 description: str,
        4 buffers: tables Buffer,
        7 signature_defs: tables SignatureDef,
    }
);

fb_table!(
    /// Which operator an `Operator` runs; `builtin_code` supersedes the deprecated byte.
    OperatorCode {
        0 deprecated_builtin_code: scalar i8 = 0,
        1 custom_code: str,
        2 version: scalar i32 = 1,
        3 builtin_code: scalar i32 = 0,
    }
);

fb_table!(
    SubGraph {
        0 tensors: tables Tensor,
        1 inputs: vec i32,
        2 outputs: vec i32,
        3 operators: tables Operator,
        4 name: str,
    }
);

fb_table!(
    Tensor {
        0 shape: vec i32,
        1 tensor_type: scalar i8 = 0,
        2 buffer: scalar u32 = 0,
        3 name: str,
        4 quantization: table QuantizationParameters,
        5 is_variable: scalar bool = false,
        6 sparsity: table SparsityParameters,
        7 shape_signature: vec i32,
    }
);

fb_table!(
    QuantizationParameters {
        0 min: vec f32,
        1 max: vec f32,
        2 scale: vec f32,
        3 zero_point: vec i64,
        6 quantized_dimension: scalar i32 = 0,
    }
);

fb_table!(
    /// Constant data. Small models keep it inline (`data`); models over 2 GiB use
    /// `offset`/`size` relative to the start of the file.
    Buffer {
        0 data: vec u8,
        1 offset: scalar u64 = 0,
        2 size: scalar u64 = 0,
    }
);

fb_table!(
    Operator {
        0 opcode_index: scalar u32 = 0,
        1 inputs: vec i32,
        2 outputs: vec i32,
        3 builtin_options_type: scalar u8 = 0,
        4 builtin_options: opaque,
        5 custom_options: vec u8,
        6 custom_options_format: scalar i8 = 0,
        8 intermediates: vec i32,
    }
);

fb_table!(
    SparsityParameters {
        0 traversal_order: vec i32,
        1 block_map: vec i32,
        2 dim_metadata: tables DimensionMetadata,
    }
);

fb_table!(
    /// One dimension of a sparse tensor: dense (`format` 0) or CSR (`format` 1) with
    /// segment and index vectors held in a union of int32/uint16/uint8 vectors.
    DimensionMetadata {
        0 format: scalar i8 = 0,
        1 dense_size: scalar i32 = 0,
        2 array_segments_type: scalar u8 = 0,
        3 array_segments: opaque,
        4 array_indices_type: scalar u8 = 0,
        5 array_indices: opaque,
    }
);

fb_table!(
    SignatureDef {
        0 inputs: tables TensorMap,
        1 outputs: tables TensorMap,
        2 signature_key: str,
        4 subgraph_index: scalar u32 = 0,
    }
);

fb_table!(
    TensorMap {
        0 name: str,
        1 tensor_index: scalar u32 = 0,
    }
);

/// Limits for the verifier: a model is a few MiB of tables at most, so these bound the
/// work a hostile file can cause without rejecting any real model.
pub fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 32,
        max_tables: 4_000_000,
        max_apparent_size: 1 << 31,
        ignore_missing_null_terminator: true,
    }
}

/// Verifies the whole table tree of `bytes` and returns its root.
pub fn verify_model(bytes: &[u8]) -> Result<Model<'_>, InvalidFlatbuffer> {
    let opts = verifier_options();
    flatbuffers::root_with_opts::<Model>(&opts, bytes)
}
