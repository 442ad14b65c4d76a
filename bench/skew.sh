#!/usr/bin/env bash
# Clock skew as the nodes measure it between processes on one host (one clock, so the
# true skew is 0): three nodes, every member's skew from every node once a second for
# SECS seconds; prints the median and the largest absolute value, in milliseconds.
#   cargo build --release -p vergent && bench/skew.sh
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-60}
start_node n1 7501
start_node n2 7502 --join 127.0.0.1:7501
start_node n3 7503 --join 127.0.0.1:7501
sleep 3
for _ in $(seq "$SECS"); do
    for n in n1 n2 n3; do
        "$V" status --json --node "${ADDRS[$n]}" --certs "$work/certs" --timeout-ms 2000 2>/dev/null |
            python3 -c "
import json, sys
d = json.load(sys.stdin)
for m in d['members']:
    if m['name'] != d['node'] and m['clock_skew_us'] is not None:
        print(abs(m['clock_skew_us']) / 1000)" >>"$work/skews" || true
    done
    sleep 1
done
echo "$(wc -l <"$work/skews") readings over $SECS s: median $(median <"$work/skews") ms, max $(sort -n "$work/skews" | tail -1) ms"
