#!/usr/bin/env python3
"""A Parley worker in Python, written from proto/PROTOCOL.md alone.

    pyworker.py --broker tcp://host:7532 --sink tcp://host:7533 [--id NAME] [--capacity N]

It writes a plain reply ("<entity> here, <author>: <text>") for every job. It
exists to show (and to test) that the protocol document is enough to build a
worker in another language; it needs python3-zmq and python3-msgpack.

What §3.2 asks of a worker, and where it is done here:
  - HEARTBEAT every heartbeat_ms (WELCOME's, bounded to [50, 600000]) with
    job_seq and held (every job received and not yet RELEASEd): heartbeat();
  - job_seq = max(JOB.seq, WELCOME.job_seq), reset on a new WELCOME.epoch;
  - WELCOME.cancel: drop those jobs, no RELEASE for them;
  - RESULT queued without blocking, RELEASE done only after it; a result the
    sink does not take for min(lease_ms / 2, resendMs x 4) goes back as
    RELEASE retry "sink unreachable": flush().
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
REL_DONE, REL_RETRY, REL_EXPIRED, REL_RETURN = 0, 1, 3, 5


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


def now_ms():
    return int(time.monotonic() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--id", default="py-%d" % os.getpid())
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--resend-ms", type=int, default=2000, help="network.resendMs")
    args = ap.parse_args()

    ctx = zmq.Context()
    broker = ctx.socket(zmq.DEALER)
    broker.setsockopt(zmq.ROUTING_ID, ("W:%s:%d" % (args.id, os.getpid())).encode())
    broker.setsockopt(zmq.LINGER, 2000)
    broker.connect(args.broker)
    sink = ctx.socket(zmq.PUSH)
    sink.setsockopt(zmq.LINGER, 2000)
    # Queue results only on a live connection, so "the sink did not take it" is seen here.
    # (ZMQ_IMMEDIATE drops what the pipe holds if that connection breaks; such a result
    # is lost after its RELEASE done, and the broker retries the job when its wait for
    # the sink's COMMIT ends. parley-worker watches the connection with a socket monitor
    # instead, so its pipe outlives reconnects.)
    sink.setsockopt(zmq.IMMEDIATE, 1)
    sink.connect(args.sink)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    state = {"epoch": None, "job_seq": 0, "heartbeat_ms": 1000, "lease_ms": 60000}
    # Every job received and not yet RELEASEd. This worker writes a reply at
    # once, so each one held is a result waiting for the sink to take it.
    held = {}       # (job_id, token) -> its RESULT item
    since = {}      # (job_id, token) -> when its result was written (ms)
    next_beat = 0

    def heartbeat(draining=0):
        refs = [list(ref) for ref in held]
        broker.send(frame(HEARTBEAT, [args.id, args.capacity, max(0, args.capacity - len(held)), [],
                                      socket.gethostname(), os.getpid(), draining,
                                      state["job_seq"], refs, state["epoch"] or 0]))

    def release(items):
        for job_id, token, *_ in items:
            held.pop((job_id, token), None)
            since.pop((job_id, token), None)
        if items:
            broker.send(frame(RELEASE, [items]))

    def flush():
        waiting = list(held)
        if not waiting:
            return
        try:
            sink.send(frame(RESULT, [args.id, [held[ref] for ref in waiting]]), zmq.NOBLOCK)
        except zmq.Again:
            bound = min(state["lease_ms"] // 2, args.resend_ms * 4)
            late = [ref for ref in waiting if now_ms() - since[ref] >= bound]
            release([[j, t, REL_RETRY, "sink unreachable (results not accepted for %d ms)"
                      % (now_ms() - since[(j, t)]), 0] for j, t in late])
            return
        # The RESULT is queued: now, and only now, the broker may hear "done".
        release([[j, t, REL_DONE, "", 0] for j, t in waiting])

    def on_welcome(fields):
        epoch, heartbeat_ms, lease_ms = fields[:3]
        job_seq = fields[3] if len(fields) > 3 else 0
        cancel = fields[4] if len(fields) > 4 else []
        if epoch != state["epoch"]:
            state["epoch"], state["job_seq"] = epoch, 0    # a new broker numbers afresh
        state["job_seq"] = max(state["job_seq"], job_seq)
        if heartbeat_ms:
            state["heartbeat_ms"] = min(600000, max(50, heartbeat_ms))
        if lease_ms:
            state["lease_ms"] = lease_ms
        for job_id, token in cancel:     # no longer ours: drop, and no RELEASE
            held.pop((job_id, token), None)
            since.pop((job_id, token), None)

    def on_jobs(fields):
        if len(fields) > 1 and fields[1]:
            state["job_seq"] = max(state["job_seq"], fields[1])
        refused = []
        for item in fields[0]:
            job_id, token, attempt, msg_key, entity, chat, _prio, created, expires, payload = item[:10]
            if expires and expires < time.time() * 1000:
                refused.append([job_id, token, REL_EXPIRED, "expired before writing", 0])
                continue
            message = msgpack.unpackb(payload, raw=False)
            author, text = message[3], message[5]
            reply = "%s here, %s: %s" % (entity, author, text)
            held[(job_id, token)] = [job_id, token, attempt, msg_key, entity, chat, created, expires,
                                     reply, payload, 0, 0]
            since[(job_id, token)] = now_ms()
        release(refused)

    while not stopping:
        flush()
        if now_ms() >= next_beat:
            heartbeat()
            next_beat = now_ms() + state["heartbeat_ms"]
        # Results the sink refused are offered again soon; otherwise wait for the next beat.
        wait = next_beat - now_ms()
        if held:
            wait = min(wait, 20)
        if not broker.poll(timeout=max(1, wait)):
            continue
        parsed = parse(broker.recv())
        if not parsed:
            continue
        msg_type, fields = parsed
        if msg_type == WELCOME:
            on_welcome(fields)
        elif msg_type == JOB:
            on_jobs(fields)
    # Draining: say so first, then hand back what the sink has not taken.
    heartbeat(draining=1)
    flush()
    release([[j, t, REL_RETURN, "worker stopped", 0] for j, t in list(held)])
    broker.close()
    sink.close()
    ctx.term()


if __name__ == "__main__":
    main()
