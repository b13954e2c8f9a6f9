#!/usr/bin/env bash
# Starts two peers the way deploy/sascribe.service does, on loopback, without systemd:
#   deploy/check.sh [path/to/sascribe]      (default: target/release/sascribe)
# It renders the unit with this checkout's binary and a temporary /etc/sascribe, has
# `systemd-analyze verify` check it when that tool is installed, runs ExecStartPre and then
# ExecStart the way systemd would (EnvironmentFile exported, `$$` unescaped), waits for the
# second peer to join through the first (its metrics say `sascribe_joined 1`), and stops both
# with the unit's KillSignal within its TimeoutStopSec, expecting exit status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/sascribe}")
unit=deploy/sascribe.service
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "deploy check FAILED: $*" >&2
    for f in "$tmp"/*.log; do [ -e "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}

# Free loopback ports (UDP and TCP alike) for the two peers: overlay, SIP and metrics each.
mapfile -t ports < <(python3 -c '
import socket
socks = []
for _ in range(6):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(); t.bind(("127.0.0.1", port))
    socks += [u, t]; print(port)')

# The unit as installed here: this binary, this temporary configuration directory.
sed -e "s#/usr/local/bin/sascribe#$bin#g" -e "s#/etc/sascribe#$tmp#g" "$unit" >"$tmp/sascribe.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$tmp/sascribe.service" || fail "systemd-analyze verify"
    echo "systemd-analyze verify: ok"
fi
"$bin" config --print-defaults >"$tmp/sascribe.toml"

# One key=value line, with the unit's backslash continuations joined.
directive() {
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$tmp/sascribe.service" | sed -n "s/^$1=//p"
}
pre=$(directive ExecStartPre)
start=$(directive ExecStart | sed 's/\$\$/$/g')
stop_timeout=$(directive TimeoutStopSec)
signal=$(directive KillSignal)
[ -n "$start" ] && [ -n "$pre" ] && [ -n "$stop_timeout" ] && [ -n "$signal" ] ||
    fail "the unit lacks ExecStart, ExecStartPre, TimeoutStopSec or KillSignal"

# Runs one peer as the unit would, with the environment file it names.
start_peer() { # name listen sip metrics bootstrap
    cat >"$tmp/$1.env" <<EOF
SASCRIBE_LISTEN=$2
SASCRIBE_ADVERTISE=
SASCRIBE_SIP=$3
SASCRIBE_BOOTSTRAP=$5
SASCRIBE_METRICS=$4
SASCRIBE_ADMIN=
EOF
    (
        set -a
        # shellcheck disable=SC1090
        . "$tmp/$1.env"
        set +a
        eval "$pre" >"$tmp/$1-pre.log" 2>&1 || exit 1
        eval "exec $start" >"$tmp/$1.log" 2>&1
    ) &
    pids+=($!)
}

joined() { # metrics address
    python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=2).read().decode()
except Exception:
    sys.exit(1)
sys.exit(0 if any(l.startswith("sascribe_joined{") and l.endswith(" 1") for l in text.splitlines()) else 1)
EOF
}

start_peer a "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" ""
for _ in $(seq 1 100); do joined "127.0.0.1:${ports[2]}" && break; sleep 0.1; done
joined "127.0.0.1:${ports[2]}" || fail "the first peer did not start"
start_peer b "127.0.0.1:${ports[3]}" "127.0.0.1:${ports[4]}" "127.0.0.1:${ports[5]}" "127.0.0.1:${ports[0]}"
for _ in $(seq 1 200); do joined "127.0.0.1:${ports[5]}" && break; sleep 0.1; done
joined "127.0.0.1:${ports[5]}" || fail "the second peer did not join through the first"
grep -q '"joined the overlay"' "$tmp/b.log" || fail "no JSON 'joined the overlay' log line"
echo "both peers started from the unit's ExecStart; the second joined through the first"

for i in 1 0; do
    kill "-${signal#SIG}" "${pids[$i]}"
    deadline=$((SECONDS + ${stop_timeout%s}))
    while kill -0 "${pids[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -0 "${pids[$i]}" 2>/dev/null && fail "peer $i still running ${stop_timeout}s after $signal"
    status=0
    wait "${pids[$i]}" || status=$?
    [ "$status" -eq 0 ] || fail "peer $i exited with $status after $signal"
done
pids=()
echo "deploy check: passed (both peers stopped on $signal within ${stop_timeout}s, status 0)"
