#!/usr/bin/env bash
# Compatibility tests against the real daemon: builds `spool`, starts it on a free port with a temporary data
# directory, and runs a redis-cli session script, a redis-py (HELLO 3) test and a Python grpcio test (code generated
# from proto/ by grpcio-tools) against it. The daemon is stopped by PID on exit, whatever happens.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/tests/compat"
tmp=$(mktemp -d)
daemon_pid=""

cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        wait "$daemon_pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if ! command -v redis-cli >/dev/null; then
    echo "redis-cli missing; installing redis-tools" >&2
    apt-get update -qq && apt-get install -y -qq redis-tools >/dev/null
fi

# SPOOL_BIN lets CI reuse the binary `cargo test --workspace` just built: building `-p spool-server` alone resolves
# dependency features differently and would recompile much of the tree for nothing.
spool_bin=${SPOOL_BIN:-}
if [[ -z "$spool_bin" ]]; then
    (cd "$repo" && cargo build -p spool-server)
    spool_bin="$repo/target/debug/spool"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
grpc_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
SPOOL_RESP__LISTEN="127.0.0.1:$port" SPOOL_GRPC__LISTEN="127.0.0.1:$grpc_port" "$spool_bin" serve --data-dir "$tmp/data" 2>"$tmp/spool.log" &
daemon_pid=$!

# Wait for the listener: poll with PING, giving up after ~30 s (the daemon may replay a store first).
for _ in $(seq 1 300); do
    if [[ "$(redis-cli -p "$port" PING 2>/dev/null)" == "PONG" ]]; then break; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        echo "spool exited early:" >&2
        cat "$tmp/spool.log" >&2
        exit 1
    fi
    sleep 0.1
done
[[ "$(redis-cli -p "$port" PING)" == "PONG" ]] || { echo "spool did not answer PING" >&2; cat "$tmp/spool.log" >&2; exit 1; }

passed=0
failed=0
run() {
    local name=$1
    shift
    if "$@"; then
        echo "compat $name: ok"
        passed=$((passed + 1))
    else
        echo "compat $name: FAILED" >&2
        failed=$((failed + 1))
    fi
}

run redis-cli bash "$here/redis_cli.sh" "$port"

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet redis grpcio grpcio-tools grpcio-health-checking
run redis-py "$tmp/venv/bin/python" "$here/test_redis_py.py" "$port"
run grpc-py "$tmp/venv/bin/python" "$here/test_grpc_py.py" "127.0.0.1:$grpc_port"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
