"""Seed 000's configuration, time-compressed 10x (tests/fixtures/seed000.json),
under saturation, with LLM latency varying 0.2-4 s: every limit holds where
the platform counts it, at the moment each post arrives at a stand-in chat
API that records arrival times (fake_kv.py).

The seed's users saw every entity exceed its per-minute cap at the chat by
0.06-0.18 s, gaps of 24.92 s against 25 s, and the global budget spent in
bursts (21, 21, 0, 0 posts per 15 s). Here: no window at the platform ever
holds more than a limit allows, no gap is shorter than configured, the
global budget (one post per 0.5 s, the binding limit: the entities together
allow 130 a minute, the global gap 120) is used at >= 95 %, and evenly.
"""
import json
import os
import threading
import time
from contextlib import closing

from fake_kv import FakeKV
from harness import Pipeline, check, main, wait_until, write_jsonl
from limits_check import budget_use, check_count, check_gap, evenness, group_by

# Of posting; the first 60 s windows are whole after 60 s. The budget's use
# is measured over the last 90 s: a post more or less is 0.6 % of it.
RUN_S = 105
RATE = 10           # messages a second: the seed's one a second, compressed
MESSAGES = RATE * (RUN_S + 30)


def seed_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "seed000.json")
    with open(path) as f:
        config = json.load(f)
    config.pop("_note", None)
    config.pop("featureFlags", None)      # the seed's; Parley ignores them with a warning
    return config


def test_seed000_limits_at_arrival(bin_dir):
    kv = FakeKV()
    config = seed_config()
    entities = [e["id"] for e in config["entities"]]
    config.update({
        "storage": {"dataDir": ""},
        "network": {"heartbeatMs": 200, "resendMs": 500},
        # A template "LLM" taking 0.2-4.0 s a reply: replies reach the sink out
        # of the order and spacing they were dispatched in.
        "worker": {"templateLatencyMs": 200, "templateJitterMs": 3800, "concurrency": 64},
        "sink": {"statsIntervalMs": 500, "statsLogIntervalMs": 0, "destinations": [
            {"name": "chat", "type": "http", "url": kv.url,
             "body": {"username": "{entity}", "text": "{text}", "replyTo": "{msg_ref}"}}]},
    })
    # Compressed 10x, the rates are 10x the seed's but an LLM call takes as
    # long as ever: by Little's law the seed's 5 calls at once (the default
    # globalMaxInFlight) become 50, and 2 per entity 20.
    config["queueSettings"].update({"globalMaxInFlight": 50, "perEntityMaxInFlight": 20})
    config["queueSettings"]["responseDelays"] = {
        band: {"minMs": 0, "maxMs": 0} for band in ("urgent", "normal", "low")}
    with closing(kv), Pipeline(bin_dir, config, "seed000") as p:
        # The seed's one message a second, compressed: ten a second, written
        # as they come; one in ten mentions someone, in turn.
        write_jsonl(p.path("in.jsonl"), [])
        config["poller"] = {"sources": [{"name": "in", "type": "jsonl", "follow": True,
                                         "path": p.path("in.jsonl")}], "seed": 7}
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        stop = threading.Event()

        def chat():
            i, start = 0, time.monotonic()
            while not stop.is_set() and i < MESSAGES:
                due = start + i / RATE
                if due > time.monotonic():
                    stop.wait(due - time.monotonic())
                    continue
                text = "just chatting, line %d" % i
                if i % 10 == 0:
                    text = "@%s what do you think of %d?" % (entities[(i // 10) % len(entities)], i)
                write_jsonl(p.path("in.jsonl"), [{"id": "m%d" % i, "chat": "lounge",
                                                  "chatKind": "group", "author": "user%d" % (i % 23),
                                                  "text": text}], mode="a")
                i += 1

        writer = threading.Thread(target=chat, daemon=True)
        writer.start()
        wait_until(lambda: kv.arrivals(), 30, "the first post")
        first = kv.arrivals()[0]["mono"]
        time.sleep(max(0.0, first + RUN_S - time.monotonic()))
        arrivals = kv.arrivals()
        stop.set()
        writer.join(5)
        stats = p.broker_stats()
        check(stats["queued"] + stats["in_flight"] + stats["awaiting_post"] > 20,
              "not saturated: %s" % stats)

    times = [a["mono"] for a in arrivals]
    refused = [a for a in arrivals if not a["accepted"]]
    check(not refused, "the platform refused %d posts" % len(refused))
    by_entity = group_by(arrivals, "username")
    limits = {e["id"]: e["rateLimits"] for e in config["entities"]}
    for entity, posts in sorted(by_entity.items()):
        check(entity in limits, "posted as %r" % entity)
        ts = [a["mono"] for a in posts]
        r = limits[entity]
        check_gap(ts, r["minSecondsBetweenPosts"], "%s's gap" % entity)
        check_count(ts, r["maxPostsPerMinute"], 60.0, "%s per minute" % entity)
        check_count(ts, r["maxPostsPerHour"], 3600.0, "%s per hour" % entity)
    bot = config["botSettings"]
    check_gap(times, bot["minSecondsBetweenAnyPost"], "the global gap")
    check_count(times, bot["maxTotalMessagesPerMinute"], 60.0, "all posts per minute")
    # The binding limit, the global gap, used fully and evenly once the
    # pipeline is full (the first 15 s fill it: replies are on their way, and
    # the broker has learnt how long they take, so it dispatches that far
    # ahead of the slots).
    start, end = first + 15.0, first + RUN_S
    use = budget_use(times, 1, bot["minSecondsBetweenAnyPost"], start, end)
    buckets = evenness(times, 15.0, start, start + 60.0)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    print("seed000: %d posts by %d entities in %d s; global budget used %.1f %%; "
          "posts per 15 s %s; smallest gap %.3f s (limit 0.5 s)"
          % (len(times), len(by_entity), RUN_S, use * 100, buckets, gaps[0]))
    check(use >= 0.95, "the global budget was used at %.1f %%" % (use * 100))
    check(min(buckets) >= 0.9 * max(buckets), "posts per 15 s: %s" % buckets)
    check(len(by_entity) == len(entities), "only %s posted" % sorted(by_entity))


if __name__ == "__main__":
    main([test_seed000_limits_at_arrival])
