//! switchyard-proto: the gRPC API of the Switchyard daemon.
//!
//! Layout: `proto/switchyard.proto` is the source of truth; `build.rs` compiles it with
//! protox (no protoc needed) into [`v1`]. [`FILE_DESCRIPTOR_SET`] serves reflection.
//! [`dtype`] maps wire element types to byte sizes and names. [`fastpath`] is the
//! byte layout of the shared-memory run channel, shared by the daemon and the client.

/// Generated code for package `switchyard.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// The encoded `FileDescriptorSet` of the API, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

pub mod dtype;
pub mod fastpath;

pub use v1::DataType;
