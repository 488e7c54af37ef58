#!/usr/bin/env python3
"""Self-test of the platform stand-ins' arrival records and limits:
fake_telegram.py (Telegram's own limits, 429 retry_after), fake_twitch.py
(msg_ratelimit NOTICE) and fake_kv.py as a rate-limited, slow or failing
HTTP destination. Plain HTTP and IRC clients; no Parley daemon."""
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

from fake_kv import FakeKV
from fake_telegram import TELEGRAM_LIMITS, FakeTelegram
from fake_twitch import FakeTwitch
from harness import TestFailure, check, main, wait_until
from limits_check import check_count, group_by

TOKEN = "123:secret"


def post(url, body, headers=None, timeout=10):
    """(status, headers, JSON body) of a POST."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers=dict({"Content-Type": "application/json"},
                                              **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.load(e)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def send(tg, chat, text="hi", reply=None, token=TOKEN):
    body = {"chat_id": chat, "text": text}
    if reply:
        body["reply_parameters"] = {"message_id": reply}
    return post("%s/bot%s/sendMessage" % (tg.url, token), body)


def test_telegram_records_every_arrival(_bin):
    tg = FakeTelegram()
    tg.add_bot(TOKEN, "jokerbot")
    try:
        before = time.monotonic()
        wall = int(time.time() * 1000)
        check(send(tg, -1001, "hello", reply=7)[0] == 200, "accepted")
        tg.inject.append((429, {"ok": False, "error_code": 429,
                                "parameters": {"retry_after": 3}}))
        check(send(tg, 42, "private")[0] == 429, "injected 429")
        check(send(tg, 42, "")[0] == 400, "empty text")
        after = time.monotonic()
        a = tg.arrivals()
        check(len(a) == 3, "3 arrivals, got %d" % len(a))
        first = a[0]
        check(before <= first["mono"] <= after and abs(first["wall_ms"] - wall) < 5000,
              "times %s" % first)
        check((first["token"], first["bot"], first["chat_id"], first["chat_kind"], first["text"],
               first["reply_to"], first["status"], first["accepted"])
              == (TOKEN, "jokerbot", -1001, "group", "hello", 7, 200, True), "record %s" % first)
        check((a[1]["chat_kind"], a[1]["status"], a[1]["accepted"], a[1]["retry_after"])
              == ("private", 429, False, 3), "injected: %s" % a[1])
        check(a[2]["status"] == 400 and not a[2]["accepted"], "bad text: %s" % a[2])
        check([x["mono"] for x in a] == sorted(x["mono"] for x in a), "not in arrival order")
        check(len(tg.arrivals(accepted=True)) == 1 and len(tg.arrivals(chat_id=42)) == 2,
              "filters")
        # The same over HTTP, for a checker in another process.
        over_http = get_json(tg.url + "/_arrivals")["arrivals"]
        check(over_http == json.loads(json.dumps(a)), "GET /_arrivals differs")
        check(len(get_json(tg.url + "/_arrivals?chat_id=42&accepted=0")["arrivals"]) == 2,
              "HTTP filters")
        # The old API is unchanged.
        check(len(tg.sent) == 1 and tg.sent[0]["reply_to"] == 7, "sent %s" % tg.sent)
    finally:
        tg.close()


def test_telegram_limits_exact_at_arrival(_bin):
    tg = FakeTelegram(telegram_limits=True)
    tg.add_bot(TOKEN, "jokerbot")
    tg.add_bot("456:other", "sagebot")
    try:
        # Private chat: 1 per second; the refusal says how long, in whole seconds.
        check(send(tg, 42)[0] == 200, "first private")
        status, _, body = send(tg, 42)
        check(status == 429 and body["parameters"]["retry_after"] == 1
              and body["description"] == "Too Many Requests: retry after 1", "second: %s" % body)
        check(send(tg, 43)[0] == 200, "another private chat is another window")
        check(send(tg, 42, token="456:other")[0] == 200, "another bot is another window")
        # Group: 20 per minute; the 21st within the minute waits for the first to leave.
        for i in range(20):
            check(send(tg, -100, "g%d" % i)[0] == 200, "group post %d" % i)
        status, _, body = send(tg, -100, "g20")
        first = tg.arrivals(chat_id=-100)[0]["mono"]
        wait = 60.0 - (tg.arrivals(chat_id=-100)[-1]["mono"] - first)
        check(status == 429 and body["parameters"]["retry_after"] == max(1, int(wait + 0.999999)),
              "21st in a group: %s, window frees in %.3f s" % (body, wait))
        refused = tg.arrivals(accepted=False)
        check([r["why"] for r in refused] == ["telegram private: 1 per 1 s",
                                               "telegram group: 20 per 60 s"],
              "reasons %s" % [r["why"] for r in refused])
        check(tg.refused[-1][:2] == (TOKEN, -100), "refused %s" % tg.refused)
    finally:
        tg.close()


def test_telegram_limits_match_the_checker(_bin):
    # A burst to 40 private chats and 3 groups: whatever the timing, every accepted
    # arrival keeps each rule, and every refused one had a full window in its way.
    tg = FakeTelegram(telegram_limits=True)
    tg.add_bot(TOKEN, "jokerbot")
    try:
        for i in range(45):
            send(tg, 1000 + i if i % 4 else -(i % 3) - 1, "m%d" % i)
        acc = tg.arrivals(accepted=True)
        rules = {"all": (30, 1.0), "group": (20, 60.0), "private": (1, 1.0)}
        check(sorted(TELEGRAM_LIMITS) == sorted((k, c, w) for k, (c, w) in rules.items()),
              "the limits are Telegram's: %s" % (TELEGRAM_LIMITS,))
        check_count([a["mono"] for a in acc], 30, 1.0, "per bot")
        for chat, recs in group_by(acc, "chat_id").items():
            count, window = rules[recs[0]["chat_kind"]]
            check_count([r["mono"] for r in recs], count, window, "chat %s" % chat)
        refused = tg.arrivals(accepted=False)
        check(len(acc) + len(refused) == 45, "%d arrivals recorded" % (len(acc) + len(refused)))
        for r in refused:
            scope = r["why"].split()[1].rstrip(":")
            count, window = rules[scope]
            n = sum(1 for a in acc if r["mono"] - window < a["mono"] <= r["mono"]
                    and (scope == "all" or a["chat_id"] == r["chat_id"]))
            check(n >= count and r["retry_after"] >= 1,
                  "refused for %s with %d in its window: %s" % (scope, n, r))
        # Posting one per private chat, only the bot's 30 per second can refuse.
        check(all(r["why"].startswith("telegram all") for r in refused
                  if r["chat_kind"] == "private"), "a private chat's 1/s refused a first post")
    finally:
        tg.close()


class IrcClient:
    def __init__(self, tw, nick, token):
        self.sock = socket.create_connection(("127.0.0.1", tw.port), timeout=5)
        self.buf = b""
        self.lines = []
        for line in ("CAP REQ :twitch.tv/tags twitch.tv/commands", "PASS oauth:" + token,
                     "NICK " + nick, "JOIN #chan"):
            self.send(line)
        self.wait_for(" 366 ")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def wait_for(self, text, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if text in line:
                    del self.lines[:i + 1]
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("no line with %r in %.0f s" % (text, timeout))
            self.sock.settimeout(left)
            self.buf += self.sock.recv(65536)
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                self.lines.append(line.decode())

    def close(self):
        self.sock.close()


def test_twitch_records_and_limits_at_arrival(_bin):
    tw = FakeTwitch(tokens={"bot1": "t1", "mod1": "t2"}, moderators={"mod1"},
                    limit=(3, 1.5), mod_limit=(5, 1.5), slack=0)
    bot = IrcClient(tw, "bot1", "t1")
    mod = IrcClient(tw, "mod1", "t2")
    try:
        start = time.monotonic()
        for i in range(4):
            bot.send("@reply-parent-msg-id=p%d PRIVMSG #chan :line %d" % (i, i))
        for _ in range(3):
            bot.wait_for("USERSTATE #chan")
        notice = bot.wait_for("NOTICE #chan")
        check(notice.startswith("@msg-id=msg_ratelimit"), "notice %r" % notice)
        for i in range(5):
            mod.send("PRIVMSG #chan :mod %d" % i)
        for _ in range(5):
            mod.wait_for("USERSTATE #chan")
        a = tw.arrivals(nick="bot1")
        check(len(a) == 4 and [x["accepted"] for x in a] == [True, True, True, False],
              "bot1 arrivals %s" % a)
        check(a[3]["notice"] == "msg_ratelimit" and a[0]["reply_to"] == "p0"
              and a[0]["channel"] == "chan" and a[0]["text"] == "line 0" and a[0]["id"],
              "records %s" % a)
        check(all(start <= x["mono"] <= time.monotonic() for x in a), "arrival times")
        check(len(tw.arrivals(nick="mod1", accepted=True)) == 5, "the moderator's 5 per 1.5 s")
        # Exactly a window after the first accepted arrival, the account may post again.
        first = a[0]["mono"]
        time.sleep(max(0.0, first + 1.5 - time.monotonic()))   # the scenario's clock, not a wait
        bot.send("PRIVMSG #chan :again")
        bot.wait_for("USERSTATE #chan")
        check(tw.arrivals(nick="bot1")[-1]["accepted"], "refused after the window")
        check(len(tw.posts) == 9 and tw.refused == [("bot1", "chan")], "old API: %s" % tw.refused)
        check_count([x["mono"] for x in tw.arrivals(nick="bot1", accepted=True)], 3, 1.5, "bot1")
    finally:
        bot.close()
        mod.close()
        tw.close()


def test_kv_destination_limits_delay_and_failures(_bin):
    kv = FakeKV(limits=[("user", 2, 1.0)], delay_ms=200)
    try:
        body = {"username": "Joker", "chat": "main", "text": "ha", "replyTo": "m1"}
        start = time.monotonic()
        status, _, answer = post(kv.url, body, {"Idempotency-Key": "joker/m1"})
        took = time.monotonic() - start
        check(status == 201 and answer["ok"], "posted: %s %s" % (status, answer))
        check(took >= 0.19, "the 200 ms delay took %.3f s" % took)
        a = kv.arrivals()[0]
        check((a["username"], a["chat"], a["text"], a["reply_to"], a["key"], a["status"],
               a["accepted"]) == ("Joker", "main", "ha", "m1", "joker/m1", 201, True),
              "record %s" % a)
        check(start <= a["mono"] <= start + took - 0.19, "the arrival was stamped after the delay")
        kv.delay_ms = 0
        check(post(kv.url, dict(body, replyTo="m2"))[0] == 201, "second")
        status, headers, answer = post(kv.url, dict(body, replyTo="m3"))
        check(status == 429 and headers["Retry-After"] == "1" and answer["retryAfter"] == 1,
              "third within the second: %s %s" % (status, dict(headers)))
        check(post(kv.url, dict(body, username="Sage"))[0] == 201, "another user")
        # Injected failures: a status, a reset, a post that lands unanswered.
        kv.fail_next(1, 503, retry_after=2)
        status, headers, _ = post(kv.url, dict(body, username="Zen"))
        check(status == 503 and headers["Retry-After"] == "2", "injected 503: %s" % status)
        for injected, lands in (("reset", False), ("posted-reset", True)):
            kv.post_answers.append(injected)
            n = len(kv.posts)
            try:
                post(kv.url, dict(body, username="Rebel", text=injected))
                raise TestFailure("%s was answered" % injected)
            except (http.client.RemoteDisconnected, ConnectionResetError, urllib.error.URLError):
                pass
            check(len(kv.posts) == n + lands, "%s: posts %d -> %d" % (injected, n, len(kv.posts)))
        kv.post_answers.append("hang")
        try:
            post(kv.url, dict(body, username="Poet"), timeout=0.5)
            raise TestFailure("hang was answered")
        except (TimeoutError, socket.timeout, urllib.error.URLError):
            pass
        statuses = [(x["username"], x["status"], x["accepted"]) for x in kv.arrivals()]
        check(statuses == [("Joker", 201, True), ("Joker", 201, True), ("Joker", 429, False),
                           ("Sage", 201, True), ("Zen", 503, False), ("Rebel", "reset", False),
                           ("Rebel", "posted-reset", True), ("Poet", "hang", False)],
              "arrivals %s" % statuses)
        over_http = get_json(kv.url.replace("/messages", "/_arrivals"))["arrivals"]
        check(len(over_http) == 8 and over_http[2]["retry_after"] == 1, "GET /_arrivals")
        # The replies are messages of the API, as before.
        wait_until(lambda: len(get_json(kv.url)["messages"]) == 4, 5, "4 replies as messages")
    finally:
        kv.close()


def test_seed000_fixture(bin_dir):
    # Parley reads the fixture; its numbers are the seed's, compressed 10x.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "seed000.json")
    out = subprocess.run([os.path.join(bin_dir, "tools", "parleyctl"), "config", "check", path],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 0 and "10 entities" in out.stdout,
          "config check: %s %s" % (out.stdout, out.stderr))
    with open(path) as f:
        config = json.load(f)
    limits = {e["id"]: e["rateLimits"] for e in config["entities"]}
    check(limits["philosopher"] == {"minSecondsBetweenPosts": 4.5, "maxPostsPerMinute": 10,
                                    "maxPostsPerHour": 200}, "philosopher %s" % limits)
    per_minute = sum(r["maxPostsPerMinute"] for r in limits.values())
    # The seed's list sums to 13 per minute (its text says 14).
    check(per_minute == 130, "the seed's 13 per minute, x10: %d" % per_minute)
    check(config["botSettings"]["minSecondsBetweenAnyPost"] == 0.5, "global gap")


if __name__ == "__main__":
    main([test_telegram_records_every_arrival,
          test_telegram_limits_exact_at_arrival,
          test_telegram_limits_match_the_checker,
          test_twitch_records_and_limits_at_arrival,
          test_kv_destination_limits_delay_and_failures,
          test_seed000_fixture])
