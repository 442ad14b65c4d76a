# Sourced by the benchmark scripts (needs $V and $work): the linearizable counters of
# the nodes at the addresses given, summed: operations, round trips, operations in one.
lin_counters() {
    for addr in "$@"; do
        "$V" status --json --node "$addr" --certs "$work/certs"
    done | python3 -c '
import json, sys
dec, text, at, sums = json.JSONDecoder(), sys.stdin.read(), 0, [0, 0, 0]
while text[at:].strip():
    while text[at].isspace(): at += 1
    s, at = dec.raw_decode(text, at)
    l = s["linearizable"]
    sums = [sums[0] + l["ops"], sums[1] + l["round_trips"], sums[2] + l["fast"]]
print(*sums)'
}
