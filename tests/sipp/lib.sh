# Shared by tests/sipp/run.sh and tests/sipp/run-auth.sh (sourced, not run): the environment
# they read, the SIPp invocation and the pass/fail bookkeeping.
#
#   sipp_setup DEFAULT_FIRST_PORT USAGE "$@"   sets sipp, ip, port, calls, transports, logs,
#                                               addrs, n and failed (exits 2 on bad usage)
#   sipp_run NAME SCENARIO TARGET SERVICE CALLS [SIPp args...]
#                                               one SIPp run on the transport in $t, on the
#                                               next local port; prints PASS/FAIL NAME ...
#   sipp_check_transport                        exits 2 unless $t is u1, un, t1 or tn
#   sipp_verdict WHAT                           prints the summary; exits 1 if any run failed

sipp_setup() {
    local default_port="$1" usage="$2"
    shift 2
    if [ "$#" -lt 1 ]; then
        echo "usage: $0 SIP_ADDR [SIP_ADDR...]   ($usage)" >&2
        exit 2
    fi
    here="$(cd "$(dirname "$0")" && pwd)"
    sipp="${SIPP:-sipp}"
    command -v "$sipp" >/dev/null || { echo "$0: $sipp not found (apt-get install sip-tester)" >&2; exit 2; }
    ip="${SIPP_LOCAL_IP:-127.0.0.1}"
    port="${SIPP_PORT:-$default_port}"
    calls="${SIPP_CALLS:-3}"
    transports="${SIPP_TRANSPORTS:-u1 t1}"
    logs="${SIPP_LOGS:-$(mktemp -d)}"
    mkdir -p "$logs"
    addrs=("$@")
    n=${#addrs[@]}
    failed=0
}

sipp_run() {
    local name="$1" sf="$2" target="$3" who="$4" m="$5"
    shift 5
    port=$((port + 1))
    if (cd "$logs" && "$sipp" "$target" -sf "$here/$sf" -s "$who" -m "$m" -l 1 -r 10 "$@" \
            -i "$ip" -p "$port" -t "$t" -nostdin -timeout 40s -timeout_error \
            -trace_err -error_file "$logs/$name.err" -trace_screen -screen_file "$logs/$name.screen" \
            >"$logs/$name.out" 2>&1); then
        echo "PASS $name: $sf -> $target ($m call(s))"
    else
        echo "FAIL $name: $sf -> $target (see $logs/$name.*)"
        sed -n '1,40p' "$logs/$name.err" 2>/dev/null || true
        failed=1
    fi
}

sipp_check_transport() {
    case "$t" in
        u1 | un | t1 | tn) ;;
        *) echo "$0: unknown SIPp transport $t (u1, un, t1 or tn)" >&2; exit 2 ;;
    esac
}

sipp_verdict() {
    if [ "$failed" -ne 0 ]; then
        echo "$1: FAILED (logs in $logs)"
        exit 1
    fi
    echo "$1: all passed ($transports)"
}
