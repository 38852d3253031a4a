//! Compiles proto/switchyard.proto with protox (a pure-Rust .proto compiler), so the
//! build needs nothing outside cargo, and keeps the encoded descriptor set for server
//! reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/switchyard.proto");
    let fds = protox::compile(["switchyard.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("switchyard_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
