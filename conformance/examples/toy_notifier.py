#!/usr/bin/env python3
"""A toy presence notifier behind the sa-Scribe adapter protocol (conformance/ADAPTER.md).

Standard library only; a starting point for third parties. One central in-memory "root"
answers every SUBSCRIBE and PUBLISH at once, whatever peer the user agent contacted, and the
overlay is ignored: no JOIN, no replication, no multicast. The harness runs it with

    sascribe-conformance run traces --adapter "python3 conformance/examples/toy_notifier.py"

It speaks the protocol correctly (every request gets exactly one reply, errors have codes,
logs go to stderr) and fails the suite as README.md in this folder explains.
"""

import json
import sys

PROTOCOL_VERSION = 10
NOT_SUPPORTED, MALFORMED_REQUEST, CANNOT_APPLY = 10, 12, 14


class Rejected(Exception):
    """A request the toy answers with an error body."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text


class ToyRoot:
    """The central root: one presentity, its event states and its subscribers.

    Each event state is keyed by its entity tag, reported as the seq of the change that last
    set it (ADAPTER.md, client outcomes); NOTIFYs carry the values of every live state.
    """

    def __init__(self, config):
        self.max_expires = config["max_expires"]
        self.seq = 0  # seq of the latest change; 0: nothing was ever published
        self.states = {}  # entity tag (a seq) -> value
        self.subscribers = []  # user agents, in subscription order

    def notify_all(self):
        return [self.notify(ua) for ua in self.subscribers]

    def notify(self, ua):
        n = {"ua": ua, "kind": "notify", "seq": self.seq}
        if self.states:
            n["values"] = sorted(set(self.states.values()))
        return n

    def subscribe(self, ua):
        # Accepted whether or not anything was published (a NOTIFY with seq 0 then).
        if ua not in self.subscribers:
            self.subscribers.append(ua)
        return [{"ua": ua, "kind": "subscribe_ok"}, self.notify(ua)]

    def unsubscribe(self, ua):
        if ua in self.subscribers:
            self.subscribers.remove(ua)
        return []

    def publish(self, ua, value, if_match, expires):
        if if_match is not None and if_match not in self.states:
            return [{"ua": ua, "kind": "publish_412"}]
        self.seq += 1
        if if_match is not None:
            del self.states[if_match]
        if expires == 0:
            ok = {"ua": ua, "kind": "publish_ok", "expires": 0}
            return [ok] + self.notify_all()
        self.states[self.seq] = value
        granted = min(expires, self.max_expires)
        ok = {"ua": ua, "kind": "publish_ok", "etag": self.seq, "expires": granted}
        return [ok] + self.notify_all()

    def expire(self, etag):
        if etag not in self.states:
            return []
        self.seq += 1
        del self.states[etag]
        return self.notify_all()


class Adapter:
    def __init__(self):
        self.root = None

    def handle(self, body):
        """The reply fields of one request (without type/in_reply_to), or raises Rejected."""
        t = body.get("type")
        if t == "init":
            version = body.get("protocol_version")
            if version is None:
                raise Rejected(MALFORMED_REQUEST, "init carries no protocol_version")
            if version != PROTOCOL_VERSION:
                raise Rejected(NOT_SUPPORTED, f"protocol version {version} is not supported "
                                              f"(this adapter speaks {PROTOCOL_VERSION})")
            self.root = ToyRoot(body["config"])
            peers = len(body["config"]["peers"])
            return {"protocol_version": PROTOCOL_VERSION,
                    "log": [f"toy root for {peers} peers (the overlay is ignored)"]}
        if t not in ("client_request", "deliver", "lose", "detect_failure", "fire_timer",
                     "replication_retry", "heartbeat", "parent_timeout", "expire", "crash",
                     "restart", "alive", "lapse", "reask", "suspect", "heal"):
            # `state` (protocol version 3) is optional: the toy has no peers to project, so it
            # is compared on messages only.
            raise Rejected(NOT_SUPPORTED, f"unknown request type {t!r}")
        if self.root is None:
            raise Rejected(CANNOT_APPLY, "the first request must be init")
        root = self.root
        if t == "client_request":
            ua, req = body["ua"], body["request"]
            kind = req.get("kind")
            if kind == "subscribe":
                return {"client": root.subscribe(ua)}
            if kind == "unsubscribe":
                return {"client": root.unsubscribe(ua)}
            if kind == "publish":
                return {"client": root.publish(ua, req["value"], req.get("if_match"),
                                               req["expires"])}
            raise Rejected(MALFORMED_REQUEST, f"unknown client request kind {kind!r}")
        if t in ("deliver", "lose"):
            # The toy never reports an overlay message as sent, so none is ever in flight.
            raise Rejected(CANNOT_APPLY, "no such message in flight (the toy sends none)")
        if t == "expire":
            return {"client": root.expire(body["etag"])}
        if t == "restart":
            raise Rejected(NOT_SUPPORTED, "restart is not supported")
        # detect_failure, fire_timer, replication_retry, heartbeat, parent_timeout, crash,
        # alive, lapse, reask, suspect, heal: the central root has no overlay, no tree, no
        # retransmissions, no replicas and no leases; a crashed or paused peer changes nothing.
        return {"log": [f"{t}: nothing to do"]}


def reply(in_reply_to, body):
    return {"src": "sut", "dest": "harness", "body": dict(body, in_reply_to=in_reply_to)}


def answer(adapter, line):
    try:
        request = json.loads(line)
        body = request["body"]
        msg_id = body["msg_id"]
    except (ValueError, KeyError, TypeError) as e:
        return reply(None, {"type": "error", "code": MALFORMED_REQUEST,
                            "text": f"not a request: {e}"})
    try:
        fields = adapter.handle(body)
    except Rejected as r:
        return reply(msg_id, {"type": "error", "code": r.code, "text": r.text})
    except (KeyError, TypeError) as e:
        return reply(msg_id, {"type": "error", "code": MALFORMED_REQUEST,
                              "text": f"bad {body.get('type')!r} request: missing {e}"})
    out = {"type": body["type"] + "_ok", "sent": [], "client": [], "log": []}
    out.update(fields)
    return reply(msg_id, out)


def main():
    adapter = Adapter()
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(answer(adapter, line)), flush=True)
        # Logs go to stderr: stdout carries only replies.
        print(f"toy: handled {line.strip()[:80]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
