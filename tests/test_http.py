"""A generic HTTP chat API end to end (the seeds' Cloudflare KV shape).

Polling "the last 50 messages" with a bearer token; mentions answered, the
others by responseChance exactly as the (seed, message, entity) draw says
and within statistical bounds; replies POSTed back into the same API and
then never answered (the loop guard); a full page of new messages polled
again at once; bad pages and bad messages logged with their JSON path,
counted and skipped while the good ones are answered once; a 503 retried
and a 400 dead-lettered with the API's answer.
"""
import collections
import hashlib
import math
import time
from contextlib import closing

from fake_kv import FakeKV
from harness import Pipeline, TestFailure, base_config, check, jsonl_input, main, wait_until

SEED = 1234


def draw(seed, msg_key, entity):
    """select_draw: the first 56 bits of SHA-1("seed/key/entity") as a fraction."""
    d = hashlib.sha1(("%d/%s/%s" % (seed, msg_key, entity)).encode()).digest()
    return int.from_bytes(d[:7], "big") / float(1 << 56)


def kv_source(kv, **extra):
    s = {"name": "kv", "type": "http", "url": kv.url + "?limit=50", "tokenEnv": "KV_TOKEN",
         "pollingInterval": 300}
    s.update(extra)
    return s


def start(p, config, env):
    p.write_config(config)
    p.start_broker()
    p.start_sink(env=env)
    p.start_worker()
    p.start_poller(env=env)


def test_kv_poll_answer_post_and_no_loop(bin_dir):
    kv = FakeKV(token="kv-secret-token")
    entities = [{"id": "joker", "name": "Joker", "responseChance": 0},
                {"id": "sage", "name": "Sage", "responseChance": 0.3}]
    msgs = []
    base = int(time.time() * 1000) - 60000
    for i in range(200):
        text = "@joker question %d" % i if i % 4 == 0 else "just chatting %d" % i
        msgs.append(kv.add("user%d" % (i % 7), text, ts=base + i))
    dest = {"name": "back", "type": "http", "source": "kv", "url": kv.url, "tokenEnv": "KV_TOKEN",
            "body": {"username": "{entity_name}", "text": "{text}", "replyTo": "{msg_ref}"}}
    # The first page sees only the newest 50; the rest are "before our time".
    config = base_config(entities, poller={"sources": [kv_source(kv)], "seed": SEED},
                         sink={"destinations": [dest]})
    with closing(kv), Pipeline(bin_dir, config, "kv") as p:
        start(p, config, {"KV_TOKEN": "kv-secret-token"})
        # The first page is the newest 50 when the poller first asks: a message
        # added before that would push the oldest of them out of it.
        wait_until(lambda: kv.gets >= 1, 10, "the poller's first page")
        # Then 150 more arrive while it runs, in small bursts.
        for i in range(200, 350):
            text = "@Joker question %d" % i if i % 4 == 0 else "just chatting %d" % i
            msgs.append(kv.add("user%d" % (i % 7), text))
            if i % 10 == 0:
                time.sleep(0.2)
        seen = msgs[150:]
        want = set()
        for m in seen:
            key = "kv/main/%s" % m["id"]
            if m["text"].lower().startswith("@joker"):
                want.add((m["id"], "Joker"))
            if draw(SEED, key, "sage") < 0.3:
                want.add((m["id"], "Sage"))
        try:
            wait_until(lambda: len(kv.posts) >= len(want), 30, "%d replies" % len(want))
        except TestFailure as e:
            got = set((body["replyTo"], body["username"]) for _, body in kv.posts)
            raise TestFailure("%s: %d posted, %d pages served, missing %s" % (
                e, len(kv.posts), kv.gets, sorted(want - got)[:5]))
        time.sleep(1.5)     # the replies are in the API now: none of them may be answered
        got = collections.Counter((body["replyTo"], body["username"]) for _, body in kv.posts)
        check(set(got) == want and max(got.values()) == 1,
              "wrong replies: missing %s, extra %s" % (sorted(want - set(got))[:5],
                                                       sorted(set(got) - want)[:5]))
        # responseChance 0.3 over 200 messages: 60 expected, sd 6.5; 4 sd bounds.
        sage = sum(1 for _, who in got if who == "Sage")
        check(abs(sage - 60) <= 4 * math.sqrt(200 * 0.3 * 0.7), "Sage answered %d of 200" % sage)
        keys = [k for k, _ in kv.posts]
        check(all(keys) and len(set(keys)) == len(keys), "Idempotency-Key missing or repeated")
        poller = p.component("poller")
        check(poller["source_errors"] == 0, "errors: %s" % poller)
        for key in p.procs:
            check("kv-secret-token" not in p.log(key), "the token appeared in the %s log" % key)


def test_full_page_is_polled_again_at_once(bin_dir):
    kv = FakeKV()
    base = int(time.time() * 1000)
    for i in range(160):
        kv.add("fan%d" % i, "@joker burst %d" % i, ts=base + i)
    # An API that pages by time: a slow interval, yet the burst is read at once. A demo
    # source runs in the same poller meanwhile (several sources at once).
    sources = [kv_source(kv, url=kv.url + "?limit=50&after={since}", tokenEnv="",
                         pollingInterval=5000),
               {"name": "demo", "type": "demo", "ratePerSecond": 50, "mentionRate": 1.0,
                "limit": 40}]
    config = base_config([{"id": "joker", "responseChance": 0}], poller={"sources": sources},
                         sink={"destinations": []})
    with closing(kv), Pipeline(bin_dir, config, "kv-page") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        start(p, config, {})
        wait_until(lambda: len(p.posted()) >= 200, 20, "160 + 40 replies")
        times = kv.get_times[:5]
        check(len(times) >= 4 and times[3] - times[0] < 2.5,
              "four pages (50, 50, 50, 10) were not fetched back to back: %s"
              % [round(t - times[0], 2) for t in times])
        pairs = collections.Counter(r["msg_key"] for r in p.posted())
        check(len(pairs) == 200 and max(pairs.values()) == 1, "not one reply per message")
        sources = collections.Counter(r["source"] for r in p.posted())
        check(sources == {"kv": 160, "demo": 40}, "replies per source: %s" % sources)


def test_bad_pages_and_messages_are_skipped(bin_dir):
    kv = FakeKV()
    now = int(time.time() * 1000)
    mixed = (b'{"messages": ['
             b'{"id": "b0", "username": "a", "text": 5},'
             b'{"id": "b1", "username": "a"},'
             b'{"username": "a", "text": "@joker no id"},'
             b'{"id": "b3", "username": "a", "text": "@joker bad \xff byte"},'
             b'"a string",'
             b'{"id": "g1", "username": "bo", "text": "@joker good one", "timestamp": %d},'
             b'{"id": "b6", "username": "a", "text": "@joker", "timestamp": "yesterday"},'
             b'{"id": ["b7"], "text": "@joker"}'
             b']}' % now)
    kv.raw_pages = [b"<html>502 Bad Gateway</html>", mixed, b'{"messages": "not a list"}',
                    b'{"messages": [' + b'{"id": "x", "text": "' + b"y" * 9000 + b'"}]}', mixed]
    config = base_config([{"id": "joker", "responseChance": 0}],
                         poller={"sources": [kv_source(kv, tokenEnv="", maxResponseBytes=4096)]},
                         sink={"destinations": []})
    with closing(kv), Pipeline(bin_dir, config, "kv-bad") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        start(p, config, {})
        wait_until(lambda: not kv.raw_pages and kv.gets >= 6, 20, "every bad page to be fetched")
        kv.add("cy", "@joker after the storm")
        wait_until(lambda: len(p.posted()) >= 2, 15, "the two good messages answered")
        time.sleep(0.5)
        posted = sorted(r["msg_key"] for r in p.posted())
        check(posted[0] == "kv/main/g1" and len(posted) == 2, "posted: %s" % posted)
        log = p.log("poller")
        for what in ("source kv: response: not JSON (line 1, column 1",
                     "source kv: messages[0].text: expected a string",
                     "source kv: messages[1]: no text",
                     "source kv: messages[2]: no id",
                     "source kv: messages[3].text: invalid UTF-8",
                     "source kv: messages[4]: expected an object, got a string",
                     "source kv: messages[6].timestamp: expected Unix time or an ISO 8601 date",
                     "source kv: messages[7].id: expected a string or an integer",
                     "the message list is not an array",
                     "larger than 4096 bytes"):
            check(what in log, "not logged: %r" % what)
        # The page came twice: a bad message with an id is counted once, the three without a
        # usable id (no id, a string, an array id) cannot be recognised and count again.
        errors = p.component("poller")["source_errors"]
        check(errors == 3 + 7 + 3, "source_errors = %d (want 3 bad pages + 7 + 3 bad messages)"
              % errors)


def test_http_destination_retries_and_dead_letters(bin_dir):
    kv = FakeKV(token="tok")
    kv.post_answers = [(503, {"error": "busy"}), (400, {"error": "text refused"})]
    config = base_config([{"id": "joker", "responseChance": 0}], sink={"destinations": []})
    with closing(kv), Pipeline(bin_dir, config, "kv-dest") as p:
        jsonl_input(p, config, [{"id": "a", "chat": "c", "author": "ana", "text": "@joker one"}])
        config["sink"]["destinations"] = [{"name": "api", "type": "http", "url": kv.url,
                                           "tokenEnv": "KV_TOKEN"}]
        start(p, config, {"KV_TOKEN": "tok"})
        # 503, then 400: the API refuses the reply for good.
        dead = wait_until(lambda: p.ctl("dlq", "list")["items"], 20, "a dead letter")
        check("HTTP 400" in dead[0]["reason"] and "text refused" in dead[0]["reason"],
              "reason: %s" % dead[0]["reason"])
        check(not kv.posts, "posted anyway: %s" % kv.posts)
        # Retried by hand from the DLQ, it posts once, with the default body.
        p.ctl("dlq", "retry", "all")
        wait_until(lambda: kv.posts, 20, "the retried reply")
        key, body = kv.posts[0]
        check(key == "joker/in/c/a", "Idempotency-Key %r" % key)
        check(body["chat"] == "c" and body["replyTo"] == "a" and body["entity"] == "joker",
              "body %s" % body)
        # The API has the post; the sink counts it once the answer is in, and
        # its counters reach parleyctl with its next stats.
        sink = wait_until(lambda: (lambda c: c if c.get("posted") else None)(p.component("sink")),
                          10, "the sink to count the post")
        check(sink["post_retries"] >= 1 and sink["posted"] == 1, "sink: %s" % sink)


if __name__ == "__main__":
    main([test_kv_poll_answer_post_and_no_loop,
          test_full_page_is_polled_again_at_once,
          test_bad_pages_and_messages_are_skipped,
          test_http_destination_retries_and_dead_letters])
