#!/usr/bin/python3
"""CPU per job of each daemon, end to end.

    bench/bench_cpu.py [--build build] [--jobs 100000] [--runs 3]
                       [--modes memory,batch] [--perf sink] [--perf-out DIR]
                       [--against OTHER_BUILD] [--entities N] [--chats N]

Runs bench_durability's end-to-end pipeline (one poller with the demo
source as fast as it goes, broker, one template worker at zero latency,
sink writing JSON lines to tmpfs) and reads every daemon's CPU time (user +
system, /proc/PID/stat), and the broker's peak memory, once the last job is
posted: microseconds of CPU
per job for poller, broker, worker and sink, beside the jobs/s. Modes are
interleaved run by run (memory, batch, memory, batch, ...), so the
machine's load spreads over both alike; medians per mode at the end.

--against compares two builds (e.g. one of the commit before a change),
interleaved the same way: build, other build, build, ...

--perf NAME records that daemon with `perf record -e cpu-clock -g` for the
whole run (one file per run in --perf-out), to read with `perf report`.
Not part of bench/run; a tool for finding where a job's time goes.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
from harness import Pipeline                 # noqa: E402
import bench_durability as bd                # noqa: E402

DAEMONS = ("poller", "broker", "worker", "sink")
TICK = os.sysconf("SC_CLK_TCK")


def peak_mib(pid):
    """The process's peak resident memory (VmHWM), MiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK     # utime, stime


def one(build, jobs, mode, perf=None, perf_out=None, run=0, perf_graph="fp", entities=10, chats=100):
    with Pipeline(build, {}, "bench-cpu") as p, bd.Posts() as posts:
        memory = mode == "memory"
        bd.start(p, bd.config(jobs, "" if memory else p.path("data"),
                              "always" if memory else mode, entities=entities, chats=chats,
                              dest=posts.path))
        rec = None
        if perf:
            if perf == "poller":
                raise SystemExit("--perf poller: the poller starts with the run; not supported")
            out = os.path.join(perf_out, "perf-%s-%s-%d.data" % (perf, mode, run))
            rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "--call-graph", perf_graph, "-o", out,
                                    "-p", str(p.procs[perf].popen.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.start_poller()
        posts.wait(jobs)
        cpu = {d: cpu_seconds(p.procs[d].popen.pid) for d in DAEMONS}
        peak = peak_mib(p.procs["broker"].popen.pid)
        if rec:
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
        rate = posts.rate()
    return rate, {d: cpu[d] * 1e6 / jobs for d in DAEMONS}, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--jobs", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="memory,batch")
    ap.add_argument("--perf", choices=DAEMONS[1:])
    ap.add_argument("--perf-out", default="/tmp")
    ap.add_argument("--perf-graph", default="fp", help="fp, or dwarf (callers through libraries)")
    ap.add_argument("--against")
    ap.add_argument("--entities", type=int, default=10,
                    help="entities in the configuration (each message mentions one)")
    ap.add_argument("--chats", type=int, default=100, help="chats the demo messages come from")
    args = ap.parse_args()
    builds = [os.path.abspath(args.build)] + ([os.path.abspath(args.against)] if args.against
                                              else [])
    tag = lambda b, m: m if len(builds) == 1 else "%s %s" % ("this" if b == builds[0] else
                                                              "other", m)
    cases = [(b, m) for m in args.modes.split(",") for b in builds]
    results = {c: [] for c in cases}
    for r in range(args.runs):
        for b, m in cases:
            rate, cpu, peak = one(b, args.jobs, m, args.perf, args.perf_out, r, args.perf_graph,
                            args.entities, args.chats)
            results[(b, m)].append((rate, cpu, peak))
            print("  run %d %-13s %8.0f jobs/s  " % (r + 1, tag(b, m), rate)
                  + "  ".join("%s %5.2f" % (d, cpu[d]) for d in DAEMONS)
                  + "  us/job  broker peak %.0f MiB" % peak, flush=True)
    for b, m in cases:
        rs = results[(b, m)]
        print("%-13s median %8.0f jobs/s  " % (tag(b, m), statistics.median(x[0] for x in rs))
              + "  ".join("%s %5.2f" % (d, statistics.median(x[1][d] for x in rs))
                          for d in DAEMONS) + "  us/job  broker peak %.0f MiB"
              % statistics.median(x[2] for x in rs))


if __name__ == "__main__":
    main()
