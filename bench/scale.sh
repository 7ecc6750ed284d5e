#!/usr/bin/env bash
# Spool at scale (durability = always): restart time and memory with a large ready backlog, and e2e throughput with a
# small against a large backlog, alternating. See docs/benchmarks.md.
#
#   bench/scale.sh                    # JOBS=1000000 SMALL=10000 ROUNDS=2 E2E_SECS=5 SETTLE=30
#
# 1. restart: fill JOBS ready jobs (spool-bench enqueue, JOB.PUSHMANY of 1,000, 4 connections × 4 in flight), SIGTERM,
#    start again, time until PING answers (the store is loaded before the listener opens), check LLEN, read VmRSS.
# 2. backlog: two daemons, one holding SMALL and one JOBS ready jobs (spool-bench --backlog: at a lower priority, so
#    the bench's own jobs go first), left SETTLE s after the fill, then e2e runs (50 + 50 connections, 200-byte
#    payloads, unbatched and -b 50) alternating between them.
# Every process it starts is stopped by PID on exit (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=${JOBS:-1000000}
SMALL=${SMALL:-10000}
ROUNDS=${ROUNDS:-2}
E2E_SECS=${E2E_SECS:-5}
SETTLE=${SETTLE:-30}
OUT=${OUT:-$(mktemp -d /tmp/spool-scale.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=bench/one-daemon.sh
source "$ROOT/bench/one-daemon.sh" scale-data
now() { date +%s.%N; }
start_spool() {
    SPOOL_RESP__LISTEN=127.0.0.1:$PORT SPOOL_STORAGE__DURABILITY=always SPOOL_GRPC__ENABLED=false \
        "$SPOOL" serve --data-dir "$WORK/data" 2>>"$OUT/spool.log" &
    SPOOL_PID=$!
}
wait_ping() {
    until redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG; do
        kill -0 "$SPOOL_PID" || { echo "spool exited; see $OUT/spool.log" >&2; exit 1; }
        sleep 0.01
    done
}
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$SPOOL_PID/status"; }
stop_spool() {
    kill -TERM "$SPOOL_PID"
    wait "$SPOOL_PID" || true
    SPOOL_PID=
}

echo "== restart with $JOBS ready jobs" | tee "$OUT/summary.txt"
start_spool
wait_ping
"$BENCH" --server "127.0.0.1:$PORT" --mode enqueue -c 4 -P 4 -b 1000 -d 200 --jobs "$JOBS" --prefix fill \
    --json "$OUT/fill.json" | tee -a "$OUT/summary.txt"
echo "RSS after fill: $(rss_mb) MB" | tee -a "$OUT/summary.txt"
t0=$(now)
stop_spool
t1=$(now)
echo "shutdown (SIGTERM → exit): $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; data dir $(du -sh "$WORK/data" | cut -f1)" |
    tee -a "$OUT/summary.txt"
t0=$(now)
start_spool
wait_ping
t1=$(now)
echo "restart (exec → PING answered): $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; RSS $(rss_mb) MB;" \
    "LLEN fill-0 = $(redis-cli -p "$PORT" LLEN fill-0)" | tee -a "$OUT/summary.txt"
sleep 2
echo "RSS 2 s later: $(rss_mb) MB" | tee -a "$OUT/summary.txt"
stop_spool

echo "== e2e throughput, backlog $SMALL vs $JOBS (alternating, $ROUNDS rounds, after ${SETTLE}s to settle)" |
    tee -a "$OUT/summary.txt"
# Two long-lived daemons, one per backlog, filled first and then left SETTLE seconds so that the checkpointer has
# folded the fill's log into sled: what is measured is a broker holding the backlog, not one still ingesting it.
declare -A ports
for backlog in "$SMALL" "$JOBS"; do
    ports[$backlog]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    SPOOL_RESP__LISTEN=127.0.0.1:${ports[$backlog]} SPOOL_STORAGE__DURABILITY=always SPOOL_GRPC__ENABLED=false \
        "$SPOOL" serve --data-dir "$WORK/backlog-$backlog" 2>>"$OUT/spool.log" &
    EXTRA_PIDS+=($!)
    until redis-cli -p "${ports[$backlog]}" PING 2>/dev/null | grep -q PONG; do sleep 0.01; done
    "$BENCH" --server "127.0.0.1:${ports[$backlog]}" --mode e2e -c 50 --consumers 50 -d 200 -b 50 --duration 1 \
        --backlog "$backlog" --label fill >/dev/null
done
sleep "$SETTLE"
for round in $(seq 1 "$ROUNDS"); do
    for b in 1 50; do
        for backlog in "$SMALL" "$JOBS"; do
            "$BENCH" --server "127.0.0.1:${ports[$backlog]}" --mode e2e -c 50 --consumers 50 -d 200 -b "$b" \
                --duration "$E2E_SECS" --label "round$round-backlog$backlog" \
                --json "$OUT/e2e-b$b-backlog$backlog-$round.json" | tee -a "$OUT/summary.txt"
        done
    done
done
echo "raw results: $OUT" >&2
