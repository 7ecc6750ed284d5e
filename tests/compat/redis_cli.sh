#!/usr/bin/env bash
# A redis-cli session against a running Spool: push, fetch, ack, nack, stats and list commands. Each step compares
# redis-cli's output with what Redis users expect. Usage: redis_cli.sh PORT
set -euo pipefail

port=$1
cli() { redis-cli -p "$port" "$@"; }

fail() {
    echo "redis_cli.sh: $*" >&2
    exit 1
}

expect() {
    local want=$1
    shift
    local got
    got=$(cli "$@")
    [[ "$got" == "$want" ]] || fail "$* -> got '$got', want '$want'"
}

q="compat-$RANDOM"

expect PONG PING
expect hello ECHO hello
expect OK SELECT 0

# Native job life: push, fetch (lease), ack.
id=$(cli JOB.PUSH "$q" '{"n":1}' PRIORITY 3 HEADER trace t1)
[[ "$id" =~ ^[0-9a-f-]{36}$ ]] || fail "JOB.PUSH returned '$id'"
mapfile -t job < <(cli JOB.FETCH "$q")
[[ "${job[1]}" == "$id" && "${job[5]}" == '{"n":1}' && "${job[7]}" == 1 ]] || fail "JOB.FETCH returned ${job[*]}"
token=${job[9]}
expect OK JOB.ACK "$id" "$token"
again=$(cli JOB.ACK "$id" "$token")
[[ "$again" == NOTFOUND* ]] || fail "a second ack returned '$again'"

# Nack: retry, then dead after MAXATTEMPTS, then replay.
id=$(cli JOB.PUSH "$q" boom MAXATTEMPTS 2)
mapfile -t job < <(cli JOB.FETCH "$q")
expect OK JOB.NACK "$id" "${job[9]}" DELAY 0 ERROR "first failure"
mapfile -t job < <(cli JOB.FETCH "$q")
[[ "${job[7]}" == 2 ]] || fail "second fetch attempt ${job[7]}"
expect OK JOB.NACK "$id" "${job[9]}"
mapfile -t dead < <(cli DEAD.LIST "$q")
[[ "${dead[1]}" == "$id" && "${dead[5]}" == dead ]] || fail "DEAD.LIST returned ${dead[*]}"
expect 1 DEAD.REPLAY "$id"

# Stats: the replayed job is ready.
mapfile -t stats < <(cli QUEUE.STATS "$q")
[[ "${stats[4]}" == ready && "${stats[5]}" == 1 ]] || fail "QUEUE.STATS returned ${stats[*]}"
expect 1 QUEUE.PURGE "$q"

# Lists in Redis order: LPUSH + RPOP is FIFO; RPUSH jumps the line.
l="list-$RANDOM"
expect 3 LPUSH "$l" a b c
expect 4 RPUSH "$l" urgent
expect "$(printf 'c\nb\na\nurgent')" LRANGE "$l" 0 -1
expect urgent RPOP "$l"
expect a RPOP "$l"
expect c LPOP "$l"
expect 1 LLEN "$l"
expect "$(printf '%s\nb' "$l")" BRPOP "$l" 1
expect "" BRPOP "$l" 0.1
expect 0 LLEN "$l"

# Inline errors keep the connection; unknown commands are named.
out=$(printf 'NOSUCH x\r\nPING\r\n' | cli)
[[ "$out" == *"unknown command 'NOSUCH'"* && "$out" == *PONG* ]] || fail "pipe mode returned '$out'"

cli INFO spool | grep -q '^queues:' || fail "INFO spool has no queues line"
echo "redis_cli.sh: all steps passed"
