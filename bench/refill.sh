#!/usr/bin/env bash
# A replaced disk: three nodes hold the same KEYS keys of 100 bytes; n3 is killed, its
# data directory wiped, and it comes back empty under its name. Prints how long n3
# takes to fill every partition from n1 and n2 (and the rate), and the client p99 of a
# light load through n1 and n2 while it fills, against the same load before the wipe.
#   cargo build --release -p vergent -p vergent-bench && bench/refill.sh
source "$(dirname "$0")/lib.sh"
KEYS=${KEYS:-1000000}
LOAD_SECS=${LOAD_SECS:-10}
"$V" certs node loader --dir "$work/certs" --ip 127.0.0.1 >/dev/null
start_node n1 7401 --anti-entropy-interval off
start_node n2 7402 --join 127.0.0.1:7401 --anti-entropy-interval off
start_node n3 7403 --join 127.0.0.1:7401 --anti-entropy-interval off
filling_of() {
    "$V" status --json --node "${ADDRS[$1]}" --certs "$work/certs" --timeout-ms 2000 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(m['partitions_filling'] for m in d['members']))" ||
        echo unknown
}
until [ "$(filling_of n1)" = 0 ] && [ "$(filling_of n3)" = 0 ]; do sleep 0.2; done
target/release/preload --nodes 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 \
    --certs "$work/certs" --as loader --keys "$KEYS"
load() {
    "$V" bench --spread 127.0.0.1:7401,127.0.0.1:7402 --certs "$work/certs" --clients 8 \
        --mix 50:50:0 --keys "$KEYS" --consistency quorum --duration-secs "$LOAD_SECS" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['ops_per_s']:.0f} ops/s p99 {d['latency_ms']['p99']:.1f} ms, {d['errors']} errors\")"
}
echo "before the wipe: $(load)"
stop_node n3
rm -rf "$work/data/n3"
t0=$(date +%s.%N)
start_node n3 7403 --join 127.0.0.1:7401 --anti-entropy-interval off
load >"$work/during" &
loadpid=$!
until [ "$(filling_of n1)" = 0 ]; do sleep 0.1; done
t=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
wait "$loadpid"
mb=$(python3 -c "print(f'{$KEYS * 100 / 1e6 / $t:.1f}')")
echo "n3 filled $KEYS keys from n1 and n2 in $t s: $mb MB/s of values, $(python3 -c "print(f'{$KEYS / $t:.0f}')") keys/s"
echo "during the fill ($LOAD_SECS s from its start): $(cat "$work/during")"
grep -h "fill run" "$work/n3.err" | tail -1 || true
