# Sourced by bench/scale.sh and bench/churn.sh (bench/compare.sh and bench/ab.sh use bench/procs.sh): builds the
# release binaries, makes a work directory, and on exit stops the daemons the script started (by PID: SPOOL_PID, and
# any in EXTRA_PIDS) and removes the directory.
(cd "$ROOT" && cargo build --release -q -p spool-server -p spool-bench)
SPOOL="$ROOT/target/release/spool"
BENCH="$ROOT/target/release/spool-bench"

WORK=$(mktemp -d "/tmp/spool-$1.XXXXXX")
SPOOL_PID=
EXTRA_PIDS=()
cleanup() {
    for pid in $SPOOL_PID "${EXTRA_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
