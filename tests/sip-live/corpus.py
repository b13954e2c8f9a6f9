#!/usr/bin/env python3
"""Sends every request of the malformed-request corpus to a live SIP front end and checks the
status code of the final answer (file NAME.CODE.sip; CODE 000 means no answer is expected).

    tests/sip-live/corpus.py [--tcp] 127.0.0.1:5060 [CORPUS_DIR]

Over UDP each request is one datagram. With --tcp each goes on a new connection; a request the
stream cannot frame (no Content-Length: RFC 3261 §18.3 makes it mandatory on streams, or one
beyond the size limit) gets its 400 or 513 and the connection closed, or is taken as ending at
its blank line, so there the code expected is that of the file or of the framing error; one that
is incomplete on a stream (no blank line, a body shorter than its Content-Length) is waited on,
so no answer is right for it.

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


def incomplete_on_a_stream(data):
    """Whether a stream framer must wait for more bytes: no blank line ending the headers (CRLF
    line endings), or fewer body bytes than Content-Length says."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l") and value.strip().isdigit():
            return int(value.strip()) > len(body)
    return False


def tcp_final_code(data, target, timeout):
    """Sends `data` on a new connection: the first final status code read within `timeout`
    seconds, or None (nothing, or the connection closed first)."""
    with socket.create_connection(target, timeout=timeout) as sock:
        sock.sendall(data)
        sock.settimeout(timeout)
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\r\n"):
                parts = line.decode("latin-1").split(" ", 2)
                if len(parts) >= 2 and parts[0].startswith("SIP/") and parts[1].isdigit():
                    if int(parts[1]) >= 200:
                        return int(parts[1])
    return None


def main():
    args = sys.argv[1:]
    tcp = "--tcp" in args
    args = [a for a in args if a != "--tcp"]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port = args[0].rsplit(":", 1)
    target = (host, int(port))
    default = pathlib.Path(__file__).resolve().parents[2] / "impl" / "tests" / "sip-corpus"
    corpus = pathlib.Path(args[1]) if len(args) > 1 else default
    passed = failed = 0
    for f in sorted(corpus.glob("*.sip")):
        want = int(f.name.rsplit(".", 2)[1])
        data = f.read_bytes()
        if tcp:
            got = tcp_final_code(data, target, 1.0 if want == 0 else 5.0)
            framing = b"content-length" not in data.lower() or len(data) > 65535
            waits = incomplete_on_a_stream(data)
            ok = got == want or (want == 0 and got is None) or (framing and got in (400, 513, None))
            ok = ok or (waits and got is None)
            passed += ok
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {f.name} (TCP): expected {want or 'no answer'}, got {got or 'no answer'}")
            continue
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
    print(f"{passed} passed, {failed} failed" + (" (TCP)" if tcp else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
