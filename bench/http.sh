#!/usr/bin/env bash
# HTTPS against the QUIC protocol, in one run: three nodes on loopback serving both, 64
# clients (one keep-alive connection and one request in flight each) putting 100-byte
# values at the nodes' default consistency (quorum), spread over the three nodes;
# medians of RUNS interleaved runs of DURATION seconds.
#   cargo build --release -p vergent -p vergent-bench && bench/http.sh
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
LOAD=${HTTP_LOAD:-target/release/http-load}

start_node n1 7421 --http-listen 127.0.0.1:8421
start_node n2 7422 --join 127.0.0.1:7421 --http-listen 127.0.0.1:8422
start_node n3 7423 --join 127.0.0.1:7421 --http-listen 127.0.0.1:8423
until [ "$(state_of n1 n3)" = alive ] && [ "$(state_of n3 n2)" = alive ]; do sleep 0.2; done
spread="${ADDRS[n1]},${ADDRS[n2]},${ADDRS[n3]}"
https="127.0.0.1:8421,127.0.0.1:8422,127.0.0.1:8423"

quic=() http=()
for _ in $(seq "$RUNS"); do
    quic+=("$("$V" bench --node "${ADDRS[n1]}" --spread "$spread" --certs "$work/certs" --clients "$CLIENTS" \
        --duration "${DURATION}s" --value-bytes 100 --json --quiet)")
    http+=("$("$LOAD" --endpoints "$https" --certs "$work/certs" --clients "$CLIENTS" --seconds "$DURATION")")
done
printf '%s\n' "${quic[@]}" > "$work/quic"
printf '%s\n' "${http[@]}" > "$work/http"
python3 - "$work/quic" "$work/http" <<'PY'
import json, sys
def median(path):
    runs = sorted((json.loads(l) for l in open(path) if l.strip()), key=lambda r: r["ops_per_s"])
    return runs[len(runs) // 2], sum(r["errors"] for r in runs)
(q, qe), (h, he) = median(sys.argv[1]), median(sys.argv[2])
print("%-30s %10s %9s %9s %7s %7s" % ("setup", "puts/s", "p50 ms", "p99 ms", "errors", "x QUIC"))
for label, r, e in (("QUIC protocol (vergent bench)", q, qe), ("HTTPS/JSON API (http-load)", h, he)):
    print("%-30s %10.0f %9.3f %9.3f %7d %7.2f" % (label, r["ops_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], e, r["ops_per_s"] / q["ops_per_s"]))
PY
