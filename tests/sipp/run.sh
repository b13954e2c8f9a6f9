#!/usr/bin/env bash
# Runs the SIPp scenarios of this directory against a running `sascribe cluster`, over UDP and
# over TCP (SIPp `-t u1` and `-t t1`: one TCP connection per call; the front ends serve both on
# the same port).
#
#   tests/sipp/run.sh 127.0.0.1:5060 127.0.0.1:5061 [...]
#
# The addresses are the SIP front ends the cluster printed (lines containing `SIP 127.0.0.1:PORT`).
# Requests for one resource deliberately go to different peers: the publication is made on the
# first address, the subscriptions on the others, so that state and notifications cross the
# overlay. Exit status 0 only if every scenario passed (SIPp exits 0 only when all calls succeeded).
#
# Environment: SIPP (binary, default `sipp`), SIPP_LOCAL_IP (default 127.0.0.1), SIPP_PORT (first
# local port, default 15060), SIPP_CALLS (calls per subscription scenario, default 3),
# SIPP_TRANSPORTS (SIPp transport modes to run, default "u1 t1"), SIPP_LOGS (directory for SIPp
# error traces, default a temporary directory).
set -euo pipefail

# shellcheck source=tests/sipp/lib.sh
. "$(dirname "$0")/lib.sh"
sipp_setup 15060 "e.g. 127.0.0.1:5060 127.0.0.1:5061" "$@"

run() { # transport scenario target user calls
    t="$1" sipp_run "$(basename "$2" .xml)-$1" "$2" "$3" "$4" "$5"
}

for t in $transports; do
    sipp_check_transport
    # Resource names unique to this run and transport, so each starts from scratch.
    user="alice$$$t"
    run "$t" publish.xml     "${addrs[0]}"            "$user" 1
    run "$t" subscribe.xml   "${addrs[$((1 % n))]}"   "$user" "$calls"
    run "$t" refresh.xml     "${addrs[$((2 % n))]}"   "$user" "$calls"
    run "$t" unsubscribe.xml "${addrs[$((3 % n))]}"   "$user" "$calls"
    run "$t" stale-etag.xml  "${addrs[$((n - 1))]}"   "bob$$$t" 1
    # The pair: a watcher subscribes to a resource nothing was published to (on the second
    # peer), then two publishers of it publish, modify and remove their event states (on the
    # first peer); the watcher checks each NOTIFY. It runs in the background, on the next port.
    pair="carol$$$t"
    ( run "$t" subscribe-first.xml "${addrs[$((1 % n))]}" "$pair" 1 ) >"$logs/pair-$t.result" 2>&1 &
    watcher=$!
    port=$((port + 1))
    sleep 1
    run "$t" two-publishers.xml "${addrs[0]}" "$pair" 1
    wait "$watcher" || true
    cat "$logs/pair-$t.result"
    grep -q '^PASS' "$logs/pair-$t.result" || failed=1
done

sipp_verdict "SIPp scenarios"
