#!/usr/bin/env bash
# Typed updates against lww puts, in one run: a three-node loopback cluster, 64 clients
# spread over the nodes at quorum; lww puts (100-byte values), counter increments and set
# adds, interleaved RUNS times so each kind sees the same machine; medians, and each
# kind's ratio to the lww puts.
#   cargo build --release && bench/typed.sh
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-100000}

start_three 7431
"$V" bucket create lwwb "${admin[@]}" >/dev/null
"$V" bucket create hits --type counter "${admin[@]}" >/dev/null
"$V" bucket create tags --type set "${admin[@]}" >/dev/null
sleep 1

one() { # label, then bench flags
    local label=$1
    shift
    "$V" bench --node "${ADDRS[n1]}" --spread "$spread" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --keys "$KEYS" --value-bytes 100 --consistency quorum \
        --json --quiet "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(sys.argv[1], r["ops_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"])' "$label"
}

results=$(for _ in $(seq "$RUNS"); do
    one lww --bucket lwwb
    one incr --bucket hits --update incr
    one sadd --bucket tags --update sadd
done)
echo "$results" | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    label, ops, p50, p99, errors = line.split()
    rows.setdefault(label, []).append((float(ops), float(p50), float(p99), int(errors)))
base = statistics.median(r[0] for r in rows["lww"])
print("%-18s %10s %9s %9s %7s %8s" % ("operation", "ops/s", "p50 ms", "p99 ms", "errors", "vs lww"))
names = {"lww": "lww put", "incr": "counter incr", "sadd": "set add"}
for label in ("lww", "incr", "sadd"):
    runs = rows[label]
    ops = statistics.median(r[0] for r in runs)
    print("%-18s %10.0f %9.3f %9.3f %7d %7.2fx" % (names[label], ops,
        statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs),
        sum(r[3] for r in runs), ops / base))
print("medians of %s runs of %s s, %s clients, quorum, 3 nodes" % (len(rows["lww"]), sys.argv[1], sys.argv[2]))' "$DURATION" "$CLIENTS"
