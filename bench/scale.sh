#!/usr/bin/env bash
# Spool at scale (durability = always): restart time and memory with a large ready backlog, and e2e throughput with a
# small against a large backlog, alternating. See docs/benchmarks.md.
#
#   bench/scale.sh                    # JOBS=1000000 SMALL=10000 ROUNDS=2 E2E_SECS=5
#
# 1. restart: fill JOBS ready jobs (spool-bench enqueue, JOB.PUSHMANY of 1,000, 4 connections × 4 in flight), SIGTERM,
#    start again, time until PING answers (the store is loaded before the listener opens), check LLEN, read VmRSS.
# 2. backlog: spool-bench --spawn e2e (50 + 50 connections, 200-byte payloads) with --backlog SMALL and --backlog JOBS
#    ready jobs in the queue (at a lower priority, so the bench's own jobs go first), unbatched and -b 50.
# Every process it starts is stopped by PID on exit (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=${JOBS:-1000000}
SMALL=${SMALL:-10000}
ROUNDS=${ROUNDS:-2}
E2E_SECS=${E2E_SECS:-5}
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

echo "== e2e throughput, backlog $SMALL vs $JOBS (alternating, $ROUNDS rounds)" | tee -a "$OUT/summary.txt"
for round in $(seq 1 "$ROUNDS"); do
    for b in 1 50; do
        for backlog in "$SMALL" "$JOBS"; do
            "$BENCH" --spawn "$SPOOL" --durability always --mode e2e -c 50 --consumers 50 -d 200 -b "$b" \
                --duration "$E2E_SECS" --backlog "$backlog" --label "round$round" \
                --json "$OUT/e2e-b$b-backlog$backlog-$round.json" | tee -a "$OUT/summary.txt"
        done
    done
done
echo "raw results: $OUT" >&2
