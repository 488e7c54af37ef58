"""The sink's side of COMMIT / VERDICT / hold / OUTCOME, against a scripted
broker (a ROUTER in this test) and a scripted worker (a PUSH): the sink
posts what the broker's verdict names, renews what it holds every
lease_ms / 3, drops what a renewal says is no longer its own, lets a newer
token take over a pair, reports a posted pair as a duplicate, checks what
each socket may carry, and bounds what waits for a verdict. Verdicts the
broker pushes at dispatch (seq 0) are posted without asking, for the
dispatch they name only.
"""
import signal
import threading
import time
from contextlib import closing

import msgpack
import zmq

from fake_telegram import FakeTelegram
from harness import Pipeline, base_config, check, free_endpoint, main, wait_until

SIG = b"\xa5\x50\x01"
RESULT, COMMIT, VERDICT, OUTCOME, OUTCOME_ACK, STATS, JOB = 7, 8, 9, 10, 11, 12, 5
LEASE_MS = 900


def frame(msg_type, fields):
    return SIG + bytes([msg_type]) + msgpack.packb(fields, use_bin_type=True)


def message(source, chat_ref, msg_ref, author="ana", text="hi @e1", flags=2):
    return msgpack.packb([source, chat_ref, msg_ref, author, "1", text, 0, flags, []],
                         use_bin_type=True)


class FakeBroker:
    """A broker that answers COMMIT from a script, and acknowledges outcomes."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.lock = threading.Lock()
        self.jobs = {}          # (job, token) -> the job's fields for a post verdict
        self.renewal = {}       # (job, token) -> verdict for hold=1 (default 0 post)
        self.commits = []       # (time, job, token, hold)
        self.outcomes = []      # (job, token, status, reason)
        self.route = None
        self.outbox = []        # frames the test wants sent to the sink
        self.mute = False       # answer no COMMIT
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            if self.sock.poll(20):
                route, data = self.sock.recv_multipart()
                self.route = route
                self._on(data[3], msgpack.unpackb(data[4:], raw=False))
            with self.lock:
                while self.outbox and self.route:
                    self.sock.send_multipart([self.route, self.outbox.pop(0)])
        self.sock.close()

    def _on(self, msg_type, fields):
        if msg_type == COMMIT:
            seq, items = fields[0], fields[1]
            answer = []
            with self.lock:
                if self.mute:
                    return
                for job, token, hold in items:
                    self.commits.append((time.monotonic(), job, token, hold))
                    if hold:
                        answer.append([job, token, self.renewal.get((job, token), 0)])
                    elif (job, token) in self.jobs:
                        answer.append([job, token, 0] + self.jobs[(job, token)])
                    else:
                        answer.append([job, token, 1])      # stale
            self.sock.send_multipart([self.route, frame(VERDICT, [seq, answer, LEASE_MS])])
        elif msg_type == OUTCOME:
            with self.lock:
                for job, token, status, reason, _at in fields[1]:
                    self.outcomes.append((job, token, status, reason))
            self.sock.send_multipart([self.route, frame(OUTCOME_ACK, [fields[0]])])

    def send(self, data):
        with self.lock:
            self.outbox.append(data)

    def close(self):
        self.stop = True
        self.thread.join(5)


def fields(msg_id, entity="e1", priority=10, expires=0, chat="room"):
    """What a post verdict names: the job as the broker stored it."""
    return ["in/%s/%s" % (chat, msg_id), entity, "in/" + chat, "group", priority,
            int(time.time() * 1000), expires, message("in", chat, str(msg_id))]


class Rig:
    """A sink between a scripted broker and a scripted worker."""

    def __init__(self, bin_dir, name, entities, destination=None, env=None, storage="",
                 **queue):
        self.config = base_config(entities, sink={"destinations": []})
        self.config["queueSettings"].update(queue)
        self.config["network"]["resendMs"] = 300
        self.config["storage"] = {"dataDir": storage}
        self.p = Pipeline(bin_dir, self.config, name)
        self.config["sink"]["destinations"] = [destination or {"name": "out", "type": "jsonl",
                                                               "path": self.p.output}]
        self.p.write_config(self.config)
        self.env = env
        self.ctx = zmq.Context()
        self.p.frontend = free_endpoint()
        self.broker = FakeBroker(self.ctx, self.p.frontend)
        self.p.start_sink(env=env)
        self.worker = self.ctx.socket(zmq.PUSH)
        self.worker.setsockopt(zmq.LINGER, 0)
        self.worker.connect(self.p.results)

    def result(self, job, token, text, msg_key="lie/x/1", entity="e1", payload=None):
        """A worker's RESULT: what it claims about the job is not what gets posted."""
        item = [job, token, 1, msg_key, entity, "lie/x", 0, 0, text,
                payload or message("lie", "x", "1"), 5, 7]
        self.worker.send(frame(RESULT, ["w1", [item]]))

    def job(self, job, token, msg_id, entity="e1", priority=10, expires=0, chat="room"):
        """The broker's fields for a post verdict."""
        with self.broker.lock:
            self.broker.jobs[(job, token)] = fields(msg_id, entity, priority, expires, chat)

    def push(self, *verdicts, lease_ms=LEASE_MS):
        """A VERDICT pushed at dispatch (seq 0): (job, token, fields) each."""
        items = [[job, token, 0] + f for job, token, f in verdicts]
        self.broker.send(frame(VERDICT, [0, items, lease_ms]))

    def asked(self, job, token):
        """True when the sink sent COMMIT hold=0 for (job, token)."""
        with self.broker.lock:
            return any(not hold and (j, t) == (job, token) for _, j, t, hold in self.broker.commits)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            return self.p.__exit__(*exc)
        finally:
            self.broker.close()
            self.worker.close()
            self.ctx.term()


def outcome_of(rig, job, token):
    with rig.broker.lock:
        for j, t, status, reason in rig.broker.outcomes:
            if (j, t) == (job, token):
                return status, reason
    return None


def test_posts_what_the_verdict_names(bin_dir):
    with Rig(bin_dir, "proto-names", [{"id": "e1", "responseChance": 0}]) as rig:
        rig.job(1, 0xA1, 7)
        rig.result(1, 0xA1, "the text")
        wait_until(lambda: rig.p.posted(), 10, "the post")
        post = rig.p.posted()[0]
        check(post["msg_key"] == "in/room/7" and post["chat"] == "in/room"
              and post["chat_ref"] == "room" and post["reply_to"] == "7"
              and post["text"] == "the text",
              "posted what the worker claimed, not the verdict: %s" % post)
        wait_until(lambda: outcome_of(rig, 1, 0xA1), 10, "the outcome")
        check(outcome_of(rig, 1, 0xA1)[0] == 0, "outcome %s" % (outcome_of(rig, 1, 0xA1),))
        # A result the broker does not confirm is never posted.
        rig.result(2, 0xB2, "stale text")
        wait_until(lambda: rig.p.component("sink").get("stale", 0) >= 1, 10, "a stale verdict")
        time.sleep(0.3)
        check(len(rig.p.posted()) == 1, "an unconfirmed result was posted")


def test_renewals_lost_replies_and_newer_tokens(bin_dir):
    entities = [{"id": "e1", "responseChance": 0, "rateLimits": {"minSecondsBetweenPosts": 2}}]
    with Rig(bin_dir, "proto-hold", entities) as rig:
        rig.job(1, 0x11, 1)
        rig.result(1, 0x11, "first")
        wait_until(lambda: rig.p.posted(), 10, "the first post")
        # The next two wait for the entity's gap; the sink holds them.
        rig.job(2, 0x21, 2)
        rig.result(2, 0x21, "held, then lost")
        rig.job(3, 0x31, 3)
        rig.result(3, 0x31, "older text")
        wait_until(lambda: rig.p.component("sink").get("held", 0) >= 2, 10, "two held jobs")
        # A renewal answered "stale": job 2 is no longer the sink's.
        with rig.broker.lock:
            rig.broker.renewal[(2, 0x21)] = 1
        # A newer dispatch of job 3 takes over its pair before it is posted.
        rig.job(3, 0x32, 3)
        rig.result(3, 0x32, "newer text")
        wait_until(lambda: outcome_of(rig, 3, 0x32), 15, "job 3's outcome")
        posted = rig.p.posted()
        check([p["text"] for p in posted] == ["first", "newer text"],
              "posted %s" % [p["text"] for p in posted])
        check(outcome_of(rig, 3, 0x32)[0] == 0 and not outcome_of(rig, 3, 0x31)
              and not outcome_of(rig, 2, 0x21), "outcomes %s" % rig.broker.outcomes)
        sink = rig.p.component("sink")
        check(sink["lost"] == 1 and sink["replaced"] == 1, "sink: %s" % sink)
        # Renewals came at least every lease / 3 for what the sink held.
        with rig.broker.lock:
            held = sorted(t for t, job, token, hold in rig.broker.commits
                          if hold and (job, token) == (3, 0x32))
        gaps = [b - a for a, b in zip(held, held[1:])]
        check(held and max(gaps + [0]) <= LEASE_MS / 3000.0 + 0.05,
              "renewals %s apart; the lease is %d ms" % (gaps, LEASE_MS))
        # The pair is posted: another attempt for it is a duplicate, not a post.
        rig.job(4, 0x41, 3)
        rig.result(4, 0x41, "again")
        wait_until(lambda: outcome_of(rig, 4, 0x41), 10, "job 4's outcome")
        check(outcome_of(rig, 4, 0x41)[0] == 3, "outcome %s" % (outcome_of(rig, 4, 0x41),))
        check(len(rig.p.posted()) == 2, "a posted pair was posted again")


def test_roles_and_bounds(bin_dir):
    with Rig(bin_dir, "proto-roles", [{"id": "e1", "responseChance": 0}],
             maxPendingResults=3) as rig:
        # What a socket may not carry is dropped and counted as malformed.
        rig.worker.send(frame(JOB, [[], 1]))
        rig.broker.send(frame(RESULT, ["w1", []]))
        wait_until(lambda: rig.p.component("sink").get("malformed", 0) >= 2, 10,
                   "two malformed frames")
        check("results socket takes only RESULT and STATS" in rig.p.log("sink"),
              "not logged: a JOB on the results socket")
        # With no verdict coming, at most 3 results wait; the rest are dropped.
        rig.broker.mute = True
        for job in range(10, 15):
            rig.result(job, 1, "waits")
        wait_until(lambda: rig.p.component("sink").get("overflow", 0) >= 2, 10, "overflow")
        sink = rig.p.component("sink")
        check(sink["asking"] == 3 and sink["overflow"] == 2, "sink: %s" % sink)


def test_post_verdict_without_the_jobs_fields(bin_dir):
    """A post verdict must name the job: one without its fields is a broker
    fault. The sink posts nothing, holds nothing (the broker's lease brings
    the job back) and counts the verdict as malformed."""
    with Rig(bin_dir, "proto-nofields", [{"id": "e1", "responseChance": 0}]) as rig:
        with rig.broker.lock:
            rig.broker.jobs[(1, 0xA1)] = []         # "post", and nothing else
        rig.result(1, 0xA1, "from the worker")
        wait_until(lambda: rig.p.component("sink").get("malformed", 0) >= 1, 10,
                   "the verdict to be refused")
        check("without the job's message key" in rig.p.log("sink"), "not logged")
        # Well past a renewal's due time: nothing held, nothing reported, nothing posted.
        time.sleep(LEASE_MS / 1000.0)
        with rig.broker.lock:
            holds = [c for c in rig.broker.commits if c[3] and c[1] == 1]
        check(not holds, "the sink renewed a job it may not post: %s" % holds)
        check(not outcome_of(rig, 1, 0xA1), "an outcome for it: %s" % rig.broker.outcomes)
        check(not rig.p.posted(), "posted what the worker claimed: %s" % rig.p.posted())
        # The same job again, named by the broker this time, is posted.
        rig.job(1, 0xA2, 7)
        rig.result(1, 0xA2, "second attempt")
        wait_until(lambda: rig.p.posted(), 10, "the post")
        check(rig.p.posted()[0]["msg_key"] == "in/room/7", "posted %s" % rig.p.posted())


def test_pushed_verdicts(bin_dir):
    """A verdict pushed with the dispatch is the answer before the question:
    its result is posted without a COMMIT hold=0, naming what the verdict
    names. It answers that dispatch only: a newer one replaces it, and the
    older dispatch's result is asked about (and refused). A pushed verdict
    may also come after its result, and one without the job's fields is
    refused like any other."""
    with Rig(bin_dir, "proto-pushed", [{"id": "e1", "responseChance": 0}]) as rig:
        wait_until(lambda: rig.broker.route, 10, "the sink to speak to the broker")
        rig.push((1, 0xA1, fields(7)))
        wait_until(lambda: rig.p.component("sink").get("verdicts_pushed_waiting", 0) >= 1, 10,
                   "the pushed verdict to arrive")
        rig.result(1, 0xA1, "pushed text")
        wait_until(lambda: outcome_of(rig, 1, 0xA1), 10, "the outcome")
        post = rig.p.posted()[0]
        check(post["msg_key"] == "in/room/7" and post["text"] == "pushed text",
              "posted %s" % post)
        check(outcome_of(rig, 1, 0xA1)[0] == 0 and not rig.asked(1, 0xA1),
              "outcome %s; asked %s" % (outcome_of(rig, 1, 0xA1), rig.broker.commits))
        # A newer dispatch's verdict replaces the older one's.
        rig.push((2, 0xB1, fields(8)))
        rig.push((2, 0xB2, fields(8)))
        wait_until(lambda: rig.p.component("sink").get("verdicts_pushed", 0) >= 3, 10,
                   "both verdicts")
        rig.result(2, 0xB1, "older attempt")
        wait_until(lambda: rig.asked(2, 0xB1), 10, "the older attempt to be asked about")
        wait_until(lambda: rig.p.component("sink").get("stale", 0) >= 1, 10, "its refusal")
        rig.result(2, 0xB2, "newer attempt")
        wait_until(lambda: outcome_of(rig, 2, 0xB2), 10, "the newer attempt's outcome")
        check([p["text"] for p in rig.p.posted()] == ["pushed text", "newer attempt"]
              and not rig.asked(2, 0xB2), "posted %s" % [p["text"] for p in rig.p.posted()])
        # The result first, unanswered; the pushed verdict answers it.
        with rig.broker.lock:
            rig.broker.mute = True
        rig.result(3, 0xC1, "early result")
        wait_until(lambda: rig.p.component("sink").get("asking", 0) >= 1, 10, "the question")
        rig.push((3, 0xC1, fields(9)))
        wait_until(lambda: outcome_of(rig, 3, 0xC1), 10, "the early result's outcome")
        check(rig.p.posted()[-1]["msg_key"] == "in/room/9", "posted %s" % rig.p.posted()[-1])
        with rig.broker.lock:
            rig.broker.mute = False
        # A pushed "post" that does not name the job is a broker fault.
        rig.push((4, 0xD1, []))
        wait_until(lambda: rig.p.component("sink").get("verdicts_pushed", 0) >= 5, 10,
                   "the verdict without fields")
        rig.result(4, 0xD1, "from the worker")
        wait_until(lambda: rig.p.component("sink").get("malformed", 0) >= 1, 10,
                   "the verdict to be refused")
        time.sleep(0.3)
        check(len(rig.p.posted()) == 3 and not outcome_of(rig, 4, 0xD1),
              "posted %s, outcomes %s" % (rig.p.posted(), rig.broker.outcomes))
        sink = rig.p.component("sink")
        check(sink["verdicts_pushed_used"] == 3 and sink["claims"] == 0, "sink: %s" % sink)


def test_pushed_verdict_held_is_claimed(bin_dir):
    """A reply posted from a pushed verdict that must wait (here for its
    entity's gap) is claimed at once with COMMIT hold=1, then renewed. The
    pushed lease is long (renewals due after 1.5 s), so only a claim comes
    within a second."""
    entities = [{"id": "e1", "responseChance": 0, "rateLimits": {"minSecondsBetweenPosts": 2}}]
    with Rig(bin_dir, "proto-claim", entities) as rig:
        wait_until(lambda: rig.broker.route, 10, "the sink to speak to the broker")
        rig.push((1, 0x11, fields(1)), (2, 0x21, fields(2)), lease_ms=6000)
        wait_until(lambda: rig.p.component("sink").get("verdicts_pushed_waiting", 0) >= 2, 10,
                   "the pushed verdicts")
        rig.result(1, 0x11, "first")
        wait_until(lambda: outcome_of(rig, 1, 0x11), 10, "the first post")
        sent = time.monotonic()
        rig.result(2, 0x21, "waits for the gap")
        wait_until(lambda: rig.p.component("sink").get("claims", 0) >= 1, 10, "the claim")
        with rig.broker.lock:
            holds = sorted(t for t, job, token, hold in rig.broker.commits
                           if hold and (job, token) == (2, 0x21))
        check(holds and holds[0] - sent < 1.0,
              "claimed %s s after the result; renewals are due after 1.5 s"
              % [h - sent for h in holds])
        wait_until(lambda: outcome_of(rig, 2, 0x21), 10, "the second post")
        check(not rig.asked(1, 0x11) and not rig.asked(2, 0x21) and len(rig.p.posted()) == 2,
              "commits %s" % rig.broker.commits)


class SlowTelegram(FakeTelegram):
    """Takes its time over sendMessage, so a test can stop the sink mid-post."""

    def __init__(self):
        super().__init__()
        self.started = []

    def _send_message(self, handler, bot, body):
        self.started.append(time.monotonic())
        time.sleep(2.0)
        return super()._send_message(handler, bot, body)


def test_interrupted_post_is_in_doubt(bin_dir):
    tg = SlowTelegram()
    tg.add_bot("555:SLOW", "slowbot")
    destination = {"name": "tg", "type": "telegram", "source": "*", "url": tg.url,
                   "tokenEnv": "TG_BOT"}
    with closing(tg), Rig(bin_dir, "proto-doubt", [{"id": "e1", "responseChance": 0}],
                          destination=destination, env={"TG_BOT": "555:SLOW"},
                          storage="data") as rig:
        rig.job(1, 0x11, 9, chat="-1001")
        rig.result(1, 0x11, "in flight")
        wait_until(lambda: tg.started, 10, "the post to reach the platform")
        # The sink dies with the post on its way: its mark was stored before.
        rig.p.procs["sink"].signal(signal.SIGKILL)
        rig.p.procs["sink"].popen.wait(5)
        rig.p.start_sink(env=rig.env)
        wait_until(lambda: outcome_of(rig, 1, 0x11), 10, "the interrupted post's outcome")
        status, reason = outcome_of(rig, 1, 0x11)
        check(status == 4 and "cannot tell" in reason, "outcome %s %s" % (status, reason))
        # The broker dispatches the job again: the pair is in doubt, never posted again.
        rig.worker.close()
        rig.worker = rig.ctx.socket(zmq.PUSH)
        rig.worker.setsockopt(zmq.LINGER, 0)
        rig.worker.connect(rig.p.results)
        rig.job(1, 0x12, 9, chat="-1001")
        rig.result(1, 0x12, "again")
        wait_until(lambda: outcome_of(rig, 1, 0x12), 10, "the new dispatch's outcome")
        check(outcome_of(rig, 1, 0x12)[0] == 4, "outcome %s" % (outcome_of(rig, 1, 0x12),))
        time.sleep(2.5)
        check(len(tg.started) == 1, "the platform was asked %d times:\n%s"
              % (len(tg.started), rig.p.log("sink")))


if __name__ == "__main__":
    main([test_posts_what_the_verdict_names, test_renewals_lost_replies_and_newer_tokens,
          test_roles_and_bounds, test_post_verdict_without_the_jobs_fields,
          test_pushed_verdicts, test_pushed_verdict_held_is_claimed,
          test_interrupted_post_is_in_doubt])
