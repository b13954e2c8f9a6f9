#!/usr/bin/env python3
"""Sends every request of the malformed-request corpus to a live SIP front end over UDP and checks
the status code of the final answer (file NAME.CODE.sip; CODE 000 means no answer is expected).

    tests/sip-live/corpus.py 127.0.0.1:5060 [CORPUS_DIR]

Prints one line per file and a closing 'N passed, M failed' line; exits 1 if any failed.
"""
import pathlib
import socket
import sys


def final_code(sock, timeout):
    """The first non-1xx status code received within `timeout` seconds, or None."""
    sock.settimeout(timeout)
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            return None
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0].startswith("SIP/") and parts[1].isdigit():
            code = int(parts[1])
            if code >= 200:
                return code


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    target = (host, int(port))
    default = pathlib.Path(__file__).resolve().parents[2] / "impl" / "tests" / "sip-corpus"
    corpus = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else default
    passed = failed = 0
    for f in sorted(corpus.glob("*.sip")):
        want = int(f.name.rsplit(".", 2)[1])
        data = f.read_bytes()
        if len(data) > 65507:
            print(f"SKIP {f.name}: {len(data)} bytes do not fit in one UDP datagram")
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.sendto(data, target)
            got = final_code(sock, 1.0 if want == 0 else 5.0)
        ok = (got is None) if want == 0 else (got == want)
        passed += ok
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {f.name}: expected {want or 'no answer'}, got {got or 'no answer'}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
