"""A local KV-style chat API for tests, in the shape of the seeds' Cloudflare
KV worker: GET /messages returns the latest messages, POST /messages adds one.

    kv = FakeKV(token="s3cret"); kv.add("ana", "@Joker hi")

GET /messages?limit=N answers {"messages": [...]} with the newest N, newest
first ("fetch the last 50 messages"); with after=T it answers the oldest N
newer than T (Unix ms), oldest first, which lets a poller page through a
burst. Each message is {"id", "timestamp", "username", "text"} plus
"replyTo" and "message-type": "AI" for posted replies. A bearer token is
required when one is set. Tests can queue raw bodies or statuses for the
next GETs and POSTs (bad input, outages) and read every POST with its
Idempotency-Key.

As a destination it also stands in for a rate-limited chat API:

    kv = FakeKV(limits=[("user", 2, 60.0), ("all", 10, 1.0)], delay_ms=80)

records every POST the moment it is read (kv.arrivals(), or GET /_arrivals
as JSON), holds `limits` at arrival on limits_check's half-open sliding
windows over the accepted posts (scope "all", "user": per username or
entity, "chat": per chat) and answers 429 with Retry-After (whole seconds,
rounded up) past one; waits delay_ms (changeable at any time) before each
answer to a POST, as a distant API would; and post_answers may hold, besides
(status, body[, headers]) answered instead of posting, "reset" (the
connection closed without an answer, nothing posted), "posted-reset" (the
post is made, then the connection closes unanswered: a client cannot know)
and "hang" (no answer until the server closes or 60 s pass).
"""
import json
import socket
import threading
import time
from urllib.parse import parse_qs, urlparse

from harness import answer_json, serve_http
from limits_check import SlidingWindow, retry_after_seconds


class FakeKV:
    def __init__(self, token=None, limits=(), delay_ms=0):
        """limits: (scope, count, seconds), scope all|user|chat; delay_ms: before each POST's answer."""
        self.token = token
        self.limits = list(limits)
        self.delay_ms = delay_ms
        self.windows = {}          # (scope, key) -> SlidingWindow
        self.arrival_log = []      # every POST (see arrivals())
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.messages = []
        self.next_id = 1
        self.gets = 0
        self.get_times = []
        self.posts = []            # (idempotency key, body) of accepted POSTs
        self.raw_pages = []        # bytes answered to the next GETs instead of the list
        self.post_answers = []     # (status, body) answered to the next POSTs
        self.server = serve_http(self._get, self._post)
        self.url = "http://127.0.0.1:%d/messages" % self.server.server_address[1]

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def arrivals(self, username=None, chat=None, accepted=None):
        """Every POST as it arrived, oldest first, optionally filtered.

        Each is {"mono", "wall_ms", "key" (Idempotency-Key), "username",
        "entity", "chat", "text", "reply_to", "status", "accepted",
        "retry_after", "why", "body"}; "mono" is time.monotonic() when the
        request was read. Copies."""
        with self.lock:
            out = [dict(a) for a in self.arrival_log
                   if (username is None or a["username"] == username)
                   and (chat is None or a["chat"] == chat)
                   and (accepted is None or a["accepted"] == accepted)]
        return sorted(out, key=lambda a: a["mono"])

    def fail_next(self, n, status=503, retry_after=None):
        """The next n POSTs are answered `status` (with Retry-After if given), not posted."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self.lock:
            self.post_answers.extend([(status, {"error": "injected %d" % status}, headers)] * n)

    def add(self, username, text, ts=None, **extra):
        with self.lock:
            m = {"id": "m%d" % self.next_id, "timestamp": ts or int(time.time() * 1000),
                 "username": username, "text": text}
            m.update(extra)
            self.next_id += 1
            self.messages.append(m)
            return m

    def _authorised(self, h):
        return self.token is None or h.headers.get("Authorization") == "Bearer " + self.token

    def _get(self, h):
        url = urlparse(h.path)
        if url.path == "/_arrivals":
            return answer_json(h, 200, {"arrivals": self.arrivals()})
        if not self._authorised(h):
            return answer_json(h, 401, {"error": "unauthorized"})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        limit = int(q.get("limit", 50))
        with self.lock:
            self.gets += 1
            self.get_times.append(time.monotonic())
            if self.raw_pages:
                return answer_json(h, 200, self.raw_pages.pop(0))
            if "after" in q:
                after = int(q["after"])
                page = sorted((m for m in self.messages if m["timestamp"] > after),
                              key=lambda m: m["timestamp"])[:limit]
            else:
                page = list(reversed(self.messages[-limit:]))
        answer_json(h, 200, {"messages": page})

    def _limit_wait(self, req, now):
        """(rule, seconds until it frees) of the limit this post would pass, else None;
        admits the post into every window when none is passed."""
        wins = []
        for scope, count, seconds in self.limits:
            key = {"all": None, "user": req.get("username") or req.get("entity"),
                   "chat": req.get("chat")}[scope]
            win = self.windows.setdefault((scope, count, seconds, key),
                                          SlidingWindow(count, seconds))
            wins.append(("%s %s: %d per %g s" % (scope, key, count, seconds), win))
        worst = None
        for name, win in wins:
            ok, wait = win.check(now)
            if not ok and (worst is None or wait > worst[1]):
                worst = (name, wait)
        if worst is None:
            for _, win in wins:
                win.add(now)
        return worst

    def _post(self, h, body):
        arrival = getattr(h, "arrival", None) or (time.monotonic(), int(time.time() * 1000))
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            req = None
        got = req or {}
        record = {"mono": arrival[0], "wall_ms": arrival[1], "key": h.headers.get("Idempotency-Key"),
                  "username": got.get("username"), "entity": got.get("entity"),
                  "chat": got.get("chat"), "text": got.get("text"), "reply_to": got.get("replyTo"),
                  "status": None, "accepted": False, "retry_after": None, "why": None, "body": req}
        answer, headers, after = None, {}, None
        with self.lock:
            self.arrival_log.append(record)
            if not self._authorised(h):
                status, answer, record["why"] = 401, {"error": "unauthorized"}, "unauthorized"
            elif self.post_answers:
                injected = self.post_answers.pop(0)
                record["why"] = "injected"
                if injected in ("reset", "hang"):
                    status = injected
                elif injected == "posted-reset":
                    status = injected
                    self._store(h, req or {}, record)
                else:
                    status, answer = injected[0], injected[1]
                    headers = injected[2] if len(injected) > 2 else {}
            elif req is None:
                status, answer, record["why"] = 400, {"error": "body is not JSON"}, "bad body"
            else:
                worst = self._limit_wait(req, arrival[0])
                if worst:
                    after = retry_after_seconds(worst[1])
                    status, answer, headers = 429, {"error": "rate limited", "retryAfter": after}, \
                        {"Retry-After": str(after)}
                    record.update(why=worst[0], retry_after=after)
                else:
                    status = 201
                    answer = {"ok": True, "id": self._store(h, req, record)}
            record["status"] = status
            delay = self.delay_ms / 1000.0
        if delay > 0:
            self.closing.wait(delay)    # the answer's way back, not the post's
        if status in ("reset", "posted-reset"):
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if status == "hang":
            self.closing.wait(60)
            h.close_connection = True
            return
        answer_json(h, status, answer, headers)

    def _store(self, h, req, record):
        """Posts the reply (the lock is held); returns its id."""
        self.posts.append((h.headers.get("Idempotency-Key"), req))
        m = {"id": "r%d" % self.next_id, "timestamp": int(time.time() * 1000),
             "username": req.get("username", "?"), "text": req.get("text", ""),
             "replyTo": req.get("replyTo"), "message-type": "AI"}
        self.next_id += 1
        self.messages.append(m)
        record["accepted"] = True
        return m["id"]
