"""One real parley-worker against a fake broker (a ZeroMQ ROUTER) and a fake
sink (a PULL), both played by this test: per-job leases (HEARTBEAT job_seq
and held, WELCOME job_seq, cancel and heartbeat_ms), results that the sink
does not take, and the SIGTERM drain.

The fakes speak the wire format directly (proto/proto_defs.c gives the field
order), so what is checked is what the worker puts on the wire.
"""
import os
import re
import signal
import socket
import statistics
import sys
import time

import msgpack
import zmq
import zmq.utils.monitor

from harness import Pipeline, TestFailure, base_config, check, free_endpoint, main

HEARTBEAT, WELCOME, JOB, RELEASE, RESULT, STATS = 3, 4, 5, 6, 7, 12
REL_DONE, REL_RETRY, REL_FAIL, REL_RETURN = 0, 1, 2, 5


def frame(msg_type, fields):
    return b"\xa5\x50\x01" + bytes([msg_type]) + msgpack.packb(fields, use_bin_type=True)


def parse(data):
    check(len(data) >= 4 and data[:3] == b"\xa5\x50\x01", "not a Parley v1 frame: %r" % data[:8])
    return data[3], msgpack.unpackb(data[4:], raw=False)


def job_item(job_id, token, text="hello", entity="alpha", expires_ms=0):
    message = ["in", "room", "m%d" % job_id, "user", "u1", "@%s %s" % (entity, text),
               int(time.time() * 1000), 2, []]
    return [job_id, token, 1, "in/room/m%d" % job_id, entity, "in/room", 50,
            int(time.time() * 1000), expires_ms, msgpack.packb(message, use_bin_type=True)]


class Fakes:
    """The fake broker and sink, pumped by the test thread alone.

    Everything the worker sends is recorded with its arrival time
    (time.monotonic()): heartbeats, release items, result items."""

    def __init__(self, sink_bound=True):
        self.ctx = zmq.Context()
        self.broker_endpoint = free_endpoint()
        self.sink_endpoint = free_endpoint()
        self.broker = self.ctx.socket(zmq.ROUTER)
        self.broker.setsockopt(zmq.LINGER, 0)
        self.broker.bind(self.broker_endpoint)
        self.sink = None
        self.placeholder = None
        if sink_bound:
            self.bind_sink()
        else:
            self.hold_sink_port()
        self.route = None
        self.heartbeats = []        # (t, fields)
        self.releases = []          # (t, item)
        self.results = []           # (t, item)
        # What the fake broker puts in its WELCOME answers.
        self.epoch = 7
        self.heartbeat_ms = 200
        self.lease_ms = 5000
        self.job_seq = 0            # seq of the last JOB frame "sent" (sent or lost)
        self.answer = True          # answer every HEARTBEAT with a WELCOME

    def hold_sink_port(self):
        """Keeps the sink's port ours until a sink binds it (other tests share the
        machine): a TCP socket bound but not listening refuses connections just as
        a free port does."""
        for _ in range(20):
            port = int(self.sink_endpoint.rsplit(":", 1)[1])
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
                self.placeholder = s
                return
            except OSError:     # taken since free_endpoint() found it: another one
                s.close()
                self.sink_endpoint = free_endpoint()
        raise TestFailure("no port to hold for the sink")

    def bind_sink(self):
        if self.placeholder:
            self.placeholder.close()
            self.placeholder = None
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind(self.sink_endpoint)

    def unbind_sink(self):
        self.sink.close(0)
        self.sink = None

    def close(self):
        if self.placeholder:
            self.placeholder.close()
        self.broker.close(0)
        if self.sink:
            self.sink.close(0)
        self.ctx.term()

    def welcome(self, job_seq=None, cancel=(), heartbeat_ms=None, epoch=None):
        check(self.route, "no worker has said hello yet")
        fields = [self.epoch if epoch is None else epoch,
                  self.heartbeat_ms if heartbeat_ms is None else heartbeat_ms,
                  self.lease_ms, self.job_seq if job_seq is None else job_seq,
                  [list(r) for r in cancel], 300000]
        self.broker.send_multipart([self.route, frame(WELCOME, fields)])

    def send_jobs(self, items, seq=None, lost=False):
        """A JOB frame with the next seq (or `seq`); `lost` numbers it but does not send it.

        seq=0 sends a frame without a seq at all, as a broker before job_seq did."""
        if seq is None:
            seq = self.job_seq + 1
        if seq:
            self.job_seq = max(self.job_seq, seq)
        if not lost:
            fields = [items, seq] if seq else [items]
            self.broker.send_multipart([self.route, frame(JOB, fields)])

    def pump(self, seconds):
        """Reads what arrives for `seconds`."""
        poller = zmq.Poller()
        poller.register(self.broker, zmq.POLLIN)
        if self.sink:
            poller.register(self.sink, zmq.POLLIN)
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for sock, _ in poller.poll(max(1, int(left * 1000))):
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on(sock, parts)

    def _on(self, sock, parts):
        now = time.monotonic()
        if sock is self.broker:
            self.route = parts[0]
            msg_type, fields = parse(parts[1])
            if msg_type == HEARTBEAT:
                self.heartbeats.append((now, fields))
                if self.answer:
                    self.welcome()
            elif msg_type == RELEASE:
                self.releases.extend((now, item) for item in fields[0])
            else:
                raise TestFailure("unexpected message type %d from the worker" % msg_type)
        else:
            msg_type, fields = parse(parts[0])
            if msg_type == RESULT:
                self.results.extend((now, item) for item in fields[1])
            elif msg_type != STATS:
                raise TestFailure("unexpected message type %d at the sink" % msg_type)

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            self.pump(0.02)
        raise TestFailure("timed out after %.1f s waiting for %s" % (timeout, what))

    # --- what the worker said -------------------------------------------------------------

    def last_heartbeat(self):
        return self.heartbeats[-1][1] if self.heartbeats else None

    def heartbeat_after(self, t, predicate=lambda hb: True):
        """The first heartbeat that arrived after monotonic time `t` and satisfies `predicate`."""
        for at, hb in self.heartbeats:
            if at > t and predicate(hb):
                return hb
        return None

    def released(self, job_id):
        return [item for _, item in self.releases if item[0] == job_id]

    def resulted(self, job_id):
        return [item for _, item in self.results if item[0] == job_id]


def held(hb):
    """HEARTBEAT.held as a set of (job_id, token)."""
    return {tuple(r) for r in (hb[8] if len(hb) > 8 else [])}


def job_seq(hb):
    return hb[7] if len(hb) > 7 else None


def start(bin_dir, name, fakes, **worker):
    """A Pipeline whose broker and sink are the fakes (no daemon but the worker)."""
    config = base_config([{"id": "alpha", "responseChance": 0}])
    config["worker"].update(worker)
    p = Pipeline(bin_dir, config, name)
    p.frontend, p.stats = free_endpoint(), free_endpoint()      # unused by a worker
    p.backend, p.results = fakes.broker_endpoint, fakes.sink_endpoint
    return p


def run_worker(p, fakes, sets=()):
    w = p.start_worker(sets=sets)
    fakes.wait(lambda: fakes.heartbeats, 10, "the worker's first HEARTBEAT")
    return w


def with_fakes(sink_bound=True):
    """Runs `test(bin_dir, fakes)` and always closes the fake sockets."""
    def wrap(test):
        def run(bin_dir):
            fakes = Fakes(sink_bound)
            try:
                test(bin_dir, fakes)
            finally:
                fakes.close()
        run.__name__ = test.__name__
        return run
    return wrap


# --- the tests -------------------------------------------------------------------------------

@with_fakes()
def test_heartbeat_lists_exactly_the_jobs_held(bin_dir, fakes):
    """held = every job received and not RELEASEd; job_seq = the last JOB frame's seq."""
    p = start(bin_dir, "wp-held", fakes, templateLatencyMs=1500, concurrency=4)
    with p:
        run_worker(p, fakes)
        hb = fakes.last_heartbeat()
        check(hb[1] == 4 and hb[2] == 4 and held(hb) == set() and job_seq(hb) == 0,
              "first heartbeat: capacity 4, 4 free, nothing held, job_seq 0: %r" % hb)
        sent = time.monotonic()
        fakes.send_jobs([job_item(1, 101), job_item(2, 102)])                      # seq 1
        fakes.send_jobs([job_item(3, 103), job_item(4, 104, entity="nobody")])    # seq 2
        hb = fakes.wait(lambda: fakes.heartbeat_after(sent, lambda h: held(h)), 5,
                        "a heartbeat listing jobs")
        check(held(hb) == {(1, 101), (2, 102), (3, 103)},
              "held should be jobs 1-3 (job 4 is refused at once): %r" % hb[8])
        check(job_seq(hb) == 2 and hb[2] == 1, "job_seq 2 and 1 free: %r" % hb)
        fail = fakes.wait(lambda: fakes.released(4), 5, "job 4 refused")
        check(fail[0][2] == REL_FAIL and "unknown entity" in fail[0][3], "job 4: %r" % fail)
        # The template backend writes after 1.5 s: results, then RELEASE done, then nothing held.
        # (RESULT and RELEASE come on two connections: either may be read here first.)
        fakes.wait(lambda: all(fakes.released(j) and fakes.resulted(j) for j in (1, 2, 3)), 10,
                   "jobs 1-3 written and released")
        for j in (1, 2, 3):
            check(fakes.resulted(j), "RELEASE done for job %d without its RESULT" % j)
            check([r[2] for r in fakes.released(j)] == [REL_DONE], "job %d: %r" % (j, fakes.released(j)))
        done = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(done), 5, "a heartbeat after the releases")
        check(held(hb) == set() and job_seq(hb) == 2 and hb[2] == 4,
              "after the releases nothing is held, 4 free, job_seq stays 2: %r" % hb)
        # Every heartbeat in between listed only jobs the worker really had.
        for _, h in fakes.heartbeats:
            check(held(h) <= {(1, 101), (2, 102), (3, 103)}, "heartbeat held %r" % h[8])


@with_fakes()
def test_lost_job_frame_is_not_held(bin_dir, fakes):
    """JOB seq 2 never arrives: after WELCOME job_seq 3 the heartbeat says 3 and lists 1 and 3 only."""
    p = start(bin_dir, "wp-lost", fakes, templateLatencyMs=60000, concurrency=8,
                  drainTimeoutMs=200)
    with p:
        run_worker(p, fakes)
        fakes.send_jobs([job_item(11, 111)])                    # seq 1
        fakes.send_jobs([job_item(12, 112)], lost=True)         # seq 2: lost on the way
        fakes.send_jobs([job_item(13, 113)])                    # seq 3
        fakes.welcome(job_seq=3)
        sent = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(sent, lambda h: job_seq(h) == 3), 5,
                        "a heartbeat with job_seq 3")
        check(held(hb) == {(11, 111), (13, 113)}, "held: %r" % hb[8])
        # WELCOME alone moves job_seq on: frames 4 and 5 were lost too.
        fakes.job_seq = 5
        fakes.welcome(job_seq=5)
        t = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(t, lambda h: job_seq(h) == 5), 5,
                        "a heartbeat with job_seq 5")
        check(held(hb) == {(11, 111), (13, 113)}, "held: %r" % hb[8])
        # A frame without seq (a broker from before job_seq) leaves job_seq alone.
        fakes.send_jobs([job_item(14, 114)], seq=0)
        t = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(t, lambda h: (14, 114) in held(h)), 5,
                        "job 14 held")
        check(job_seq(hb) == 5, "job_seq after a frame without seq: %r" % hb)
        # A new broker epoch starts the count again.
        fakes.epoch, fakes.job_seq = 8, 0
        fakes.welcome()
        t = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(t), 5, "a heartbeat after the new epoch")
        check(job_seq(hb) == 0, "job_seq after a new epoch: %r" % hb)
        fakes.send_jobs([job_item(15, 115)])                    # seq 1 of epoch 8
        t = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(t, lambda h: (15, 115) in held(h)), 5,
                        "job 15 held")
        check(job_seq(hb) == 1, "job_seq in epoch 8: %r" % hb)
        check(not fakes.releases, "nothing is released: %r" % fakes.releases)


@with_fakes()
def test_welcome_cancel_drops_the_job(bin_dir, fakes):
    """A job named in WELCOME.cancel is dropped: no RESULT, no RELEASE, not held."""
    p = start(bin_dir, "wp-cancel", fakes, templateLatencyMs=1000, concurrency=4)
    with p:
        w = run_worker(p, fakes)
        fakes.send_jobs([job_item(21, 121), job_item(22, 122)])
        fakes.welcome(cancel=[(21, 121), (999, 1)])     # 999 is not the worker's: ignored
        t = time.monotonic()
        fakes.wait(lambda: fakes.released(22) and fakes.resulted(22), 10, "job 22 written and released")
        hb = fakes.wait(lambda: fakes.heartbeat_after(t + 0.1), 5, "a heartbeat after the cancel")
        check((21, 121) not in held(hb), "job 21 still held after the cancel: %r" % hb[8])
        fakes.pump(0.8)     # well past job 21's template latency
        check(not fakes.released(21) and not fakes.resulted(21),
              "the cancelled job was answered: %r %r" % (fakes.released(21), fakes.resulted(21)))
        check(fakes.resulted(22) and fakes.released(22)[0][2] == REL_DONE, "job 22 not done")
        check(held(fakes.last_heartbeat()) == set(), "held: %r" % fakes.last_heartbeat()[8])
        check("dropped 1 job(s) the broker says are no longer this worker's" in p.log("worker"),
              "the drop is not logged")
        check(w.alive(), "the worker died")


@with_fakes()
def test_welcome_heartbeat_ms_sets_the_pace(bin_dir, fakes):
    """WELCOME.heartbeat_ms = 150 changes the interval; the bounds hold; silence is logged once."""
    fakes.heartbeat_ms = 1000
    p = start(bin_dir, "wp-pace", fakes)
    with p:
        run_worker(p, fakes, sets=["network.heartbeatMs=1000"])

        def intervals(count, after):
            fakes.wait(lambda: len([t for t, _ in fakes.heartbeats if t > after]) >= count + 1,
                       count * 3 + 5, "%d heartbeats" % (count + 1))
            times = [t for t, _ in fakes.heartbeats if t > after][:count + 1]
            return [(b - a) * 1000 for a, b in zip(times, times[1:])]

        slow = intervals(2, time.monotonic())
        check(all(800 <= i <= 1400 for i in slow), "intervals at 1000 ms: %r" % slow)
        fakes.heartbeat_ms = 150
        fakes.welcome()
        fakes.pump(0.4)     # the new pace settles
        fast = intervals(12, time.monotonic())
        check(120 <= statistics.median(fast) <= 200 and max(fast) < 450,
              "intervals at 150 ms: median %.0f, max %.0f: %r" % (statistics.median(fast), max(fast), fast))
        # Out of bounds: 1 ms means 50 ms.
        fakes.heartbeat_ms = 1
        fakes.welcome()
        fakes.pump(0.3)
        floor = intervals(12, time.monotonic())
        check(40 <= statistics.median(floor) <= 90,
              "intervals when asked for 1 ms: median %.0f: %r" % (statistics.median(floor), floor))
        # Silence: no WELCOME for 3 intervals is a warning, once; the next WELCOME, "back".
        # (At 150 ms, not 50: a test process stalled for 150 ms would be silence too.)
        fakes.heartbeat_ms = 150
        fakes.welcome()
        fakes.pump(0.5)
        before = p.log("worker").count("broker silent")
        fakes.answer = False
        fakes.pump(1.5)     # ten intervals
        check(p.log("worker").count("broker silent") == before + 1,
              "the silence should be logged once:\n%s" % p.log("worker"))
        fakes.answer = True

        def back():
            log = p.log("worker")
            return log.rfind("broker is back") > log.rfind("broker silent")

        fakes.wait(back, 5, '"broker is back" in the log after the silence')
        check(p.log("worker").count("broker silent") == before + 1, "silence logged again")


@with_fakes(sink_bound=False)
def test_sink_unreachable_hands_jobs_back(bin_dir, fakes):
    """No sink bound: the results wait, heartbeats go on, and after min(lease_ms / 2,
    resendMs x 4) = 1000 ms the jobs go back as RELEASE retry "sink unreachable". When
    the sink appears, new jobs flow."""
    fakes.lease_ms = 2000     # the bound: min(2000 / 2, 500 x 4) = 1000 ms
    p = start(bin_dir, "wp-sink", fakes, templateLatencyMs=0, concurrency=8)
    with p:
        w = run_worker(p, fakes, sets=["network.resendMs=500"])
        sent = time.monotonic()
        fakes.send_jobs([job_item(31, 131), job_item(32, 132), job_item(33, 133)])
        hb = fakes.wait(lambda: fakes.heartbeat_after(sent, lambda h: held(h)), 5,
                        "a heartbeat listing the written jobs")
        check(held(hb) == {(31, 131), (32, 132), (33, 133)},
              "jobs waiting for the sink are held: %r" % hb[8])
        # One of them is no longer the worker's: it is dropped from the sink's queue, silently.
        fakes.welcome(cancel=[(32, 132)])
        fakes.wait(lambda: fakes.released(31) and fakes.released(33), 6,
                   "jobs 31 and 33 handed back")
        back = time.monotonic() - sent
        for j in (31, 33):
            rel = fakes.released(j)
            check(len(rel) == 1 and rel[0][1] == 100 + j and rel[0][2] == REL_RETRY,
                  "job %d: %r" % (j, rel))
            m = re.match(r"sink unreachable \(results not accepted for (\d+) ms\)$", rel[0][3])
            check(m and 1000 <= int(m.group(1)) < 2500, "job %d reason: %r" % (j, rel[0][3]))
        check(0.9 <= back <= 3.0, "handed back after %.2f s (bound 1 s)" % back)
        check(not fakes.released(32), "the cancelled job was released: %r" % fakes.released(32))
        # Heartbeats never stopped: 200 ms apart, no gap near the 1 s wait.
        times = [t for t, _ in fakes.heartbeats if t > sent - 0.3]
        gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
        check(len(times) >= 5 and max(gaps) < 900, "heartbeat gaps while the sink was away: %r" % gaps)
        t = time.monotonic()
        hb = fakes.wait(lambda: fakes.heartbeat_after(t), 5, "a heartbeat after the hand-back")
        check(held(hb) == set(), "held after the hand-back: %r" % hb[8])
        check("handed back to the broker" in p.log("worker"), "the hand-back is not logged")
        # The sink comes back; the next jobs flow (after ZeroMQ reconnects: up to 2 s).
        fakes.bind_sink()
        fakes.send_jobs([job_item(34, 134), job_item(35, 135)])
        fakes.wait(lambda: all(fakes.released(j) and fakes.resulted(j) for j in (34, 35)), 15,
                   "jobs 34 and 35 written and released")
        for j in (34, 35):
            check(fakes.resulted(j) and [r[2] for r in fakes.released(j)] == [REL_DONE],
                  "job %d: results %r releases %r" % (j, fakes.resulted(j), fakes.released(j)))
        check(not fakes.resulted(31) and not fakes.resulted(33),
              "a handed-back result reached the sink later")
        check("connected to the sink" in p.log("worker"), "the connection is not logged")
        # The sink goes away again: the next job's result waits, then goes back the same way.
        fakes.unbind_sink()
        fakes.wait(lambda: "the sink (%s) disconnected" % fakes.sink_endpoint in p.log("worker"), 5,
                   "the worker to see the sink go")
        sent = time.monotonic()
        fakes.send_jobs([job_item(36, 136)])
        rel = fakes.wait(lambda: fakes.released(36), 6, "job 36 handed back")
        check(rel[0][2] == REL_RETRY and rel[0][3].startswith("sink unreachable")
              and 0.9 <= time.monotonic() - sent <= 3.0, "job 36: %r" % rel)
        check(w.alive(), "the worker died")


@with_fakes()
def test_one_connection_to_the_sink(bin_dir, fakes):
    """A worker opens one connection to the sink and keeps it: the sink accepts it once,
    and never sees it closed while both run. (Two connections at once, even for a moment,
    left the worker unable to tell which one the sink's going away closed: it went on
    offering results to a sink that was gone.)"""
    monitor = fakes.sink.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
    try:
        p = start(bin_dir, "wp-one-conn", fakes, templateLatencyMs=0, concurrency=8)
        with p:
            w = run_worker(p, fakes)
            fakes.send_jobs([job_item(61, 161)])
            fakes.wait(lambda: fakes.resulted(61) and fakes.released(61), 5, "job 61 written and released")
            # A last job a second later: whatever the start-up did to the connection has happened.
            later = time.monotonic() + 1.0
            fakes.wait(lambda: fakes.heartbeat_after(later), 5, "a heartbeat a second later")
            fakes.send_jobs([job_item(62, 162)])
            fakes.wait(lambda: fakes.resulted(62) and fakes.released(62), 5, "job 62 written and released")
            events = []
            while monitor.poll(0):
                events.append(zmq.utils.monitor.recv_monitor_message(monitor)["event"])
            check(events == [zmq.EVENT_ACCEPTED],
                  "the sink saw %r, not one connection accepted and kept" % events)
            check(p.log("worker").count("connected to the sink") == 1,
                  "the worker logged its connection %d times" % p.log("worker").count("connected to the sink"))
            check(w.alive(), "the worker died")
    finally:
        fakes.sink.disable_monitor()
        monitor.close(0)


@with_fakes()
def test_sigterm_drain_returns_unstarted_jobs(bin_dir, fakes):
    """SIGTERM: HEARTBEAT draining=1, new jobs back at once, the rest back at drainTimeoutMs, exit 0."""
    p = start(bin_dir, "wp-drain", fakes, templateLatencyMs=60000, concurrency=8,
                 drainTimeoutMs=1500)
    with p:
        w = run_worker(p, fakes)
        fakes.send_jobs([job_item(41, 141), job_item(42, 142), job_item(43, 143)])
        fakes.wait(lambda: held(fakes.last_heartbeat()) == {(41, 141), (42, 142), (43, 143)}, 5,
                   "three jobs held")
        term = time.monotonic()
        w.signal(signal.SIGTERM)
        hb = fakes.wait(lambda: fakes.heartbeat_after(term, lambda h: h[6] == 1), 2,
                        "a HEARTBEAT with draining = 1")
        check(len(held(hb)) == 3, "the draining heartbeat lists the jobs still held: %r" % hb[8])
        fakes.send_jobs([job_item(44, 144)])
        rel = fakes.wait(lambda: fakes.released(44), 2, "job 44 handed back at once")
        check(rel[0][2] == REL_RETURN and rel[0][3] == "worker draining", "job 44: %r" % rel)
        fakes.wait(lambda: all(fakes.released(j) for j in (41, 42, 43)), 6, "jobs 41-43 handed back")
        back = time.monotonic() - term
        check(1.3 <= back <= 4.0, "handed back after %.2f s (drainTimeoutMs 1.5 s)" % back)
        for j in (41, 42, 43):
            check([r[2] for r in fakes.released(j)] == [REL_RETURN], "job %d: %r" % (j, fakes.released(j)))
        check(not fakes.results, "results during the drain: %r" % fakes.results)
        deadline = time.monotonic() + 10
        while w.alive() and time.monotonic() < deadline:
            fakes.pump(0.05)
        check(not w.alive(), "the worker did not exit within 10 s of the drain")
        check(w.popen.returncode == 0, "exit status %s" % w.popen.returncode)


@with_fakes(sink_bound=False)
def test_reference_python_worker_keeps_the_same_rules(bin_dir, fakes):
    """tests/pyworker.py (written from the spec) against the same fakes: held and
    job_seq, WELCOME cancel and heartbeat_ms, the sink's bound, then results flow."""
    # bound: min(4000 / 2, 500 x 4) = 2000 ms, long enough that the WELCOME
    # cancelling job 52 arrives first even on a loaded machine.
    fakes.lease_ms = 4000
    p = start(bin_dir, "wp-python", fakes)
    with p:
        here = os.path.dirname(os.path.abspath(__file__))
        w = p.start_program("pyworker", [sys.executable, os.path.join(here, "pyworker.py"),
                                         "--broker", fakes.broker_endpoint, "--sink",
                                         fakes.sink_endpoint, "--id", "snake", "--resend-ms", "500"])
        fakes.wait(lambda: fakes.heartbeats, 10, "the Python worker's first HEARTBEAT")
        sent = time.monotonic()
        fakes.send_jobs([job_item(51, 151), job_item(52, 152)], seq=4)
        hb = fakes.wait(lambda: fakes.heartbeat_after(sent, lambda h: held(h)), 5,
                        "a heartbeat listing the jobs")
        check(held(hb) == {(51, 151), (52, 152)} and job_seq(hb) == 4, "heartbeat: %r" % hb)
        fakes.heartbeat_ms = 150
        fakes.welcome(cancel=[(52, 152)])
        fakes.wait(lambda: fakes.released(51), 5, "job 51 handed back")
        rel = fakes.released(51)
        check(rel[0][2] == REL_RETRY and rel[0][3].startswith("sink unreachable"), "job 51: %r" % rel)
        check(1.9 <= time.monotonic() - sent <= 4.5, "handed back after %.2f s" % (time.monotonic() - sent))
        t = time.monotonic()
        fakes.wait(lambda: len([x for x, _ in fakes.heartbeats if x > t]) >= 8, 5, "8 heartbeats")
        times = [x for x, _ in fakes.heartbeats if x > t]
        pace = statistics.median([(b - a) * 1000 for a, b in zip(times, times[1:])])
        check(110 <= pace <= 220, "the Python worker's heartbeat interval: %.0f ms" % pace)
        check(not fakes.released(52), "the cancelled job was released")
        check(held(fakes.last_heartbeat()) == set(), "held: %r" % fakes.last_heartbeat()[8])
        fakes.bind_sink()
        fakes.send_jobs([job_item(53, 153)])
        fakes.wait(lambda: fakes.released(53) and fakes.resulted(53), 10, "job 53 written and released")
        check(fakes.resulted(53) and fakes.released(53)[0][2] == REL_DONE, "job 53 not done")
        check(w.stop() == 0, "the Python worker did not stop cleanly")


if __name__ == "__main__":
    main([test_heartbeat_lists_exactly_the_jobs_held,
          test_lost_job_frame_is_not_held,
          test_welcome_cancel_drops_the_job,
          test_welcome_heartbeat_ms_sets_the_pace,
          test_sink_unreachable_hands_jobs_back,
          test_one_connection_to_the_sink,
          test_sigterm_drain_returns_unstarted_jobs,
          test_reference_python_worker_keeps_the_same_rules])
