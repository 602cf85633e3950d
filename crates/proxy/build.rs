//! Release builds of `meshward-proxy` link the functions that run side by side.
//!
//! A sidecar's resident memory is mostly the pages of its own code that the kernel has mapped, and
//! the kernel maps code a fault-around window (64 KiB) at a time: one function that runs makes its
//! neighbours resident too. `link-order.txt` lists the functions that ran in the benchmark's
//! scenarios (`bench/run.sh` with `PERF=functions`) and in a local mesh
//! (`bench/mesh-functions.sh`), start-up code first, then the code that runs under traffic grouped
//! by the scenarios that run it (`bench/code_order.py order`); lld places them first, in that
//! order, so the code that never runs stays in pages that are never mapped. A name that no longer
//! exists is skipped, so a stale list costs memory, never correctness. The names are those of the
//! workspace build (`cargo build --release`, as README's first command): a build with other
//! dependency features has other symbol hashes. `scripts/test.sh` checks that at least 90 % of the
//! names exist (`bench/code_order.py coverage`), and `bench/code_order.py remap` carries the list
//! over to renamed functions.
//!
//! Relative relocations are packed too (see below).
//!
//! Only for the default x86_64 Linux target, whose linker is rustc's own lld (GNU ld has no
//! symbol ordering); `MESHWARD_NO_LINK_ORDER=1` turns it off.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=MESHWARD_NO_LINK_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let disabled = env::var_os("MESHWARD_NO_LINK_ORDER").is_some_and(|v| v == "1");
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    if !release || !lld_target || disabled {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): the dynamic loader reads a
    // few KiB at start-up instead of a third of a MiB of `.rela.dyn`, which then stays resident.
    println!("cargo:rustc-link-arg-bin=meshward-proxy=-Wl,-z,pack-relative-relocs");
    let order = format!("{dir}/link-order.txt");
    if std::path::Path::new(&order).is_file() {
        println!("cargo:rustc-link-arg-bin=meshward-proxy=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bin=meshward-proxy=-Wl,--no-warn-symbol-ordering");
    }
}
