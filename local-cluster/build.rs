//! Generates the kubelet plugin-registration server from `proto/pluginregistration.proto`
//! (protox: no protoc binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let fds = protox::compile(["proto/pluginregistration.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
