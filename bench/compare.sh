#!/usr/bin/env bash
# The side-by-side report, in one run on one machine: the two ceilings (raw LMDB batched
# inserts, a raw QUIC mutual-TLS request/response loop), Vergent on one node and on three
# at one/quorum/all, and a three-member etcd cluster, every load the same shape: CLIENTS
# concurrent clients with one request in flight each, 100-byte values, puts under keys
# drawn uniformly from 100,000. Each figure is the median of RUNS runs of DURATION
# seconds; p50/p99 are those of the median run. Installs etcd (Debian's etcd-server)
# when it is missing.
#
#   bench/compare.sh                      # RUNS=3 DURATION=5 CLIENTS=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
KEYS=100000

if ! command -v etcd >/dev/null; then
    echo "installing etcd-server (etcd is not on PATH)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    # The package starts a system-wide etcd on the default ports; this run uses its own.
    $sudo systemctl stop etcd 2>/dev/null || $sudo service etcd stop 2>/dev/null || true
fi
cargo build --release -q -p vergent -p vergent-bench
V=target/release/vergent
B=target/release

work=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
stop_all() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    PIDS=()
}

# Ports the OS says are free right now.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

wait_for() { # file pattern
    for _ in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" "${1%.out}.err" >&2 2>/dev/null || true
    exit 1
}

"$V" certs init --dir "$work/certs" >/dev/null
for n in n1 n2 n3; do "$V" certs node "$n" --dir "$work/certs" --ip 127.0.0.1 >/dev/null; done

# One line per measurement in $work/results: label ops/s p50 p99 errors.
measure() { # label command...
    local label=$1
    shift
    for _ in $(seq "$RUNS"); do "$@"; done >"$work/runs.json"
    python3 - "$label" "$work/runs.json" >>"$work/results" <<'EOF'
import json, sys
runs = sorted((json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")), key=lambda r: r["ops_per_s"])
m = runs[len(runs) // 2]
print("%s\t%.0f\t%.3f\t%.3f\t%d" % (sys.argv[1], m["ops_per_s"], m["latency_ms"]["p50"], m["latency_ms"]["p99"], sum(r["errors"] for r in runs)))
EOF
    tail -1 "$work/results" | awk -F'\t' '{printf "  %-34s %10s ops/s  p50 %s ms  p99 %s ms\n", $1, $2, $3, $4}' >&2
}

start_vergent() { # name port [flags...]
    local name=$1 port=$2
    shift 2
    "$V" serve --name "$name" --listen "127.0.0.1:$port" --data-dir "$work/data/$name" \
        --certs "$work/certs" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    PIDS+=($!)
    wait_for "$work/$name.out" "listening on"
}

vergent_bench() { # spread consistency
    "$V" bench --node "${1%%,*}" --spread "$1" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --keys "$KEYS" --value-bytes 100 --mix 100:0:0 \
        --consistency "$2" --json --quiet
}

echo "ceilings" >&2
mkdir -p "$work/lmdb"
measure "ceiling: LMDB, 1000 puts/txn" "$B/ceiling-lmdb" --seconds "$DURATION" --batch 1000 --dir "$work/lmdb"
rm -rf "$work/lmdb"
read -r qport < <(free_ports 1)
"$B/ceiling-quic" serve --certs "$work/certs" --name n1 --listen "127.0.0.1:$qport" >"$work/quic.out" 2>"$work/quic.err" &
PIDS+=($!)
wait_for "$work/quic.out" "listening on"
measure "ceiling: QUIC request/response" "$B/ceiling-quic" load --certs "$work/certs" \
    --addr "127.0.0.1:$qport" --clients "$CLIENTS" --seconds "$DURATION"
stop_all

echo "Vergent" >&2
read -r p1 p2 p3 < <(free_ports 3)
start_vergent n1 "$p1"
measure "Vergent, 1 node" vergent_bench "127.0.0.1:$p1" one
stop_all
rm -rf "$work/data"
start_vergent n1 "$p1"
start_vergent n2 "$p2" --join "127.0.0.1:$p1"
start_vergent n3 "$p3" --join "127.0.0.1:$p1"
spread="127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3"
# Wait until every node sees the other two alive, so no run starts with hints.
for node in $p1 $p2 $p3; do
    until "$V" status --json --node "127.0.0.1:$node" --certs "$work/certs" 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(sum(m["state"]=="alive" for m in d["members"]) < 3)'; do
        sleep 0.2
    done
done
for level in one quorum all; do
    measure "Vergent, 3 nodes, $level" vergent_bench "$spread" "$level"
done
stop_all

echo "etcd" >&2
read -r c1 c2 c3 e1 e2 e3 < <(free_ports 6)
cluster="e1=http://127.0.0.1:$e1,e2=http://127.0.0.1:$e2,e3=http://127.0.0.1:$e3"
i=0
for peer in $e1 $e2 $e3; do
    i=$((i + 1))
    client=$(eval echo "\$c$i")
    etcd --name "e$i" --data-dir "$work/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token vergent-compare \
        >"$work/e$i.out" 2>&1 &
    PIDS+=($!)
done
for client in $c1 $c2 $c3; do
    until curl -sf "http://127.0.0.1:$client/health" | grep -q '"health":"true"'; do sleep 0.2; done
done
etcd_version=$(etcd --version | sed -n 's/^etcd Version: //p')
measure "etcd $etcd_version, 3 members" "$B/etcd-load" --endpoints "127.0.0.1:$c1,127.0.0.1:$c2,127.0.0.1:$c3" \
    --clients "$CLIENTS" --seconds "$DURATION" --keys "$KEYS"
stop_all

echo >&2
echo "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB," \
    "$(df -T "$work" | awk 'NR==2{print $2}') on $(uname -sr); $CLIENTS clients, 100-byte puts," \
    "$KEYS keys, median of $RUNS × ${DURATION} s"
python3 - "$work/results" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
rate = {r[0]: float(r[1]) for r in rows}
ceiling = min(v for k, v in rate.items() if k.startswith("ceiling"))
etcd = next(v for k, v in rate.items() if k.startswith("etcd"))
print("| setup | ops/s | p50 ms | p99 ms | errors | × etcd | × tighter ceiling |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label, ops, p50, p99, errors in rows:
    ops = float(ops)
    print(f"| {label} | {ops:,.0f} | {p50} | {p99} | {errors} | {ops / etcd:.2f} | {ops / ceiling:.2f} |")
EOF
