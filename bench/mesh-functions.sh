#!/usr/bin/env bash
# Which functions of meshward-proxy run in the local mesh (`meshward up`), for the link order.
#
#   sudo bench/mesh-functions.sh          # ≈ 3 min; writes <OUT>/functions/
#
# The bench's proxies (bench/run.sh PERF=functions) read their configuration from files; the mesh's
# proxies take theirs from the control plane's stream, fetch their certificate from its CA and
# apply pushed updates, code the bench never runs. This script puts a uprobe on every function of
# the proxy binary, starts the embedded default mesh, and snapshots the probes' counts once it is
# ready (`mesh.start`), after traffic and policy changes (`mesh.end`) and after `meshward down`
# (`shutdown.start`). Combine with a bench run:
#
#   python3 bench/code_order.py order target/release/meshward-proxy \
#       bench/results/<run>/raw/functions <OUT>/functions > crates/proxy/link-order.txt
#
# Tunables (env): MESHWARD=target/release/meshward  OUT=bench/results/<UTC time>-mesh  REQUESTS=50
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MESHWARD=${MESHWARD:-$ROOT/target/release/meshward}
MW=$(dirname "$MESHWARD")/meshward-proxy
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)-mesh}
REQUESTS=${REQUESTS:-50}
SEED=$ROOT/examples/seeds/000-frontend-backend-mtls-authz

log() { printf '[mesh-functions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root (uprobes, the mesh's network namespaces)"; exit 1; }
[ -x "$MESHWARD" ] && [ -x "$MW" ] || { log "no $MESHWARD or $MW: cargo build --release"; exit 1; }
if "$MESHWARD" get pods >/dev/null 2>&1; then log "a mesh is already running: meshward down first"; exit 1; fi

mkdir -p "$OUT/functions"
: > "$OUT/functions/sequence"
cleanup() {
  "$MESHWARD" down >/dev/null 2>&1 || true
  python3 "$HERE/code_order.py" probe-remove || true
}
trap cleanup EXIT INT TERM

snapshot() {
  python3 "$HERE/code_order.py" probe-counts "$MW" > "$OUT/functions/$1.counts"
  echo "$1" >> "$OUT/functions/sequence"
}
requests() { # pod-or-deploy url expected-code
  local i code
  for i in $(seq 1 "$REQUESTS"); do
    code=$("$MESHWARD" exec "$1" -- curl -s -o /dev/null -w '%{http_code}' "$2" || true)
    [ "$code" = "$3" ] || { log "$1 -> $2: $code, expected $3"; exit 1; }
  done
}

log "probing every function of $MW"
python3 "$HERE/code_order.py" probe-add "$MW"
log "meshward up -d (embedded default)"
"$MESHWARD" up -d > "$OUT/up.txt" 2>&1
snapshot mesh.start

log "traffic: frontend -> backend, then seed 000's policies applied and the same traffic again"
requests deploy/frontend http://backend/ 200
"$MESHWARD" apply -f "$SEED/01-peer-authentication.yaml" -f "$SEED/02-deny-all.yaml" > /dev/null
sleep 1
requests deploy/frontend http://backend/ 403
"$MESHWARD" apply -f "$SEED/03-backend-allow-frontend.yaml" > /dev/null
sleep 1
requests deploy/frontend http://backend/ 200
# A plaintext client under STRICT: the server proxy closes the connection (curl exit 56).
"$MESHWARD" run intruder --no-sidecar -- curl -s -o /dev/null http://backend/ && { log "plaintext served under STRICT"; exit 1; }
snapshot mesh.end

log "meshward down"
"$MESHWARD" down > /dev/null
snapshot shutdown.start
log "snapshots in $OUT/functions"
