"""Faults on every hop: blips, stalls, pauses, lost state. Nothing lost, nothing doubled.

Each test runs the real daemons with a JSON-lines source and destination and
injects one fault: a TCP proxy (tests/tcpproxy.py) between two of them that
holds the bytes one way for a second and then drops the connection (the
peers reconnect with the same identity), a process frozen with SIGSTOP, a
sink whose data directory is lost. At the end every (message, entity) pair
must be posted exactly once - or, where the test says so, be a dead letter
with its reason - within a few lease periods.
"""
import collections
import os
import shutil
import signal
import time

from harness import Pipeline, base_config, check, main, wait_until, write_jsonl

ENTITIES = [{"id": e, "responseChance": 0} for e in ("alpha", "beta")]
LEASE_MS = 3000


def faults_config(p, n, extra_queue=None):
    config = base_config(ENTITIES, sink={"destinations": [
        {"name": "out", "type": "jsonl", "path": p.output}]})
    config["storage"] = {"dataDir": "data", "fsync": "batch"}
    config["queueSettings"].update({"staleClaimTimeout": LEASE_MS})
    config["queueSettings"].update(extra_queue or {})
    config["worker"].update({"templateLatencyMs": 20, "templateJitterMs": 30, "concurrency": 16})
    msgs = [{"id": "m%d" % i, "chat": "room%d" % (i % 5), "author": "u%d" % (i % 30),
             "text": "@%s hello %d" % (ENTITIES[i % 2]["id"], i)} for i in range(n)]
    write_jsonl(p.path("in.jsonl"), msgs)
    config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": p.path("in.jsonl")}]
    expected = {("in/room%d/m%d" % (i % 5, i), ENTITIES[i % 2]["id"]) for i in range(n)}
    return config, expected


def posted_pairs(p, kv=None):
    if kv:
        return collections.Counter((a["body"]["messageKey"], a["body"]["entity"])
                                   for a in kv.arrivals(accepted=True))
    return collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())


def check_exactly_once(p, expected, within, what, kv=None):
    """Waits until every expected pair is posted; fails on a double or a stray post."""
    def done():
        posted = posted_pairs(p, kv)
        return all(k in posted for k in expected)
    try:
        wait_until(done, within, "every reply after %s" % what, interval=0.2)
    finally:
        posted = posted_pairs(p, kv)
        doubled = [k for k, c in posted.items() if c > 1]
        lost = [k for k in expected if k not in posted]
        print("  %s: posted %d of %d, lost %d, doubled %d" % (what, sum(1 for k in expected if k in posted),
                                                               len(expected), len(lost), len(doubled)))
        if lost:
            print("  lost, e.g. %s; broker: %s" % (lost[:3], p.broker_stats()))
    check(not doubled, "posted twice after %s: %s" % (what, doubled[:5]))
    check(set(posted) <= expected, "posted pairs nobody asked for: %s" % (set(posted) - expected))
    stats = p.broker_stats()
    check(stats["dead"] == 0, "dead letters after %s: %s" % (what, p.ctl("dlq", "list")))


def prepare(p, config):
    p.config = config
    p.config_path = p.path("parley.json")
    p.write_config(config)


def start(p, config, broker_backend=None, sink_results=None, broker_frontend=None):
    """Starts what is not running yet; the optional endpoints put a proxy on one hop."""
    if not p.config_path or p.config is not config:
        prepare(p, config)
    if "broker" not in p.procs:
        p.start_broker()
    if "sink" not in p.procs:
        p.start_sink()
    wsets = []
    if broker_backend:
        wsets.append("network.brokerBackend=" + broker_backend)
    if sink_results:
        wsets.append("network.sinkResults=" + sink_results)
    p.start_worker("w1", sets=wsets, env={"WORKER_ID": "w1"})
    psets = ["network.brokerFrontend=" + broker_frontend] if broker_frontend else []
    p.start_poller(sets=psets)


def test_blip_between_broker_and_worker(bin_dir):
    """The broker's bytes to a worker are lost for a second, then the link drops:
    the jobs whose JOB frames were lost come back at the worker's next heartbeat."""
    with Pipeline(bin_dir, {}, "blip-bw") as p:
        config, expected = faults_config(p, 400)
        prepare(p, config)
        p.start_broker()
        px = p.proxy(p.backend)
        start(p, config, broker_backend=px.endpoint)
        wait_until(lambda: len(p.posted()) >= 60, 20, "60 replies before the blip")
        px.blip("down", 1.0)
        t = time.monotonic()
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 10, "a broker-to-worker blip")
        print("  all posted %.1f s after the blip" % (time.monotonic() - t))
        # The jobs of the lost frames came back through the heartbeat, not a lease.
        s = p.broker_stats()
        check(s["reclaimed"] >= 1, "no job was reclaimed from the lost frames: %r" % s)
        check(s["lost_workers"] == 0 and s["retried"] == 0, "the blip cost a lease: %r" % s)


def test_blip_between_worker_and_broker(bin_dir):
    """The worker's bytes to the broker (RELEASEs, heartbeats) are lost for a second."""
    with Pipeline(bin_dir, {}, "blip-wb") as p:
        config, expected = faults_config(p, 400)
        prepare(p, config)
        p.start_broker()
        px = p.proxy(p.backend)
        start(p, config, broker_backend=px.endpoint)
        wait_until(lambda: len(p.posted()) >= 60, 20, "60 replies before the blip")
        px.blip("up", 1.0)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 10, "a worker-to-broker blip")
        # The worker's credit came back whole: nothing is stranded on either side.
        wait_until(lambda: all(w["jobs"] == 0 for w in p.ctl("workers")), 10, "an idle worker")


def test_blip_between_worker_and_sink(bin_dir):
    with Pipeline(bin_dir, {}, "blip-ws") as p:
        config, expected = faults_config(p, 400)
        prepare(p, config)
        p.start_broker()
        p.start_sink()
        px = p.proxy(p.results)
        start(p, config, sink_results=px.endpoint)
        wait_until(lambda: len(p.posted()) >= 60, 20, "60 replies before the blip")
        px.blip("up", 1.0)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 10, "a worker-to-sink blip")


def test_blip_between_poller_and_broker(bin_dir):
    with Pipeline(bin_dir, {}, "blip-pb") as p:
        config, expected = faults_config(p, 400)
        prepare(p, config)
        p.start_broker()
        px = p.proxy(p.frontend)
        start(p, config, broker_frontend=px.endpoint)
        wait_until(lambda: len(p.posted()) >= 20, 20, "20 replies before the blip")
        px.blip("both", 1.0)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 10, "a poller-to-broker blip")


def test_worker_paused_past_its_lease(bin_dir):
    """A worker frozen longer than its lease loses its jobs to another; thawed, its
    stale results are refused and it gets work again."""
    with Pipeline(bin_dir, {}, "pause-long") as p:
        config, expected = faults_config(p, 300)
        config["worker"].update({"templateLatencyMs": 200})
        start(p, config)
        p.start_worker("w2", env={"WORKER_ID": "w2"})
        wait_until(lambda: len(p.posted()) >= 40, 20, "40 replies")
        p.procs["w1"].signal(signal.SIGSTOP)
        time.sleep(LEASE_MS / 1000 + 1.0)
        p.procs["w1"].signal(signal.SIGCONT)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 15, "a worker frozen past its lease")


def test_worker_paused_briefly_many_times(bin_dir):
    """Four freezes shorter than the lease: the worker keeps its jobs and nothing strands."""
    with Pipeline(bin_dir, {}, "pause-short") as p:
        config, expected = faults_config(p, 300)
        config["worker"].update({"templateLatencyMs": 100})
        start(p, config)
        for _ in range(4):
            wait_until(lambda: len(p.posted()) >= 10, 20, "replies flowing")
            p.procs["w1"].signal(signal.SIGSTOP)
            time.sleep(LEASE_MS / 2000)
            p.procs["w1"].signal(signal.SIGCONT)
            time.sleep(0.3)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 15, "short freezes")
        s = p.broker_stats()
        check(s["lost_workers"] == 0, "a worker frozen for less than its lease was lost")


def test_sink_paused_while_verdicts_are_pushed(bin_dir):
    """The sink frozen past the lease while the broker keeps dispatching and
    pushing it verdicts, and results pile up at it: thawed, every reply is
    posted once - the pushed verdicts of attempts that were replaced meanwhile
    post nothing."""
    with Pipeline(bin_dir, {}, "sink-pause") as p:
        config, expected = faults_config(p, 300)
        config["worker"].update({"templateLatencyMs": 50})
        start(p, config)
        wait_until(lambda: len(p.posted()) >= 40, 20, "40 replies")
        check(p.broker_stats()["verdicts_pushed"] > 0, "the broker pushed no verdict to the sink")
        p.procs["sink"].signal(signal.SIGSTOP)
        time.sleep(LEASE_MS / 1000 + 1.0)
        p.procs["sink"].signal(signal.SIGCONT)
        check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 15, "a sink frozen past its lease")


def test_broker_stalled_with_the_default_lease(bin_dir):
    """The broker frozen for 30 s with the default 60 s lease: every job is posted
    once afterwards and the worker's slots all come back."""
    with Pipeline(bin_dir, {}, "broker-stall") as p:
        config, expected = faults_config(p, 300, {"staleClaimTimeout": 60000})
        config["worker"].update({"templateLatencyMs": 300, "concurrency": 16})
        start(p, config)
        wait_until(lambda: len(p.posted()) >= 30, 20, "30 replies")
        p.procs["broker"].signal(signal.SIGSTOP)
        time.sleep(30)
        p.procs["broker"].signal(signal.SIGCONT)
        check_exactly_once(p, expected, 60, "a 30 s broker stall")
        wait_until(lambda: all(w["credit"] == w["capacity"] for w in p.ctl("workers")), 20,
                   "the worker's slots to come back")


def test_lost_sink_state(bin_dir):
    """The sink dies and its data directory is lost: the jobs it held come back
    after the sink's lease and are posted once. The destination (an HTTP chat
    API) takes one post a second, so replies wait at the sink, and none is
    mid-post when it dies."""
    from fake_kv import FakeKV
    kv = FakeKV()
    try:
        with Pipeline(bin_dir, {}, "sink-lost") as p:
            config, expected = faults_config(p, 40)
            config["sink"]["destinations"] = [{"name": "kv", "type": "http", "url": kv.url,
                                               "limits": [{"scope": "all", "count": 1, "perMs": 1000}]}]
            start(p, config)
            wait_until(lambda: len(kv.arrivals(accepted=True)) >= 2
                       and p.broker_stats()["awaiting_post"] >= 5, 30, "replies held at the sink")
            # Just after a post (the next is a second away), kill it and lose its state.
            last = len(kv.arrivals())
            wait_until(lambda: len(kv.arrivals()) > last, 5, "a post")
            p.procs["sink"].signal(signal.SIGKILL)
            p.procs["sink"].popen.wait(10)
            for f in os.listdir(p.path("data")):
                if f.startswith("sink"):
                    path = p.path(os.path.join("data", f))
                    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            config["sink"]["destinations"][0]["limits"] = []
            p.write_config(config)
            p.start_sink()
            check_exactly_once(p, expected, 3 * LEASE_MS / 1000 + 20, "a lost sink state", kv)
            check(p.broker_stats()["sink_expired"] >= 1, "no job came back from the lost sink")
    finally:
        kv.close()


if __name__ == "__main__":
    main([test_blip_between_broker_and_worker, test_blip_between_worker_and_broker,
          test_blip_between_worker_and_sink, test_blip_between_poller_and_broker,
          test_worker_paused_past_its_lease, test_worker_paused_briefly_many_times,
          test_sink_paused_while_verdicts_are_pushed, test_lost_sink_state,
          test_broker_stalled_with_the_default_lease])
