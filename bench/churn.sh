#!/usr/bin/env bash
# Heavy churn past a large backlog (durability = always): does one daemon's memory and disk level off? See
# docs/benchmarks.md, "Heavy churn past a large backlog".
#
#   bench/churn.sh                    # BACKLOG=200000 RUNS=25 SECS=8
#
# One daemon, a fresh data directory. spool-bench fills BACKLOG low-priority ready jobs that nobody fetches, then
# runs RUNS batched e2e runs back to back (50 producers + 50 consumers, JOB.PUSHMANY 50 / JOB.FETCH COUNT 50 /
# multi-id JOB.ACK, 200-byte payloads, SECS each; every job pushed is acked, and the bench fails on any loss). After
# each run it prints the daemon's RSS and the data directory's size, split into the write-ahead log and sled.
# Every process it starts is stopped by PID on exit (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BACKLOG=${BACKLOG:-200000}
RUNS=${RUNS:-25}
SECS=${SECS:-8}
# shellcheck source=bench/one-daemon.sh
source "$ROOT/bench/one-daemon.sh" churn
SPOOL_RESP__LISTEN=127.0.0.1:$PORT SPOOL_GRPC__ENABLED=false "$SPOOL" serve --data-dir "$WORK/data" \
    2>>"$WORK/spool.log" &
SPOOL_PID=$!
until redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG; do
    kill -0 "$SPOOL_PID" || { echo "spool exited: $(cat "$WORK/spool.log")" >&2; exit 1; }
    sleep 0.05
done

mb() { du -sm "$1" | cut -f1; }
report() {
    local rss data wal
    rss=$(awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$SPOOL_PID/status")
    data=$(mb "$WORK/data")
    wal=$(mb "$WORK/data/wal")
    printf '%-14s RSS %5s MB   data %5s MB (log %4s MB, sled %5s MB)   %s\n' "$1" "$rss" "$data" "$wal" \
        "$((data - wal))" "$2"
}

e2e() {
    "$BENCH" --server "127.0.0.1:$PORT" --mode e2e -c 50 --consumers 50 -d 200 -b 50 "$@" | tail -1 |
        grep -o 'enqueued=[0-9]* .*throughput=[0-9]*/s\|errors=.*'
}
report "start" ""
report "backlog" "$(e2e --duration 1 --backlog "$BACKLOG" | tr '\n' ' ')"
for run in $(seq 1 "$RUNS"); do
    report "run $run" "$(e2e --duration "$SECS" | tr '\n' ' ')"
done
