#!/usr/bin/env bash
# Durable write throughput and latency, in one run and with the same client settings:
# one node, then a three-node loopback cluster at one, quorum and all. 64 clients spread
# over the nodes, 100-byte values, medians of RUNS runs of DURATION seconds.
#   cargo build --release && bench/cluster.sh
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}

run() { # label spread consistency
    local results=()
    for _ in $(seq "$RUNS"); do
        results+=("$("$V" bench --node "${2%%,*}" --spread "$2" --certs "$work/certs" --clients "$CLIENTS" \
            --duration-secs "$DURATION" --value-bytes 100 --consistency "$3" --json --quiet)")
    done
    printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
runs = sorted((json.loads(l) for l in sys.stdin if l.strip()), key=lambda r: r["ops_per_s"])
m = runs[len(runs) // 2]
lat = m["latency_ms"]
print("%-26s %10.0f %9.3f %9.3f %7d" % (sys.argv[1], m["ops_per_s"], lat["p50"], lat["p99"], sum(r["errors"] for r in runs)))' "$1"
}

printf '%-26s %10s %9s %9s %7s\n' "setup" "puts/s" "p50 ms" "p99 ms" "errors"
start_node s1 7401
run "1 node" "${ADDRS[s1]}" one
stop_node s1
start_node n1 7411
start_node n2 7412 --join 127.0.0.1:7411
start_node n3 7413 --join 127.0.0.1:7411
until [ "$(state_of n1 n3)" = alive ] && [ "$(state_of n3 n2)" = alive ]; do sleep 0.2; done
spread="${ADDRS[n1]},${ADDRS[n2]},${ADDRS[n3]}"
for level in one quorum all; do
    run "3 nodes, $level" "$spread" "$level"
done
