//! Build script: compiles the control-plane ↔ proxy protocol
//! (`proto/meshward/config/v1/config.proto`) into Rust. The `.proto` is parsed by protox, a
//! protobuf compiler written in Rust, so building needs no `protoc` binary (as in
//! `meshward-identity`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["meshward/config/v1/config.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Both ends dial and accept their own TLS connections (SPIFFE verification), so the
        // generated `connect(addr)` shortcut is not wanted.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
