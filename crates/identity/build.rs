//! Build script: compiles the Istio CA service definition (`proto/istio/v1/auth/ca.proto`) into
//! Rust. The `.proto` is parsed by protox, a protobuf compiler written in Rust, so building needs
//! no `protoc` binary; protox also supplies `google/protobuf/struct.proto`, whose Rust types come
//! from `prost-types`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["istio/v1/auth/ca.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The client is built on a `Channel` that this crate connects itself (TLS with SPIFFE
        // verification), so the generated `connect(addr)` shortcut is not wanted.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
