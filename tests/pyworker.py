#!/usr/bin/env python3
"""A Parley worker in Python, written from proto/PROTOCOL.md alone.

    pyworker.py --broker tcp://host:7532 --sink tcp://host:7533 [--id NAME] [--capacity N]

It writes a plain reply ("<entity> here, <author>: <text>") for every job. It
exists to show (and to test) that the protocol document is enough to build a
worker in another language; it needs python3-zmq and python3-msgpack.
"""
import argparse
import os
import signal
import socket
import time

import msgpack
import zmq

SIG = b"\xa5\x50"
VERSION = 1
HEARTBEAT, WELCOME, JOB, RELEASE, RESULT = 3, 4, 5, 6, 7
REL_DONE, REL_EXPIRED, REL_RETURN = 0, 3, 5


def frame(msg_type, fields):
    return SIG + bytes([VERSION, msg_type]) + msgpack.packb(fields, use_bin_type=True)


def parse(data):
    """(type, fields) of a frame, or None if it is not a Parley v1 frame."""
    if len(data) < 4 or data[:2] != SIG or data[2] != VERSION:
        return None
    try:
        fields = msgpack.unpackb(data[4:], raw=False)
    except Exception:   # malformed: drop it, as the spec says
        return None
    return data[3], fields


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--id", default="py-%d" % os.getpid())
    ap.add_argument("--capacity", type=int, default=8)
    args = ap.parse_args()

    ctx = zmq.Context()
    broker = ctx.socket(zmq.DEALER)
    broker.setsockopt(zmq.ROUTING_ID, ("W:%s:%d" % (args.id, os.getpid())).encode())
    broker.setsockopt(zmq.LINGER, 2000)
    broker.connect(args.broker)
    sink = ctx.socket(zmq.PUSH)
    sink.setsockopt(zmq.LINGER, 2000)
    sink.connect(args.sink)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    held = 0
    heartbeat_ms = 1000
    next_beat = 0.0

    def heartbeat(draining=0):
        broker.send(frame(HEARTBEAT, [args.id, args.capacity, args.capacity - held, [],
                                      socket.gethostname(), os.getpid(), draining]))

    while not stopping:
        now = time.monotonic()
        if now >= next_beat:
            heartbeat()
            next_beat = now + heartbeat_ms / 1000.0
        if not broker.poll(timeout=max(1, int((next_beat - time.monotonic()) * 1000))):
            continue
        parsed = parse(broker.recv())
        if not parsed:
            continue
        msg_type, fields = parsed
        if msg_type == WELCOME:
            heartbeat_ms = fields[1] or 1000
        elif msg_type == JOB:
            results, releases = [], []
            for item in fields[0]:
                job_id, token, attempt, msg_key, entity, chat, _prio, created, expires, payload = item[:10]
                if expires and expires < time.time() * 1000:
                    releases.append([job_id, token, REL_EXPIRED, "expired before writing", 0])
                    continue
                message = msgpack.unpackb(payload, raw=False)
                author, text = message[3], message[5]
                reply = "%s here, %s: %s" % (entity, author, text)
                results.append([job_id, token, attempt, msg_key, entity, chat, created, expires,
                                reply, payload, 0, 0])
                releases.append([job_id, token, REL_DONE, "", 0])
            # The result goes to the sink before the broker hears the job is done.
            if results:
                sink.send(frame(RESULT, [args.id, results]))
            broker.send(frame(RELEASE, [releases]))
    heartbeat(draining=1)
    broker.close()
    sink.close()
    ctx.term()


if __name__ == "__main__":
    main()
