#!/usr/bin/env bash
# Single-node durable put throughput, in one run: group commit (the default) against one
# transaction and fsync per write, each with 1 and with 64 concurrent clients. Prints the
# median of RUNS runs of DURATION seconds each, and p50/p99 latency of the median run.
#
#   cargo build --release && bench/single-node.sh            # RUNS=5 DURATION=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VERGENT:-target/release/vergent}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$V" certs init --dir "$work/certs" >/dev/null
"$V" certs node b1 --dir "$work/certs" --ip 127.0.0.1 >/dev/null

start_node() { # $1: extra serve flags
    rm -rf "$work/data"
    "$V" serve --name b1 --listen 127.0.0.1:0 --data-dir "$work/data" --certs "$work/certs" $1 \
        >"$work/serve.out" 2>"$work/serve.err" &
    for _ in $(seq 100); do
        grep -q "listening on" "$work/serve.out" 2>/dev/null && break
        sleep 0.1
    done
    ADDR=$(sed -n 's/.*listening on //p' "$work/serve.out")
}

printf '%-28s %8s %12s %10s %10s\n' "mode" "clients" "puts/s" "p50 ms" "p99 ms"
declare -A median
for mode in group-commit one-txn-per-write; do
    flags=""
    [ "$mode" = one-txn-per-write ] && flags="--write-batch-max 1"
    start_node "$flags"
    for clients in 1 64; do
        results=()
        for _ in $(seq "$RUNS"); do
            results+=("$("$V" bench --node "$ADDR" --certs "$work/certs" --clients "$clients" \
                --duration-secs "$DURATION" --value-bytes 100 --json --quiet)")
        done
        line=$(printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
runs = sorted((json.loads(l) for l in sys.stdin if l.strip()), key=lambda r: r["ops_per_s"])
m = runs[len(runs) // 2]
lat = m["latency_ms"]
print("%.0f %.3f %.3f %d" % (m["ops_per_s"], lat["p50"], lat["p99"], sum(r["errors"] for r in runs)))')
        read -r rate p50 p99 errors <<<"$line"
        median["$mode/$clients"]=$rate
        printf '%-28s %8s %12s %10s %10s%s\n' "$mode" "$clients" "$rate" "$p50" "$p99" \
            "$([ "$errors" != 0 ] && echo "  ($errors errors)")"
    done
    kill %1; wait %1 2>/dev/null || true
done
for clients in 1 64; do
    python3 -c "print(f'group commit / one txn per write, $clients clients: {${median[group-commit/$clients]} / ${median[one-txn-per-write/$clients]}:.2f}x')"
done
