"""Recovery never loops: damaged state is quarantined, counted, and the daemon serves.

A daemon's state is an append-only journal (store/pjournal.h): records of
`u32 length | u32 crc32 | u8 type | payload` in segment files. These tests
write what an older or damaged version could leave behind - a record that
passes its checksum but cannot be decoded, a record of an unknown type, a
torn last write - restart the daemon, and check that it starts, keeps the
bad records in quarantine.pj, and serves everything else.
"""
import glob
import os
import signal
import struct
import time
import zlib
from contextlib import closing

import msgpack

from fake_telegram import FakeTelegram
from harness import (Pipeline, base_config, check, free_endpoint, jsonl_input, main, mentions,
                     wait_until, write_jsonl)
from test_poller_protocol import FakeBroker


def segments(journal_dir):
    return sorted(glob.glob(os.path.join(journal_dir, "*.pj")))


def record(rtype, payload):
    body = bytes([rtype]) + payload
    return struct.pack("<II", len(payload), zlib.crc32(body) & 0xffffffff) + body


def quarantine_entries(journal_dir):
    """The raw quarantine file's size (entries are checked by the daemon's log)."""
    path = os.path.join(journal_dir, "quarantine.pj")
    return os.path.getsize(path) if os.path.exists(path) else 0


def test_broker_quarantines_damaged_records_and_serves(bin_dir):
    config = base_config([{"id": "alpha", "responseChance": 0}],
                         sink={"destinations": []})
    config["storage"] = {"dataDir": "data", "fsync": "batch"}
    with Pipeline(bin_dir, config, "recovery") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        jsonl_input(p, config, mentions(40))
        p.write_config(config)
        p.start_broker()
        p.start_poller()
        wait_until(lambda: p.broker_stats()["queued"] == 40, 20, "40 queued jobs")
        p.procs["broker"].signal(signal.SIGKILL)
        p.procs["broker"].popen.wait(10)
        journal = p.path("data/broker")
        newest = segments(journal)[-1]
        with open(newest, "ab") as f:
            f.write(record(2, b"\x93\x01\x02"))          # a JOB that is not a job
            f.write(record(2, b"\xdd\x0f\xff\xff\xff"))  # an array claiming 2^28 items
            f.write(record(200, b"from the future"))     # a type this version does not know
            f.write(b"\x20\x00\x00")                      # a torn last write
        p.start_broker()
        log = p.log("broker")
        check("could not be loaded" in log and "quarantine" in log,
              "the broker did not report the quarantine:\n%s" % log[-2000:])
        check(quarantine_entries(journal) > 0, "nothing in quarantine.pj")
        stats = p.broker_stats()
        check(stats["queued"] == 40, "the 40 good jobs did not survive: %r" % stats)
        # It serves: the queued jobs and new ones are posted, each once.
        p.start_sink()
        p.start_worker()
        wait_until(lambda: len(p.posted()) >= 40, 30, "the 40 replies")
        keys = [r["msg_key"] for r in p.posted()]
        check(len(keys) == len(set(keys)) == 40, "posted %d replies, %d distinct"
              % (len(keys), len(set(keys))))
        # And a second restart does not loop on the same records either.
        p.procs["broker"].signal(signal.SIGKILL)
        p.procs["broker"].popen.wait(10)
        p.start_broker()
        wait_until(lambda: p.broker_stats()["jobs"] == 0, 20, "a clean start")


def test_broker_with_an_unreadable_segment_header_starts(bin_dir):
    """A segment whose header is garbage is quarantined whole; the rest loads."""
    config = base_config([{"id": "alpha", "responseChance": 0}], sink={"destinations": []})
    config["storage"] = {"dataDir": "data", "fsync": "batch"}
    with Pipeline(bin_dir, config, "recovery2") as p:
        jsonl_input(p, config, mentions(10))
        p.write_config(config)
        p.start_broker()
        p.start_poller()
        wait_until(lambda: p.broker_stats()["queued"] == 10, 20, "10 queued jobs")
        p.procs["broker"].signal(signal.SIGKILL)
        p.procs["broker"].popen.wait(10)
        journal = p.path("data/broker")
        last = segments(journal)[-1]
        bogus = os.path.join(journal, "%016x.pj" % (int(os.path.basename(last)[:16], 16) + 7))
        with open(bogus, "wb") as f:
            f.write(b"this is not a segment at all" * 10)
        p.start_broker()
        check(p.broker_stats()["queued"] == 10, "the good jobs did not survive a bad segment")


def test_poller_quarantines_damaged_records_and_serves(bin_dir):
    """The poller's journal (seen keys, cursors, unacknowledged batches) after a kill -9,
    with damaged records and a torn write: they are quarantined, the poller starts, does
    not read again what it read before, and reads what it had not."""
    config = base_config([{"id": "alpha", "responseChance": 0}],
                         network={"heartbeatMs": 200, "resendMs": 500})
    with Pipeline(bin_dir, config, "recovery-poller") as p:
        p.frontend = free_endpoint()
        p.backend, p.results, p.stats = free_endpoint(), free_endpoint(), free_endpoint()
        broker = FakeBroker(p.frontend)
        try:
            config["storage"] = {"dataDir": p.path("data"), "fsync": "always"}
            jsonl_input(p, config, mentions(30))
            p.write_config(config)
            p.start_poller()
            first = {("alpha", "in/room/m%d" % i) for i in range(30)}
            wait_until(lambda: set(broker.snapshot("accepted")) == first, 20, "the first 30 jobs")
            wait_until(lambda: broker.snapshot("stats").get("acked") == 30, 10,
                       "the poller's 30 acknowledgements")
            p.procs["poller"].signal(signal.SIGKILL)
            p.procs["poller"].popen.wait(10)

            journal = p.path("data/poller")
            newest = segments(journal)[-1]
            junk_frame = msgpack.packb([99, 1, b"not a SUBMIT frame"], use_bin_type=True)
            with open(newest, "ab") as f:
                f.write(record(1, b"\x92\x01\x02"))            # a SEEN that is not one
                f.write(record(3, junk_frame))                   # a batch that would never be acked
                f.write(record(3, b"\xdd\x0f\xff\xff\xff"))    # an array claiming 2^28 items
                f.write(record(201, b"from the future"))         # a type this version does not know
                f.write(b"\x40\x00\x00\x00\x12")               # a torn last write
            # Twenty messages the poller has not read yet.
            write_jsonl(p.path("in.jsonl"), mentions(20, start=30), mode="a")
            reports = broker.snapshot("stats_reports")
            p.start_poller()
            log = p.log("poller")
            check("could not be loaded" in log and "quarantine" in log,
                  "the poller did not report the quarantine:\n%s" % log[-2000:])
            check("unfinished write" in log, "the torn write was not cut:\n%s" % log[-2000:])
            check(quarantine_entries(journal) > 0, "nothing in quarantine.pj")
            every = first | {("alpha", "in/room/m%d" % i) for i in range(30, 50)}
            wait_until(lambda: set(broker.snapshot("accepted")) == every, 20, "the 20 new jobs")
            stats = wait_until(lambda: (lambda st: st if st.get("acked") == 20 else None)(
                broker.snapshot("stats") if broker.snapshot("stats_reports") > reports else {}),
                10, "the restarted poller's counters")
            check(stats["messages"] == 20 and stats["duplicates"] == 0,
                  "the restarted poller read old messages again: %s" % stats)
            check(stats["unacked"] == 0, "a batch stays unacknowledged: %s" % stats)
            check(all(n == 1 for n in broker.snapshot("accepted").values()), "a job accepted twice")
            check(broker.snapshot("after_accept") == 0, "jobs submitted again after acceptance")
            check(broker.malformed == 0, "the poller sent a malformed frame")

            # A second kill -9 and restart: no loop on the same records, nothing read again.
            p.procs["poller"].signal(signal.SIGKILL)
            p.procs["poller"].popen.wait(10)
            received = len(broker.snapshot("received"))
            reports = broker.snapshot("stats_reports")
            p.start_poller()
            wait_until(lambda: broker.snapshot("stats_reports") > reports + 1, 10, "a fresh report")
            stats = broker.snapshot("stats")
            check(stats["messages"] == 0 and stats["unacked"] == 0,
                  "the second restart read or sent again: %s" % stats)
            check(len(broker.snapshot("received")) == received, "jobs sent again")
            check(p.stop()["poller"] == 0, "unclean exit")
        finally:
            broker.close()
class SlowFirstTelegram(FakeTelegram):
    """Holds the first sendMessage for a while (then takes it), so a test can kill
    the sink while that post is on its way; answers the others at once."""

    def __init__(self):
        super().__init__()
        self.started = []

    def _send_message(self, handler, bot, body):
        self.started.append(time.monotonic())
        if len(self.started) == 1:
            time.sleep(3.0)
        return super()._send_message(handler, bot, body)


def test_sink_quarantines_damaged_records_and_posts_nothing_twice(bin_dir):
    """The sink is killed while a reply is on its way (its "posting" mark was
    stored and synced before the first byte left); its journal then gets a
    damaged record and a torn write. Restarted, it quarantines them, starts,
    reports the interrupted reply as in doubt (Telegram cannot tell whether it
    went out) instead of posting it again, and posts new replies."""
    tg = SlowFirstTelegram()
    tg.add_bot("555:SINK", "sinkbot")
    env = {"TG_BOT": "555:SINK"}
    def messages(start, n):     # numeric ids: the replies name them (reply_to)
        return [{"id": str(i), "chat": "-1001", "chatKind": "group", "author": "u%d" % i,
                 "text": "@alpha question %d" % i} for i in range(start, start + n)]
    config = base_config([{"id": "alpha", "responseChance": 0}], sink={"destinations": [
        {"name": "tg", "type": "telegram", "source": "*", "url": tg.url, "tokenEnv": "TG_BOT"}]})
    config["storage"] = {"dataDir": "data", "fsync": "always"}
    with closing(tg), Pipeline(bin_dir, config, "recovery-sink") as p:
        jsonl_input(p, config, messages(100, 1), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink(env=env)
        p.start_worker()
        p.start_poller()
        wait_until(lambda: tg.started, 20, "the first post to reach the platform")
        p.procs["sink"].signal(signal.SIGKILL)
        p.procs["sink"].popen.wait(10)
        journal = p.path("data/sink")
        with open(segments(journal)[-1], "ab") as f:
            f.write(record(1, b"\x93\x01\x02"))          # a MARK that is not a mark
            f.write(record(200, b"from the future"))     # a type this version does not know
            f.write(b"\x20\x00\x00")                      # a torn last write
        with open(p.path("data/sink.db"), "wb") as f:     # what an older version left
            f.write(b"SQLite format 3\x00")
        p.start_sink(env=env)
        log = p.log("sink")
        check("could not be loaded" in log and "quarantine" in log,
              "the sink did not report the quarantine:\n%s" % log[-2000:])
        check("sink.db is from an older version and is not read" in log, "sink.db not reported")
        check(quarantine_entries(journal) > 0, "nothing in quarantine.pj")
        wait_until(lambda: p.component("sink").get("in_doubt", 0) >= 1, 20,
                   "the interrupted post to be reported in doubt")
        sink = p.component("sink")
        check(sink["quarantined"] == 2, "sink: %r" % sink)
        check("cannot tell whether it went out" in p.log("sink"), "no doubt logged")
        # It serves: new messages are answered.
        write_jsonl(p.path("in.jsonl"), messages(101, 3), mode="a")
        wait_until(lambda: len(tg.sent) >= 4, 30, "the first reply (taken late) and 3 new ones")
        # The interrupted reply reached the platform once, and only once, even
        # after the broker's lease on it ran out.
        time.sleep(config["queueSettings"]["staleClaimTimeout"] / 1000.0 + 1)
        replies = sorted(str(a["reply_to"]) for a in tg.arrivals())
        check(len(tg.started) == 4 and replies == ["100", "101", "102", "103"],
              "the platform was asked %d times, replying to %s" % (len(tg.started), replies))
        dead = p.ctl("dlq", "list", "100")["items"]
        check(len(dead) == 1 and dead[0]["msg_key"] == "in/-1001/100",
              "dead letters: %s" % dead)


if __name__ == "__main__":
    main([test_broker_quarantines_damaged_records_and_serves,
          test_broker_with_an_unreadable_segment_header_starts,
          test_poller_quarantines_damaged_records_and_serves,
          test_sink_quarantines_damaged_records_and_posts_nothing_twice])
