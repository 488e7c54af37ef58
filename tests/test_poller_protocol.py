"""The poller's side of SUBMIT/ACK against a fake broker (PROTOCOL.md §3.1).

A real parley-poller reads JSON lines and submits to a ROUTER socket written
here from the protocol alone, which answers as each test needs: one bad item
in a batch (the rest still arrive), a broker that refuses everything as busy
for a while (nothing lost, reading pauses at the submit window, resubmissions
no sooner than retry_after_ms, each job accepted exactly once), the same with
storage and a kill -9 in the middle, and priority 99 (do not answer) set per
entity and per source.
"""
import collections
import os
import signal
import threading
import time

import msgpack
import zmq

from harness import (Pipeline, base_config, check, free_endpoint, main, mentions, wait_until,
                     write_jsonl)

SIG = b"\xa5\x50"
VERSION = 1
SUBMIT, ACK, STATS = 1, 2, 12
BUSY, INVALID = 1, 0


def frame(msg_type, fields):
    return SIG + bytes([VERSION, msg_type]) + msgpack.packb(fields, use_bin_type=True)


class FakeBroker:
    """A ROUTER that answers SUBMITs with `decide(job) -> None | (code, reason)`.

    Records every job received (time, seq, (entity, msg_key), priority), the
    busy rejects it sent and when, the jobs it accepted, and the poller's
    last STATS counters."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.decide = lambda job: None
        self.retry_after_ms = 300
        self.received = []          # (t, seq, key, priority)
        self.busy_sent = {}         # key -> time of the last busy reject
        self.busy_count = 0
        self.accepted = collections.Counter()
        self.accepted_at = {}
        self.after_accept = 0       # submissions of a job the broker had already accepted
        self.early = []             # (key, seconds) resubmitted before retry_after_ms
        self.stats = {}
        self.stats_reports = 0
        self.malformed = 0
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._ctx.term()

    def snapshot(self, what):
        with self.lock:
            value = getattr(self, what)
            return dict(value) if isinstance(value, dict) else value

    def _run(self):
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            route, data = self._sock.recv_multipart()
            if len(data) < 4 or data[:2] != SIG or data[2] != VERSION:
                self.malformed += 1
                continue
            fields = msgpack.unpackb(data[4:], raw=False)
            if data[3] == STATS:
                with self.lock:
                    self.stats = dict(fields[1][0][2])
                    self.stats_reports += 1
            elif data[3] == SUBMIT:
                self._sock.send_multipart([route, self._answer(fields)])

    def _answer(self, fields):
        seq, items = fields[0], fields[1]
        now = time.monotonic()
        accepted = duplicates = 0
        rejected = []
        with self.lock:
            for i, item in enumerate(items):
                key = (item[1], item[0])
                self.received.append((now, seq, key, item[4]))
                if key in self.busy_sent and now - self.busy_sent[key] < self.retry_after_ms / 1000 - 0.002:
                    self.early.append((key, now - self.busy_sent[key]))
                if self.accepted[key]:
                    self.after_accept += 1
                    duplicates += 1
                    continue
                verdict = self.decide(item)
                if verdict is None:
                    self.accepted[key] += 1
                    self.accepted_at[key] = now
                    accepted += 1
                else:
                    code, reason = verdict
                    rejected.append([i, reason, code])
                    if code == BUSY:
                        self.busy_sent[key] = now
                        self.busy_count += 1
        return frame(ACK, [seq, accepted, duplicates, rejected, self.retry_after_ms, 0])


def busy(job):
    return (BUSY, "queue full")


class Setup:
    """A Pipeline whose broker frontend is the fake broker's endpoint."""

    def __init__(self, bin_dir, name, config):
        self.p = Pipeline(bin_dir, config, name)
        self.config = config
        self.broker = None

    def __enter__(self):
        self.p.__enter__()
        self.p.frontend = free_endpoint()
        self.p.backend, self.p.results, self.p.stats = (free_endpoint(), free_endpoint(),
                                                         free_endpoint())
        self.broker = FakeBroker(self.p.frontend)
        return self

    def __exit__(self, *exc):
        try:
            return self.p.__exit__(*exc)
        finally:
            self.broker.close()

    def stats(self, fresh_after=0):
        """The poller's counters, from a STATS report later than report number `fresh_after`."""
        wait_until(lambda: self.broker.snapshot("stats_reports") > fresh_after, 10, "poller stats")
        return self.broker.snapshot("stats")

    def settled(self):
        """Counters from a report sent after the current one (the turn that made them is done)."""
        return self.stats(self.broker.snapshot("stats_reports") + 1)


def source(p, name, msgs, **extra):
    path = p.path(name + ".jsonl")
    write_jsonl(path, msgs)
    return dict({"name": name, "type": "jsonl", "path": path}, **extra)


def test_one_bad_item_does_not_lose_its_batch(bin_dir):
    config = base_config([{"id": "alpha", "responseChance": 0}])
    with Setup(bin_dir, "poller-bad-item", config) as s:
        msgs = mentions(20)
        msgs[7]["chat"] = "c" * 600                 # chat key over 512 bytes
        msgs[12]["id"] = "i" * 600                  # message key over 512 bytes
        config["poller"]["sources"] = [source(s.p, "in", msgs)]
        s.p.write_config(config)
        s.p.start_poller()
        want = {("alpha", "in/room/m%d" % i) for i in range(20) if i not in (7, 12)}
        wait_until(lambda: set(s.broker.snapshot("accepted")) == want, 15, "the 18 good jobs")
        stats = wait_until(lambda: (lambda st: st if st.get("source_errors") == 2
                                    and st.get("unacked") == 0 else None)(s.settled()),
                           10, "source_errors = 2 and nothing unacknowledged")
        check(stats["jobs"] == 18 and stats["submitted"] == 18 and stats["acked"] == 18,
              "counters: %s" % stats)
        check(all(n == 1 for n in s.broker.snapshot("accepted").values()), "a job arrived twice")
        log = s.p.log("poller")
        # The source refuses both, each with where and why; the rest go on.
        check('line 8: "chat" is longer' in log, "the bad chat is not logged:\n%s" % log[-2000:])
        check('line 13: "id" is longer' in log, "the bad id is not logged:\n%s" % log[-2000:])
        check(s.p.stop()["poller"] == 0, "unclean exit")


def test_busy_broker_pauses_reading_and_loses_nothing(bin_dir):
    window, n = 50, 300
    config = base_config([{"id": "alpha", "responseChance": 0}],
                         poller={"submitWindow": window, "submitBatch": 10},
                         network={"heartbeatMs": 200, "resendMs": 5000})
    with Setup(bin_dir, "poller-busy", config) as s:
        s.broker.decide = busy
        config["poller"]["sources"] = [source(s.p, "in", mentions(n))]
        s.p.write_config(config)
        s.p.start_poller()
        # The window fills with refused jobs, and reading stops there.
        wait_until(lambda: s.broker.snapshot("busy_count") >= 2 * window, 15,
                   "every job of the window refused twice")
        first = s.settled()
        check(first["unacked"] == window and first["messages"] == window,
              "reading did not pause at the window: %s" % first)
        time.sleep(1.0)     # let reading run on, if it wrongly would
        later = s.settled()
        check(later["messages"] == window and later["unacked"] == window,
              "the poller read on while the broker was busy: %s" % later)
        check(later["busy"] > 0 and later["waiting"] > 0, "busy counters: %s" % later)
        # Now the broker takes everything.
        s.broker.decide = lambda job: None
        want = {("alpha", "in/room/m%d" % i) for i in range(n)}
        wait_until(lambda: set(s.broker.snapshot("accepted")) == want, 30, "all %d jobs" % n)
        stats = wait_until(lambda: (lambda st: st if st.get("unacked") == 0 else None)(s.settled()),
                           10, "nothing unacknowledged")
        check(all(c == 1 for c in s.broker.snapshot("accepted").values()), "a job accepted twice")
        check(s.broker.snapshot("after_accept") == 0, "jobs submitted again after acceptance")
        early = s.broker.snapshot("early")
        check(not early, "resubmitted sooner than retry_after_ms: %s" % early[:5])
        busy_count = s.broker.snapshot("busy_count")
        check(stats["busy"] == busy_count and stats["resubmitted"] == busy_count,
              "busy %d / resubmitted %d, the broker refused %d" % (stats["busy"],
                                                                   stats["resubmitted"], busy_count))
        check(stats["messages"] == n and stats["jobs"] == n and stats["submitted"] == n
              and stats["acked"] == n, "counters: %s" % stats)
        # The waits grew while the broker stayed busy: some went well past 300 ms.
        gaps = _resubmit_gaps(s.broker.snapshot("received"))
        check(gaps and min(gaps) >= 0.295 and max(gaps) > 0.6,
              "resubmission gaps %.3f..%.3f s" % (min(gaps or [0]), max(gaps or [0])))
        check(s.p.stop()["poller"] == 0, "unclean exit")


def _resubmit_gaps(received):
    """Seconds between consecutive submissions of the same job."""
    last, gaps = {}, []
    for t, _seq, key, _prio in received:
        if key in last:
            gaps.append(t - last[key])
        last[key] = t
    return gaps


def test_busy_jobs_survive_kill_9_with_storage(bin_dir):
    n = 40
    config = base_config([{"id": "alpha", "responseChance": 0}],
                         poller={"submitBatch": 8}, network={"heartbeatMs": 200, "resendMs": 5000})
    with Setup(bin_dir, "poller-busy-kill", config) as s:
        config["storage"] = {"dataDir": s.p.path("data"), "fsync": "always"}
        config["poller"]["sources"] = [source(s.p, "in", mentions(n))]
        s.p.write_config(config)
        s.broker.decide = busy
        s.p.start_poller()
        wait_until(lambda: len(s.broker.snapshot("busy_sent")) == n, 15, "every job refused as busy")
        stats = s.settled()
        check(stats["messages"] == n and stats["waiting"] + stats["unacked"] > 0,
              "before the kill: %s" % stats)
        s.p.procs["poller"].signal(signal.SIGKILL)
        s.p.procs["poller"].popen.wait(5)
        s.broker.decide = lambda job: None
        reports = s.broker.snapshot("stats_reports")
        s.p.start_poller()
        want = {("alpha", "in/room/m%d" % i) for i in range(n)}
        wait_until(lambda: set(s.broker.snapshot("accepted")) == want, 20,
                   "the busy jobs after the restart")
        after = s.stats(reports)
        check(after["messages"] == 0, "the restarted poller read the file again: %s" % after)
        check(all(c == 1 for c in s.broker.snapshot("accepted").values()), "a job accepted twice")
        check("go again" in s.p.log("poller"), "no word of the stored jobs in the log")
        check(s.p.stop()["poller"] == 0, "unclean exit")


def test_priority_99_skips_per_entity_and_per_source(bin_dir):
    entities = [{"id": "alpha", "responseChance": 0},
                {"id": "shy", "responseChance": 0, "mentionPriority": 99},
                {"id": "chatty", "responseChance": 1, "defaultPriority": -1}]
    config = base_config(entities)
    config["queueSettings"].update({"defaultPriority": 50, "mentionPriority": 10})
    with Setup(bin_dir, "poller-skip", config) as s:
        loud = [{"id": "m%d" % i, "chat": "room", "author": "ana",
                 "text": "@alpha @shy hello %d" % i} for i in range(10)]
        quiet = [{"id": "q%d" % i, "chat": "room", "author": "bob", "text": "plain %d" % i}
                 for i in range(5)]
        config["poller"]["sources"] = [source(s.p, "in", loud),
                                       source(s.p, "mute", quiet, defaultPriority=99)]
        s.p.write_config(config)
        s.p.start_poller()
        wait_until(lambda: len(s.broker.snapshot("accepted")) == 20, 15, "20 jobs")
        stats = wait_until(lambda: (lambda st: st if st.get("messages") == 15
                                    and st.get("unacked") == 0 else None)(s.settled()),
                           10, "15 messages read")
        received = s.broker.snapshot("received")
        by_entity = collections.Counter(key[0] for _t, _s, key, _p in received)
        check(by_entity == {"alpha": 10, "chatty": 10}, "jobs by entity: %s" % by_entity)
        prios = {(key[0], p) for _t, _s, key, p in received}
        check(prios == {("alpha", 10), ("chatty", 50)}, "priorities: %s" % prios)
        check(not any(key[1].startswith("mute/") for _t, _s, key, _p in received),
              "a job from the muted source")
        check(stats["skipped"] == 15 and stats["unanswered"] == 0 and stats["selected"] == 10,
              "counters: %s" % stats)
        check(s.p.stop()["poller"] == 0, "unclean exit")


if __name__ == "__main__":
    main([test_one_bad_item_does_not_lose_its_batch,
          test_busy_broker_pauses_reading_and_loses_nothing,
          test_busy_jobs_survive_kill_9_with_storage,
          test_priority_99_skips_per_entity_and_per_source])
