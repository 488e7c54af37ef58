#!/usr/bin/env python3
"""Throughput of LLM workers: W worker processes x C calls in flight each.

    bench/bench_llm.py [--bin build] [--points 1x10,1x100,...] [--runs 3]
                       [--latency-ms 1000] [--servers 4] [--seconds 10]

Runs the real pipeline (broker, sink, a demo poller feeding more than the
workers can take) with W parley-worker processes on the openai backend, each
holding C jobs, against fake OpenAI-compatible servers (tests/fake_llm.py)
that answer every call after --latency-ms. With a latency of L seconds the
ideal is W*C/L replies per second; the script measures posted replies per
second at the sink over --seconds once the pipeline is warm, and prints, for
each point, the median of --runs runs and its share of the ideal.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from harness import Pipeline, base_config, wait_until  # noqa: E402

DEFAULT_POINTS = "1x10,1x50,1x100,1x250,1x500,1x1000,2x250,4x250,2x500,8x125"


class Counter:
    """Counts posted replies by reading the sink's JSON-lines file as it grows."""

    def __init__(self, path):
        self.path, self.offset, self.count = path, 0, 0

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        whole = data.rfind(b"\n") + 1
        self.offset += whole
        self.count += data.count(b"\n", 0, whole)
        return self.count


def run_point(bin_dir, workers, calls, args):
    ideal = workers * calls * 1000.0 / args.latency_ms
    entities = [{"id": "e%d" % i, "responseChance": 0, "messagesToRead": 5,
                 "systemPrompt": "You are persona %d." % i} for i in range(8)]
    config = base_config(entities, sink={"destinations": []})
    config["queueSettings"]["staleClaimTimeout"] = 60000
    config["network"]["heartbeatMs"] = 1000
    config["worker"].update({"backend": "openai", "concurrency": calls,
                             "requestTimeoutMs": args.latency_ms * 10, "healthCheckMs": 10000})
    config["sink"]["statsIntervalMs"] = 1000
    with Pipeline(bin_dir, config, "bench-llm") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        servers = []
        for i in range(args.servers):
            proc = p.start_fake_llm("llm%d" % i, latency_ms=args.latency_ms)
            servers.append({"name": "llm%d" % i, "url": proc.ready["url"],
                            "maxConcurrent": calls})
        config["lmStudioServers"] = servers
        # Every message mentions one entity: one job per message, 30% more than the ideal.
        config["poller"]["sources"] = [{"name": "demo", "type": "demo", "chats": 50,
                                        "mentionRate": 1.0, "ratePerSecond": ideal * 1.3}]
        config["poller"]["submitWindow"] = 1000000
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        for w in range(workers):
            p.start_worker("worker%d" % w, env={"WORKER_ID": "w%d" % w})
        wait_until(lambda: len(p.ctl("workers")) == workers, 30, "the workers to register")
        p.start_poller()
        counter = Counter(p.output)
        # Warm: the first replies arrive after one latency; let every slot fill.
        wait_until(lambda: counter.read() > 0, 30, "the first reply")
        time.sleep(args.latency_ms / 1000.0 * 2 + 1)
        start_count, start = counter.read(), time.monotonic()
        time.sleep(args.seconds)
        end_count, end = counter.read(), time.monotonic()
        rate = (end_count - start_count) / (end - start)
        dead = p.broker_stats()["dlq"]
        return rate, ideal, dead


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--points", default=DEFAULT_POINTS, help="WxC,WxC,...")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin)
    print("LLM latency %d ms, %d fake servers, %d run(s) per point, %.0f s measured per run"
          % (args.latency_ms, args.servers, args.runs, args.seconds))
    print("%-9s %9s %12s %14s %8s  %s" % ("W x C", "in flight", "ideal/s", "replies/s", "share",
                                         "runs"))
    for point in args.points.split(","):
        w, c = (int(x) for x in point.lower().split("x"))
        rates, dead = [], 0
        for _ in range(args.runs):
            rate, ideal, d = run_point(bin_dir, w, c, args)
            rates.append(rate)
            dead += d
        median = statistics.median(rates)
        print("%-9s %9d %12.0f %14.1f %7.1f%%  %s%s"
              % ("%dx%d" % (w, c), w * c, ideal, median, 100 * median / ideal,
                 " ".join("%.1f" % r for r in rates),
                 "  (%d dead letters!)" % dead if dead else ""), flush=True)


if __name__ == "__main__":
    main()
