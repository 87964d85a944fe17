//! Generates the CSI v1 message types and gRPC stubs from `proto/csi.proto`.
//!
//! The proto file is parsed with `protox` (pure Rust), so no `protoc`
//! binary is needed at build time.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");

    let fds = protox::compile(["proto/csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
