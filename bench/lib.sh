# Shared by the benchmark scripts: a scratch directory, certificates, and nodes that
# are always stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VERGENT:-target/release/vergent}
work=$(mktemp -d)
declare -A PIDS ADDRS
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    { wait; } 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$V" certs init --dir "$work/certs" >/dev/null

# start_node NAME PORT [serve flags...]: starts a node and waits until it listens.
start_node() {
    local name=$1 port=$2
    shift 2
    [ -f "$work/certs/$name.crt" ] || "$V" certs node "$name" --dir "$work/certs" --ip 127.0.0.1 >/dev/null
    "$V" serve --name "$name" --listen "127.0.0.1:$port" --data-dir "$work/data/$name" \
        --certs "$work/certs" "$@" >"$work/$name.out" 2>>"$work/$name.err" &
    PIDS[$name]=$!
    ADDRS[$name]="127.0.0.1:$port"
    for _ in $(seq 200); do
        grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "node $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}

stop_node() {
    kill -9 "${PIDS[$1]}" 2>/dev/null || true
    { wait "${PIDS[$1]}"; } 2>/dev/null || true
    PIDS[$1]=""
}

# state_of OBSERVER MEMBER: the member's state as OBSERVER sees it.
state_of() {
    "$V" status --json --node "${ADDRS[$1]}" --certs "$work/certs" --timeout-ms 2000 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(next((m['state'] for m in d['members'] if m['name']=='$2'), 'unknown'))" ||
        echo unreachable
}

# start_three FIRST_PORT: nodes n1, n2, n3 on three ports from FIRST_PORT, joined, and
# waits until they see each other alive; sets `spread` and `admin` for bench commands.
start_three() {
    local port=$1
    start_node n1 "$port"
    start_node n2 $((port + 1)) --join "127.0.0.1:$port"
    start_node n3 $((port + 2)) --join "127.0.0.1:$port"
    until [ "$(state_of n1 n3)" = alive ] && [ "$(state_of n3 n2)" = alive ]; do sleep 0.2; done
    admin=(--node "${ADDRS[n1]}" --certs "$work/certs")
    spread="${ADDRS[n1]},${ADDRS[n2]},${ADDRS[n3]}"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
