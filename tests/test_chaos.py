"""Kill anything, lose nothing, post nothing twice.

The real daemons run with durable storage while a driver SIGKILLs a random
one every 1-3 s and restarts it. At the end every selected (message,
entity) must be posted exactly once, or be a dead letter with its reason.
Also: a worker frozen past its lease has its stale results refused, and a
job that crashes its worker every time ends in the dead-letter queue while
everything else flows.
"""
import collections
import json
import os
import random
import signal
import sys
import time

from harness import Pipeline, base_config, check, main, wait_until, write_jsonl

ENTITIES = [{"id": e, "responseChance": 0} for e in ("alpha", "beta", "gamma")]


def chaos_config(p, extra_queue=None):
    config = base_config(ENTITIES, sink={"destinations": [
        {"name": "out", "type": "jsonl", "path": p.output}]})
    config["storage"] = {"dataDir": "data"}     # inside the test's directory
    config["queueSettings"].update({"staleClaimTimeout": 2000})
    config["queueSettings"].update(extra_queue or {})
    config["worker"].update({"templateLatencyMs": 5, "templateJitterMs": 20, "concurrency": 8})
    config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": p.path("in.jsonl")}]
    return config


def messages(n, rng):
    """Each message mentions one or two entities; returns (messages, expected pairs)."""
    msgs, expected = [], set()
    for i in range(n):
        who = rng.sample(["alpha", "beta", "gamma"], rng.choice([1, 1, 2]))
        msgs.append({"id": "m%d" % i, "chat": "room%d" % (i % 7), "author": "u%d" % (i % 50),
                     "text": " ".join("@" + w for w in who) + " message %d" % i})
        for w in who:
            expected.add(("in/room%d/m%d" % (i % 7, i), w))
    return msgs, expected


def restart(p, key):
    if key == "broker":
        p.start_broker()
    elif key == "sink":
        p.start_sink()
    elif key == "poller":
        p.start_poller()
    else:
        p.start_worker(key, env={"WORKER_ID": key})


def account(p, expected):
    """(posted pairs counter, dead-letter pairs with reasons)."""
    posted = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
    dead = {}
    for d in p.ctl("dlq", "list", "100000")["items"]:
        dead[(d["msg_key"], d["entity"])] = d["reason"]
    return posted, dead


def test_kill_anything_lose_nothing(bin_dir):
    rng = random.Random(int(os.environ.get("PARLEY_CHAOS_SEED", "0")) or None)
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    n = int(os.environ.get("PARLEY_CHAOS_MESSAGES", "5000"))
    with Pipeline(bin_dir, {}, "chaos") as p:
        msgs, expected = messages(n, rng)
        write_jsonl(p.path("in.jsonl"), msgs)
        p.config = chaos_config(p)
        # Slow enough that the run spans some 40 s of kills.
        p.config["worker"].update({"templateLatencyMs": 40, "templateJitterMs": 60, "concurrency": 6})
        p.config_path = p.path("parley.json")
        p.write_config(p.config)
        p.start_broker()
        p.start_sink()
        for w in ("w1", "w2"):
            restart(p, w)
        p.start_poller()
        kills = collections.Counter()
        deadline = time.monotonic() + 240
        # Chaos until everything has been posted (or time runs out).
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = rng.choice(["broker", "sink", "w1", "w2", "poller"])
            p.procs[victim].signal(signal.SIGKILL)
            p.procs[victim].popen.wait(10)
            kills[victim] += 1
            time.sleep(rng.uniform(0.0, 0.5))
            restart(p, victim)
            if len(p.posted()) >= len(expected):
                break
        # Calm: let every job settle.
        def settled():
            s = p.broker_stats()
            return s["jobs"] == 0 and s["queued"] == 0
        wait_until(settled, 90, "every job to settle after the chaos", interval=0.5)
        posted, dead = account(p, expected)
        duplicated = sorted(k for k, c in posted.items() if c > 1)
        extra = sorted(set(posted) - expected)
        lost = sorted(k for k in expected if k not in posted and k not in dead)
        stats = p.broker_stats()
        print("chaos (seed %d): %d messages, %d pairs, kills %s" % (seed, n, len(expected), dict(kills)))
        print("  posted %d, dead-lettered %d, expired %d, lost %d, duplicated %d"
              % (sum(1 for k in expected if k in posted), len(dead), stats["expired"], len(lost),
                 len(duplicated)))
        for key, reason in sorted(dead.items())[:5]:
            print("  dead letter %s/%s: %s" % (key[0], key[1], reason.splitlines()[0]))
        check(not lost, "lost %d pairs, e.g. %s" % (len(lost), lost[:5]))
        check(not duplicated, "posted twice: %s" % duplicated[:5])
        check(not extra, "posted pairs nobody asked for: %s" % extra[:5])
        check(all(dead.values()), "a dead letter without a reason")
        check(sum(kills.values()) >= (10 if n >= 5000 else 4), "too few kills to mean anything: %s" % dict(kills))


def test_frozen_worker_results_are_refused(bin_dir):
    with Pipeline(bin_dir, {}, "frozen") as p:
        rng = random.Random(7)
        msgs, expected = messages(60, rng)
        write_jsonl(p.path("in.jsonl"), msgs)
        p.config = chaos_config(p)
        p.config["worker"].update({"templateLatencyMs": 1500, "templateJitterMs": 0})
        p.config_path = p.path("parley.json")
        p.write_config(p.config)
        p.start_broker()
        p.start_sink()
        frozen = p.start_worker("frozen", env={"WORKER_ID": "frozen"})
        p.start_poller()
        wait_until(lambda: p.broker_stats()["in_flight"] >= 8, 20, "the worker to hold 8 jobs")
        frozen.signal(signal.SIGSTOP)
        # Past the 2 s lease its jobs go to another worker.
        p.start_worker("fresh", sets=["worker.templateLatencyMs=10"], env={"WORKER_ID": "fresh"})
        wait_until(lambda: p.broker_stats()["lost_workers"] >= 1, 20, "the frozen worker to be lost")
        wait_until(lambda: len(p.posted()) >= len(expected), 30, "all replies from the fresh worker")
        frozen.signal(signal.SIGCONT)
        # The thawed worker's 8 old jobs are no longer its: the broker cancels
        # them at its first heartbeat, or, where the worker finished one first,
        # the sink refuses the stale result. Either way none is posted.
        def settled():
            sink = p.component("sink")
            return sink.get("stale", 0) + p.broker_stats()["cancelled"] >= 8
        wait_until(settled, 20, "the 8 old jobs to be cancelled or refused")
        time.sleep(1.0)     # let anything that should not happen, happen
        posted = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(set(posted) == expected and max(posted.values()) == 1,
              "not exactly one post per pair after the thaw")


def test_poison_job_is_dead_lettered(bin_dir):
    with Pipeline(bin_dir, {}, "poison") as p:
        rng = random.Random(11)
        msgs, expected = messages(200, rng)
        msgs.append({"id": "poison", "chat": "room0", "author": "evil",
                     "text": "@alpha this one kills its worker: CRASH-ME"})
        write_jsonl(p.path("in.jsonl"), msgs)
        p.config = chaos_config(p, {"maxRetries": 2, "retryBaseMs": 50, "retryMaxMs": 200})
        p.config["worker"].update({"templateCrashOn": "CRASH-ME", "concurrency": 2})
        p.config_path = p.path("parley.json")
        p.write_config(p.config)
        p.start_broker()
        p.start_sink()
        for w in ("w1", "w2"):
            restart(p, w)
        p.start_poller()
        crashes = 0
        deadline = time.monotonic() + 60
        # A supervisor: restart crashed workers until the poison is dead-lettered.
        while time.monotonic() < deadline and p.broker_stats()["dlq"] == 0:
            for w in ("w1", "w2"):
                if not p.procs[w].alive():
                    crashes += 1
                    restart(p, w)
            time.sleep(0.1)
        dead = p.ctl("dlq", "list")["items"]
        check([d["msg_key"] for d in dead] == ["in/room0/poison"], "dead letters: %s" % dead)
        check("gave up after 3 failed attempts" in dead[0]["reason"], dead[0]["reason"])
        check(crashes >= 3, "the poison crashed workers %d times" % crashes)
        for w in ("w1", "w2"):
            if not p.procs[w].alive():
                restart(p, w)
        wait_until(lambda: len(p.posted()) >= len(expected), 30, "everything else to be posted")
        posted = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(set(posted) == expected and max(posted.values()) == 1, "not exactly one post per pair")


if __name__ == "__main__":
    main([test_kill_anything_lose_nothing, test_frozen_worker_results_are_refused,
          test_poison_job_is_dead_lettered])
