#!/usr/bin/python3
"""What durability costs: end-to-end jobs/s per fsync policy, and broker restart time.

    bench/bench_durability.py [--build build] [--jobs 100000] [--runs 3] [--queued 100000]

Throughput: the whole pipeline (poller with the demo source as fast as it
goes, broker, one worker with the template backend at zero latency and 1000
slots, sink writing JSON lines), JOBS jobs, once with state in
memory and once per storage.fsync policy. Every message mentions one entity
and carries no earlier lines as context, so a job's payload (the MESSAGE
record) is about 90 bytes. The figure is jobs posted per second from the
first post to the last, by the posted_ms of the sink's JSON lines (written
to a file in memory, see Posts).

Restart: QUEUED jobs queued in a broker with storage (fsync batch), the
broker stopped, then started again: the time from starting the process to
its ready file (it writes it once recovered and listening), and the
recovery time it reports in its log. Prints medians of the runs.

bench/run uses these functions; see bench/README.md.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
from harness import Pipeline, wait_until   # noqa: E402
import bench_queue                          # noqa: E402


def config(jobs, data_dir, fsync, entities=10, limited=0, dest="/dev/null", chats=100):
    """The pipeline's configuration: `entities` entities e0.., the last
    `limited` of them limited to one post a minute; demo messages in
    `chats` chats, each mentioning one entity, `jobs` of them (0: none, no
    source)."""
    ents = []
    for i in range(entities):
        e = {"id": "e%d" % i, "responseChance": 0, "messagesToRead": 0}
        if i >= entities - limited:
            e["rateLimits"] = {"maxPostsPerMinute": 1}
        ents.append(e)
    sources = [{"name": "demo", "type": "demo", "ratePerSecond": 10000000, "chats": chats,
                "users": 1000, "mentionRate": 1.0, "limit": jobs}] if jobs else []
    return {
        "entities": ents,
        "queueSettings": {"globalMaxInFlight": 0, "perEntityMaxInFlight": 0, "maxAgeSeconds": 0,
                          "maxAgeByClass": {"urgent": 0, "normal": 0, "low": 0},
                          "congestionThreshold": 0,
                          "responseDelays": {k: {"minMs": 0, "maxMs": 0}
                                             for k in ("urgent", "normal", "low")}},
        "storage": {"dataDir": data_dir, "fsync": fsync},
        "worker": {"templateLatencyMs": 0, "templateJitterMs": 0, "concurrency": 1000},
        "sink": {"statsLogIntervalMs": 0, "destinations": [{"name": "out", "type": "jsonl",
                                                            "path": dest}]},
        "poller": {"sources": sources},
        "logLevel": "warn",
    }


def start(p, cfg):
    """Writes `cfg` as the pipeline's configuration and starts broker, sink and worker."""
    p.config = cfg
    p.config_path = p.path("parley.json")
    p.write_config(cfg)
    p.start_broker()
    p.start_sink()
    p.start_worker()


class Posts:
    """The sink's JSON-lines output, in a file in memory (tmpfs, so writing
    it costs the sink a write() into memory and the disk nothing).

    Its lines carry posted_ms, the sink's clock when it posted: the rate
    is timed from the first post to the last, to the millisecond, with no
    process polling the pipeline while it runs."""

    def __init__(self):
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="parley-bench-posts-", dir=shm)
        self.path = os.path.join(self.dir, "posted.jsonl")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait(self, jobs, entities=None, timeout=900):
        """Waits until `jobs` posts (of these entities, if given) are in the file."""
        pattern = re.compile(rb'"entity": ?"(%s)"' % b"|".join(e.encode() for e in entities)) \
            if entities else None
        state = {"offset": 0, "count": 0}

        def done():
            try:
                with open(self.path, "rb") as f:
                    f.seek(state["offset"])
                    data = f.read()
            except FileNotFoundError:
                return False
            whole = data.rfind(b"\n") + 1
            state["offset"] += whole
            state["count"] += (len(pattern.findall(data, 0, whole)) if pattern
                               else data.count(b"\n", 0, whole))
            return state["count"] >= jobs
        wait_until(done, timeout, "%d posts" % jobs, interval=0.05)

    def rate(self, entities=None):
        """Posts per second from the first post to the last (of these entities)."""
        times = []
        with open(self.path) as f:
            for line in f:
                rec = json.loads(line)
                if entities is None or rec["entity"] in entities:
                    times.append(rec["posted_ms"])
        times.sort()
        return (len(times) - 1) / max((times[-1] - times[0]) / 1000.0, 1e-3)


def throughput(build, jobs, fsync, entities=10, chats=100):
    """End to end, in memory (fsync "memory") or with storage and that fsync policy."""
    with Pipeline(build, {}, "bench-dur") as p, Posts() as posts:
        memory = fsync == "memory"
        start(p, config(jobs, "" if memory else p.path("data"), "always" if memory else fsync,
                        entities=entities, dest=posts.path, chats=chats))
        p.start_poller()
        posts.wait(jobs)
        return posts.rate()


def rate_limited_throughput(build, jobs, entities=10, limited=9):
    """End to end in memory, `jobs` jobs for the unlimited entities, behind
    `limited` / `entities` of the queue waiting on rate limits.

    The last `limited` entities may post once a minute. A first poller
    queues jobs / (entities - limited) * limited jobs for them (one message,
    one job, mentioning one of them; the others are disabled in its
    configuration), which wait on their limits. Then a second poller
    submits `jobs` jobs for the unlimited entities as fast as it goes: their
    posts per second, as in throughput(), are the figure."""
    with Pipeline(build, {}, "bench-limited") as p, Posts() as posts:
        free = entities - limited
        blocked = jobs * limited // free
        start(p, config(blocked, "", "always", entities=entities, limited=limited,
                        dest=posts.path))
        only = lambda ids: ["entities[%d].enabled=false" % i for i in range(entities)
                            if i not in ids]
        p.start_poller("poller-limited", sets=only(range(free, entities)))
        wait_until(lambda: p.broker_stats()["accepted"] >= blocked, 300,
                   "the rate-limited jobs to be queued", interval=0.1)
        p.start_poller("poller-free", sets=only(range(free)) + [
            "poller.sources[0].name=free", "poller.sources[0].limit=%d" % jobs])
        ids = ["e%d" % i for i in range(free)]
        posts.wait(jobs, ids)
        return posts.rate(ids)


def fill(build, queued, data_dir):
    """A broker's storage in `data_dir` (fsync batch) holding `queued` queued jobs."""
    with Pipeline(build, {}, "bench-fill") as p:
        cfg = config(0, data_dir, "batch")
        cfg["queueSettings"]["maxQueueSize"] = queued + 1
        p.config, p.config_path = cfg, p.path("parley.json")
        p.write_config(cfg)
        p.start_broker()
        import msgpack
        payload = msgpack.packb(["bench", "c1", "1", "x", "u1", "a typical chat line", 1, 2, []],
                                use_bin_type=True)
        bench_queue.submit_all(p.frontend, queued, payload)
        wait_until(lambda: p.broker_stats()["queued"] == queued, 600, "all jobs queued")


def restart(build, queued, data_dir):
    """Starts a broker on `data_dir` (from fill) and stops it again.

    Returns (seconds from starting the process to its ready file, the
    recovery time the broker reports)."""
    with Pipeline(build, {}, "bench-restart") as p:
        cfg = config(0, data_dir, "batch")
        cfg["queueSettings"]["maxQueueSize"] = queued + 1
        cfg["logLevel"] = "info"     #  the broker reports its recovery time at info
        p.config, p.config_path = cfg, p.path("parley.json")
        p.write_config(cfg)
        began = time.time_ns()
        p.start_broker()
        #  The ready file's own time: the harness looks for it only every 50 ms.
        ready = (os.stat(p.path("broker.ready")).st_mtime_ns - began) / 1e9
        wait_until(lambda: "recovered" in p.procs["broker"].tail(50), 10, "the recovery line")
        line = [l for l in p.procs["broker"].tail(50).splitlines() if "recovered" in l][-1]
        reported = int(line.split(" in ")[1].split(" ms")[0]) / 1000.0
        check_queued = p.broker_stats()["queued"]
        if check_queued != queued:
            raise RuntimeError("recovered %d of %d jobs" % (check_queued, queued))
        return ready, reported


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
    data = tempfile.mkdtemp(prefix="parley-bench-data-")
    try:
        fill(build, args.queued, data)
        results = [restart(build, args.queued, data) for _ in range(args.runs)]
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print("broker restart with %d queued jobs (median of %d runs): ready after %.2f s, "
          "recovery reported %.2f s" % (args.queued, args.runs,
                                        statistics.median(r[0] for r in results),
                                        statistics.median(r[1] for r in results)))


if __name__ == "__main__":
    main()
