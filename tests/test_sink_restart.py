"""The sink's rate history survives a restart: posts made before it count in
the gate's budgets and the destinations' platform limits after it, so a
restart never allows a burst. The broker is given no limits here, so that
only the sink holds them.
"""
import socketserver
import time
from contextlib import closing

from fake_telegram import FakeTelegram
from harness import Pipeline, base_config, check, main, wait_until, write_jsonl

# The stand-in answers as fast as a real API (see test_sink_limits.py).
socketserver.StreamRequestHandler.disable_nagle_algorithm = True
socketserver.TCPServer.request_queue_size = 128

TOKEN = "444:BOT-secret"


def durable_pipeline(bin_dir, name, entities, destination):
    config = base_config(entities, sink={"destinations": [destination]})
    config["storage"] = {"dataDir": "data"}
    p = Pipeline(bin_dir, config, name)
    config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": p.path("in.jsonl"),
                                    "follow": True}]
    if destination["type"] == "jsonl":
        destination["path"] = p.output
    p.write_config(config)
    return p


def mentions(start, n, chat="room"):
    return [{"id": str(i), "chat": chat, "chatKind": "group", "author": "u%d" % i,
             "text": "@e1 question %d" % i} for i in range(start, start + n)]


def restart_sink(p, env=None):
    check(p.procs["sink"].stop() == 0, "the sink did not stop cleanly")
    p.start_sink(env=env)


def test_gate_history_survives_a_restart(bin_dir):
    entities = [{"id": "e1", "responseChance": 0, "rateLimits": {"maxPostsPerMinute": 4}}]
    with durable_pipeline(bin_dir, "gate-restart", entities,
                          {"name": "out", "type": "jsonl"}) as p:
        write_jsonl(p.path("in.jsonl"), mentions(0, 4))
        p.start_broker(sets=['entities=[{"id": "e1", "responseChance": 0}]'])
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 4, 20, "the first 4 replies")
        first = min(r["posted_ms"] for r in p.posted())
        restart_sink(p)
        check("4 posted or doubted pair(s) (4 in the last hour)" in p.log("sink"),
              "the restarted sink did not replay its history")
        write_jsonl(p.path("in.jsonl"), mentions(4, 4), mode="a")
        wait_until(lambda: p.component("sink").get("waiting", 0) >= 4, 20,
                   "the next 4 replies to wait in the gate")
        time.sleep(3.0)
        check(len(p.posted()) == 4, "the restart allowed a burst: %d replies within a minute"
              % len(p.posted()))
        left = (first + 60000) / 1000.0 - time.time()
        print("gate: 4 replies held after the restart; the first may go in %.1f s" % left)


def test_platform_window_survives_a_restart(bin_dir):
    # The group allows 3 posts per 8 s (limits[], for a short test).
    tg = FakeTelegram(limits=[("group", 3, 8.0)])
    tg.add_bot(TOKEN, "parleybot")
    entities = [{"id": "e1", "responseChance": 0}]
    destination = {"name": "tg", "type": "telegram", "source": "*", "url": tg.url,
                   "tokenEnv": "TG_BOT", "platformLimits": False,
                   "limits": [{"scope": "group", "count": 3, "perMs": 8000}]}
    env = {"TG_BOT": TOKEN}
    with closing(tg), durable_pipeline(bin_dir, "platform-restart", entities, destination) as p:
        write_jsonl(p.path("in.jsonl"), mentions(0, 3, chat="-1001"))
        p.start_broker()
        p.start_sink(env=env)
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(tg.sent) >= 3, 20, "the first 3 posts")
        restart_sink(p, env)
        write_jsonl(p.path("in.jsonl"), mentions(3, 3, chat="-1001"), mode="a")
        wait_until(lambda: len(tg.sent) >= 6, 25, "the next 3 posts")
        check(not tg.refused, "the platform refused posts after the restart: %s" % tg.refused)
        at = sorted(s["at"] for s in tg.sent)
        check(at[3] - at[0] >= 8.0, "a post %.1f s after the first three; the window is 8 s"
              % (at[3] - at[0]))
        print("platform: the 4th post came %.2f s after the 1st (window 8 s)" % (at[3] - at[0]))


if __name__ == "__main__":
    main([test_gate_history_survives_a_restart, test_platform_window_survives_a_restart])
