# Sourced by bench/compare.sh and bench/ab.sh: a work directory ($WORK, /tmp/spool-$1.XXXXXX), the servers the script
# starts (append each PID to $PIDS: on any exit they are sent SIGTERM, waited for, and $WORK is removed) and
# free_port, a loopback port nobody holds.
WORK=$(mktemp -d "/tmp/spool-$1.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
