//! Generates the `tally.v1` code from `proto/` with protox, so no `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("tally/v1/counter.proto"),
        root.join("tally/v1/namespace.proto"),
        root.join("tally/v1/peer.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tally_descriptor.bin"), fds.encode_to_vec())?;
    // A request that does not decode is INVALID_ARGUMENT, not INTERNAL (see `codec`).
    tonic_prost_build::configure().codec_path("crate::codec::StrictCodec").compile_fds(fds)?;
    Ok(())
}
