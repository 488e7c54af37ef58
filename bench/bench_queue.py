#!/usr/bin/python3
"""One million queued jobs in the real broker: memory per job, submit and drain rates.

    bench/bench_queue.py [--build build] [--jobs 1000000] [--runs 3]

Starts a broker with no workers, submits JOBS jobs straight over its
frontend (SUBMIT frames of 1000 jobs, 20 frames in flight), and reads the
broker's resident memory before and after: the difference per job, minus the
payload bytes, is what the broker spends per queued job. Then starts a sink
and one worker (template backend, no latency, 1000 slots) and times how fast
the whole queue drains through dispatch, commit and post. Prints the median
of the runs.
"""
import argparse
import os
import statistics
import sys
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness import Pipeline, wait_until   # noqa: E402

SUBMIT, ACK = 1, 2


def frame(t, fields):
    return b"\xa5\x50\x01" + bytes([t]) + msgpack.packb(fields, use_bin_type=True)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def submit_all(endpoint, jobs, payload):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    now = int(time.time() * 1000)
    entities = ["e%d" % i for i in range(10)]
    batch, window, seq, acked = 1000, 20, 0, 0
    outstanding = set()
    start = time.monotonic()
    sent = 0
    while acked < jobs:
        while sent < jobs and len(outstanding) < window:
            n = min(batch, jobs - sent)
            items = [["bench/c%d/%d" % ((sent + i) % 1000, sent + i), entities[(sent + i) % 10],
                      "bench/c%d" % ((sent + i) % 1000), "group", (10, 50, 50, 90)[(sent + i) % 4],
                      now, payload] for i in range(n)]
            seq += 1
            s.send(frame(SUBMIT, [seq, items]))
            outstanding.add(seq)
            sent += n
        reply = s.recv()
        fields = msgpack.unpackb(reply[4:], raw=False)
        if reply[3] == ACK and fields[0] in outstanding:
            outstanding.discard(fields[0])
            acked += fields[1] + fields[2]
    elapsed = time.monotonic() - start
    s.close(0)
    return elapsed


def _config(jobs):
    return {
        "entities": [{"id": "e%d" % i, "responseChance": 0} for i in range(10)],
        "storage": {"dataDir": ""},     #  memory: what the queue itself costs
        "queueSettings": {"globalMaxInFlight": 0, "perEntityMaxInFlight": 0, "maxAgeSeconds": 0,
                          "maxAgeByClass": {"urgent": 0, "normal": 0, "low": 0},
                          "maxQueueSize": jobs + 1, "congestionThreshold": 0,
                          "responseDelays": {k: {"minMs": 0, "maxMs": 0}
                                             for k in ("urgent", "normal", "low")}},
        "worker": {"templateLatencyMs": 0, "templateJitterMs": 0, "concurrency": 1000},
        "sink": {"statsLogIntervalMs": 0, "destinations": [{"name": "null", "type": "jsonl",
                                                            "path": "/dev/null"}]},
        "poller": {"sources": []},
        "logLevel": "warn",
    }


def _fill(p, jobs):
    """Submits `jobs` jobs to the pipeline's broker (started here) and
    measures its memory before and after."""
    message = ["bench", "c1", "1", "someone", "u1", "a chat message of a typical length, "
               "asking the bot something", int(time.time() * 1000), 2, []]
    payload = msgpack.packb(message, use_bin_type=True)
    broker = p.start_broker()
    time.sleep(0.3)
    before = rss_kib(broker.pid)
    submit_s = submit_all(p.frontend, jobs, payload)
    wait_until(lambda: p.broker_stats()["queued"] == jobs, 60, "all jobs queued")
    after = rss_kib(broker.pid)
    per_job = (after - before) * 1024.0 / jobs
    return {"submit_per_s": jobs / submit_s, "rss_per_job": per_job,
            "beyond_payload": per_job - len(payload), "payload": len(payload)}


def queue_memory(build, jobs):
    """A broker holding `jobs` queued jobs in memory: what each costs (see _fill)."""
    with Pipeline(build, _config(jobs), "bench-queue") as p:
        return _fill(p, jobs)


def one_run(build, jobs):
    with Pipeline(build, _config(jobs), "bench-queue") as p:
        result = _fill(p, jobs)
        p.start_sink()
        start = time.monotonic()
        p.start_worker()
        wait_until(lambda: p.broker_stats()["jobs"] == 0, 600, "the queue to drain", interval=0.2)
        result["drain_per_s"] = jobs / (time.monotonic() - start)
        return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--jobs", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs = [one_run(os.path.abspath(args.build), args.jobs) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("%d jobs queued in the broker (median of %d runs)" % (args.jobs, args.runs))
    print("  submit:  %8.0f jobs/s (SUBMIT of 1000, acknowledged)" % med["submit_per_s"])
    print("  memory:  %8.0f bytes per queued job, %d of them payload: %.0f bytes beyond it"
          % (med["rss_per_job"], med["payload"], med["beyond_payload"]))
    print("  drain:   %8.0f jobs/s dispatched, written, committed and posted (1 worker)"
          % med["drain_per_s"])


if __name__ == "__main__":
    main()
