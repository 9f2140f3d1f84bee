//! Tally's gRPC API, package `tally.v1`, generated from `proto/tally/v1/*.proto`.

/// The `tally.v1` messages, clients and servers.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("tally.v1");
}

/// The encoded file descriptor set of `tally.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));
