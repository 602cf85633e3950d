#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration tests, the conformance
# corpus and the seed examples through `meshward test`.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${MESHWARD_SHARED:-../shared}"

# A CI run starts from a fresh clone, where incremental compilation only writes caches that are
# never read again (several GiB for this workspace).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo build --release --locked
# The sidecar's link order (crates/proxy/link-order.txt) names functions of this build; a stale
# one costs resident memory, never correctness, so it is caught here.
python3 bench/code_order.py coverage target/release/meshward-proxy crates/proxy/link-order.txt
./target/release/meshward validate -f examples/
./target/release/meshward test examples/seeds
./target/release/meshward test "$shared/conformance" --skip-file conformance/exceptions.txt
