"""The broker's scheduling rules, end to end through the real daemons."""
import collections
import time

from harness import Pipeline, base_config, check, jsonl_input, main, wait_until, TestFailure


def ent(id, **settings):
    """An entity that answers only when addressed, unless told otherwise."""
    return dict({"id": id, "responseChance": 0}, **settings)


def mention(i, entity, chat, kind="group"):
    return {"id": "m%d" % i, "chat": chat, "chatKind": kind, "author": "u%d" % i,
            "text": "@%s hello %d" % (entity, i)}


def run(bin_dir, name, config, msgs, body, workers=1, worker_sets=()):
    """Starts a pipeline reading `msgs`, runs `body(p)`, and always cleans up."""
    with Pipeline(bin_dir, config, name) as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        jsonl_input(p, config, msgs)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        for w in range(workers):
            p.start_worker("w%d" % w, sets=worker_sets)
        p.start_poller()
        body(p)
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def count_by(posted, key):
    return collections.Counter(r[key] for r in posted)


def test_entity_and_chat_limits_without_head_of_line_blocking(bin_dir):
    config = base_config([ent("a", rateLimits={"maxPostsPerMinute": 3}),
                          ent("b"),
                          ent("g", rateLimits={"minSecondsBetweenPosts": 0.5})],
                         sink={"destinations": []})
    config["chatLimits"] = [{"source": "in", "chatKind": "group", "maxPostsPerMinute": 5}]
    msgs = ([mention(i, "a", "x") for i in range(0, 10)]
            + [mention(i, "b", "x") for i in range(10, 20)]
            + [mention(i, "b", "y", "private") for i in range(20, 30)]
            + [mention(i, "g", "z", "private") for i in range(30, 34)])

    def body(p):
        # y is a private chat (no rule): all 10 of b's replies there flow,
        # while chat x is held at 5 a minute and entity a at 3 a minute.
        wait_until(lambda: count_by(p.posted(), "chat")["in/y"] == 10, 20, "10 replies in chat y")
        wait_until(lambda: count_by(p.posted(), "chat")["in/z"] == 4, 20, "4 replies in chat z")
        time.sleep(1.0)     # let anything that should not happen, happen
        posted = p.posted()
        chats = count_by(posted, "chat")
        by_entity = count_by([r for r in posted if r["chat"] == "in/x"], "entity")
        check(chats["in/x"] == 5, "chat x got %d replies, its limit is 5/min" % chats["in/x"])
        check(by_entity["a"] <= 3, "entity a got %d replies, its limit is 3/min" % by_entity["a"])
        times = sorted(r["posted_ms"] for r in posted if r["entity"] == "g")
        gaps = [b - a for a, b in zip(times, times[1:])]
        check(min(gaps) >= 450, "entity g posted %d ms apart; its gap is 500 ms" % min(gaps))
        stats = p.broker_stats()
        check(stats["queued"] == 15, "expected the 15 held jobs queued, got %d" % stats["queued"])

    run(bin_dir, "limits", config, msgs, body)


def test_concurrency_caps_and_response_delays(bin_dir):
    config = base_config([ent("a"), ent("b", maxInFlight=1)], sink={"destinations": []})
    config["queueSettings"].update({
        "globalMaxInFlight": 2,
        "responseDelays": {"urgent": {"minMs": 300, "maxMs": 400}, "normal": {"minMs": 0, "maxMs": 0},
                           "low": {"minMs": 0, "maxMs": 0}}})
    msgs = [mention(i, "a" if i % 2 else "b", "x") for i in range(12)]
    now = int(time.time() * 1000)
    for m in msgs:
        m["ts"] = now
    peak = {"global": 0}

    def body(p):
        def sample():
            s = p.broker_stats()
            peak["global"] = max(peak["global"], s["in_flight"])
            return len(p.posted()) >= 12
        wait_until(sample, 30, "12 replies", interval=0.05)
        posted = p.posted()
        check(peak["global"] <= 2, "in flight reached %d with globalMaxInFlight 2" % peak["global"])
        # 12 jobs, 2 at a time, 250 ms each: at least 6 rounds.
        span = max(r["posted_ms"] for r in posted) - min(r["posted_ms"] for r in posted)
        check(span >= 5 * 250 - 100, "12 jobs at 2 x 250 ms took only %d ms" % span)
        # b never had two jobs at once: its replies are at least 250 ms apart.
        bt = sorted(r["posted_ms"] for r in posted if r["entity"] == "b")
        check(min(y - x for x, y in zip(bt, bt[1:])) >= 200, "entity b ran two jobs at once")
        # Mentions wait their natural delay (300-400 ms) after the message.
        delay = min(r["posted_ms"] - r["created_ms"] for r in posted)
        check(delay >= 300, "a reply came %d ms after its message; the delay is 300-400 ms" % delay)

    run(bin_dir, "caps", config, msgs, body, worker_sets=["worker.templateLatencyMs=250"])


def test_pause_resume_and_expiry(bin_dir):
    config = base_config([ent("a"), ent("b", maxAgeSeconds=2)], sink={"destinations": []})
    msgs = [mention(i, "a" if i < 5 else "b", "x") for i in range(10)]
    now = int(time.time() * 1000) + 2000     # messages "written" now, once paused
    for m in msgs:
        m["ts"] = now

    def body(p):
        # The messages are stamped 2 s ahead so nothing dispatches before we pause.
        p.ctl("pause", "all")
        wait_until(lambda: p.broker_stats()["queued"] == 10, 20, "10 queued jobs")
        wait_until(lambda: p.ctl("entities")[1]["queued"] == 5, 5, "b's 5 jobs queued")
        check(len(p.posted()) == 0, "posted while paused")
        # b's jobs expire (2 s after their message) while everything is paused.
        wait_until(lambda: p.broker_stats()["expired"] == 5, 10, "b's 5 jobs to expire")
        p.ctl("resume", "all")
        wait_until(lambda: len(p.posted()) == 5, 10, "a's 5 replies after resume")
        check(set(count_by(p.posted(), "entity")) == {"a"}, "an expired reply was posted")
        # Pause one entity only.
        check(p.ctl("pause", "a")["paused"] is True, "pause a")
        check(p.ctl("entities")[0]["paused"] is True, "entities does not show a paused")
        try:
            p.ctl("pause", "nobody")
            raise TestFailure("pausing an unknown entity succeeded")
        except TestFailure as e:
            check("no entity" in str(e), str(e))

    run(bin_dir, "pause", config, msgs, body)


def test_full_queue_refuses_and_loses_nothing(bin_dir):
    """Past maxQueueSize the broker refuses new jobs as busy; the poller keeps
    them, backs off and submits them again: nothing is dropped or lost."""
    config = base_config([ent("a", responseChance=1)], sink={"destinations": []})
    config["queueSettings"]["maxQueueSize"] = 6
    # 4 mentions (urgent) and 26 plain messages (normal); room for 6 at a time.
    msgs = [mention(i, "a", "x") for i in range(4)]
    msgs += [{"id": "p%d" % i, "chat": "x", "author": "u", "text": "plain %d" % i} for i in range(26)]

    def body(p):
        wait_until(lambda: p.broker_stats()["busy"] >= 1, 20, "the broker to refuse a job as busy")
        s = p.broker_stats()
        check(s["queued"] <= 6, "queued %d past maxQueueSize 6" % s["queued"])
        check(s["accepted"] == 6, "accepted %d with room for 6" % s["accepted"])
        p.start_worker("late")
        wait_until(lambda: len(p.posted()) == 30, 30, "all 30 replies")
        s = p.broker_stats()
        check(s["accepted"] == 30 and s["rejected"] == 0, "accepted %d rejected %d"
              % (s["accepted"], s["rejected"]))
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(max(pairs.values()) == 1, "a reply was posted twice")

    run(bin_dir, "qlimit", config, msgs, body, workers=0)


def test_resubmission_is_not_duplicated(bin_dir):
    """Two pollers read the same file: the broker keeps one job per (message, entity)."""
    config = base_config([ent("a")], sink={"destinations": []})
    msgs = [mention(i, "a", "x") for i in range(200)]

    def body(p):
        p.start_poller("poller2")
        wait_until(lambda: len(p.posted()) >= 200, 30, "200 replies")
        wait_until(lambda: p.broker_stats()["submitted"] == 400, 10, "both pollers' submissions")
        s = p.broker_stats()
        check(s["accepted"] == 200 and s["duplicates"] == 200,
              "accepted %d duplicates %d" % (s["accepted"], s["duplicates"]))
        time.sleep(0.5)
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(len(pairs) == 200 and max(pairs.values()) == 1, "a reply was posted twice")

    run(bin_dir, "dedupe", config, msgs, body)


def test_failed_jobs_are_dead_lettered_and_can_be_retried(bin_dir):
    """A worker that cannot do a job (it does not know the entity) fails it for good."""
    config = base_config([ent("a"), ent("ghost")], sink={"destinations": []})
    msgs = [mention(i, "ghost" if i < 3 else "a", "x") for i in range(6)]

    def body(p):
        wait_until(lambda: len(p.posted()) == 3, 20, "a's 3 replies")
        wait_until(lambda: p.broker_stats()["dlq"] == 3, 10, "3 dead letters")
        dead = p.ctl("dlq", "list")
        check(dead["total"] == 3, "dlq list: %s" % dead)
        check(all("unknown entity \"ghost\"" in d["reason"] for d in dead["items"]),
              "reason: %s" % dead["items"][0]["reason"])
        check(all(d["entity"] == "ghost" and d["attempts"] == 1 for d in dead["items"]), str(dead))
        # Retrying sends them to the same fate: back in the dead-letter queue.
        retried = p.ctl("dlq", "retry", "all")
        check(retried.get("retried") == 3, "dlq retry: %s" % retried)
        wait_until(lambda: p.ctl("dlq", "list")["total"] == 3, 10, "the retried jobs to fail again")
        first = p.ctl("dlq", "list")["items"][0]["id"]
        check(p.ctl("dlq", "purge", str(first))["purged"] == 1, "dlq purge one")
        check(p.ctl("dlq", "purge", "all")["purged"] == 2, "dlq purge all")
        check(p.broker_stats()["dlq"] == 0, "dead letters left after purge")

    # The worker's own configuration lacks "ghost".
    run(bin_dir, "dlq", config, msgs, body,
        worker_sets=['entities=[{"id":"a"}]'])


if __name__ == "__main__":
    main([test_entity_and_chat_limits_without_head_of_line_blocking,
          test_concurrency_caps_and_response_delays,
          test_pause_resume_and_expiry,
          test_full_queue_refuses_and_loses_nothing,
          test_resubmission_is_not_duplicated,
          test_failed_jobs_are_dead_lettered_and_can_be_retried])
