"""Forgeries against real daemons, each tried the way a stranger or a rogue
peer would, written from proto/PROTOCOL.md alone: every one must fail with
nothing posted, nothing dead-lettered and nothing counted that did not
happen, and the honest path beside it must keep working (each test has a
control that shows the frames were right).

    - VERDICT and RESULT frames made up and pushed into the sink's results
      socket: nothing posted;
    - a registered worker rewriting entity, chat and payload in its RESULT:
      the sink posts what the broker dispatched;
    - RELEASE(fail) for another worker's job, even with its real token, and a
      RESULT for it with a guessed token: ignored;
    - a worker announcing capacity 2^32-1: capped at worker.maxCapacity;
    - a worker that heartbeats its jobs but never finishes them: they are
      taken back after queueSettings.maxHoldMs;
    - with security on, keys used outside their role (a poller key sending
      CTL, COMMIT and OUTCOME(posted); a sink key sending SUBMIT; a poller key
      sending RESULT to the sink): refused, nothing happens;
    - 400,000 STATS component ids and 10,000 subscriptions: memory stays flat
      and the stats feed keeps working.
"""
import os
import random
import socket
import time

import msgpack
import zmq

from harness import Pipeline, base_config, check, jsonl_input, main, mentions, wait_until
from pyworker import HEARTBEAT, JOB, RELEASE, RESULT, WELCOME, frame, parse
from test_security import Keys, curve_socket

SUBMIT, ACK, COMMIT, VERDICT, OUTCOME, OUTCOME_ACK, STATS, CTL, CTL_REPLY = (
    1, 2, 8, 9, 10, 11, 12, 13, 14)
REL_DONE, REL_FAIL = 0, 2
UINT32_MAX = 2 ** 32 - 1


def message(chat, msg_id, text="hi @alpha"):
    """A MESSAGE record (the payload) for the jsonl source "in"."""
    return msgpack.packb(["in", chat, msg_id, "mallory", "666", text, 0, 2, []],
                         use_bin_type=True)


class Rogue:
    """A worker written by hand: it registers and takes jobs like any other,
    then does what the test tells it to."""

    def __init__(self, ctx, endpoint, name, capacity, curve=None):
        self.name, self.capacity = name, capacity
        self.sock = curve_socket(ctx, zmq.DEALER, endpoint, *(curve or (None, None, None)),
                                 identity=b"W:%s:%016x" % (name.encode(), random.getrandbits(64)))
        self.jobs = {}          # (job_id, token) -> JOB_ITEM
        self.cancelled = []
        self.epoch = self.job_seq = 0
        self.max_hold_ms = 0

    def beat(self, held=None):
        refs = [list(ref) for ref in (self.jobs if held is None else held)]
        free = max(0, self.capacity - len(self.jobs))
        self.sock.send(frame(HEARTBEAT, [self.name, self.capacity, free, [], socket.gethostname(),
                                         os.getpid(), 0, self.job_seq, refs, self.epoch]))

    def pump(self, timeout_ms=50):
        """Reads what the broker sent: WELCOME and JOB."""
        while self.sock.poll(timeout_ms):
            timeout_ms = 0
            parsed = parse(self.sock.recv())
            if not parsed:
                continue
            kind, fields = parsed
            if kind == WELCOME:
                if fields[0] != self.epoch:
                    self.epoch, self.job_seq = fields[0], 0
                self.job_seq = max(self.job_seq, fields[3])
                for ref in fields[4]:
                    self.cancelled.append(tuple(ref))
                    self.jobs.pop(tuple(ref), None)
                self.max_hold_ms = fields[5]
            elif kind == JOB:
                for item in fields[0]:
                    self.jobs[(item[0], item[1])] = item
                self.job_seq = max(self.job_seq, fields[1])

    def serve(self, seconds, until=lambda: False):
        """Heartbeats every 100 ms and reads, for `seconds` or until `until()`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            self.beat()
            self.pump(100)

    def release(self, items):
        for job_id, token, *_ in items:
            self.jobs.pop((job_id, token), None)
        self.sock.send(frame(RELEASE, [[list(i) for i in items]]))

    def close(self):
        self.sock.close()


def result_item(job, text, entity=None, chat=None, payload=None, token=None):
    """A RESULT_ITEM for JOB_ITEM `job`, with whatever the test rewrites."""
    return [job[0], job[1] if token is None else token, job[2], job[3], entity or job[4],
            chat or job[5], job[7], job[8], text, job[9] if payload is None else payload, 3, 1]


def config_for(p, msgs, follow=False, **queue):
    config = base_config([{"id": "alpha", "responseChance": 0},
                          {"id": "beta", "responseChance": 0}], sink={"destinations": []})
    config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
    config["queueSettings"].update(queue)
    config["worker"]["maxCapacity"] = 4
    jsonl_input(p, config, msgs, follow)
    p.write_config(config)
    return config


def counters(p):
    return p.ctl("broker-stats")


def settled(p, what, predicate, timeout=10):
    wait_until(lambda: predicate(counters(p)), timeout, what)


# --- tests ---------------------------------------------------------------------------------------

def test_made_up_verdicts_post_nothing(bin_dir):
    """RESULT + VERDICT pairs for jobs that never existed, pushed into the sink."""
    with Pipeline(bin_dir, {}, "forge-verdict") as p:
        config_for(p, [], follow=True)
        p.start_broker()
        p.start_sink()
        ctx = zmq.Context()
        try:
            push = ctx.socket(zmq.PUSH)
            push.linger = 0
            push.connect(p.results)
            now = int(time.time() * 1000)
            for i in range(30):
                job_id, token = i + 1, random.getrandbits(64)
                msg_key = "in/room/f%d" % i
                payload = message("room", "f%d" % i)
                push.send(frame(RESULT, ["w-forger", [[job_id, token, 1, msg_key, "alpha",
                                                       "in/room", now, 0, "FORGED %d" % i,
                                                       payload, 1, 1]]]))
                push.send(frame(VERDICT, [i, [[job_id, token, 0, msg_key, "alpha", "in/room",
                                               "group", 10, now, 0, payload]], 60000]))
                push.send(frame(OUTCOME_ACK, [i]))
            wait_until(lambda: p.component("sink").get("malformed", 0) >= 60, 10,
                       "the sink to drop the VERDICT and OUTCOME_ACK frames")
            wait_until(lambda: p.component("sink").get("stale", 0) >= 30, 10,
                       "the broker to disown the made-up results")
            # The control: a real job through the same sink is posted.
            p.start_worker()
            p.start_poller()
            with open(p.path("in.jsonl"), "a") as f:
                f.write('{"id": "real", "chat": "room", "author": "ana", "text": "@alpha hi"}\n')
            wait_until(lambda: p.posted(), 15, "the real reply")
            time.sleep(0.3)
            texts = [post["text"] for post in p.posted()]
            check(len(texts) == 1 and "FORGED" not in texts[0], "posted %s" % texts)
            stats = counters(p)
            check(stats["posted"] == 1 and stats["dead"] == 0 and stats["accepted"] == 1,
                  "broker counted %s" % stats)
            push.close()
        finally:
            ctx.destroy(linger=0)


def test_rogue_workers_cannot_redirect_steal_or_hoard(bin_dir):
    n = 8
    with Pipeline(bin_dir, {}, "forge-worker") as p:
        config_for(p, mentions(n))
        p.start_broker()
        p.start_sink()
        ctx = zmq.Context()
        try:
            mallory = Rogue(ctx, p.backend, "mallory", UINT32_MAX)
            eve = Rogue(ctx, p.backend, "eve", 4)
            mallory.serve(5, lambda: [w["id"] for w in p.ctl("workers")] == ["mallory"])
            p.start_poller()
            # Capacity 2^32-1 is taken as worker.maxCapacity (4): mallory gets 4 of 8 jobs.
            mallory.serve(10, lambda: len(mallory.jobs) >= 4)
            mallory.serve(0.5)
            check(len(mallory.jobs) == 4, "mallory holds %d jobs" % len(mallory.jobs))
            listing = {w["id"]: w for w in p.ctl("workers")}
            check(listing["mallory"]["capacity"] == 4, "workers: %s" % listing)
            check(counters(p)["queued"] == n - 4, "queued %s" % counters(p))
            # Tokens are random 64-bit values, not a counter.
            tokens = sorted(t for _, t in mallory.jobs)
            check(tokens[-1] - tokens[0] > 2 ** 40, "tokens look sequential: %s" % tokens)
            eve.serve(10, lambda: len(eve.jobs) >= 4)
            jobs = sorted(mallory.jobs.values())
            redirect, steal, guess, keep = jobs
            results = ctx.socket(zmq.PUSH)
            results.linger = 0
            results.connect(p.results)

            # 1. Mallory rewrites entity, chat and payload: the broker's are posted.
            results.send(frame(RESULT, ["mallory", [result_item(
                redirect, "redirected", entity="beta", chat="in/elsewhere",
                payload=message("elsewhere", "999"))]]))
            mallory.release([[redirect[0], redirect[1], REL_DONE, "", 0]])
            wait_until(lambda: p.posted(), 10, "the rewritten result to be posted")
            post = p.posted()[0]
            check(post["text"] == "redirected" and post["entity"] == "alpha"
                  and post["chat"] == "in/room" and post["chat_ref"] == "room"
                  and post["msg_key"] == redirect[3] and post["reply_to"] != "999",
                  "posted where the worker said: %s" % post)

            # 2. Eve dead-letters mallory's job with its real token, and sends a
            #    result for another with a guessed token.
            eve.release([[steal[0], steal[1], REL_FAIL, "stolen", 0]])
            results.send(frame(RESULT, ["eve", [result_item(guess, "guessed",
                                                            token=guess[1] ^ 1)]]))
            wait_until(lambda: p.component("sink").get("stale", 0) >= 1, 10,
                       "the guessed token to be disowned")
            eve.serve(0.5)
            stats = counters(p)
            check(stats["dead"] == 0 and stats["dlq"] == 0, "eve dead-lettered a job: %s" % stats)
            check({w["id"]: w["jobs"] for w in p.ctl("workers")}["mallory"] == 3,
                  "mallory lost a job: %s" % p.ctl("workers"))

            # The control: mallory finishes what is hers; eve finishes hers.
            for job in (steal, guess, keep):
                results.send(frame(RESULT, ["mallory", [result_item(job, "by mallory")]]))
            mallory.release([[j[0], j[1], REL_DONE, "", 0] for j in (steal, guess, keep)])
            for job in list(eve.jobs.values()):
                results.send(frame(RESULT, ["eve", [result_item(job, "by eve")]]))
            eve.release([[j[0], j[1], REL_DONE, "", 0] for j in list(eve.jobs.values())])
            wait_until(lambda: len(p.posted()) == n, 15, "every reply")
            time.sleep(0.3)
            texts = sorted(post["text"] for post in p.posted())
            check(texts == sorted(["redirected"] + ["by mallory"] * 3 + ["by eve"] * 4),
                  "posted %s" % texts)
            check(len({post["msg_key"] for post in p.posted()}) == n, "a message answered twice")
            settled(p, "every post counted", lambda s: s["posted"] == n and s["dead"] == 0)
            for r in (mallory, eve):
                r.close()
            results.close()
        finally:
            ctx.destroy(linger=0)


def test_jobs_held_too_long_are_taken_back(bin_dir):
    """A worker that lists its jobs in every heartbeat but never finishes them."""
    n = 4
    with Pipeline(bin_dir, {}, "forge-hoard") as p:
        config_for(p, mentions(n), maxHoldMs=1000, maxRetries=10)
        p.start_broker()
        p.start_sink()
        ctx = zmq.Context()
        try:
            hoarder = Rogue(ctx, p.backend, "hoarder", 16)
            hoarder.serve(5, lambda: bool(p.ctl("workers")))
            check(hoarder.max_hold_ms == 1000, "WELCOME max_hold_ms %d" % hoarder.max_hold_ms)
            p.start_poller()
            hoarder.serve(10, lambda: len(hoarder.jobs) == n)
            taken = set(hoarder.jobs)
            start = time.monotonic()
            hoarder.serve(10, lambda: taken <= set(hoarder.cancelled))
            held_for = time.monotonic() - start
            check(taken <= set(hoarder.cancelled), "not taken back: %s" % (taken - set(hoarder.cancelled)))
            # Taken back within maxHoldMs plus heartbeats, not staleClaimTimeout (5 s).
            check(held_for < 3.0, "taken back after %.1f s" % held_for)
            check("held longer than maxHoldMs" in p.log("broker"), "the reason was not logged")
            # The hoarder goes; an honest worker answers everything once.
            hoarder.close()
            p.start_worker()
            wait_until(lambda: len(p.posted()) == n, 20, "every reply")
            time.sleep(0.3)
            check(len(p.posted()) == n, "posted %d" % len(p.posted()))
            settled(p, "the posts counted", lambda s: s["posted"] == n and s["dead"] == 0)
        finally:
            ctx.destroy(linger=0)


def test_keys_outside_their_role_are_refused(bin_dir):
    n = 4
    with Pipeline(bin_dir, {}, "forge-roles") as p:
        config_for(p, mentions(n))
        keys = Keys(p)
        p.start_broker(sets=keys.sets("broker"))
        p.start_sink(sets=keys.sets("sink"))
        broker_key, sink_key = keys.public("broker"), keys.public("sink")
        ctx = zmq.Context()
        try:
            worker = Rogue(ctx, p.backend, "honest", 8,
                           (keys.public("worker"), keys.secret("worker"), broker_key))
            worker.serve(5, lambda: bool(keys.ctl("workers")))
            p.start_poller(sets=keys.sets("poller"))
            worker.serve(10, lambda: len(worker.jobs) == n)
            jobs = sorted(worker.jobs.values())

            as_poller = curve_socket(ctx, zmq.DEALER, p.frontend, keys.public("poller"),
                                     keys.secret("poller"), broker_key)
            as_sink = curve_socket(ctx, zmq.DEALER, p.frontend, keys.public("sink"),
                                   keys.secret("sink"), broker_key)
            before = counters_secure = keys.ctl("broker-stats")
            # A poller key: administer, commit, report posts that never happened.
            as_poller.send(frame(CTL, [1, "pause", ["all"]]))
            as_poller.send(frame(CTL, [2, "dlq", ["purge", "all"]]))
            as_poller.send(frame(COMMIT, [1, [[j[0], j[1], 0] for j in jobs]]))
            now = int(time.time() * 1000)
            as_poller.send(frame(OUTCOME, [1, [[j[0], j[1], 0, "", now] for j in jobs]]))
            # A sink key: submit.
            as_sink.send(frame(SUBMIT, [1, [["in/room/sneaky", "alpha", "in/room", "group", 10,
                                             now, message("room", "sneaky")]]]))
            wait_until(lambda: keys.ctl("broker-stats")["refused"] >= before["refused"] + 5, 10,
                       "five refusals")
            for sock in (as_poller, as_sink):
                check(not sock.poll(300), "a refused request was answered")
            # A poller key on the sink's results socket.
            poller_results = curve_socket(ctx, zmq.PUSH, p.results, keys.public("poller"),
                                          keys.secret("poller"), sink_key)
            poller_results.send(frame(RESULT, ["poller", [result_item(jobs[0], "POLLER")]]))
            wait_until(lambda: "poller" in p.log("sink")
                       and ("refused" in p.log("sink")), 10, "the sink to refuse the poller key")
            stats = keys.ctl("broker-stats")
            check(stats["paused"] == 0 and stats["posted"] == 0 and stats["committed"] == 0
                  and stats["accepted"] == n and stats["dead"] == 0,
                  "something happened: %s" % stats)
            check(p.posted() == [], "posted %s" % p.posted())
            check(counters_secure["malformed"] == stats["malformed"], "malformed frames")

            # The control: the worker key's results are posted and counted.
            results = curve_socket(ctx, zmq.PUSH, p.results, keys.public("worker"),
                                   keys.secret("worker"), sink_key)
            results.send(frame(RESULT, ["honest", [result_item(j, "honest") for j in jobs]]))
            worker.release([[j[0], j[1], REL_DONE, "", 0] for j in jobs])
            wait_until(lambda: len(p.posted()) == n, 15, "the honest replies")
            check({post["text"] for post in p.posted()} == {"honest"}, "posted %s" % p.posted())
            wait_until(lambda: keys.ctl("broker-stats")["posted"] == n, 10, "the posts counted")
            for s in (as_poller, as_sink, poller_results, results):
                s.close()
            worker.close()
        finally:
            ctx.destroy(linger=0)


def rss_kib(proc):
    with open("/proc/%d/status" % proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sanitized(p, binary):
    with open(p._binary(binary), "rb") as f:
        return b"__asan_init" in f.read()


def stats_flood(sock, role, count, prefix):
    """`count` STATS components with distinct ids, 1000 a frame."""
    now = int(time.time() * 1000)
    for start in range(0, count, 1000):
        comps = [[role, "%s-%d" % (prefix, i), {"made_up": i}]
                 for i in range(start, min(count, start + 1000))]
        sock.send(frame(STATS, [now, comps]))


def test_stats_floods_leave_memory_flat(bin_dir):
    with Pipeline(bin_dir, {}, "forge-stats") as p:
        config_for(p, [])
        p.start_broker()
        p.start_sink()
        p.start_worker()
        # Sanitizer builds keep freed memory aside: their RSS says nothing here.
        measure = not sanitized(p, "parley-sink")
        total = 400000 if measure else 40000
        ctx = zmq.Context()
        try:
            push = ctx.socket(zmq.PUSH)
            push.linger = 0
            push.connect(p.results)
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(p.frontend)
            feed = ctx.socket(zmq.SUB)
            feed.linger = 0
            feed.subscribe(b"")
            feed.connect(p.stats)
            sink, broker = p.procs["sink"], p.procs["broker"]
            # A first flood brings the allocators to their working size.
            stats_flood(push, "worker", 20000, "warm")
            stats_flood(dealer, "poller", 20000, "warm")
            wait_until(lambda: p.component("sink").get("stats_dropped", 0) >= 18000, 20,
                       "the warm-up flood to be read")
            base = rss_kib(sink), rss_kib(broker)
            stats_flood(push, "worker", total, "flood")
            stats_flood(dealer, "poller", total, "flood")
            wait_until(lambda: p.component("sink").get("stats_dropped", 0) >= total, 60,
                       "the flood to be read")
            sink_stats = p.component("sink")
            check(sink_stats["stats_components"] <= 1024, "sink keeps %d components"
                  % sink_stats["stats_components"])
            # 10,000 subscriptions from one subscriber, which then leaves.
            subs = ctx.socket(zmq.SUB)
            subs.linger = 0
            for i in range(10000):
                subs.subscribe(b"topic-%05d" % i)
            subs.subscribe(b"\xa5\x50")       # and the one that matches its frames
            subs.connect(p.stats)
            wait_until(lambda: subs.poll(100), 10, "the subscriber to be served")
            subs.close()
            time.sleep(0.5)
            after = rss_kib(sink), rss_kib(broker)
            grown = [(a - b) // 1024 for a, b in zip(after, base)]
            print("RSS after %d STATS ids each and 10,000 subscriptions: sink %d -> %d MiB, "
                  "broker %d -> %d MiB" % (total, base[0] // 1024, after[0] // 1024,
                                           base[1] // 1024, after[1] // 1024))
            if measure:
                check(grown[0] < 16 and grown[1] < 16, "memory grew by %s MiB" % grown)
            # The feed still carries the real components: the worker reports again.
            deadline = time.monotonic() + 10
            seen = set()
            while time.monotonic() < deadline and not {"broker", "sink", "worker"} <= seen:
                if feed.poll(200):
                    parsed = parse(feed.recv())
                    if parsed and parsed[0] == STATS:
                        seen |= {c[0] for c in parsed[1][1]
                                 if not str(c[1]).startswith(("flood", "warm"))}
            check({"broker", "sink", "worker"} <= seen, "the feed carries only %s" % seen)
            for s in (push, dealer, feed):
                s.close()
        finally:
            ctx.destroy(linger=0)


if __name__ == "__main__":
    main([test_made_up_verdicts_post_nothing, test_rogue_workers_cannot_redirect_steal_or_hoard,
          test_jobs_held_too_long_are_taken_back, test_keys_outside_their_role_are_refused,
          test_stats_floods_leave_memory_flat])
