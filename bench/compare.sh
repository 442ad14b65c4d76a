#!/usr/bin/env bash
# The side-by-side report, in one run on one machine: the two ceilings (raw LMDB batched
# inserts, a raw QUIC mutual-TLS request/response loop), Vergent on one node and on three
# at one/quorum/all and linearizable (puts, and compare-and-set on one hot key), and a
# three-member etcd cluster, every load the same shape: CLIENTS
# concurrent clients with one request in flight each, 100-byte values, puts under keys
# drawn uniformly from 100,000. Installs etcd (Debian's etcd-server) when missing.
#
# Everything is started once and left running; the measurements then go round in RUNS
# rounds, one run of DURATION seconds of each setup per round, each round starting with
# a different setup. On a shared machine a slow spell then costs every setup alike
# instead of whichever happened to be measured during it. Figures are the median run of
# each setup (by throughput), with that run's p50/p99.
#
#   bench/compare.sh                      # RUNS=5 DURATION=5 CLIENTS=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
KEYS=100000

if ! command -v etcd >/dev/null; then
    echo "installing etcd-server (etcd is not on PATH)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    # The package may start a system-wide etcd on the default ports; this run uses its own.
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

start_vergent() { # name port [flags...]
    local name=$1 port=$2
    shift 2
    "$V" serve --name "$name" --listen "127.0.0.1:$port" --data-dir "$work/data/$name" \
        --certs "$work/certs" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    PIDS+=($!)
    wait_for "$work/$name.out" "listening on"
}

"$V" certs init --dir "$work/certs" >/dev/null
for n in s1 n1 n2 n3; do "$V" certs node "$n" --dir "$work/certs" --ip 127.0.0.1 >/dev/null; done
read -r qport s1 p1 p2 p3 c1 c2 c3 e1 e2 e3 < <(free_ports 11)

"$B/ceiling-quic" serve --certs "$work/certs" --name n1 --listen "127.0.0.1:$qport" \
    >"$work/quic.out" 2>"$work/quic.err" &
PIDS+=($!)
wait_for "$work/quic.out" "listening on"

start_vergent s1 "$s1"
start_vergent n1 "$p1"
start_vergent n2 "$p2" --join "127.0.0.1:$p1"
start_vergent n3 "$p3" --join "127.0.0.1:$p1"
spread="127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3"
# Every node of three sees the other two alive before any run, so none starts with hints.
for port in $p1 $p2 $p3; do
    until "$V" status --json --node "127.0.0.1:$port" --certs "$work/certs" 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(sum(m["state"]=="alive" for m in d["members"]) < 3)'; do
        sleep 0.2
    done
done

cluster="e1=http://127.0.0.1:$e1,e2=http://127.0.0.1:$e2,e3=http://127.0.0.1:$e3"
clients=($c1 $c2 $c3)
peers=($e1 $e2 $e3)
for i in 0 1 2; do
    etcd --name "e$((i + 1))" --data-dir "$work/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token vergent-compare >"$work/e$i.out" 2>&1 &
    PIDS+=($!)
done
for port in "${clients[@]}"; do
    until curl -sf "http://127.0.0.1:$port/health" | grep -q '"health":"true"'; do sleep 0.2; done
done
etcd_version=$(etcd --version | sed -n 's/^etcd Version: //p')
"$V" bucket create locks --type linearizable --node "127.0.0.1:$p1" --certs "$work/certs" >/dev/null

vergent_bench() { # spread consistency
    "$V" bench --node "${1%%,*}" --spread "$1" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --keys "$KEYS" --value-bytes 100 --mix 100:0:0 \
        --consistency "$2" --json --quiet
}
source bench/lin-counters.sh # the scripts run from the repository root
linearizable_bench() { # label keys [bench flags...]
    local label=$1 keys=$2
    shift 2
    local before after
    before=$(lin_counters "127.0.0.1:$p1" "127.0.0.1:$p2" "127.0.0.1:$p3")
    "$V" bench --node "127.0.0.1:$p1" --spread "$spread" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --keys "$keys" --value-bytes 100 --bucket locks \
        --json --quiet "$@"
    after=$(lin_counters "127.0.0.1:$p1" "127.0.0.1:$p2" "127.0.0.1:$p3")
    echo "$label $before $after" >>"$work/lin-rounds"
}

LABELS=(
    "ceiling: LMDB, 1000 puts/txn"
    "ceiling: QUIC request/response"
    "Vergent, 1 node"
    "Vergent, 3 nodes, one"
    "Vergent, 3 nodes, quorum"
    "Vergent, 3 nodes, all"
    "Vergent, 3 nodes, linearizable"
    "Vergent, linearizable cas, 1 hot key"
    "etcd $etcd_version, 3 members"
)
run_setup() { # index
    case $1 in
    0)
        "$B/ceiling-lmdb" --seconds "$DURATION" --batch 1000 --dir "$work/lmdb"
        rm -rf "$work/lmdb"
        ;;
    1) "$B/ceiling-quic" load --certs "$work/certs" --addr "127.0.0.1:$qport" --clients "$CLIENTS" --seconds "$DURATION" ;;
    2) vergent_bench "127.0.0.1:$s1" one ;;
    3) vergent_bench "$spread" one ;;
    4) vergent_bench "$spread" quorum ;;
    5) vergent_bench "$spread" all ;;
    6) linearizable_bench put "$KEYS" ;;
    7) linearizable_bench cas 1 --update cas ;;
    8)
        "$B/etcd-load" --endpoints "127.0.0.1:$c1,127.0.0.1:$c2,127.0.0.1:$c3" \
            --clients "$CLIENTS" --seconds "$DURATION" --keys "$KEYS"
        ;;
    esac
}

n=${#LABELS[@]}
for round in $(seq 0 $((RUNS - 1))); do
    echo "round $((round + 1)) of $RUNS" >&2
    for k in $(seq 0 $((n - 1))); do
        s=$(((round + k) % n))
        line=$(run_setup "$s" | grep '^{')
        echo "$line" >>"$work/setup-$s.json"
        python3 -c '
import json, sys
r = json.loads(sys.argv[2])
print("  %-34s %10.0f ops/s  p50 %.3f ms  p99 %.3f ms" % (sys.argv[1], r["ops_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))' \
            "${LABELS[$s]}" "$line" >&2
    done
done

echo >&2
echo "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
    "$(free -g | awk '/^Mem:/{print $2}') GiB, $(df -T "$work" | awk 'NR==2{print $2}')" \
    "on $(uname -sr); $CLIENTS clients, 100-byte puts, $KEYS keys;" \
    "median of $RUNS interleaved runs of ${DURATION} s"
python3 - "$work" "${LABELS[@]}" <<'EOF'
import json, sys
work, labels = sys.argv[1], sys.argv[2:]
rows = []
for i, label in enumerate(labels):
    runs = sorted((json.loads(l) for l in open(f"{work}/setup-{i}.json") if l.startswith("{")),
                  key=lambda r: r["ops_per_s"])
    m = runs[len(runs) // 2]
    rows.append((label, m["ops_per_s"], m["latency_ms"]["p50"], m["latency_ms"]["p99"],
                 sum(r["errors"] for r in runs)))
ceiling = min(r[1] for r in rows if r[0].startswith("ceiling"))
etcd = next(r[1] for r in rows if r[0].startswith("etcd"))
print("| setup | ops/s | p50 ms | p99 ms | errors | × etcd | × tighter ceiling |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label, ops, p50, p99, errors in rows:
    print(f"| {label} | {ops:,.0f} | {p50:.3f} | {p99:.3f} | {errors} | {ops / etcd:.2f} | {ops / ceiling:.2f} |")
EOF
python3 - "$work/lin-rounds" "$work/setup-7.json" <<'EOF'
import json, statistics, sys
swaps = [json.loads(l)["swaps_per_s"] for l in open(sys.argv[2]) if l.startswith("{")]
print(f"cas on the hot key: {statistics.median(swaps):,.0f} swaps/s (median)")
sums = {}
for line in open(sys.argv[1]):
    label, *n = line.split()
    b, a = list(map(int, n[:3])), list(map(int, n[3:]))
    t = sums.setdefault(label, [0, 0, 0])
    for i in range(3):
        t[i] += a[i] - b[i]
for label, (ops, rts, fast) in sums.items():
    print(f"linearizable {label}s, every node: {ops} operations, {rts / max(ops, 1):.2f} round trips each, "
          f"{100 * fast / max(ops, 1):.0f}% in one round trip")
EOF
