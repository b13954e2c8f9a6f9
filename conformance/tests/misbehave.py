#!/usr/bin/env python3
"""Test helper (not a user tool): wraps an adapter and misbehaves on request, to check that
the harness fails the right trace with the right message, in bounded time, and goes on.

    env MISBEHAVE=FAULT[,FAULT…] [MISBEHAVE_COUNTER=FILE MISBEHAVE_ON=K] \
        [MISBEHAVE_PIDFILE=FILE] python3 misbehave.py ADAPTER [ARGS…]

FAULT is KIND@N, applied to the reply to the N-th request this process receives (msg_id N):
  drop@N       never send it
  dup@N        send it twice
  reorder@N    hold it back and send it after the reply to request N+1
  delay@N:S    send it S seconds late
  exit@N       exit with status 3 (after a line on stderr) instead of answering
  garbage@N    write a line that is not JSON first
  wrongid@N    send it with in_reply_to N+5
  stale@N      send it with in_reply_to N-1
  version@N    send it with protocol_version 99
With MISBEHAVE_COUNTER, the processes started with that counter file are numbered from 1 and
only the K-th (MISBEHAVE_ON) misbehaves: a run of several traces can go back to normal.
"""

import json
import os
import subprocess
import sys
import time


def faults_for_this_process():
    counter, on = os.environ.get("MISBEHAVE_COUNTER"), os.environ.get("MISBEHAVE_ON")
    if counter:
        try:
            with open(counter) as f:
                n = int(f.read().strip() or 0) + 1
        except FileNotFoundError:
            n = 1
        with open(counter, "w") as f:
            f.write(str(n))
        if on is not None and n != int(on):
            return {}
    faults = {}
    for spec in filter(None, os.environ.get("MISBEHAVE", "").split(",")):
        kind, _, at = spec.partition("@")
        n, _, arg = at.partition(":")
        faults[int(n)] = (kind, arg)
    return faults


def main():
    if os.environ.get("MISBEHAVE_PIDFILE"):
        with open(os.environ["MISBEHAVE_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
    faults = faults_for_this_process()
    inner = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)

    def out(line):
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
        sys.stdout.flush()

    def with_body(line, **fields):
        v = json.loads(line)
        v["body"].update(fields)
        return json.dumps(v)

    held = None
    n = 0
    for line in sys.stdin:
        n += 1
        kind, arg = faults.get(n, (None, None))
        if kind == "exit":
            print(f"misbehave: exiting instead of answering request {n}", file=sys.stderr,
                  flush=True)
            sys.exit(3)
        inner.stdin.write(line)
        inner.stdin.flush()
        reply = inner.stdout.readline()
        if not reply:
            sys.exit(1)
        if held is not None:
            out(reply)
            out(held)
            held = None
            continue
        if kind == "drop":
            continue
        if kind == "reorder":
            held = reply
            continue
        if kind == "delay":
            time.sleep(float(arg))
        elif kind == "dup":
            out(reply)
        elif kind == "garbage":
            out("this is not JSON")
        elif kind == "wrongid":
            reply = with_body(reply, in_reply_to=n + 5)
        elif kind == "stale":
            reply = with_body(reply, in_reply_to=n - 1)
        elif kind == "version":
            reply = with_body(reply, protocol_version=99)
        out(reply)


if __name__ == "__main__":
    main()
