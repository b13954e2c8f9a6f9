#!/usr/bin/env bash
# Two real baresip 1.0 user agents watch each other's presence through two DIFFERENT SIP front
# ends of a running `sascribe cluster` (or through any presence server, e.g. Kamailio: give the
# same address twice).
#
#   tests/baresip/run.sh SIP_ADDR_A SIP_ADDR_B      (e.g. 127.0.0.1:5060 127.0.0.1:5061)
#
# A (alice) has B (bob) in its contacts with `;presence=p2p`; its SUBSCRIBEs go to SIP_ADDR_A.
# B's PUBLISHes go to SIP_ADDR_B. Both use `;regint=0` accounts (no REGISTER) whose outbound proxy
# is the peer, and one resource domain (BARESIP_DOMAIN), so both name the presentity by the same
# Request-URI `sip:bobNNN@DOMAIN`. The steps, each polled a bounded number of times:
#
#   1. A starts and SUBSCRIBEs to B before B has published anything: the subscription must be
#      accepted (2xx, then a NOTIFY); A shows B as Unknown.
#   2. B starts; its presence module PUBLISHes at once (baresip 1.0 sends `<basic>unknown</basic>`
#      before any status is set; A then shows B as Offline).
#   3. B goes online (`/presence_online`: PUBLISH open)          -> A must show B Online.
#   4. B goes offline (`/presence_offline`: PUBLISH closed)      -> A must show B Offline.
#   5. B goes online again                                       -> A must show B Online;
#      B quits cleanly (`/quit`: PUBLISH Expires: 0, removing its publication)
#                                                                -> A must show B Offline
#      (the server's NOTIFY must carry a `closed` PIDF; an empty NOTIFY shows as Unknown).
#
# Both instances are driven through baresip's UDP console (`cons` module) and run with `-s`
# (SIP trace) into log files; on failure both logs are printed. Exit 0 only if every step passed.
#
# Environment: BARESIP (binary, default `baresip`), BARESIP_MODULES (module directory, default
# /usr/lib/baresip/modules), BARESIP_DOMAIN (default sascribe.test), BARESIP_LIFETIME (seconds
# each instance may live, default 120), BARESIP_POLLS (polls per step, 0.5 s apart, default 30),
# BARESIP_PUBLISH_FIRST=1 (B publishes before A subscribes: skips the subscribe-first check of
# step 1, for a server that refuses it), BARESIP_QUIT_STEP=0 (skips step 5),
# BARESIP_SHOW_LOGS=1 (print both logs even on success).
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 SIP_ADDR_A SIP_ADDR_B   (e.g. 127.0.0.1:5060 127.0.0.1:5061)" >&2
    exit 2
fi
peer_a="$1"
peer_b="$2"
baresip="${BARESIP:-baresip}"
modules="${BARESIP_MODULES:-/usr/lib/baresip/modules}"
domain="${BARESIP_DOMAIN:-sascribe.test}"
lifetime="${BARESIP_LIFETIME:-120}"
polls="${BARESIP_POLLS:-30}"
publish_first="${BARESIP_PUBLISH_FIRST:-0}"
quit_step="${BARESIP_QUIT_STEP:-1}"
command -v "$baresip" >/dev/null || { echo "$0: $baresip not found (apt-get install baresip-core)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "$0: python3 not found" >&2; exit 2; }
for m in cons account contact presence; do
    [ -f "$modules/$m.so" ] || { echo "$0: $modules/$m.so not found" >&2; exit 2; }
done

# Names unique to this run, so reruns against the same cluster start from scratch.
alice="alice$$"
bob="bob$$"
bob_uri="sip:$bob@$domain"

work="$(mktemp -d "${TMPDIR:-/tmp}/sascribe-baresip.XXXXXX")"
dir_a="$work/alice"
dir_b="$work/bob"
mkdir -p "$dir_a" "$dir_b"
pid_a=""
pid_b=""
failed=1

strip() { sed -e 's/\x1b\[[0-9;]*m//g' -e 's/\r$//'; }

# Compact view of a SIP trace: one line per message (direction, start line, CSeq method, and the
# headers/body that matter for presence).
sip_summary() { # log own_sip_addr
    strip <"$1" | awk -v me="$2" '
        function flush() {
            if (start == "") return
            printf "  %s %-45s %s%s%s%s%s\n", dir, start, "[" cseq "]",
                (ev != "" ? " Event=" ev : ""), (ss != "" ? " Subscription-State=" ss : ""),
                (ex != "" ? " Expires=" ex : ""),
                (basic != "" ? " basic=" basic : (cl == "0" ? " (no body)" : ""))
            start = ""
        }
        /^(UDP|TCP|TLS) [^ ]+ -> [^ ]+$/ {
            flush(); dir = ($4 == me ? "<-" : "->"); want = 1; cseq = ev = ss = ex = basic = cl = ""
            next
        }
        want == 1 { start = $0; want = 0; next }
        start != "" && /^CSeq:/ { cseq = $3 }
        start != "" && /^Event:/ { ev = $2 }
        start != "" && /^Subscription-State:/ { ss = $2 }
        start != "" && /^Expires:/ { ex = $2 }
        start != "" && /^Content-Length:/ { cl = $2 }
        start != "" && /<basic>/ { b = $0; sub(/.*<basic>/, "", b); sub(/<\/basic>.*/, "", b); basic = b }
        END { flush() }'
}

cleanup() {
    local rc=$?
    set +e
    trap '' PIPE   # a closed stdout (e.g. `| head`) must not stop the clean-up
    for who in a b; do
        local pid dir port
        if [ "$who" = a ]; then pid="$pid_a"; dir="$dir_a"; port="${cons_a:-}"; else pid="$pid_b"; dir="$dir_b"; port="${cons_b:-}"; fi
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null && [ -n "$port" ]; then
            cons "$port" /quit >/dev/null 2>&1   # A un-SUBSCRIBEs, B removes its publication
            for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$failed" -ne 0 ] || [ "${BARESIP_SHOW_LOGS:-0}" = 1 ]; then
        for who in alice bob; do
            [ -f "$work/$who/log" ] || continue
            echo "----- SIP messages of $who (-> sent, <- received) -----"
            if [ "$who" = alice ]; then sip_summary "$work/$who/log" "127.0.0.1:${sip_a:-0}"
            else sip_summary "$work/$who/log" "127.0.0.1:${sip_b:-0}"; fi
            echo "----- baresip log of $who ($work/$who/log, with -s SIP trace) -----"
            strip <"$work/$who/log"
        done
    fi
    rm -rf "$work"
    [ "$rc" -ne 0 ] && exit "$rc"
    exit "$failed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four free ports on 127.0.0.1: SIP of A, console of A, SIP of B, console of B. baresip binds
# SIP on UDP and TCP at the port and SIP/TLS on TCP at port+1; the console on UDP and TCP.
read -r sip_a cons_a sip_b cons_b < <(python3 - <<'EOF'
import random, socket
def free(port):
    socks = []
    try:
        for p, kind in ((port, socket.SOCK_DGRAM), (port, socket.SOCK_STREAM), (port + 1, socket.SOCK_STREAM)):
            s = socket.socket(socket.AF_INET, kind); socks.append(s); s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks: s.close()
got = []
for _ in range(500):
    p = random.randrange(20000, 60000, 2)
    if all(abs(p - q) > 1 for q in got) and free(p):
        got.append(p)
    if len(got) == 4: break
print(*got)
EOF
)
[ -n "${cons_b:-}" ] || { echo "no free ports found" >&2; exit 1; }

# Sends one console command to the instance whose console listens on port $1; prints the reply
# (the echoed keys and the command output; log lines relayed meanwhile may be mixed in).
cons() { # port command
    python3 - "$1" "$2" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(sys.argv[2].encode() + b"\n", ("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.3)
out, end = b"", time.time() + 2.0
while time.time() < end:
    try:
        d, _ = s.recvfrom(65535)
    except (socket.timeout, ConnectionRefusedError):
        if out: break
        continue
    out += d
sys.stdout.write(out.decode(errors="replace"))
EOF
}

# B's presence status in A's contact list: Online, Offline, Busy, Unknown, or "?" (no answer).
status_of_b() {
    local line
    line="$(cons "$cons_a" /contacts 2>/dev/null | strip | grep -F "<$bob_uri>" | head -n1 || true)"
    if [[ "$line" =~ (Online|Offline|Busy|Unknown) ]]; then echo "${BASH_REMATCH[1]}"; else echo "?"; fi
}

# Polls A's contact list until B shows as $1; prints what it saw; fails the step otherwise.
expect_b() { # status what
    local want="$1" what="$2" seen="" last="" i
    for i in $(seq 1 "$polls"); do
        last="$(status_of_b)"
        if [ -z "$seen" ] || [ "${seen##* }" != "$last" ]; then seen="${seen:+$seen }$last"; fi
        if [ "$last" = "$want" ]; then
            echo "PASS $what: A shows B $want (A's /contacts over time: $seen; poll $i)"
            return 0
        fi
        sleep 0.5
    done
    echo "FAIL $what: A shows B $last, expected $want (A's /contacts over time: $seen; $polls polls)"
    return 1
}

write_config() { # dir sip_port cons_port account contacts
    cat >"$1/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:$2
module_path		$modules
module			cons.so
module_app		account.so
module_app		contact.so
module_app		presence.so
cons_listen		127.0.0.1:$3
EOF
    printf '%s\n' "$4" >"$1/accounts"
    printf '%s' "$5" >"$1/contacts"
}

# A: watches B, never publishes (pubint=0). B: publishes (pubint=600 > 0 enables the publisher),
# watches nobody.
write_config "$dir_a" "$sip_a" "$cons_a" \
    "<sip:$alice@$domain>;regint=0;pubint=0;outbound=\"sip:$peer_a\"" \
    "\"Bob\" <$bob_uri>;presence=p2p"$'\n'
write_config "$dir_b" "$sip_b" "$cons_b" \
    "<sip:$bob@$domain>;regint=0;pubint=600;outbound=\"sip:$peer_b\"" ""

start() { # dir -> pid in $started
    # stdbuf: the log (SIP trace) is read while baresip runs, so keep it line-buffered.
    timeout "$lifetime" stdbuf -oL -eL "$baresip" -f "$1" -s </dev/null >"$1/log" 2>&1 &
    started=$!
}

wait_console() { # port pid who
    local i
    for i in $(seq 1 40); do
        kill -0 "$2" 2>/dev/null || { echo "FAIL $3: baresip exited at start"; return 1; }
        cons "$1" /contacts 2>/dev/null | grep -q -- '--- Contacts' && return 0
        sleep 0.25
    done
    echo "FAIL $3: console 127.0.0.1:$1 did not answer"
    return 1
}

# The (direction, start line, CSeq method) records of a log, e.g. "<- SIP/2.0 200 OK|SUBSCRIBE".
records() { # log own_addr
    strip <"$1" | awk -v me="$2" '
        /^(UDP|TCP|TLS) [^ ]+ -> [^ ]+$/ { dir = ($4 == me ? "<-" : "->"); want = 1; start = ""; next }
        want == 1 { start = $0; want = 0; next }
        start != "" && /^CSeq:/ { print dir " " start "|" $3; start = "" }'
}

# Waits until the instance's log shows a received final response to its first $2 request;
# prints the status code ("" if none came).
final_response() { # log own_addr method
    local i code
    for i in $(seq 1 "$polls"); do
        code="$(records "$1" "$2" | awk -F'|' -v m="$3" '$2 == m && $1 ~ /^<- SIP\/2\.0 [2-6][0-9][0-9]/ { print $1; exit }')"
        if [ -n "$code" ]; then echo "${code#<- SIP/2.0 }"; return 0; fi
        sleep 0.5
    done
    echo ""
}

echo "baresip presence check: A (sip:$alice@$domain, SIP 127.0.0.1:$sip_a) subscribes via $peer_a;"
echo "  B ($bob_uri, SIP 127.0.0.1:$sip_b) publishes via $peer_b"
fail=0

start_b() {
    start "$dir_b"; pid_b=$started
    wait_console "$cons_b" "$pid_b" B || return 1
    local r
    r="$(final_response "$dir_b/log" "127.0.0.1:$sip_b" PUBLISH)"
    case "$r" in
        2*) echo "PASS B's first PUBLISH (its presence module publishes at start-up): $r" ;;
        "") echo "FAIL B's first PUBLISH got no final response"; return 1 ;;
        *) echo "FAIL B's first PUBLISH: $r"; return 1 ;;
    esac
}

if [ "$publish_first" = 1 ]; then
    echo "NOTE BARESIP_PUBLISH_FIRST=1: B publishes before A subscribes (subscribe-first not checked)"
    start_b || exit 1
fi

# Step 1: A subscribes (baresip's subscriber starts 1 s after start-up, Expires: 600).
start "$dir_a"; pid_a=$started
wait_console "$cons_a" "$pid_a" A || exit 1
r="$(final_response "$dir_a/log" "127.0.0.1:$sip_a" SUBSCRIBE)"
case "$r" in
    2*)
        notified=0
        for _ in $(seq 1 "$polls"); do
            records "$dir_a/log" "127.0.0.1:$sip_a" | grep -q '^<- NOTIFY .*|NOTIFY$' && { notified=1; break; }
            sleep 0.5
        done
        if [ "$notified" = 1 ]; then
            when="before any publication"
            [ "$publish_first" = 1 ] && when="after B published"
            echo "PASS A's SUBSCRIBE $when: $r, then a NOTIFY; A shows B $(status_of_b)"
        else
            echo "FAIL A's SUBSCRIBE got $r but no NOTIFY followed"; exit 1
        fi
        ;;
    "") echo "FAIL A's SUBSCRIBE got no final response"; exit 1 ;;
    *)
        echo "FAIL A's SUBSCRIBE before any publication: $r (expected 200 and a NOTIFY without body;"
        echo "     baresip 1.0 would only retry in 30 s)"
        exit 1
        ;;
esac

if [ "$publish_first" != 1 ]; then
    # Step 2: B starts and publishes its initial (unknown = not open) status.
    start_b || exit 1
    expect_b Offline "B's initial publication (basic 'unknown', not open)" || fail=1
fi

# Step 3: B goes online.
cons "$cons_b" /presence_online >/dev/null
expect_b Online "B went online (PUBLISH open)" || fail=1

# Step 4: B goes offline.
cons "$cons_b" /presence_offline >/dev/null
expect_b Offline "B went offline (PUBLISH closed)" || fail=1

# Step 5: B online again, then quits: its publication is removed (PUBLISH Expires: 0).
if [ "$quit_step" = 1 ]; then
    cons "$cons_b" /presence_online >/dev/null
    expect_b Online "B went online again" || fail=1
    cons "$cons_b" /quit >/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid_b" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid_b" 2>/dev/null; then
        echo "FAIL B did not exit on /quit"; fail=1
    else
        wait "$pid_b" 2>/dev/null || true
        pid_b=""
        if records "$dir_b/log" "127.0.0.1:$sip_b" | grep -q '^-> PUBLISH .*|PUBLISH$'; then
            echo "     B quit; its last PUBLISH: $(strip <"$dir_b/log" | grep -E '^(Expires|SIP-If-Match):' | tail -n 2 | tr '\n' ' ')"
        fi
        expect_b Offline "B quit (publication removed)" || fail=1
    fi
fi

if [ "$fail" -ne 0 ]; then
    echo "baresip presence check: FAILED"
    exit 1
fi
failed=0
echo "baresip presence check: PASSED"
