#!/usr/bin/env bash
# Side by side: the same load against several builds or settings of Spool (and, for redis-benchmark loads, Redis),
# ALTERNATING inside every round with a fresh server per run, so that a difference is not the machine's drift. Prints
# one line per run and then each variant's median. This is how the "side by side" figures in docs/benchmarks.md are
# taken; bench/compare.sh is the fixed Spool-against-Redis table.
#
#   bench/ab.sh [VARIANT...]          # ROUNDS=3 MODE=lpush
#
# VARIANT is NAME:BINARY[:ENV=VALUE...] — a spool binary (keep a copy of each build you compare: cargo overwrites
# target/release) run with extra environment, e.g. `one-worker:/tmp/spool-a:SPOOL_SERVER__WORKER_THREADS=1` — or
# redis-always, redis-everysec or redis-none (a private redis-server with that appendfsync, or none). Without
# variants: this tree's release build.
#
# MODE (all with 200-byte payloads, durability as the variant sets it, `always` by default):
#   lpush    redis-benchmark -t lpush -n $N -c 50 -d 200 -P $P (N=200000, P=1); per op: ops/s. With CPU=1 also each
#            server thread group's CPU per push (Spool's and Redis's) and the client's (µs, from /proc and getrusage).
#   e2e      spool-bench --mode e2e -c 50 --consumers 50 -d 200 -b $B --duration $SECS (B=50, SECS=5): jobs/s; a run
#            that lost or duplicated a job fails the script.
#   restart  each run starts on a fresh copy of $DIR (a data directory filled beforehand, e.g. by bench/scale.sh's
#            fill): seconds until PING answers, and RSS $SETTLE s later (SETTLE=2).
#   backlog  each variant runs two daemons for the whole script, holding $SMALL and $JOBS ready jobs (10000 and
#            1000000; filled as bench/scale.sh fills them, at a lower priority than the bench's jobs, then
#            $BACKLOG_SETTLE s, 30 by default, to settle); rounds then alternate e2e runs (-b $B) over every daemon.
#            Needs memory and disk for all of them at once.
# Every process it starts is stopped by PID on exit (trap).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-lpush}
N=${N:-200000}
P=${P:-1}
B=${B:-50}
SECS=${SECS:-5}
SETTLE=${SETTLE:-2}
SMALL=${SMALL:-10000}
JOBS=${JOBS:-1000000}
BACKLOG_SETTLE=${BACKLOG_SETTLE:-30}
CPU=${CPU:-0}

(cd "$ROOT" && cargo build --release -q -p spool-server -p spool-bench)
BENCH="$ROOT/target/release/spool-bench"
[ $# -gt 0 ] || set -- "spool:$ROOT/target/release/spool"
if [[ " $* " == *" redis-"* ]] && ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools
fi
command -v redis-cli >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools
}

# shellcheck source=bench/procs.sh
source "$ROOT/bench/procs.sh" ab
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# start VARIANT PORT DATA_DIR: starts the server in the background; its PID is in $SERVER.
start() {
    local name=${1%%:*} port=$2 dir=$3
    case $name in
    redis-*)
        local aof=(--appendonly yes --appendfsync "${name#redis-}")
        [ "$name" = redis-none ] && aof=(--appendonly no)
        mkdir -p "$dir"
        redis-server --port "$port" --dir "$dir" "${aof[@]}" --save '' >"$dir.log" 2>&1 &
        ;;
    *)
        # NAME:BINARY[:ENV=VALUE...]
        local rest=${1#*:} env=()
        if [[ $rest == *:* ]]; then
            IFS=: read -r -a env <<<"${rest#*:}"
        fi
        env "${env[@]}" SPOOL_RESP__LISTEN="127.0.0.1:$port" SPOOL_GRPC__ENABLED=false \
            "${rest%%:*}" serve --data-dir "$dir" >"$dir.log" 2>&1 &
        ;;
    esac
    SERVER=$!
    PIDS+=("$SERVER")
    until redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; do
        # The work directory goes with the exit trap, so the log's end is shown here rather than pointed to.
        kill -0 "$SERVER" 2>/dev/null || { echo "$1 exited:" >&2; tail -n 5 "$dir.log" >&2; exit 1; }
        sleep 0.01
    done
}

# Stops $SERVER and forgets its PID, so that the exit trap never signals a number the system may have reused.
stop() {
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$SERVER" ] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# Per-thread CPU ticks (utime + stime, fields 14 and 15 of /proc/PID/task/TID/stat, here 13 and 14 once the pid is
# cut off) of $SERVER, summed by thread name with trailing digits dropped ("sled-io-3" → "sled-io-").
thread_ticks() {
    for stat in /proc/"$SERVER"/task/*/stat; do
        cat "$stat" 2>/dev/null || true
    done | sed -E 's/^[0-9]+ \(([^)]*)\) /\1 /' | awk '{ name = $1; sub(/[0-9]+$/, "", name); t[name] += $13 + $14 }
        END { for (n in t) print n, t[n] }'
}

# e2e_run PORT LABEL: one spool-bench e2e run; prints its throughput, fails on lost or duplicated jobs.
e2e_run() {
    local json="$WORK/e2e-$RANDOM.json"
    "$BENCH" --server "127.0.0.1:$1" --mode e2e -c 50 --consumers 50 -d 200 -b "$B" --duration "$SECS" \
        --label "$2" --json "$json" >/dev/null
    python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["lost"] or r["duplicates"] or r["errors"]:
    sys.exit(f"lost {r['lost']}, duplicated {r['duplicates']}, errors {r['errors']}")
print(round(r["throughput_per_s"]))
PY
}

RESULTS="$WORK/results"
: >"$RESULTS"
record() { # VARIANT_NAME VALUE [DETAIL]
    echo "$1 $2" >>"$RESULTS"
    echo "round $round  $1  $2${3:+  $3}"
}

RUN=0
run_one() { # VARIANT
    local name=${1%%:*} port dir
    port=$(free_port)
    RUN=$((RUN + 1))
    dir="$WORK/run-$RUN"
    case $MODE in
    lpush)
        start "$1" "$port" "$dir"
        local before="" cpu_client out rate detail=""
        [ "$CPU" = 1 ] && before=$(thread_ticks)
        out=$(python3 -c '
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(out.replace("\r", "\n"))
print("client_cpu", r.ru_utime + r.ru_stime)' redis-benchmark -p "$port" -t lpush -n "$N" -c 50 -d 200 -P "$P" -q)
        rate=$(grep -o 'LPUSH: [0-9.]*' <<<"$out" | tail -1 | awk '{ printf "%.0f", $2 }')
        cpu_client=$(awk '/^client_cpu/ { printf "%.1f", $2 * 1e6 / '"$N"' }' <<<"$out")
        if [ -n "$before" ]; then
            detail=$(join <(sort <<<"$before") <(thread_ticks | sort) |
                awk -v n="$N" -v hz="$(getconf CLK_TCK)" '{ d = $3 - $2; if (d > 0) printf "%s%.1f ", $1 "=", d * 1e6 / hz / n }')
            detail="µs/push: ${detail}client=$cpu_client"
        fi
        stop
        record "$name" "$rate" "$detail"
        ;;
    e2e)
        start "$1" "$port" "$dir"
        record "$name" "$(e2e_run "$port" "$name")"
        stop
        ;;
    restart)
        cp -r "$DIR" "$dir"
        local t0 t1
        t0=$(date +%s.%N)
        start "$1" "$port" "$dir"
        t1=$(date +%s.%N)
        sleep "$SETTLE"
        record "$name" "$(rss_mb "$SERVER")" "MB RSS; serving after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
        stop
        ;;
    esac
    # Each run starts fresh; a finished run's data would only fill the disk.
    rm -rf "$dir" "$dir.log"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ "$MODE" = backlog ]; then
    declare -A ports
    for v in "$@"; do
        for backlog in "$SMALL" "$JOBS"; do
            key="${v%%:*}-$backlog"
            ports[$key]=$(free_port)
            start "$v" "${ports[$key]}" "$WORK/$key"
            "$BENCH" --server "127.0.0.1:${ports[$key]}" --mode e2e -c 50 --consumers 50 -d 200 -b 50 --duration 1 \
                --backlog "$backlog" --label fill >/dev/null
            echo "filled $key: RSS $(rss_mb "$SERVER") MB"
        done
    done
    sleep "$BACKLOG_SETTLE"
    for round in $(seq 1 "$ROUNDS"); do
        for v in "$@"; do
            for backlog in "$SMALL" "$JOBS"; do
                key="${v%%:*}-$backlog"
                record "$key" "$(e2e_run "${ports[$key]}" "$key")"
            done
        done
    done
    set --
    for key in $(printf '%s\n' "${!ports[@]}" | sort); do set -- "$@" "$key:"; done
else
    for round in $(seq 1 "$ROUNDS"); do
        for v in "$@"; do
            run_one "$v"
        done
    done
fi

echo "== medians over $ROUNDS rounds ($MODE)"
for v in "$@"; do
    name=${v%%:*}
    values=$(awk -v n="$name" '$1 == n { print $2 }' "$RESULTS")
    echo "$name  $(median <<<"$values")  (rounds: $(tr '\n' ' ' <<<"$values"))"
done
