//! `meshward-proxy`: the sidecar binary.

fn main() {
    meshward_identity::crypto::install_default_provider();
}
