#!/usr/bin/python3
"""bench/run's measurements: Parley's figures beside peer systems, in one run.

    bench/run [--quick] [--runs N] [--only NAME...]

(bench/run installs the peers and builds first; this is what it runs.)

Each measurement is run N times (default 3), interleaved: round 1 of every
measurement, then round 2, and so on, so that whatever else the machine is
doing spreads over all of them alike. A figure's value is the median of its
runs. Prints a table, the ratio of each Parley throughput figure to each
peer's, and writes bench/out/results.json. Nothing is asserted: it is not a
test. bench/README.md says what each figure measures.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_durability     # noqa: E402
import bench_llm            # noqa: E402
import bench_queue          # noqa: E402
import latency              # noqa: E402
import peers                # noqa: E402

PAYLOAD = 100       #  bytes of a peer's job: about a Parley job's MESSAGE record (~90)


class Measure:
    """One measurement, run once per round; it yields one or more figures.

    figures: {name: unit}; run(ctx) returns {name: value}. needs: measures
    whose figures this one reads from ctx (they run first in each round)."""

    def __init__(self, name, figures, run, needs=(), params=None, cleanup=None, peer=False):
        self.name, self.figures, self.run, self.needs = name, figures, run, list(needs)
        self.params, self.cleanup, self.peer = params or {}, cleanup, peer


class Restart:
    """Broker restarts on one storage directory, filled once (fsync batch)."""

    def __init__(self, build, queued):
        self.build, self.queued, self.dir = build, queued, None

    def __call__(self, ctx):
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="parley-bench-restart-")
            began = time.monotonic()
            bench_durability.fill(self.build, self.queued, self.dir)
            print("    (queued %d jobs durably in %.1f s, once for every round)"
                  % (self.queued, time.monotonic() - began), flush=True)
        return bench_durability.restart(self.build, self.queued, self.dir)

    def cleanup(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _k(n):
    return "%dk" % (n // 1000) if n < 1000000 else "%dm" % (n // 1000000)


def measures(build, quick):
    """Every measurement, in the order each round runs them."""
    jobs = 20000 if quick else 100000
    lat = 600 if quick else 2000
    out = []

    def e2e(fsync, entities=10, chats=100):
        return lambda ctx: bench_durability.throughput(build, jobs, fsync, entities=entities,
                                                       chats=chats)

    out.append(Measure("e2e_memory", {"e2e_memory_jobs_per_s": "jobs/s"},
                       lambda ctx: {"e2e_memory_jobs_per_s": e2e("memory")(ctx)},
                       params={"jobs": jobs, "entities": 10, "chats": 100}))
    for fsync in ("off", "batch", "always"):
        name = "e2e_durable_%s_jobs_per_s" % fsync
        out.append(Measure("e2e_durable_" + fsync, {name: "jobs/s"},
                           (lambda f, n: lambda ctx: {n: e2e(f)(ctx)})(fsync, name),
                           params={"jobs": jobs, "fsync": fsync}))
    #  The configuration's scale: 10 entities in 10 chats against 1,000
    #  entities in 10,000 chats, one after the other in each round.
    out.append(Measure("e2e_entities_10", {"e2e_entities_10_jobs_per_s": "jobs/s"},
                       lambda ctx: {"e2e_entities_10_jobs_per_s": e2e("memory", 10, 10)(ctx)},
                       params={"jobs": jobs, "entities": 10, "chats": 10}))
    out.append(Measure("e2e_entities_1000", {"e2e_entities_1000_jobs_per_s": "jobs/s"},
                       lambda ctx: {"e2e_entities_1000_jobs_per_s":
                                    e2e("memory", 1000, 10000)(ctx)},
                       params={"jobs": jobs, "entities": 1000, "chats": 10000}))
    out.append(Measure("e2e_rate_limited_90", {"e2e_rate_limited_90_jobs_per_s": "jobs/s"},
                       lambda ctx: {"e2e_rate_limited_90_jobs_per_s":
                                    bench_durability.rate_limited_throughput(build, jobs)},
                       params={"jobs": jobs, "rate_limited_jobs_queued": jobs * 9}))

    def lat_run(fsync, prefix, ipc=False):
        def run(ctx):
            r = latency.probe(build, fsync, lat, ipc=ipc)
            return {prefix + "p50_us": r["p50_us"], prefix + "p99_us": r["p99_us"]}
        return run
    out.append(Measure("latency", {"latency_p50_us": "µs", "latency_p99_us": "µs"},
                       lat_run("batch", "latency_"), params={"jobs": lat, "fsync": "batch"}))
    out.append(Measure("latency_memory",
                       {"latency_memory_p50_us": "µs", "latency_memory_p99_us": "µs"},
                       lat_run("memory", "latency_memory_"), params={"jobs": lat}))
    #  The same over Unix domain sockets, for daemons that share one machine.
    out.append(Measure("latency_memory_ipc",
                       {"latency_memory_ipc_p50_us": "µs", "latency_memory_ipc_p99_us": "µs"},
                       lat_run("memory", "latency_memory_ipc_", ipc=True),
                       params={"jobs": lat, "endpoints": "ipc"}))
    probe_rate = 500

    def half_load(ctx):
        #  Half the maximum measured so far (this round's and earlier ones').
        measured = [v for v in ctx["e2e_durable_batch_jobs_per_s"] if v]
        if not measured:
            raise RuntimeError("no maximum rate: e2e_durable_batch failed")
        half = statistics.median(measured) / 2
        r = latency.probe(build, "batch", lat, rate=probe_rate,
                          background=max(half - probe_rate, probe_rate))
        return {"latency_half_load_p50_us": r["p50_us"], "latency_half_load_p99_us": r["p99_us"],
                "latency_half_load_jobs_per_s": half}
    out.append(Measure("latency_half_load",
                       {"latency_half_load_p50_us": "µs", "latency_half_load_p99_us": "µs",
                        "latency_half_load_jobs_per_s": "jobs/s"},
                       half_load, needs=["e2e_durable_batch"],
                       params={"probe_jobs": lat, "probe_jobs_per_s": probe_rate,
                               "fsync": "batch"}))

    llm_args = argparse.Namespace(latency_ms=1000, servers=4, seconds=2 if quick else 5)
    points = [(4, 250)] if quick else [(4, 250), (1, 100), (1, 1000), (8, 125)]
    for w, c in points:
        share = "llm_scaling_share_1000" if (w, c) == (4, 250) else "llm_share_%dx%d" % (w, c)
        replies = "llm_replies_per_s_%dx%d" % (w, c)

        def llm(ctx, w=w, c=c, share=share, replies=replies):
            rate, ideal, dead = bench_llm.run_point(build, w, c, llm_args)
            if dead:
                raise RuntimeError("%d dead letters" % dead)
            return {share: rate / ideal, replies: rate}
        out.append(Measure("llm_%dx%d" % (w, c), {share: "of ideal", replies: "replies/s"}, llm,
                           params={"workers": w, "calls_each": c, "llm_latency_ms": 1000,
                                   "measured_s": llm_args.seconds}))

    queued = 100000 if quick else 1000000
    out.append(Measure("broker_memory",
                       {"broker_bytes_per_job": "bytes", "broker_submit_jobs_per_s": "jobs/s"},
                       lambda ctx: (lambda r: {"broker_bytes_per_job": r["beyond_payload"],
                                               "broker_submit_jobs_per_s": r["submit_per_s"]})(
                           bench_queue.queue_memory(build, queued)),
                       params={"queued": queued}))
    for full_n, quick_n in ((100000, 20000), (1000000, 100000)):
        n = quick_n if quick else full_n
        restart = Restart(build, n)
        tag = "restart_%s" % _k(full_n)
        out.append(Measure(tag, {tag + "_s": "s", tag + "_reported_s": "s"},
                           (lambda r, t: lambda ctx: dict(zip((t + "_s", t + "_reported_s"),
                                                              r(ctx))))(restart, tag),
                           params={"queued": n, "fsync": "batch"}, cleanup=restart.cleanup))

    def peer(name, fn, n=jobs, **kw):
        out.append(Measure(name, {name + "_jobs_per_s": "jobs/s"},
                           lambda ctx: {name + "_jobs_per_s": fn(build, n, PAYLOAD, **kw)},
                           params=dict(kw, jobs=n, payload_bytes=PAYLOAD), peer=True))
    peer("peer_beanstalkd", peers.beanstalkd)
    peer("peer_beanstalkd_binlog", peers.beanstalkd, binlog="50ms")
    #  fsync after every write runs at a few hundred jobs a second here:
    #  fewer jobs keep it to seconds.
    peer("peer_beanstalkd_binlog_fsync", peers.beanstalkd, n=1000 if quick else 5000,
         binlog="always")
    peer("peer_redis", peers.redis)
    peer("peer_redis_aof_everysec", peers.redis, aof="everysec")
    peer("peer_redis_aof_always", peers.redis, aof="always")
    peer("peer_redis_brpop", peers.redis, pattern="simple")
    peer("zmq_raw_pipeline", peers.zmq_pipeline)

    def zmq_latency(ctx):
        #  Paced like the probe at one job in flight: one message every 2 ms,
        #  through as many hops as a reply crosses (SUBMIT, JOB, RESULT).
        r = peers.zmq_pipeline(build, lat, PAYLOAD, hops=3, pace_us=2000)
        return {"zmq_raw_latency_p50_us": r["p50_us"], "zmq_raw_latency_p99_us": r["p99_us"]}
    out.append(Measure("zmq_raw_latency", {"zmq_raw_latency_p50_us": "µs",
                                           "zmq_raw_latency_p99_us": "µs"}, zmq_latency,
                       params={"jobs": lat, "payload_bytes": PAYLOAD, "hops": 3,
                               "pace_us": 2000}))

    def zmq_latency_ipc(ctx):
        r = peers.zmq_pipeline(build, lat, PAYLOAD, hops=3, pace_us=2000, ipc=True)
        return {"zmq_raw_latency_ipc_p50_us": r["p50_us"], "zmq_raw_latency_ipc_p99_us": r["p99_us"]}
    out.append(Measure("zmq_raw_latency_ipc", {"zmq_raw_latency_ipc_p50_us": "µs",
                                               "zmq_raw_latency_ipc_p99_us": "µs"}, zmq_latency_ipc,
                       params={"jobs": lat, "payload_bytes": PAYLOAD, "hops": 3,
                               "pace_us": 2000, "endpoints": "ipc"}))
    return out


def select(all_measures, only):
    """The measures that yield a figure named (or starting with) one of
    `only`, or are named so, plus the ones they need; all if `only` is empty."""
    if not only:
        return all_measures
    chosen = {m.name for m in all_measures
              if any(m.name.startswith(o) or any(f.startswith(o) for f in m.figures) for o in only)}
    by_name = {m.name: m for m in all_measures}
    for name in list(chosen):
        chosen.update(by_name[name].needs)
    if not chosen:
        sys.exit("--only %s: no such figure; figures are:\n  %s"
                 % (" ".join(only), "\n  ".join(f for m in all_measures for f in m.figures)))
    return [m for m in all_measures if m.name in chosen]


def _round_ratio(figures, a, b):
    """The median, round by round, of figure a's run over figure b's run of
    the same round (rounds where either failed are left out); None if none."""
    pairs = [x / y for x, y in zip(figures[a]["runs"], figures[b]["runs"]) if x and y]
    return statistics.median(pairs) if pairs else None


def ratios(figures, peer_names):
    """Adds to each Parley throughput figure "vs": {peer: ratio}, the median
    of the ratios round by round (a round's Parley run over the same round's
    peer run), so that what slowed a round slows both sides of its ratio."""
    for n, f in figures.items():
        if not n.startswith("e2e_") or not f["value"]:
            continue
        f["vs"] = {}
        for p in sorted(peer_names):
            r = _round_ratio(figures, n, p)
            if r is not None:
                f["vs"][p] = r


#  Figures printed as a ratio to another of the same run: the latency at one
#  job in flight to the raw three-hop pipeline's (its floor, over the same
#  kind of endpoint), and the large
#  configuration's throughput to the small one's.
PAIRS = [("latency_p50_us", "zmq_raw_latency_p50_us"),
         ("latency_p99_us", "zmq_raw_latency_p99_us"),
         ("latency_memory_p50_us", "zmq_raw_latency_p50_us"),
         ("latency_memory_p99_us", "zmq_raw_latency_p99_us"),
         ("latency_memory_ipc_p50_us", "zmq_raw_latency_ipc_p50_us"),
         ("latency_memory_ipc_p99_us", "zmq_raw_latency_ipc_p99_us"),
         ("e2e_entities_1000_jobs_per_s", "e2e_entities_10_jobs_per_s")]


def pair_ratios(figures):
    """Adds to each figure of PAIRS "over": {other: ratio}, the median,
    round by round, of its value over the other's."""
    for a, b in PAIRS:
        if a in figures and b in figures and figures[a]["value"]:
            r = _round_ratio(figures, a, b)
            if r is not None:
                figures[a].setdefault("over", {})[b] = r


def _pair_lines(figures, fmt):
    return [fmt % ("%s / %s" % (a, b), figures[a]["over"][b])
            for a, b in PAIRS if b in figures.get(a, {}).get("over", {})]


def _sh(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(build):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        info["cpu"] = models[0] if models else platform.machine()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kib / 1048576, 1)
    except (OSError, StopIteration):
        pass
    try:
        with open("/etc/os-release") as f:
            info["os"] = next(l for l in f if l.startswith("PRETTY_NAME")).split("=", 1)[1].strip().strip('"')
    except (OSError, StopIteration):
        pass
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    info["build_type"] = line.split("=", 1)[1].strip()
    except OSError:
        pass
    info["commit"] = _sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD")
    info["compiler"] = _sh("cc", "--version").split("\n")[0]
    info["beanstalkd"] = _sh("beanstalkd", "-v")
    info["redis"] = _sh("redis-server", "--version")
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    info["loadavg_start"] = os.getloadavg()[0]
    return info


def _fmt(v):
    if v is None:
        return "failed"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.3f" % v


#  Short names for the ratio table's columns.
PEER_SHORT = {
    "peer_beanstalkd_jobs_per_s": "beanstalkd",
    "peer_beanstalkd_binlog_jobs_per_s": "bs binlog",
    "peer_beanstalkd_binlog_fsync_jobs_per_s": "bs fsync",
    "peer_redis_jobs_per_s": "redis",
    "peer_redis_aof_everysec_jobs_per_s": "redis aof 1s",
    "peer_redis_aof_always_jobs_per_s": "redis aof alw",
    "peer_redis_brpop_jobs_per_s": "redis brpop",
    "zmq_raw_pipeline_jobs_per_s": "zmq raw",
}


def report(figures, peer_names):
    """The figures table and the ratio table, as text."""
    lines = ["%-42s %14s  %-10s %s" % ("figure", "value", "unit", "runs")]
    for name, f in figures.items():
        lines.append("%-42s %14s  %-10s %s" % (name, _fmt(f["value"]), f["unit"],
                                               " ".join(_fmt(r) for r in f["runs"])))
    parley = [n for n, f in figures.items() if n.startswith("e2e_") and f["value"]]
    cols = [p for p in PEER_SHORT if p in peer_names and figures.get(p, {}).get("value")]
    if parley and cols:
        lines += ["", "Parley throughput / peer throughput (median of the ratios round by round):",
                  "%-34s" % "" + "".join("%14s" % PEER_SHORT[c] for c in cols)]
        for n in parley:
            lines.append("%-34s" % n.replace("_jobs_per_s", "")
                         + "".join("%14.2f" % figures[n]["vs"][c] for c in cols))
    paired = _pair_lines(figures, "%-70s %6.2f")
    if paired:
        lines += ["", "Ratios within the run (median of the ratios round by round):"] + paired
    return "\n".join(lines)


def markdown(results):
    """The figures and ratio tables of a results.json, as Markdown (for bench/README.md)."""
    figures = results["figures"]
    out = ["| figure | value | unit | runs |", "|---|---:|---|---|"]
    for name, f in figures.items():
        out.append("| `%s` | %s | %s | %s |" % (name, _fmt(f["value"]), f["unit"],
                                               " ".join(_fmt(r) for r in f["runs"])))
    parley = [n for n, f in figures.items() if f.get("vs")]
    cols = [c for c in PEER_SHORT if parley and c in figures[parley[0]]["vs"]]
    if cols:
        out += ["", "| Parley ÷ peer | " + " | ".join(PEER_SHORT[c] for c in cols) + " |",
                "|---|" + "---:|" * len(cols)]
        for n in parley:
            out.append("| `%s` | " % n.replace("_jobs_per_s", "")
                       + " | ".join("%.2f" % figures[n]["vs"][c] for c in cols) + " |")
    paired = _pair_lines(figures, "| %s | %.2f |")
    if paired:
        out += ["", "| figure / figure (same rounds) | ratio |", "|---|---:|"] + paired
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description="Parley's figures beside peer systems")
    ap.add_argument("--quick", action="store_true",
                    help="fewer jobs, one run, peers small: under a minute")
    ap.add_argument("--runs", type=int, help="rounds (default 3, 1 with --quick)")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME",
                    help="only these figures (a figure's name or its start, e.g. peer_ or latency)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "results.json"))
    ap.add_argument("--markdown", metavar="RESULTS",
                    help="print the tables of a results.json as Markdown, and measure nothing")
    args = ap.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return
    build = os.path.abspath(args.build)
    runs = args.runs or (1 if args.quick else 3)
    chosen = select(measures(build, args.quick), args.only)
    info = machine(build)
    info.update({"mode": "quick" if args.quick else "full", "rounds": runs})
    print("%s, %d cores, %s GiB, %s, kernel %s, %s build, load %.2f"
          % (info.get("cpu"), info["nproc"], info.get("memory_gib"), info.get("os"),
             info["kernel"], info.get("build_type"), info["loadavg_start"]), flush=True)

    values = {f: [] for m in chosen for f in m.figures}
    began = time.monotonic()
    try:
        info["loadavg_rounds"] = []
        for rnd in range(1, runs + 1):
            info["loadavg_rounds"].append(os.getloadavg()[0])
            for m in chosen:
                t = time.monotonic()
                try:
                    got = m.run(values)
                except Exception as e:     # noqa: BLE001 - one failed run must not end the others
                    traceback.print_exc()
                    print("  [%d/%d] %s failed: %s" % (rnd, runs, m.name, e), flush=True)
                    for f in m.figures:
                        values[f].append(None)
                    continue
                for f in m.figures:
                    values[f].append(got.get(f))
                shown = ", ".join("%s %s" % (_fmt(got[f]), m.figures[f]) for f in m.figures if f in got)
                print("  [%d/%d] %-28s %s  (%.1f s)" % (rnd, runs, m.name, shown,
                                                      time.monotonic() - t), flush=True)
    finally:
        for m in chosen:
            if m.cleanup:
                m.cleanup()
    info["seconds"] = round(time.monotonic() - began, 1)
    info["loadavg_end"] = os.getloadavg()[0]

    figures, peer_names = {}, set()
    for m in chosen:
        for f, unit in m.figures.items():
            got = [v for v in values[f] if v is not None]
            figures[f] = {"value": statistics.median(got) if got else None, "unit": unit,
                          "runs": values[f], "params": m.params}
            if m.peer:
                peer_names.add(f)
    ratios(figures, peer_names)
    pair_ratios(figures)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "figures": figures}, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print()
    print(report(figures, peer_names))
    print("\n%d round(s) in %.0f s; load average %.2f at the start, %.2f at the end; %s"
          % (runs, info["seconds"], info["loadavg_start"], info["loadavg_end"],
             os.path.relpath(args.out)))


if __name__ == "__main__":
    main()
