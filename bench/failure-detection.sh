#!/usr/bin/env bash
# Failure detection at default settings: SIGKILL one node of three, time until both
# survivors report it dead; restart it; repeat KILLS times. Prints each time and the
# median.   cargo build --release && bench/failure-detection.sh
source "$(dirname "$0")/lib.sh"
KILLS=${KILLS:-10}
start_node n1 7301
start_node n2 7302 --join 127.0.0.1:7301
start_node n3 7303 --join 127.0.0.1:7301
times=()
for i in $(seq "$KILLS"); do
    until [ "$(state_of n1 n3)" = alive ] && [ "$(state_of n2 n3)" = alive ]; do sleep 0.2; done
    sleep 2
    stop_node n3
    t0=$(date +%s.%N)
    until [ "$(state_of n1 n3)" = dead ] && [ "$(state_of n2 n3)" = dead ]; do sleep 0.05; done
    t=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
    echo "kill $i: declared dead by both survivors after $t s"
    times+=("$t")
    start_node n3 7303 --join 127.0.0.1:7301
done
echo "median over $KILLS kills: $(printf '%s\n' "${times[@]}" | median) s (probe period 1 s, probe timeout 0.5 s, suspicion 3 s)"
