"""Latency from SUBMIT to posted, measured by bench_latency (bench_latency.c).

The probe submits jobs straight to the broker's frontend as a poller does
and reads the sink's jsonl destination, which writes to a named pipe, for
each job's line; both ends are timed on the probe's own monotonic clock.
See bench/README.md for what the timer includes.
"""
import os

from benchlib import binary, start_piped, wait_until
from harness import Pipeline

import bench_durability


def probe(build, fsync, count, rate=0, background=0, ipc=False):
    """The probe's figures (count, lost, p50_us, p90_us, p99_us, max_us, ...)
    against a pipeline with state in memory (fsync "memory") or durable.

    rate 0: one job in flight at a time; rate R: R jobs per second, open loop.
    background B: meanwhile the real poller submits B jobs per second from
    the demo source (every message mentions one entity), which share the
    pipeline and the pipe with the probe's jobs."""
    with Pipeline(build, {}, "bench-latency") as p:
        if ipc:
            #  All four endpoints as Unix domain sockets: one machine.
            p.frontend, p.backend, p.results, p.stats = (
                "ipc://" + p.path(n) for n in ("frontend", "backend", "results", "stats"))
        fifo = p.path("posted.fifo")
        os.mkfifo(fifo)
        memory = fsync == "memory"
        cfg = bench_durability.config(0, "" if memory else p.path("data"),
                                      "always" if memory else fsync, dest=fifo)
        if background:
            cfg["poller"]["sources"] = [{"name": "demo", "type": "demo", "ratePerSecond": background,
                                         "chats": 100, "users": 1000, "mentionRate": 1.0}]
        p.config, p.config_path = cfg, p.path("parley.json")
        p.write_config(cfg)
        p.start_broker()
        #  The probe holds the pipe open before the sink opens it for writing.
        probe = start_piped(p, "probe", [binary(build, "bench_latency"), p.frontend, fifo,
                                         str(count), str(rate)])
        p.start_sink()
        p.start_worker()
        wait_until(lambda: len(p.ctl("workers")) == 1, 30, "the worker to register")
        if background:
            p.start_poller()
            #  Steady load first: a second of posts at the background rate.
            wait_until(lambda: p.broker_stats()["posted"] >= background, 60, "the load to flow",
                       interval=0.1)
        probe.send("go")
        result = probe.result(120 + (count / rate if rate else count * 0.05))
        if result.get("lost"):
            raise RuntimeError("%d of the probe's jobs were never posted" % result["lost"])
        return result
