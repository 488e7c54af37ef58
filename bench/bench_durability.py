#!/usr/bin/python3
"""What durability costs: end-to-end jobs/s per fsync policy, and broker restart time.

    bench/bench_durability.py [--build build] [--jobs 100000] [--runs 3] [--queued 100000]

Throughput: the whole pipeline (poller with the demo source as fast as it
goes, broker, one worker with the template backend at zero latency and 1000
slots, sink writing JSON lines to /dev/null), JOBS jobs, once with state in
memory and once per storage.fsync policy. The figure is jobs posted per
second from the first post to the last.

Restart: QUEUED jobs queued in a broker with storage (fsync batch), the
broker stopped, then started again: the time it reports for recovery and
the time until it listens again. Prints medians of the runs.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
from harness import Pipeline, wait_until   # noqa: E402
import bench_queue                          # noqa: E402


def config(jobs, data_dir, fsync):
    return {
        "entities": [{"id": "e%d" % i, "responseChance": 0} for i in range(10)],
        "queueSettings": {"globalMaxInFlight": 0, "perEntityMaxInFlight": 0, "maxAgeSeconds": 0,
                          "congestionThreshold": 0,
                          "responseDelays": {k: {"minMs": 0, "maxMs": 0}
                                             for k in ("urgent", "normal", "low")}},
        "storage": {"dataDir": data_dir, "fsync": fsync},
        "worker": {"templateLatencyMs": 0, "templateJitterMs": 0, "concurrency": 1000},
        "sink": {"statsLogIntervalMs": 0, "destinations": [{"name": "null", "type": "jsonl",
                                                            "path": "/dev/null"}]},
        "poller": {"sources": [{"name": "demo", "type": "demo", "ratePerSecond": 10000000,
                                "chats": 100, "users": 1000, "mentionRate": 1.0, "limit": jobs}]},
        "logLevel": "warn",
    }


def throughput(build, jobs, fsync):
    with Pipeline(build, {}, "bench-dur") as p:
        data = p.path("data") if fsync != "memory" else ""
        p.config = config(jobs, data, fsync if fsync != "memory" else "always")
        p.config_path = p.path("parley.json")
        p.write_config(p.config)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        first = [None]

        def posted():
            s = p.broker_stats()
            if first[0] is None and s["posted"] > 0:
                first[0] = (time.monotonic(), s["posted"])
            return s["posted"] >= jobs and (time.monotonic(), s["posted"])
        last = wait_until(posted, 900, "%d posts" % jobs, interval=0.1)
        t0, n0 = first[0]
        return (last[1] - n0) / max(last[0] - t0, 1e-3)


def restart_time(build, queued):
    with Pipeline(build, {}, "bench-restart") as p:
        p.config = config(0, p.path("data"), "batch")
        p.config["poller"]["sources"] = []
        p.config["queueSettings"]["maxQueueSize"] = queued + 1
        p.config["logLevel"] = "info"     #  the broker reports its recovery time at info
        p.config_path = p.path("parley.json")
        p.write_config(p.config)
        p.start_broker()
        import msgpack
        payload = msgpack.packb(["bench", "c1", "1", "x", "u1", "a typical chat line", 1, 2, []],
                                use_bin_type=True)
        bench_queue.submit_all(p.frontend, queued, payload)
        wait_until(lambda: p.broker_stats()["queued"] == queued, 60, "all jobs queued")
        p.procs["broker"].stop()
        start = time.monotonic()
        p.start_broker()
        listening = time.monotonic() - start
        wait_until(lambda: "recovered" in p.procs["broker"].tail(50), 10, "the recovery line")
        line = [l for l in p.procs["broker"].tail(50).splitlines() if "recovered" in l][-1]
        reported = int(line.split(" in ")[1].split(" ms")[0])
        check_queued = p.broker_stats()["queued"]
        if check_queued != queued:
            raise RuntimeError("recovered %d of %d jobs" % (check_queued, queued))
        return reported / 1000.0, listening


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--jobs", type=int, default=100000)
    ap.add_argument("--queued", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    print("end to end, %d jobs, template backend at zero latency (median of %d runs)"
          % (args.jobs, args.runs))
    for fsync in ("memory", "off", "batch", "always"):
        rates = [throughput(build, args.jobs, fsync) for _ in range(args.runs)]
        print("  %-7s %8.0f jobs/s   (runs: %s)" % (fsync, statistics.median(rates),
                                                   ", ".join("%.0f" % r for r in rates)), flush=True)
    results = [restart_time(build, args.queued) for _ in range(args.runs)]
    print("broker restart with %d queued jobs (median of %d runs): recovery %.2f s, listening after %.2f s"
          % (args.queued, args.runs, statistics.median(r[0] for r in results),
             statistics.median(r[1] for r in results)))


if __name__ == "__main__":
    main()
