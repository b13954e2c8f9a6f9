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

# shellcheck source=tests/sipp/lib.sh
. "$(dirname "$0")/lib.sh"
sipp_setup 16060 "a cluster started with tests/auth/sascribe.toml" "$@"

run() { # label scenario target presentity calls user password (and $t, the transport)
    sipp_run "$1-$t" "$2" "$3" "$4" "$5" -au "$6" -ap "$7" -auth_uri "$4@example.test"
}

for t in $transports; do
    sipp_check_transport
    run publish            auth-publish.xml            "${addrs[0]}"            alice 1        alice alice-in-wonderland
    run subscribe          auth-subscribe.xml          "${addrs[$((1 % n))]}"   alice "$calls" bob   bob-builds
    run wrong-password     auth-wrong-password.xml     "${addrs[$((2 % n))]}"   alice 1        alice not-the-password
    run publish-forbidden  auth-forbidden-publish.xml  "${addrs[$((3 % n))]}"   alice 1        bob   bob-builds
    # carol's credentials are pre-hashed in the users file: a 403 (not a 401) shows they verified.
    run watch-forbidden    auth-forbidden-subscribe.xml "${addrs[$((n - 1))]}"  alice 1        carol carol-sings
done

sipp_verdict "SIPp authentication scenarios"
