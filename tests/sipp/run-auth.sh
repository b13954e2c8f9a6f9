#!/usr/bin/env bash
# Runs the SIPp digest-authentication scenarios (auth-*.xml) against a running cluster started
# with the configuration of tests/auth/ (users alice, bob, carol in realm example.test; bob may
# watch alice; nobody else may):
#
#   sascribe cluster --peers 4 --config tests/auth/sascribe.toml &
#   tests/sipp/run-auth.sh 127.0.0.1:5060 127.0.0.1:5061 [...]
#
# What passes: 401 then 200 with credentials (PUBLISH, then a modify reusing the nonce with the
# next nonce count; SUBSCRIBE + NOTIFY, then an authenticated un-SUBSCRIBE), 401 again with a wrong
# password, 403 for another user's presence and for a watcher the policy does not allow.
# Requests go to different peers: each peer has its own nonces, and the state still meets at
# the overlay root. Exit status 0 only if every scenario passed.
#
# Every scenario runs over UDP and over TCP (SIPp `-t u1`, `-t t1`), as in tests/sipp/run.sh.
#
# Environment: as tests/sipp/run.sh (SIPP, SIPP_LOCAL_IP, SIPP_PORT, SIPP_CALLS, SIPP_TRANSPORTS,
# SIPP_LOGS).
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 SIP_ADDR [SIP_ADDR...]   (a cluster started with tests/auth/sascribe.toml)" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
sipp="${SIPP:-sipp}"
command -v "$sipp" >/dev/null || { echo "$0: $sipp not found (apt-get install sip-tester)" >&2; exit 2; }
ip="${SIPP_LOCAL_IP:-127.0.0.1}"
port="${SIPP_PORT:-16060}"
calls="${SIPP_CALLS:-3}"
transports="${SIPP_TRANSPORTS:-u1 t1}"
logs="${SIPP_LOGS:-$(mktemp -d)}"
mkdir -p "$logs"
addrs=("$@")
n=${#addrs[@]}
failed=0

run() { # label scenario target presentity calls user password (and $t, the transport)
    local label="$1-$t" sf="$2" target="$3" who="$4" m="$5" user="$6" pass="$7"
    port=$((port + 1))
    if (cd "$logs" && "$sipp" "$target" -sf "$here/$sf" -s "$who" -m "$m" -l 1 -r 10 \
            -au "$user" -ap "$pass" -auth_uri "$who@example.test" \
            -i "$ip" -p "$port" -t "$t" -nostdin -timeout 40s -timeout_error \
            -trace_err -error_file "$logs/$label.err" -trace_screen -screen_file "$logs/$label.screen" \
            >"$logs/$label.out" 2>&1); then
        echo "PASS $label: $sf as $user -> $target ($m call(s))"
    else
        echo "FAIL $label: $sf as $user -> $target (see $logs/$label.*)"
        sed -n '1,40p' "$logs/$label.err" 2>/dev/null || true
        failed=1
    fi
}

for t in $transports; do
    case "$t" in
        u1 | un | t1 | tn) ;;
        *) echo "$0: unknown SIPp transport $t (u1, un, t1 or tn)" >&2; exit 2 ;;
    esac
    run publish            auth-publish.xml            "${addrs[0]}"            alice 1        alice alice-in-wonderland
    run subscribe          auth-subscribe.xml          "${addrs[$((1 % n))]}"   alice "$calls" bob   bob-builds
    run wrong-password     auth-wrong-password.xml     "${addrs[$((2 % n))]}"   alice 1        alice not-the-password
    run publish-forbidden  auth-forbidden-publish.xml  "${addrs[$((3 % n))]}"   alice 1        bob   bob-builds
    # carol's credentials are pre-hashed in the users file: a 403 (not a 401) shows they verified.
    run watch-forbidden    auth-forbidden-subscribe.xml "${addrs[$((n - 1))]}"  alice 1        carol carol-sings
done

if [ "$failed" -ne 0 ]; then
    echo "SIPp authentication scenarios: FAILED (logs in $logs)"
    exit 1
fi
echo "SIPp authentication scenarios: all passed ($transports)"
