#!/usr/bin/env bash
# CPU used by `vergent top` watching a 5-node cluster under a light load, measured
# from /proc over SECONDS_RUN seconds in a tmux session; prints the last screen too.
#   cargo build --release && bench/top-cpu.sh
source "$(dirname "$0")/lib.sh"
SECONDS_RUN=${SECONDS_RUN:-30}
start_node n1 7701
for i in 2 3 4 5; do start_node "n$i" "770$i" --join 127.0.0.1:7701; done
until [ "$(state_of n1 n5)" = alive ]; do sleep 0.2; done
"$V" bench --node 127.0.0.1:7701 --spread 127.0.0.1:7701,127.0.0.1:7703,127.0.0.1:7705 --certs "$work/certs" \
    --clients 4 --duration-secs $((SECONDS_RUN + 10)) --quiet --json >/dev/null &
session="vergent-top-cpu-$$"
tmux new-session -d -s "$session" -x 120 -y 36 "$V top --node 127.0.0.1:7701 --certs $work/certs"
trap 'tmux kill-session -t "$session" 2>/dev/null; cleanup' EXIT
sleep 3
# The dashboard itself, not the tmux server whose command line names it too.
pid=$(pgrep -f "^$V top --node 127.0.0.1:7701" | head -1)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
echo "measuring pid $pid ($(cat /proc/$pid/comm)): $(tr "\0" " " < /proc/$pid/cmdline)"
before=$(ticks)
sleep "$SECONDS_RUN"
after=$(ticks)
tmux capture-pane -p -t "$session"
python3 -c "print('vergent top: %.1f%% of one core over $SECONDS_RUN s (%d ticks at %d Hz), 4 refreshes a second, 5 nodes' % (($after - $before) / $hz / $SECONDS_RUN * 100, $after - $before, $hz))"
