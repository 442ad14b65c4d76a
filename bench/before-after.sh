#!/usr/bin/env bash
# Throughput of this build against an earlier one, side by side in one run: one node
# and three nodes at quorum for each, all started at once and measured in alternating
# rounds (so a slow spell on a shared machine costs both alike). Each build's nodes are
# loaded by its own `vergent bench`, as the protocol may differ between them. 64
# clients, 100-byte durable puts; the median of RUNS runs of DURATION seconds, and the
# ratio after/before.
#
#   BASE=/path/to/earlier/vergent bench/before-after.sh      # RUNS=5 DURATION=5
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:?set BASE to the earlier build of the vergent binary}
NEW=${VERGENT:-target/release/vergent}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
work=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$NEW" certs init --dir "$work/certs" >/dev/null
for n in a1 b1 a2 a3 a4 b2 b3 b4; do
    "$NEW" certs node "$n" --dir "$work/certs" --ip 127.0.0.1 >/dev/null
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A ADDR
start() { # binary name [serve flags...]
    local bin=$1 name=$2 port
    shift 2
    port=$(free_port)
    "$bin" serve --name "$name" --listen "127.0.0.1:$port" --data-dir "$work/data/$name" \
        --certs "$work/certs" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    PIDS+=($!)
    ADDR[$name]="127.0.0.1:$port"
    for _ in $(seq 200); do
        grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "node $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}

members_alive() { # binary node count
    "$1" status --json --node "$2" --certs "$work/certs" --timeout-ms 2000 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='alive' for m in d['members'])==$3 else 1)"
}

# a*: the earlier build; b*: this one. a1/b1 alone, a2-a4 and b2-b4 as clusters.
start "$BASE" a1
start "$NEW" b1
start "$BASE" a2
start "$BASE" a3 --join "${ADDR[a2]}"
start "$BASE" a4 --join "${ADDR[a2]}"
start "$NEW" b2
start "$NEW" b3 --join "${ADDR[b2]}"
start "$NEW" b4 --join "${ADDR[b2]}"
for _ in $(seq 300); do
    members_alive "$BASE" "${ADDR[a4]}" 3 && members_alive "$NEW" "${ADDR[b4]}" 3 && break
    sleep 0.2
done

one_run() { # binary spread consistency
    "$1" bench --node "${2%%,*}" --spread "$2" --certs "$work/certs" --clients "$CLIENTS" \
        --duration-secs "$DURATION" --value-bytes 100 --consistency "$3" --json --quiet
}

declare -A RESULTS
setups=("before 1 node" "after 1 node" "before 3 nodes quorum" "after 3 nodes quorum")
for round in $(seq "$RUNS"); do
    # Each round starts with a different setup.
    for k in 0 1 2 3; do
        s=${setups[$(((k + round) % 4))]}
        case $s in
        "before 1 node") r=$(one_run "$BASE" "${ADDR[a1]}" one) ;;
        "after 1 node") r=$(one_run "$NEW" "${ADDR[b1]}" one) ;;
        "before 3 nodes quorum") r=$(one_run "$BASE" "${ADDR[a2]},${ADDR[a3]},${ADDR[a4]}" quorum) ;;
        "after 3 nodes quorum") r=$(one_run "$NEW" "${ADDR[b2]},${ADDR[b3]},${ADDR[b4]}" quorum) ;;
        esac
        RESULTS[$s]+="$r"$'\n'
    done
done

printf '%-24s %10s %9s %9s %7s\n' "setup" "puts/s" "p50 ms" "p99 ms" "errors"
declare -A MEDIAN
for s in "${setups[@]}"; do
    line=$(printf '%s' "${RESULTS[$s]}" | python3 -c '
import json, sys
runs = sorted((json.loads(l) for l in sys.stdin if l.strip()), key=lambda r: r["ops_per_s"])
m = runs[len(runs) // 2]
lat = m["latency_ms"]
print("%.0f %.3f %.3f %d %s" % (m["ops_per_s"], lat["p50"], lat["p99"], sum(r["errors"] for r in runs),
      " ".join("%.0f" % r["ops_per_s"] for r in runs)))')
    read -r rate p50 p99 errors all <<<"$line"
    MEDIAN[$s]=$rate
    printf '%-24s %10s %9s %9s %7s   runs: %s\n' "$s" "$rate" "$p50" "$p99" "$errors" "$all"
done
python3 -c "print('after/before, 1 node: %.2fx; 3 nodes at quorum: %.2fx' % (${MEDIAN["after 1 node"]} / ${MEDIAN["before 1 node"]}, ${MEDIAN["after 3 nodes quorum"]} / ${MEDIAN["before 3 nodes quorum"]}))"
