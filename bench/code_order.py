#!/usr/bin/env python3
"""Which of the proxy's functions run, and a link order that keeps them together.

A sidecar's resident memory is mostly its own code: the kernel maps a binary's code a fault-around
window (64 KiB) at a time, so a function that runs is resident together with whatever the linker
put next to it. Placing the functions that run next to each other (lld's --symbol-ordering-file,
read by crates/proxy/build.rs from crates/proxy/link-order.txt) leaves the code that never runs in
pages that are never mapped.

    code_order.py probe-add BINARY     a uprobe on the entry of every function of BINARY (tracefs
                                       group `mwcode`; root)
    code_order.py probe-collect BINARY the functions whose probe fired, in address order, mangled:
                                       lld's --symbol-ordering-file format
    code_order.py probe-counts BINARY  how often each function has run so far: "<hits> <mangled name>"
                                       (cumulative; bench/run.sh keeps one snapshot as each scenario's
                                       proxies are up and one as the scenario ends)
    code_order.py order BINARY DIR...  the link order from the snapshots in each DIR (see `order`
                                       below): bench/run.sh's and bench/mesh-functions.sh's
    code_order.py probe-remove         removes the `mwcode` probes
    code_order.py resident PID         resident KiB per mapping of the proxy binary (code, read-only
                                       data, …), from /proc/PID/pagemap
    code_order.py pages PID            the file offsets of the resident pages of the proxy's code
    code_order.py coverage BINARY LIST how many of LIST's names BINARY defines ("N of M"); exits 1
                                       below 90 %
    code_order.py remap BINARY LIST    LIST with each name BINARY lacks replaced by BINARY's
                                       names for the same function path (another hash), on stdout

Symbol names carry a hash of the crate and of the build's dependency features, so a proxy built
another way (`cargo build --release` unifies features over the whole workspace, `-p
meshward-proxy` over the proxy's dependencies only) or after a change to a generic type has other
names for most of the same functions. The link order is made for the workspace build, which is
what README's first command and the local mesh run; `coverage` tells whether it still applies,
`remap` carries it over to renamed functions without a new probe run.

`bench/run.sh` with PERF=functions adds the probes before its scenarios, snapshots their counts as
each scenario's proxies are up and as it ends, and writes raw/functions.txt (the union) and
raw/link-order.txt (`order`) after them; `bench/mesh-functions.sh` does the same for the proxies of
a local mesh. The probes slow the proxies down: that run's numbers are not measurements. A
function counts once it has run at all, start-up included: start-up code is resident for the
proxy's whole life too (unless the host reclaims it).
"""

import os
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
TRACEFS = "/sys/kernel/tracing"
GROUP = "mwcode"


def text_segment(binary):
    """(file offset, virtual address) of the executable LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD" and "E" in parts[6:-1]:
            return int(parts[1], 16), int(parts[2], 16)
    raise SystemExit(f"{binary}: no executable LOAD segment")


def functions(binary):
    """(file offset, mangled name) of each function with code, one per address."""
    seg_offset, seg_vaddr = text_segment(binary)
    nm = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    by_address = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[2] not in "tTwW" or int(parts[1], 16) == 0:
            continue
        by_address.setdefault(int(parts[0], 16), parts[3])
    return [(addr - seg_vaddr + seg_offset, name) for addr, name in sorted(by_address.items())]


def probe_add(binary):
    binary = os.path.realpath(binary)
    probe_remove()
    events = os.open(f"{TRACEFS}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        for i, (offset, _) in enumerate(functions(binary)):
            os.write(events, f"p:{GROUP}/f{i} {binary}:{offset:#x}\n".encode())
    finally:
        os.close(events)
    with open(f"{TRACEFS}/events/{GROUP}/enable", "w") as enable:
        enable.write("1")


def probe_collect(binary):
    names = functions(os.path.realpath(binary))
    for i in sorted(probe_hits(binary)):
        print(names[i][1])


def probe_hits(binary):
    """{index into functions(binary): hits} for every probe that has fired."""
    hits = {}
    with open(f"{TRACEFS}/uprobe_profile") as profile:
        for line in profile:
            parts = line.split()
            # "<file> <event> <hits> [<misses>]"; events are named f<index into functions()>
            if len(parts) >= 3 and parts[1].startswith("f") and int(parts[2]) > 0:
                hits[int(parts[1][1:])] = int(parts[2])
    return hits


def probe_counts(binary):
    names = functions(os.path.realpath(binary))
    for i, n in sorted(probe_hits(binary).items()):
        print(n, names[i][1])


def read_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            hits, name = line.split()
            counts[name] = int(hits)
    return counts


# Scenarios whose proxies serve HTTP first: a tie between two groups of functions is broken towards
# the one these use, so the HTTP proxies' code (the larger) is the most contiguous.
SCENARIO_PRIORITY = ["mw-rbac", "mw-jwt", "hs-mw", "mesh", "mw-tcp", "hs-mw-tcp"]


def order(binary, snapshot_dirs):
    """The link order: functions grouped by where they run, each group in address order.

    Each DIR (one probe session, counts cumulative within it) holds `sequence` (snapshot labels in the order taken, `<scenario>.start` once the
    scenario's proxies are up, `<scenario>.end` when it ends) and `<label>.counts` from
    probe-counts. A function runs at start-up of a scenario when its count grew before `.start`,
    and in its traffic when it grew between `.start` and `.end`. Each scenario's proxies keep
    resident every fault-around window holding a function they ran, so the functions of one
    scenario should share windows with each other and not with other scenarios' functions:

      1. start-up only (run while starting or stopping, never under traffic; run.sh takes a last
         `shutdown.start` snapshot after the last proxies stopped): together they can be
         reclaimed as one block once a proxy is up;
      2. traffic functions.
    Within each, functions are grouped by the exact set of scenarios that ran them (a proxy
    reading files starts differently from one fed by the control plane): the sets used by more
    scenarios first, ties towards SCENARIO_PRIORITY.
    """
    startup, traffic = {}, {}
    for snapshots in snapshot_dirs:
        with open(os.path.join(snapshots, "sequence")) as f:
            labels = [line.strip() for line in f if line.strip()]
        previous = {}
        for label in labels:
            counts = read_counts(os.path.join(snapshots, f"{label}.counts"))
            scenario, _, phase = label.rpartition(".")
            grew = {n for n, c in counts.items() if c > previous.get(n, 0)}
            for n in grew:
                (startup if phase == "start" else traffic).setdefault(n, set()).add(scenario)
            previous = counts
    address = {name: i for i, (_, name) in enumerate(functions(os.path.realpath(binary)))}

    def rank(scenario):
        return SCENARIO_PRIORITY.index(scenario) if scenario in SCENARIO_PRIORITY else len(SCENARIO_PRIORITY)

    def grouped(where):
        """{scenario set: names}, in layout order: the sets used by more scenarios first."""
        groups = {}
        for name, sig in where.items():
            groups.setdefault(frozenset(sig), []).append(name)
        keys = sorted(groups, key=lambda sig: (-len(sig), sorted(rank(s) for s in sig)))
        return {sig: sorted(groups[sig], key=lambda n: address.get(n, -1)) for sig in keys}

    startup_groups = grouped({n: sig for n, sig in startup.items() if n not in traffic})
    traffic_groups = grouped(traffic)
    for groups in (startup_groups, traffic_groups):
        for names in groups.values():
            for name in names:
                print(name)

    def sizes(groups):
        return ", ".join(f"{'+'.join(sorted(sig, key=rank))}: {len(n)}" for sig, n in groups.items())

    print(f"start-up only, by scenario set: {sizes(startup_groups)}", file=sys.stderr)
    print(f"traffic, by scenario set: {sizes(traffic_groups)}", file=sys.stderr)


def probe_remove():
    enable = f"{TRACEFS}/events/{GROUP}/enable"
    if not os.path.exists(enable):
        return
    with open(enable, "w") as f:
        f.write("0")
    events = os.open(f"{TRACEFS}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        # The whole group at once (one synchronisation instead of one per probe) …
        try:
            os.write(events, f"-:{GROUP}/\n".encode())
        except OSError:
            pass
        # … and one by one where the kernel does not take that form.
        with open(f"{TRACEFS}/uprobe_events") as f:
            ours = [line.split()[0][2:] for line in f if line.startswith(f"p:{GROUP}/")]
        for name in ours:
            os.write(events, f"-:{name}\n".encode())
    finally:
        os.close(events)


def binary_mappings(pid):
    """(perms, file offset, resident page indexes) of each mapping of the proxy binary in PID."""
    with open(f"/proc/{pid}/maps") as maps:
        rows = [line.split() for line in maps]
    out = []
    for parts in rows:
        if len(parts) < 6 or not parts[5].endswith("meshward-proxy"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            pagemap.seek(start // PAGE * 8)
            data = pagemap.read((end - start) // PAGE * 8)
        present = [i for i in range(len(data) // 8) if struct.unpack_from("<Q", data, i * 8)[0] >> 63 & 1]
        out.append((parts[1], int(parts[2], 16), (end - start) // PAGE, present))
    return out


def resident(pid):
    for perms, _, pages, present in binary_mappings(pid):
        print(f"{perms} {len(present) * PAGE // 1024:>6} KiB of {pages * PAGE // 1024:>6} KiB")


def pages(pid):
    """The file offsets of the resident pages of the proxy's code."""
    for perms, offset, _, present in binary_mappings(pid):
        if "x" in perms:
            for i in present:
                print(offset + i * PAGE)


def legacy_path(name):
    """A legacy-mangled name without its hash (`…17h<16 hex>E` -> `…E`); others unchanged."""
    if len(name) > 20 and name.endswith("E") and name[-20:-17] == "17h":
        return name[:-20] + "E"
    return name


def listed(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def coverage(binary, path):
    defined = {name for _, name in functions(binary)}
    names = listed(path)
    found = sum(1 for n in names if n in defined)
    share = found / len(names) if names else 0.0
    print(f"{found} of {len(names)} listed functions are in {binary} ({share:.0%})")
    if share < 0.9:
        print("the link order is stale: refresh it (bench/run.sh PERF=functions, or remap)", file=sys.stderr)
        sys.exit(1)


def remap(binary, path):
    defined = [name for _, name in functions(binary)]
    present = set(defined)
    by_path = {}
    for name in defined:
        by_path.setdefault(legacy_path(name), []).append(name)
    seen = set()
    for name in listed(path):
        for new in [name] if name in present else by_path.get(legacy_path(name), []):
            if new not in seen:
                seen.add(new)
                print(new)


def main(argv):
    if len(argv) == 3 and argv[1] == "probe-add":
        probe_add(argv[2])
    elif len(argv) == 3 and argv[1] == "probe-collect":
        probe_collect(argv[2])
    elif len(argv) == 3 and argv[1] == "probe-counts":
        probe_counts(argv[2])
    elif len(argv) >= 4 and argv[1] == "order":
        order(argv[2], argv[3:])
    elif len(argv) == 2 and argv[1] == "probe-remove":
        probe_remove()
    elif len(argv) == 3 and argv[1] == "pages":
        pages(int(argv[2]))
    elif len(argv) == 4 and argv[1] == "coverage":
        coverage(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "remap":
        remap(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "resident":
        resident(int(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
