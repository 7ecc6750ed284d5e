# Sourced by bench/scale.sh and bench/churn.sh: builds the release binaries, makes a work directory, and stops the
# one daemon the script started (by its PID, in SPOOL_PID) and removes the directory on exit.
(cd "$ROOT" && cargo build --release -q -p spool-server -p spool-bench)
SPOOL="$ROOT/target/release/spool"
BENCH="$ROOT/target/release/spool-bench"

WORK=$(mktemp -d "/tmp/spool-$1.XXXXXX")
SPOOL_PID=
cleanup() {
    if [ -n "$SPOOL_PID" ]; then
        kill -TERM "$SPOOL_PID" 2>/dev/null || true
        wait "$SPOOL_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
