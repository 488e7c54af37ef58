"""Telegram end to end: the real daemons against a local Bot API.

Who answers (mentions by text and by Telegram's entities with UTF-16
offsets, /command@bot, replies to a bot's message, private chats, never a
bot's message), getUpdates offsets confirmed only after the messages are
handed over and each update read once, a burst within the per-group limit
at the server with a 429 honoured, long replies split, bad updates skipped
and counted, and a second reader reported as a 409 conflict.
"""
import collections
import json
from contextlib import closing

from fake_telegram import FakeTelegram, mention_entities, utf16_len
from harness import Pipeline, base_config, check, main, wait_until

READER, JOKER = "111:READER-secret", "222:JOKER-secret"
ENV_POLLER = {"TG_READER": READER}
ENV_SINK = {"TG_READER": READER, "TG_JOKER": JOKER}
ENTITIES = [
    {"id": "joker", "name": "Joker", "aliases": ["jokerbot"], "responseChance": 0,
     "templates": ["{author}: ha!"]},
    {"id": "sage", "name": "Sage", "aliases": ["parleybot"], "responseChance": 0,
     "templates": ["{author}, patience."]},
]
GROUP, PRIVATE = -1001, 777


def source(tg):
    return {"name": "tg", "type": "telegram", "url": tg.url, "tokenEnv": "TG_READER",
            "longPollSeconds": 2}


def destination(tg, **extra):
    d = {"name": "tg", "type": "telegram", "source": "tg", "url": tg.url, "tokenEnv": "TG_READER",
         "accounts": [{"entity": "joker", "tokenEnv": "TG_JOKER"}]}
    d.update(extra)
    return d


def pipeline(name, bin_dir, tg, entities=ENTITIES, **dest):
    """The pipeline reading and writing through `tg`; start(p) starts it."""
    tg.add_bot(READER, "parleybot")
    tg.add_bot(JOKER, "jokerbot")
    config = base_config(entities, poller={"sources": [source(tg)]},
                         sink={"destinations": [destination(tg, **dest)]})
    p = Pipeline(bin_dir, config, name)
    p.write_config(config)
    return p


def start(p):
    p.start_broker()
    p.start_sink(env=ENV_SINK)
    p.start_worker()
    p.start_poller(env=ENV_POLLER)


def no_token_in_logs(p):
    for key in p.procs:
        log = p.log(key)
        check(READER not in log and JOKER not in log and "secret" not in log,
              "a bot token appeared in the %s log" % key)


def test_who_answers_and_offsets(bin_dir):
    tg = FakeTelegram()
    with closing(tg), pipeline("tg-who", bin_dir, tg) as p:
        start(p)
        want = []       # (bot, chat, message_id answered)
        text = "\U0001F600\U0001F600 @jokerbot what's up"
        m = tg.user_message(READER, GROUP, text, entities=mention_entities(text, ["jokerbot"]))
        want.append(("jokerbot", GROUP, m["message_id"]))
        wait_until(lambda: tg.sent_to(GROUP), 15, "the joker's first reply")
        joker_reply = tg.sent_to(GROUP)[0]["message"]
        # Only Telegram's entities name the bot here: no "@name" in the text.
        m = tg.user_message(READER, GROUP, "Joker, tell me more", entities=[
            {"type": "text_mention", "offset": 0, "length": 5,
             "user": {"id": 4242, "is_bot": True, "first_name": "Joker", "username": "jokerbot"}}])
        want.append(("jokerbot", GROUP, m["message_id"]))
        m = tg.user_message(READER, GROUP, "/ask@parleybot why?", entities=[
            {"type": "bot_command", "offset": 0, "length": utf16_len("/ask@parleybot")}])
        want.append(("parleybot", GROUP, m["message_id"]))
        m = tg.user_message(READER, GROUP, "haha, but why?", reply_to=joker_reply)
        want.append(("jokerbot", GROUP, m["message_id"]))
        m = tg.user_message(READER, PRIVATE, "@sage hello from a private chat", user="bo",
                            user_id=777)
        want.append(("parleybot", PRIVATE, m["message_id"]))
        caption = "\u00e9t\u00e9 @jokerbot look"
        tg.raw_update(READER, json.dumps({"message": {
            "message_id": 90, "from": {"id": 5, "is_bot": False, "first_name": "Cy"},
            "chat": {"id": GROUP, "type": "supergroup"}, "date": 1, "caption": caption,
            "caption_entities": mention_entities(caption, ["jokerbot"]),
            "photo": [{"file_id": "x"}]}})[1:-1].encode())
        want.append(("jokerbot", GROUP, 90))
        # Nobody answers these: no mention, another bot, a sticker, an edit.
        tg.user_message(READER, GROUP, "nice weather today")
        tg.user_message(READER, GROUP, "@jokerbot @sage ping", user="otherbot", is_bot=True)
        tg.raw_update(READER, b'"message":{"message_id":91,"chat":{"id":-1001,"type":"group"},'
                              b'"date":1,"sticker":{"file_id":"s"}}')
        tg.raw_update(READER, b'"edited_message":{"message_id":1,"chat":{"id":-1001},"text":"@sage"}')
        last = tg.user_message(READER, GROUP, "@Sage last one")
        want.append(("parleybot", GROUP, last["message_id"]))
        wait_until(lambda: len(tg.sent) >= len(want), 20, "%d replies" % len(want))
        wait_until(lambda: p.component("poller").get("messages", 0) >= 9, 10,
                   "the poller to read every message")
        got = collections.Counter((s["bot"], s["chat_id"], s["reply_to"]) for s in tg.sent)
        check(sorted(got) == sorted(want) and max(got.values()) == 1,
              "replies %s, wanted %s" % (sorted(got.items()), sorted(want)))
        bot = tg.bots[READER]
        # Every update read once; offsets only grow; all confirmed once handed over.
        check(max(bot.delivered.values()) == 1, "an update was read twice: %s" % bot.delivered)
        check(bot.offsets == sorted(bot.offsets), "offsets went back: %s" % bot.offsets)
        wait_until(lambda: bot.confirmed == bot.next_update, 10, "the last update to be confirmed")
        check(p.component("poller").get("source_errors", 1) == 0, "errors counted")
        no_token_in_logs(p)
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def test_burst_within_limits_and_429(bin_dir):
    # The server allows 8 per 2 s in a group (a short window for a short test) and answers
    # the first sendMessage with a 429; the sink holds the same rule.
    tg = FakeTelegram(limits=[("all", 30, 1.0), ("group", 8, 2.0)])
    tg.inject.append((429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 1},
                            "description": "Too Many Requests: retry after 1"}))
    with closing(tg), pipeline("tg-burst", bin_dir, tg,
                               limits=[{"scope": "group", "count": 8, "perMs": 2000}]) as p:
        start(p)
        ids = []
        for i in range(30):
            who = "jokerbot" if i % 2 else "Sage"
            ids.append(tg.user_message(READER, GROUP, "@%s number %d" % (who, i),
                                       user="u%d" % i)["message_id"])
        wait_until(lambda: len(tg.sent) >= 30, 40, "30 replies")
        got = collections.Counter(s["reply_to"] for s in tg.sent)
        check(sorted(got) == sorted(ids) and max(got.values()) == 1, "not one reply each: %s" % got)
        check(not tg.refused, "the server's limit was passed: %s" % tg.refused[:3])
        sink = wait_until(lambda: (lambda v: v if v.get("post_retries", 0) >= 1 else None)(
            p.component("sink")), 10, "the 429 to be counted as a retry")
        check(sink["failed"] == 0 and sink["in_doubt"] == 0, "sink: %s" % sink)
        check("429" in p.log("sink"), "the 429 was not logged")
        no_token_in_logs(p)


def test_bad_updates_long_replies_and_conflict(bin_dir):
    tg = FakeTelegram()
    long_reply = " ".join("word%d" % i for i in range(900))     # about 6000 characters
    entities = ENTITIES + [{"id": "poet", "responseChance": 0, "templates": [long_reply]}]
    with closing(tg), pipeline("tg-bad", bin_dir, tg, entities=entities) as p:
        start(p)
        tg.raw_update(READER, b'"message":{"message_id":"seven","chat":{"id":-1001},"text":"@sage"}')
        tg.raw_update(READER, b'"message":{"message_id":8,"chat":{"id":-1001},"date":1,'
                              b'"text":"@sage bad \xff bytes"}')
        tg.raw_update(READER, b'"message":{"message_id":9,"chat":{"title":"no id"},"text":"@sage"}')
        m = tg.user_message(READER, GROUP, "@poet write me something long")
        wait_until(lambda: len(tg.sent) >= 2, 20, "the long reply in two parts")
        parts = tg.sent_to(GROUP)
        check(len(parts) == 2 and all(s["reply_to"] == m["message_id"] for s in parts),
              "expected 2 parts replying to %s, got %s" % (m["message_id"], [(s["reply_to"], len(s["text"])) for s in parts]))
        check(all(utf16_len(s["text"]) <= 4096 for s in parts), "a part is over 4096")
        check(" ".join(s["text"] for s in parts) == long_reply, "the parts do not make the reply")
        wait_until(lambda: p.component("poller").get("source_errors", 0) >= 3, 10,
                   "three bad updates counted")
        log = p.log("poller")
        for what in ("result[0].message: message_id is missing or not an integer",
                     "text is not valid UTF-8", "chat.id is missing or not an integer"):
            check(what in log, "not logged: %r" % what)
        # A second reader of the same bot: Telegram's 409, reported as such.
        p.start_poller("second", env=ENV_POLLER)
        wait_until(lambda: "409 Conflict" in p.log("poller") + p.log("second"), 20,
                   "the conflict to be reported")
        check("only one reader per bot token" in p.log("poller") + p.log("second"),
              "the 409 was not explained")
        no_token_in_logs(p)


if __name__ == "__main__":
    main([test_who_answers_and_offsets,
          test_burst_within_limits_and_429,
          test_bad_updates_long_replies_and_conflict])
