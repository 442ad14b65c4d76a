#!/usr/bin/env bash
# Linearizable puts against quorum lww puts, in one run: a three-node loopback cluster,
# 64 clients spread over the nodes, 100-byte values over 100,000 keys, interleaved RUNS
# times so each kind sees the same machine; then compare-and-set on one hot key (every
# client swaps it from the value it last saw). Medians, and ratios to the lww puts.
# Then the write fast path: linearizable puts on HOT_KEYS keys (each written often, so
# its home holds its last ballot), through any node and through n1 alone, with the
# share of puts that took one round trip, from the nodes' counters.
#   cargo build --release && bench/linearizable.sh
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-100000}
HOT_KEYS=${HOT_KEYS:-1000}

start_three 7441
"$V" bucket create lwwb "${admin[@]}" >/dev/null
"$V" bucket create locks --type linearizable "${admin[@]}" >/dev/null
sleep 1

one() { # label, then bench flags
    local label=$1
    shift
    "$V" bench --node "${ADDRS[n1]}" --spread "$spread" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --value-bytes 100 --json --quiet "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(sys.argv[1], r["ops_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"], r["swaps_per_s"])' "$label"
}

results=$(for _ in $(seq "$RUNS"); do
    one lww --bucket lwwb --keys "$KEYS" --consistency quorum
    one lin --bucket locks --keys "$KEYS"
    one cas --bucket locks --keys 1 --update cas
done)
lin_status=$("$V" status --json "${admin[@]}" | python3 -c '
import json, sys
l = json.load(sys.stdin)["linearizable"]
print("n1 linearizable: %d ops, %.2f round trips each, %d%% in one, %d retries" % (l["ops"], l["round_trips"] / max(l["ops"], 1), 100 * l["fast"] // max(l["ops"], 1), l["retries"]))')
echo "$results" | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    label, ops, p50, p99, errors, swaps = line.split()
    rows.setdefault(label, []).append((float(ops), float(p50), float(p99), int(errors), float(swaps)))
base = statistics.median(r[0] for r in rows["lww"])
print("%-30s %10s %9s %9s %7s %8s" % ("operation", "ops/s", "p50 ms", "p99 ms", "errors", "vs lww"))
names = {"lww": "lww put (quorum)", "lin": "linearizable put", "cas": "cas, one hot key"}
for label in ("lww", "lin", "cas"):
    runs = rows[label]
    ops = statistics.median(r[0] for r in runs)
    print("%-30s %10.0f %9.3f %9.3f %7d %7.2fx" % (names[label], ops,
        statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs),
        sum(r[3] for r in runs), ops / base))
print("cas swaps on the hot key: %.0f/s (median)" % statistics.median(r[4] for r in rows["cas"]))
print("medians of %s runs of %s s, %s clients, 3 nodes" % (len(rows["lww"]), sys.argv[1], sys.argv[2]))' "$DURATION" "$CLIENTS"
echo "$lin_status"

source bench/lin-counters.sh # the scripts run from the repository root
fast_share() { # label, then bench flags
    local label=$1 before after out
    shift
    before=$(lin_counters "${ADDRS[n1]}" "${ADDRS[n2]}" "${ADDRS[n3]}")
    out=$("$V" bench --certs "$work/certs" --clients "$CLIENTS" --duration-secs "$DURATION" \
        --value-bytes 100 --bucket locks --keys "$HOT_KEYS" --json --quiet "$@")
    after=$(lin_counters "${ADDRS[n1]}" "${ADDRS[n2]}" "${ADDRS[n3]}")
    python3 -c '
import json, sys
label, out, before, after = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
ops, rts, fast = (int(a) - int(b) for a, b in zip(after, before))
print("%-24s %8.0f puts/s  p50 %.3f ms  p99 %.3f ms  %.2f round trips each, %.0f%% in one"
      % (label, out["ops_per_s"], out["latency_ms"]["p50"], out["latency_ms"]["p99"],
         rts / max(ops, 1), 100 * fast / max(ops, 1)))' "$label" "$out" "$before" "$after"
}
echo "linearizable puts on $HOT_KEYS keys, $CLIENTS clients, $DURATION s:"
fast_share "through any node" --node "${ADDRS[n1]}" --spread "$spread"
fast_share "through n1 alone" --node "${ADDRS[n1]}"
