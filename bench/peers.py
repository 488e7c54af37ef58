"""The peer systems bench/run measures beside Parley, each started on a free
port of 127.0.0.1, fed and drained by the pipelined C clients in bench/,
and stopped by PID.

    beanstalkd  put -> reserve -> delete (bench_beanstalk.c), without a binlog,
                with one (-b, fsync at most every 50 ms, its default) and with
                fsync after every write (-b -f 0)
    Redis       LPUSH -> BLMOVE to a processing list -> LREM (bench_redis.c,
                Redis's reliable-queue pattern), without persistence, with AOF
                fsync everysec and always; and the simple LPUSH -> BRPOP
    ZeroMQ      a raw five-hop PUSH/PULL pipeline (bench_zmq_pipe.c): the
                ceiling of a pipeline of Parley's shape on this machine; paced
                one message at a time, the floor of its latency

Each throughput function returns jobs per second at the consumer, from its
first completed job to its last.
"""
import os
import shutil

from benchlib import binary, free_endpoint, free_port, rate, start_piped, wait_port
from harness import Pipeline


def _pair(p, build, client, port, jobs, size, consume_args=(), timeout=600):
    """One consumer and one producer process against the server on `port`."""
    consumer = start_piped(p, "consumer", [binary(build, client), "consume", str(port), str(jobs)]
                           + list(consume_args))
    start_piped(p, "producer", [binary(build, client), "produce", str(port), str(jobs),
                                str(size)], ready=False)
    return rate(consumer.result(timeout))


def beanstalkd(build, jobs, size, binlog=None):
    """binlog: None (in memory), "50ms" (-b, its default fsync) or "always" (-b -f 0)."""
    with Pipeline(build, None, "peer-beanstalkd") as p:
        port = free_port()
        argv = [shutil.which("beanstalkd") or "beanstalkd", "-l", "127.0.0.1", "-p", str(port)]
        if binlog:
            os.mkdir(p.path("binlog"))
            argv += ["-b", p.path("binlog")]
            if binlog == "always":
                argv += ["-f", "0"]
        server = p.start_program("beanstalkd", argv)
        wait_port(port, server)
        return _pair(p, build, "bench_beanstalk", port, jobs, size)


def redis(build, jobs, size, aof=None, pattern="reliable"):
    """aof: None (no persistence), "everysec" or "always"; pattern: "reliable" or "simple"."""
    with Pipeline(build, None, "peer-redis") as p:
        port = free_port()
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port),
                "--bind", "127.0.0.1", "--save", "", "--dir", p.dir, "--daemonize", "no",
                "--appendonly", "yes" if aof else "no"]
        if aof:
            argv += ["--appendfsync", aof]
        server = p.start_program("redis", argv)
        wait_port(port, server)
        return _pair(p, build, "bench_redis", port, jobs, size, [pattern])


def zmq_pipeline(build, jobs, size, hops=5, pace_us=0, ipc=False):
    """source -> (hops - 1) stages -> sink, each its own process. Jobs per
    second; or with pace_us, one message every pace_us microseconds and the
    sink's {"p50_us", "p99_us"} of send-to-arrival time. TCP on 127.0.0.1,
    or with ipc Unix domain sockets (ipc://) in the run's directory."""
    with Pipeline(build, None, "peer-zmq") as p:
        tool = binary(build, "bench_zmq_pipe")
        #  Each receiver's PULL.
        ends = [("ipc://" + p.path("hop%d" % i)) if ipc else free_endpoint() for i in range(hops)]
        sink = start_piped(p, "sink", [tool, "sink", ends[-1], str(jobs)]
                           + (["latency"] if pace_us else []))
        for i in range(hops - 2, -1, -1):
            start_piped(p, "stage%d" % i, [tool, "stage", ends[i], ends[i + 1], str(jobs)])
        start_piped(p, "source", [tool, "source", ends[0], str(jobs), str(size)]
                    + ([str(pace_us)] if pace_us else []), ready=False)
        result = sink.result(600 + jobs * pace_us / 1e6)
        return result if pace_us else rate(result)
