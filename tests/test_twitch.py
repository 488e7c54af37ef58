"""Twitch end to end: the real daemons against a local Twitch IRC server.

The seed's raid (50+ mentions in two seconds) gets exactly one reply per
mention, from the right bot, as a reply to the right message; bots do not
answer each other; the per-account limit holds at the server; broken lines,
a dropped connection and a refused login do not stop anything.
"""
import collections
import time
from contextlib import closing

from fake_twitch import FakeTwitch
from harness import Pipeline, base_config, check, main, wait_until

TOKENS = {"reader": "rtok", "stickyman1776": "stok", "genejacqueman": "gtok"}
ENV_POLLER = {"TW_READER": "rtok"}
ENV_SINK = {"TW_STICKY": "stok", "TW_GENE": "gtok"}
ENTITIES = [
    {"id": "sticky", "name": "stickyman1776", "responseChance": 0,
     "templates": ["@{author} thanks for the raid!"]},
    {"id": "gene", "name": "geneJacqueman", "responseChance": 0,
     "templates": ["@{author} welcome in!"]},
]


def source(tw, **extra):
    s = {"name": "tw", "type": "twitch", "url": tw.url, "nick": "reader", "tokenEnv": "TW_READER",
         "channels": ["#Stream1", "stream2"]}
    s.update(extra)
    return s


def destination(tw, **extra):
    d = {"name": "tw", "type": "twitch", "source": "tw", "url": tw.url,
         "accounts": [{"entity": "sticky", "nick": "stickyman1776", "tokenEnv": "TW_STICKY"},
                      {"entity": "gene", "nick": "genejacqueman", "tokenEnv": "TW_GENE"}]}
    d.update(extra)
    return d


def start(p, tw, config):
    p.write_config(config)
    p.start_broker()
    p.start_sink(env=ENV_SINK)
    p.start_worker()
    p.start_poller(env=ENV_POLLER)
    wait_until(lambda: tw.joined("reader", "stream1") and tw.joined("reader", "stream2"), 15,
               "the poller to join both channels")
    wait_until(lambda: {"stickyman1776", "genejacqueman"} <= set(tw.logins), 15,
               "both bot accounts to log in")


def test_raid_every_mention_answered_once(bin_dir):
    tw = FakeTwitch(tokens=TOKENS, moderators={"stickyman1776", "genejacqueman"})
    config = base_config(ENTITIES, poller={"sources": [source(tw)]},
                         sink={"destinations": [destination(tw, moderator=True)]})
    with closing(tw), Pipeline(bin_dir, config, "tw-raid") as p:
        start(p, tw, config)
        expected = {}      # message id -> set of bots that must answer it
        start_at = time.monotonic()
        for i in range(60):
            channel = "stream1" if i % 3 else "stream2"
            viewer = "viewer%d" % i
            if i % 10 == 9:
                text, who = "@geneJacqueman @STICKYMAN1776 debate this!", {"stickyman1776",
                                                                         "genejacqueman"}
            elif i % 2:
                text, who = "@stickyman1776 love your stream #%d" % i, {"stickyman1776"}
            else:
                text, who = "first time here @geneJacqueman (%d)" % i, {"genejacqueman"}
            expected[tw.say(channel, viewer, text)] = (channel, who)
            tw.say(channel, viewer, "PogChamp %d" % i)     # no mention: nobody answers
            time.sleep(max(0, start_at + (i + 1) * 2.0 / 60 - time.monotonic()))
        raid_seconds = time.monotonic() - start_at
        check(raid_seconds < 2.5, "the raid took %.1f s to send" % raid_seconds)
        want = sum(len(w) for _, w in expected.values())
        wait_until(lambda: len(tw.posts) >= want, 30, "%d replies" % want)
        time.sleep(1.5)     # room for a wrong extra reply (a loop, a double) to show up
        posts = list(tw.posts)
        check(len(posts) == want, "expected %d replies, got %d" % (want, len(posts)))
        got = collections.Counter((x["reply_to"], x["nick"]) for x in posts)
        for msg_id, (channel, who) in expected.items():
            for bot in who:
                check(got[(msg_id, bot)] == 1, "%s answered %s %d times"
                      % (bot, msg_id, got[(msg_id, bot)]))
        by_id = {x["reply_to"]: expected[x["reply_to"]][0] for x in posts}
        check(all(x["channel"] == by_id[x["reply_to"]] for x in posts), "a reply in the wrong channel")
        check(not tw.refused, "the server refused %d messages for the rate limit" % len(tw.refused))
        broker = p.broker_stats()
        check(broker["dead"] == 0 and broker["dlq"] == 0, "dead letters: %s" % broker)
        # The bots' replies reached the reading connection and were left alone (loop guard).
        # 60 plain lines and every bot reply were read, and none of them answered.
        wait_until(lambda: p.component("poller").get("unanswered", 0) >= 60 + want, 10,
                   "the poller to read the bots' replies and leave them")
        poller = p.component("poller")
        check(poller["selected"] == len(expected), "selected %s" % poller)
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def test_account_limit_held_and_ping(bin_dir):
    # A normal (not moderator) account; a tighter window than Twitch's so the test is short.
    tw = FakeTwitch(tokens=TOKENS, limit=(4, 2.0))
    dest = destination(tw, accounts=[], nick="stickyman1776", tokenEnv="TW_STICKY",
                       limits=[{"scope": "all", "count": 4, "perMs": 2000}])
    config = base_config(ENTITIES[:1], poller={"sources": [source(tw)]},
                         sink={"destinations": [dest]})
    with closing(tw), Pipeline(bin_dir, config, "tw-limit") as p:
        p.write_config(config)
        p.start_broker()
        p.start_sink(env=ENV_SINK)
        p.start_worker()
        p.start_poller(env=ENV_POLLER)
        wait_until(lambda: tw.joined("reader", "stream1") and "stickyman1776" in tw.logins, 15,
                   "the poller and the bot to connect")
        tw.ping_all()
        wait_until(lambda: {"reader", "stickyman1776"} <= set(tw.pongs), 10, "PONG from both")
        ids = [tw.say("stream1", "fan%d" % i, "@stickyman1776 question %d" % i) for i in range(10)]
        wait_until(lambda: len(tw.posts) >= 10, 30, "10 replies")
        posts = list(tw.posts)
        check(sorted(x["reply_to"] for x in posts) == sorted(ids), "not one reply per mention")
        check(not tw.refused, "limit passed at the server %d times" % len(tw.refused))
        times = [x["at"] for x in posts]
        check(times[-1] - times[0] >= 4.0 - 0.3,
              "10 posts at 4 per 2 s took only %.2f s" % (times[-1] - times[0]))


def test_bad_lines_dropped_connections_and_bad_login(bin_dir):
    tw = FakeTwitch(tokens=TOKENS, moderators={"stickyman1776"})
    config = base_config(ENTITIES[:1], poller={"sources": [source(tw)]},
                         sink={"destinations": [destination(tw, accounts=destination(tw)["accounts"][:1])]})
    with closing(tw), Pipeline(bin_dir, config, "tw-bad") as p:
        p.write_config(config)
        p.start_broker()
        p.start_sink(env=ENV_SINK)
        p.start_worker()
        p.start_poller(env=ENV_POLLER)
        wait_until(lambda: tw.joined("reader", "stream1") and "stickyman1776" in tw.logins, 15,
                   "the poller and the bot to connect")
        tw.raw("stream1", b"@id=x;display-name=a :a!a@a PRIVMSG #stream1 :bad \xff\xfe bytes")
        tw.raw("stream1", b"@tags-without-a-command")
        tw.raw("stream1", b"@display-name=a :a!a@a PRIVMSG #stream1 :@stickyman1776 no id tag")
        tw.raw("stream1", b"@id=y :a!a@a PRIVMSG #stream1 :" + b"z" * 70000)
        first = tw.say("stream1", "fan", "@stickyman1776 still there?")
        wait_until(lambda: [x for x in tw.posts if x["reply_to"] == first], 15,
                   "a reply after the bad lines")
        errors = wait_until(lambda: p.component("poller").get("source_errors", 0) >= 4, 10,
                            "source_errors to count the four bad lines")
        log = p.log("poller")
        check("source tw: line" in log and "invalid UTF-8" in log,
              "the bad line was not reported with its source and line:\n%s" % log[-2000:])
        # The reader's connection drops: it reconnects, joins again, reads on.
        tw.kick("reader")
        wait_until(lambda: tw.logins.count("reader") >= 2 and tw.joined("reader", "stream1"), 15,
                   "the poller to reconnect")
        second = tw.say("stream1", "fan", "@stickyman1776 and now?")
        wait_until(lambda: [x for x in tw.posts if x["reply_to"] == second], 15, "a reply after reconnecting")
        # The bot's connection drops while idle: the next reply goes out on a new one.
        tw.kick("stickyman1776")
        wait_until(lambda: tw.logins.count("stickyman1776") >= 2, 15, "the bot to reconnect")
        third = tw.say("stream1", "fan", "@stickyman1776 one more")
        wait_until(lambda: [x for x in tw.posts if x["reply_to"] == third], 15,
                   "a reply on the bot's new connection")
        check(len(tw.posts) == 3, "expected 3 replies, got %d" % len(tw.posts))
        # A poller with a wrong token says so.
        p.start_poller("wrong", env={"TW_READER": "nope"})
        wait_until(lambda: "refused the login" in p.log("wrong"), 15, "the refused login to be logged")
        check("nope" not in p.log("wrong"), "the token appeared in the log")
        check(errors, "no errors counted")


if __name__ == "__main__":
    main([test_raid_every_mention_answered_once,
          test_account_limit_held_and_ping,
          test_bad_lines_dropped_connections_and_bad_login])
