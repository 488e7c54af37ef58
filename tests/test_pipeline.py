"""End to end through the real daemons: every message answered once, in priority order."""
import collections
import os
import signal
import sys
import time

import msgpack
import zmq

from harness import Pipeline, base_config, check, jsonl_input, main, wait_until

ENTITIES = [
    {"id": "alpha", "responseChance": 0},
    {"id": "beta", "name": "Beta", "aliases": ["b2"], "responseChance": 0},
    # gamma answers every unaddressed message, but only in the "bulk" chat
    {"id": "gamma", "responseChance": 1, "allowChats": ["in/bulk"]},
]


def messages(n, offset=0):
    """n messages: 40% mention alpha or beta in "room" (urgent), 60% plain in "bulk" (normal)."""
    out = []
    for i in range(offset, offset + n):
        if i % 5 < 2:
            who = "@alpha" if i % 2 else "@BETA"
            out.append({"id": "m%d" % i, "chat": "room", "author": "user%d" % (i % 17),
                        "text": "%s question number %d?" % (who, i)})
        else:
            out.append({"id": "m%d" % i, "chat": "bulk", "author": "user%d" % (i % 17),
                        "text": "just chatting, line %d" % i})
    return out


def post_to_jsonl(p, config, msgs=None):
    """The sink posts to p.output (a jsonl destination); `msgs`, if given, are the
    poller's only source. Writes the configuration."""
    config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
    if msgs is not None:
        jsonl_input(p, config, msgs)
    p.write_config(config)


def expected_entity(m):
    if m["chat"] == "bulk":
        return "gamma"
    return "alpha" if "@alpha" in m["text"] else "beta"


def test_thousand_messages_once_each_in_priority_order(bin_dir):
    config = base_config(ENTITIES, sink={"destinations": []})
    with Pipeline(bin_dir, config, "thousand") as p:
        msgs = messages(1000)
        post_to_jsonl(p, config, msgs)
        p.start_broker()
        p.start_sink()
        # No worker yet: everything queues, so the order of dispatch is the scheduler's alone.
        p.start_poller()
        wait_until(lambda: p.broker_stats()["queued"] == 1000, 30, "1000 queued jobs")
        p.start_worker(sets=["worker.concurrency=1"])
        wait_until(lambda: len(p.posted()) >= 1000, 60, "1000 posted replies")
        # Give a duplicate the chance to show up before judging.
        wait_until(lambda: p.broker_stats()["jobs"] == 0, 10, "the broker to finish every job")
        posted = p.posted()
        check(len(posted) == 1000, "expected 1000 posts, got %d" % len(posted))
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in posted)
        twice = [k for k, n in pairs.items() if n > 1]
        check(not twice, "posted more than once: %s" % twice[:5])
        want = {("in/%s/%s" % (m["chat"], m["id"]), expected_entity(m)) for m in msgs}
        check(set(pairs) == want, "wrong (message, entity) pairs: missing %s, extra %s"
              % (sorted(want - set(pairs))[:5], sorted(set(pairs) - want)[:5]))
        # Every urgent reply (mentions in "room") came before every normal one.
        last_urgent = max(i for i, r in enumerate(posted) if r["chat"] == "in/room")
        first_normal = min(i for i, r in enumerate(posted) if r["chat"] == "in/bulk")
        check(last_urgent < first_normal,
              "priority not respected: normal reply at %d before urgent reply at %d"
              % (first_normal, last_urgent))
        # Replies answer the right message.
        for r in posted[:50]:
            check(r["reply_to"] == r["msg_key"].split("/")[-1], "reply_to mismatch in %r" % r)
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def test_second_worker_joins_and_takes_work(bin_dir):
    # Only alpha and beta: every demo message mentions one of them.
    config = base_config(ENTITIES[:2], sink={"destinations": []})
    with Pipeline(bin_dir, config, "join") as p:
        config["poller"]["sources"] = [{"name": "in", "type": "demo", "ratePerSecond": 300,
                                        "chats": 4, "mentionRate": 1.0, "limit": 1500}]
        config["worker"].update({"templateLatencyMs": 20, "concurrency": 4})
        post_to_jsonl(p, config)
        p.start_broker()
        p.start_sink()
        p.start_worker("w1", env={"WORKER_ID": "first"})
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 100, 30, "the first worker to post 100 replies")
        p.start_worker("w2", env={"WORKER_ID": "second"})
        wait_until(lambda: len(p.posted()) >= 1500, 60, "1500 posted replies")
        workers = {w["id"]: w for w in p.ctl("workers")}
        check(set(workers) == {"first", "second"}, "workers seen: %s" % sorted(workers))
        check(workers["second"]["dispatched"] > 100,
              "the second worker took only %d jobs" % workers["second"]["dispatched"])
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(max(pairs.values()) == 1, "a reply was posted twice")


def test_worker_lost_jobs_come_back(bin_dir):
    """A worker killed with jobs in hand: after its lease, another worker does them."""
    config = base_config(ENTITIES, sink={"destinations": []})
    config["queueSettings"]["staleClaimTimeout"] = 1500
    with Pipeline(bin_dir, config, "lost") as p:
        post_to_jsonl(p, config, messages(200))
        p.start_broker()
        p.start_sink()
        # A slow worker that will hold jobs when it dies.
        slow = p.start_worker("slow", sets=["worker.templateLatencyMs=60000", "worker.concurrency=20"])
        p.start_poller()
        wait_until(lambda: p.broker_stats()["in_flight"] == 20, 20, "the slow worker to hold 20 jobs")
        slow.signal(signal.SIGKILL)
        p.start_worker("fast")
        wait_until(lambda: len(p.posted()) >= 200, 60, "200 posted replies")
        stats = p.broker_stats()
        check(stats["lost_workers"] == 1, "lost_workers = %d" % stats["lost_workers"])
        check(stats["retried"] >= 20, "retried = %d" % stats["retried"])
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(len(pairs) == 200 and max(pairs.values()) == 1, "not exactly one reply per job")


def test_python_worker_written_from_the_spec(bin_dir):
    """tests/pyworker.py speaks PROTOCOL.md; the real broker and sink accept its work."""
    config = base_config(ENTITIES, sink={"destinations": []})
    with Pipeline(bin_dir, config, "pyworker") as p:
        post_to_jsonl(p, config, messages(300))
        p.start_broker()
        p.start_sink()
        here = os.path.dirname(os.path.abspath(__file__))
        p.start_program("pyworker", [sys.executable, os.path.join(here, "pyworker.py"),
                                     "--broker", p.backend, "--sink", p.results, "--id", "snake"])
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 300, 30, "300 replies from the Python worker")
        posted = p.posted()
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in posted)
        check(len(pairs) == 300 and max(pairs.values()) == 1, "not exactly one reply per job")
        check(all(r["text"].startswith(r["entity"] + " here, ") for r in posted),
              "a reply did not come from the Python worker: %r" % posted[0])
        workers = p.ctl("workers")
        check([w["id"] for w in workers] == ["snake"], "workers: %s" % workers)
        check(p.procs["pyworker"].stop() == 0, "the Python worker did not stop cleanly")


def test_empty_payload_survives_a_restart(bin_dir):
    """A job whose payload is empty is stored and recovered after a restart (msgpack-c
    and SQLite hand empty bytes back as a NULL pointer, which must not reach memcpy)."""
    config = base_config(ENTITIES, sink={"destinations": []}, storage={"dataDir": "data"})
    with Pipeline(bin_dir, config, "emptypayload") as p:
        p.write_config(config)
        p.start_broker()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(p.frontend)
        try:
            spec = ["in/room/e1", "alpha", "in/room", "group", 5, int(time.time() * 1000), b""]
            sock.send(b"\xa5\x50\x01\x01" + msgpack.packb([1, [spec]], use_bin_type=True))
            check(sock.poll(10000), "no ACK for the SUBMIT")
            ack = msgpack.unpackb(sock.recv()[4:], raw=False)
            check(ack[:2] == [1, 1], "ACK: %r" % ack)
        finally:
            sock.close()
        check(p.broker_stats()["jobs"] == 1, "the job is not held")
        check(p.procs["broker"].stop() == 0, "the broker did not stop cleanly")
        p.start_broker()
        wait_until(lambda: p.broker_stats()["jobs"] == 1, 10, "the job back after the restart")


def test_one_machine_over_ipc(bin_dir):
    """Every endpoint a Unix domain socket, as the README's "One machine" shows:
    every message answered once, and parleyctl reaches the broker the same way."""
    config = base_config(ENTITIES, sink={"destinations": []})
    with Pipeline(bin_dir, config, "ipc") as p:
        ends = {k: "ipc://" + p.path(k) for k in ("front", "back", "results", "stats")}
        config["network"].update({"brokerFrontend": ends["front"], "brokerBackend": ends["back"],
                                  "sinkResults": ends["results"], "statsPublish": ends["stats"]})
        p.frontend, p.backend, p.results, p.stats = (ends[k] for k in ("front", "back", "results", "stats"))
        msgs = messages(200)
        post_to_jsonl(p, config, msgs)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 200, 30, "200 replies over ipc://")
        for k in ends:
            check(os.path.exists(p.path(k)), "no socket file %s" % p.path(k))
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(max(pairs.values()) == 1, "a reply was posted twice")
        check(set(pairs) == {("in/%s/%s" % (m["chat"], m["id"]), expected_entity(m)) for m in msgs},
              "the replies are not one per message to its entity")
        check(p.broker_stats()["posted"] == 200, "parleyctl over ipc:// does not see 200 posts")


if __name__ == "__main__":
    main([test_thousand_messages_once_each_in_priority_order,
          test_second_worker_joins_and_takes_work,
          test_worker_lost_jobs_come_back,
          test_python_worker_written_from_the_spec,
          test_empty_payload_survives_a_restart,
          test_one_machine_over_ipc])
