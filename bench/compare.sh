#!/usr/bin/env bash
# Spool (durability = always) against a private Redis with appendfsync always, everysec and no persistence, in ONE
# run, ALTERNATING targets inside every round, so a ratio compares numbers taken under the same machine load; the
# table shows each cell's median over the rounds. See docs/benchmarks.md.
#
#   bench/compare.sh                 # ROUNDS=3 N=200000 E2E_SECS=5
#   ROUNDS=5 OUT=/tmp/cmp bench/compare.sh
#
# Workloads, identical for every target:
#   lpush/rpop  redis-benchmark -t lpush,rpop -n $N -c 50 -d 200 -P 1, and again with -P 16
#   e2e         spool-bench e2e, 50 producers + 50 consumers, 200-byte payloads, $E2E_SECS s:
#                 Spool native (JOB.PUSH / JOB.FETCH / JOB.ACK), unbatched and batched (-b 50: PUSHMANY 50,
#                 FETCH COUNT 50, one multi-id ACK); Redis LPUSH + BRPOP (at-most-once) and the reliable-queue
#                 pattern LPUSH + BLMOVE + LREM (at-least-once, the fair match for JOB.FETCH + JOB.ACK); Spool's
#                 LPUSH + BRPOP too. Batched Redis list: LPUSH 50 values + RPOP 50.
#   generator   spool-bench enqueue with LPUSH, 50 connections: the same load as redis-benchmark's LPUSH -P 1 row.
#   grpc        Spool's gRPC door, e2e batched (-b 50).
#   latency     spool-bench enqueue, one connection, one push at a time, 5 s: durable push latency (JOB.PUSH and
#               LPUSH on Spool, LPUSH on Redis appendfsync always).
# Every process it starts is stopped by PID on exit (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
N=${N:-200000}
E2E_SECS=${E2E_SECS:-5}
OUT=${OUT:-$(mktemp -d /tmp/spool-compare.XXXXXX)}
mkdir -p "$OUT"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools
fi
(cd "$ROOT" && cargo build --release -q -p spool-server -p spool-bench)
SPOOL="$ROOT/target/release/spool"
BENCH="$ROOT/target/release/spool-bench"

# shellcheck source=bench/procs.sh
source "$ROOT/bench/procs.sh" compare-data

wait_ping() {
    for _ in $(seq 1 200); do
        redis-cli -p "$1" PING 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "server on port $1 did not answer PING" >&2
    return 1
}

declare -A PORT
start_redis() { # name, extra redis-server arguments...
    local name=$1 port dir
    shift
    port=$(free_port)
    dir="$WORK/$name"
    mkdir -p "$dir"
    # No RDB snapshots and no AOF rewrites during the run: both would add background I/O bursts to one target only.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --daemonize no \
        --auto-aof-rewrite-percentage 0 "$@" >"$dir/log" 2>&1 &
    PIDS+=($!)
    PORT[$name]=$port
    wait_ping "$port"
}
start_redis redis-always --appendonly yes --appendfsync always
start_redis redis-everysec --appendonly yes --appendfsync everysec
start_redis redis-nopersist --appendonly no

PORT[spool]=$(free_port)
GRPC_PORT=$(free_port)
mkdir -p "$WORK/spool"
SPOOL_RESP__LISTEN=127.0.0.1:${PORT[spool]} SPOOL_STORAGE__DURABILITY=always SPOOL_GRPC__LISTEN=127.0.0.1:$GRPC_PORT \
    "$SPOOL" serve --data-dir "$WORK/spool/data" 2>"$WORK/spool/log" &
SPOOL_PID=$!
PIDS+=("$SPOOL_PID")
wait_ping "${PORT[spool]}"

# The disk's sync rate moves a lot on a shared VM (builds writing beside us): measure it before and after the run
# so the table can be read against it.
fsync_rate() {
    dd if=/dev/zero of="$WORK/fsync-probe" bs=4k count=500 oflag=dsync 2>&1 |
        awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") printf "%.0f 4-KiB dsync writes/s\n", 500 / $(i - 1) }'
    rm -f "$WORK/fsync-probe"
}
echo "disk before: $(fsync_rate)" | tee "$OUT/disk.txt" >&2

TARGETS=(spool redis-always redis-everysec redis-nopersist)
RESULTS="$OUT/results.tsv" # round, workload, target, jobs/s, p50 ms, p99 ms
: >"$RESULTS"

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# One redis-benchmark run; records LPUSH and RPOP rows.
run_rb() { # round, target, pipeline
    local round=$1 target=$2 p=$3 port=${PORT[$2]}
    # Both are list keys named mylist: empty it so every run starts alike.
    redis-cli -p "$port" DEL mylist >/dev/null
    redis-benchmark -h 127.0.0.1 -p "$port" -t lpush,rpop -n "$N" -c 50 -d 200 -P "$p" --csv 2>"$OUT/rb.err" |
        tr -d '"' | awk -F, -v r="$round" -v t="$target" -v p="$p" \
        '$1=="LPUSH"||$1=="RPOP" { printf "%s\t%s -c50 -P%s\t%s\t%s\t%s\t%s\n", r, $1, p, t, $2, $5, $7 }' >>"$RESULTS"
}

# One spool-bench run; records throughput and latency (ms).
run_sb() { # round, workload name, target, spool-bench arguments...
    local round=$1 name=$2 target=$3 json
    shift 3
    json="$OUT/$(printf '%s' "$name-$target-$round" | tr -c 'A-Za-z0-9.-' '_').json"
    if ! "$BENCH" --server "127.0.0.1:${PORT[$target]}" --json "$json" --label "$target" "$@" >>"$OUT/bench.log" 2>&1; then
        echo "FAILED: $name on $target (round $round): see $OUT/bench.log" >&2
        record "$round" "$name" "$target" FAILED - -
        return 0
    fi
    python3 - "$json" "$round" "$name" "$target" >>"$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency"]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], "%.0f" % r["throughput_per_s"],
                 "%.3f" % (l["p50_us"] / 1000), "%.3f" % (l["p99_us"] / 1000)]))
EOF
}

E2E=(--mode e2e -c 50 --consumers 50 -d 200 --duration "$E2E_SECS")
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for p in 1 16; do
        for t in "${TARGETS[@]}"; do run_rb "$round" "$t" "$p"; done
    done
    # The same LPUSH load from spool-bench: if it matches redis-benchmark's row, the generator is not the limit.
    for t in "${TARGETS[@]}"; do
        run_sb "$round" "spool-bench LPUSH -c50 -P1" "$t" --mode enqueue -c 50 -d 200 --duration 5 --pattern list
    done
    run_sb "$round" "e2e native b1" spool "${E2E[@]}" --pattern native
    run_sb "$round" "e2e native b50" spool "${E2E[@]}" --pattern native -b 50
    run_sb "$round" "e2e grpc b50" spool "${E2E[@]}" --pattern grpc -b 50 --grpc "http://127.0.0.1:$GRPC_PORT"
    for t in "${TARGETS[@]}"; do
        run_sb "$round" "e2e list b1" "$t" "${E2E[@]}" --pattern list
        run_sb "$round" "e2e list b50" "$t" "${E2E[@]}" --pattern list -b 50
    done
    for t in redis-always redis-everysec redis-nopersist; do
        run_sb "$round" "e2e reliable b1" "$t" "${E2E[@]}" --pattern reliable
    done
    # Below capacity, so latency is the job's own round trip rather than time spent queued behind a backlog.
    run_sb "$round" "e2e native b1 @5000/s" spool "${E2E[@]}" --pattern native --rate 5000
    for t in redis-always redis-everysec; do
        run_sb "$round" "e2e reliable b1 @5000/s" "$t" "${E2E[@]}" --pattern reliable --rate 5000
    done
    run_sb "$round" "push latency c1 native" spool --mode enqueue -c 1 -d 200 --duration 5 --pattern native
    for t in spool redis-always; do
        run_sb "$round" "push latency c1 lpush" "$t" --mode enqueue -c 1 -d 200 --duration 5 --pattern list
    done
done

echo "disk after: $(fsync_rate)" | tee -a "$OUT/disk.txt" >&2

# Medians per (workload, target), then the ratios the targets in docs/benchmarks.md are stated in.
python3 - "$RESULTS" <<'EOF' | tee "$OUT/table.md"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, work, target, rps, p50, p99 = line.rstrip("\n").split("\t")
    rows[(work, target)].append((rps, p50, p99))
def med(vals):
    nums = [float(v) for v in vals if v not in ("FAILED", "-")]
    return statistics.median(nums) if nums else float("nan")
targets = ["spool", "redis-always", "redis-everysec", "redis-nopersist"]
works = list(dict.fromkeys(w for w, _ in rows))
print("| workload | " + " | ".join(targets) + " |")
print("|---|" + "---|" * len(targets))
m = {}
for w in works:
    cells = []
    for t in targets:
        if (w, t) not in rows:
            cells.append("—"); continue
        r = rows[(w, t)]
        rps, p50, p99 = med(x[0] for x in r), med(x[1] for x in r), med(x[2] for x in r)
        m[(w, t)] = rps
        fails = sum(1 for x in r if x[0] == "FAILED")
        cells.append("%.0f/s (p50 %.2f, p99 %.2f ms)%s" % (rps, p50, p99, " FAILED×%d" % fails if fails else ""))
    print("| %s | %s |" % (w, " | ".join(cells)))
print()
print("rounds per cell: %s (median shown)" % max(len(v) for v in rows.values()))
def ratio(w, a, b):
    try:
        return "%.2f" % (m[(w, a)] / m[(w, b)])
    except (KeyError, ZeroDivisionError):
        return "n/a"
for w in ["LPUSH -c50 -P1", "RPOP -c50 -P1", "LPUSH -c50 -P16", "RPOP -c50 -P16", "e2e list b1", "e2e list b50"]:
    print("%-18s spool/redis-always %s   spool/redis-everysec %s   spool/redis-nopersist %s" % (
        w, ratio(w, "spool", "redis-always"), ratio(w, "spool", "redis-everysec"), ratio(w, "spool", "redis-nopersist")))
for redis in ["redis-always", "redis-everysec"]:
    for b in ["b1"]:
        try:
            print("e2e spool native %s / %s reliable %s: %.2f" % (b, redis, b, m[("e2e native " + b, "spool")] / m[("e2e reliable " + b, redis)]))
        except KeyError:
            pass
EOF
echo "raw results: $OUT" >&2
