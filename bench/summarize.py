#!/usr/bin/env python3
"""Markdown summary (medians over runs) of a bench/run.sh results directory, with meshward/Envoy
ratios against the issue's targets. Usage: bench/summarize.py results/<dir>"""
import os
import statistics
import sys

d = sys.argv[1]
raw = os.path.join(d, "raw")


def med(xs):
    xs = [float(x) for x in xs if x not in ("", "NA", None)]
    return statistics.median(xs) if xs else float("nan")


rows = {}
with open(os.path.join(raw, "results.tsv")) as f:
    for line in f:
        c = line.rstrip("\n").split("\t")
        if len(c) >= 15:
            rows.setdefault((c[0], c[1]), []).append(c)


def col(key, i):
    return med([r[i] for r in rows.get(key, []) if len(r) > i])


mem = {}
mem_path = os.path.join(raw, "memory.tsv")
if os.path.exists(mem_path):
    for line in open(mem_path):
        s, comp, rss, hwm = line.split()
        mem[(s, comp)] = (int(rss) / 1024, int(hwm) / 1024)


def fmt(x, p=0):
    return "NA" if x != x else f"{x:,.{p}f}"


print("# meshward-proxy vs Envoy\n")
print("```\n" + open(os.path.join(d, "env.txt")).read().strip() + "\n```\n")
n = max((len(v) for v in rows.values()), default=0)
print(f"Medians of {n} runs. CPU columns are ms of CPU per 1,000 requests (= µs per request). "
      "busy % is the share of both cores in use; unattributed is busy CPU not charged to the proxies, "
      "nginx or the load tool (kernel softirq for loopback TCP, and anything else running).\n")

ORDER = ["direct", "pair-rbac", "mw-rbac", "pair-jwt", "mw-jwt", "pair-tcp", "mw-tcp",
         "hs-pair-tcp", "hs-mw-tcp", "hs-mw"]
NOPROXY = ("direct",)

print("## Maximum throughput (wrk, fixed connections)\n")
print("| scenario | req/s | p50 ms | p90 ms | p99 ms | errors | client proxy CPU/1k | server proxy CPU/1k "
      "| nginx CPU/1k | load tool CPU/1k | busy % | unattributed % | new mTLS conns/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in ORDER:
    k = (s, "wrk")
    if k not in rows:
        continue
    hs = col(k, 15)
    proxy = s not in NOPROXY
    print(f"| {s} | {fmt(col(k,3))} | {fmt(col(k,5),3)} | {fmt(col(k,6),3)} | {fmt(col(k,7),3)} | {fmt(col(k,8))} "
          f"| {fmt(col(k,9),1) if proxy else '-'} | {fmt(col(k,10),1) if proxy else '-'} | {fmt(col(k,11),1)} "
          f"| {fmt(col(k,12),1)} | {fmt(col(k,13))} | {fmt(col(k,14))} | {fmt(hs) if hs == hs else '-'} |")

base = ("direct", "oha")
if any(k[1] == "oha" for k in rows):
    print("\n## Latency at a fixed rate (oha -q, coordinated-omission corrected)\n")
    print("| scenario | achieved req/s | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 | errors "
          "| client proxy CPU/1k | server proxy CPU/1k | busy % | unattributed % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in ORDER:
        k = (s, "oha")
        if k not in rows:
            continue
        add = [col(k, i) - col(base, i) if base in rows else float("nan") for i in (5, 6, 7)]
        proxy = s not in NOPROXY
        print(f"| {s} | {fmt(col(k,3))} | {fmt(col(k,5),3)} | {fmt(col(k,6),3)} | {fmt(col(k,7),3)} "
              f"| {fmt(add[0],3) if proxy else '-'} | {fmt(add[1],3) if proxy else '-'} | {fmt(add[2],3) if proxy else '-'} "
              f"| {fmt(col(k,8))} | {fmt(col(k,9),1) if proxy else '-'} | {fmt(col(k,10),1) if proxy else '-'} "
              f"| {fmt(col(k,13))} | {fmt(col(k,14))} |")

if mem:
    print("\n## Proxy memory (after the scenario's runs)\n")
    print("| scenario | process | RSS MiB | peak RSS (VmHWM) MiB |")
    print("|---|---|---|---|")
    for (s, c), (rss, hwm) in mem.items():
        print(f"| {s} | {c} | {rss:.1f} | {hwm:.1f} |")


def ratio(a, b):
    return a / b if b == b and b != 0 and a == a else float("nan")


print("\n## meshward / Envoy, same run\n")
print("Targets: requests/s ≥ 2×; added p99 ≤ 0.5×; CPU per request ≤ 0.5× (per proxy); RSS ≤ 10 MiB per proxy.\n")
print("| comparison | req/s (wrk) | added p99 at fixed rate | client CPU/req (wrk) | server CPU/req (wrk) "
      "| client CPU/req (fixed rate) | server CPU/req (fixed rate) | max RSS MiB (meshward / Envoy) |")
print("|---|---|---|---|---|---|---|---|")
for mw, env, label in (("mw-rbac", "pair-rbac", "HTTP, mTLS + authorization"),
                       ("mw-jwt", "pair-jwt", "HTTP, mTLS + JWT + authorization"),
                       ("mw-tcp", "pair-tcp", "TCP, mTLS + L4 authorization"),
                       ("hs-mw-tcp", "hs-pair-tcp", "TCP, new mTLS connection per request")):
    wm, we, om, oe = (mw, "wrk"), (env, "wrk"), (mw, "oha"), (env, "oha")
    if wm not in rows or we not in rows:
        continue
    added = lambda k: col(k, 7) - col(base, 7) if k in rows and base in rows else float("nan")
    rss_m = max((v[1] for (s, _), v in mem.items() if s == mw), default=float("nan"))
    rss_e = max((v[1] for (s, _), v in mem.items() if s == env), default=float("nan"))
    print(f"| {label} | {ratio(col(wm,3), col(we,3)):.2f}× | {ratio(added(om), added(oe)):.2f}× "
          f"| {ratio(col(wm,9), col(we,9)):.2f}× | {ratio(col(wm,10), col(we,10)):.2f}× "
          f"| {ratio(col(om,9), col(oe,9)):.2f}× | {ratio(col(om,10), col(oe,10)):.2f}× "
          f"| {fmt(rss_m,1)} / {fmt(rss_e,1)} |")
