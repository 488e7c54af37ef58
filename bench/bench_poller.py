"""bench_poller - what the poller's storage costs: CPU per message, fsyncs per message.

Usage: /usr/bin/python3 bench/bench_poller.py [--bin build] [--messages 100000] [--runs 3]
                                               [--inflight 400]

1. CPU per message. A parley-poller reads MESSAGES chat messages from a
   JSON-lines file (each mentions the one entity: one job a message) and
   submits them to a fake broker (a ROUTER written here) that accepts
   everything at once. The poller's CPU time (user + system, from
   /proc/PID/stat) from start until every job is acknowledged, divided by
   the messages; for state in memory, and stored with storage.fsync "batch"
   and "always". Median of RUNS.

2. fsyncs per message at one message in flight. The same with
   poller.submitWindow 1 (the poller reads the next message only once the
   broker acknowledged the last) and fsync "always", INFLIGHT messages:
   strace -f -c counts every fdatasync and fsync of the poller from its
   start to its stop (opening the store included).
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from harness import Pipeline, Proc, base_config, free_endpoint, mentions, wait_until, write_jsonl  # noqa: E402

SIG, VERSION, SUBMIT, ACK, STATS = b"\xa5\x50", 1, 1, 2, 12


class AcceptingBroker:
    """A ROUTER that accepts every job of every SUBMIT, and counts them."""

    def __init__(self, endpoint):
        self.accepted = 0
        self.seen = set()
        self.stats = {}
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._ctx.term()

    def _run(self):
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            while True:
                try:
                    route, data = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                fields = msgpack.unpackb(data[4:], raw=False)
                if data[3] == STATS:
                    self.stats = dict(fields[1][0][2])
                elif data[3] == SUBMIT:
                    new = dup = 0
                    for item in fields[1]:
                        key = (item[1], item[0])
                        if key in self.seen:
                            dup += 1
                        else:
                            self.seen.add(key)
                            new += 1
                    self.accepted += new
                    ack = [fields[0], new, dup, [], 0, 0]
                    self._sock.send_multipart(
                        [route, SIG + bytes([VERSION, ACK]) + msgpack.packb(ack, use_bin_type=True)])


def cpu_seconds(pid):
    """User + system CPU of a process and its threads so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup(bin_dir, name, data_dir_fsync, poller=None):
    config = base_config([{"id": "alpha", "responseChance": 0}],
                         poller=dict(poller or {}), network={"heartbeatMs": 1000, "resendMs": 5000})
    p = Pipeline(bin_dir, config, name)
    p.frontend = free_endpoint()
    p.backend, p.results, p.stats = free_endpoint(), free_endpoint(), free_endpoint()
    if data_dir_fsync:
        config["storage"] = {"dataDir": p.path("data"), "fsync": data_dir_fsync}
    return p, config


def run_cpu(bin_dir, n, fsync):
    p, config = setup(bin_dir, "bench-poller", fsync)
    broker = AcceptingBroker(p.frontend)
    try:
        path = p.path("in.jsonl")
        write_jsonl(path, mentions(n))
        config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": path}]
        p.write_config(config)
        start = time.monotonic()
        proc = p.start_poller()
        wait_until(lambda: broker.accepted >= n, 600, "%d jobs accepted" % n, interval=0.01)
        took = time.monotonic() - start
        wait_until(lambda: broker.stats.get("acked", 0) >= n, 30, "the poller's acks")
        cpu = cpu_seconds(proc.pid)
        p.stop()
        return cpu / n * 1e6, n / took
    finally:
        p.cleanup()
        broker.close()


def run_fsyncs(bin_dir, n):
    """The poller runs under strace from its start to its stop: every fsync it makes."""
    p, config = setup(bin_dir, "bench-poller-fsync", "always", {"submitWindow": 1})
    broker = AcceptingBroker(p.frontend)
    try:
        path = p.path("in.jsonl")
        write_jsonl(path, mentions(n))
        config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": path}]
        p.write_config(config)
        out = p.path("strace.txt")
        argv = ["strace", "-f", "-c", "-o", out, "-e", "trace=fdatasync,fsync",
                p._binary("parley-poller"), "--ready-file", p.path("poller.ready"),
                "--config", p.config_path] + sum((["--set", x] for x in p.endpoint_sets()), [])
        proc = Proc("poller", argv, p.path("poller.log"), dict(os.environ), p.path("poller.ready"))
        p.procs["poller"] = proc
        proc.start()
        wait_until(lambda: broker.accepted >= n, 600, "%d jobs" % n, interval=0.01)
        wait_until(lambda: broker.stats.get("acked", 0) >= n, 30, "the poller's acks")
        with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
            poller_pid = int(f.read().split()[0])
        os.kill(poller_pid, signal.SIGTERM)
        proc.popen.wait(30)
        counts = {}
        with open(out) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) in ("fdatasync", "fsync"):
                    counts[m.group(2)] = int(m.group(1))
        return counts, broker.accepted
    finally:
        p.cleanup()
        broker.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--inflight", type=int, default=400)
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin)
    if not args.skip_cpu:
        print("%d messages, one job each, into a broker that accepts everything" % args.messages)
        for fsync in ("", "batch", "always"):
            runs = [run_cpu(bin_dir, args.messages, fsync) for _ in range(args.runs)]
            us = [r[0] for r in runs]
            rate = [r[1] for r in runs]
            print("  %-10s %6.2f us CPU/message (runs %s), %8.0f messages/s"
                  % (fsync or "memory", statistics.median(us), " ".join("%.2f" % u for u in us),
                     statistics.median(rate)), flush=True)
    counts, handled = run_fsyncs(bin_dir, args.inflight)
    total = sum(counts.values())
    print("one message in flight, fsync always: %d messages, %s: %.2f fsyncs per message"
          % (handled, counts, total / max(handled, 1)))


if __name__ == "__main__":
    main()
