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
"""
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

from harness import answer_json, serve_http


class FakeKV:
    def __init__(self, token=None):
        self.token = token
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
        self.server.shutdown()
        self.server.server_close()

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
        if not self._authorised(h):
            return answer_json(h, 401, {"error": "unauthorized"})
        q = {k: v[0] for k, v in parse_qs(urlparse(h.path).query).items()}
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

    def _post(self, h, body):
        if not self._authorised(h):
            return answer_json(h, 401, {"error": "unauthorized"})
        with self.lock:
            if self.post_answers:
                status, answer = self.post_answers.pop(0)
                return answer_json(h, status, answer)
            try:
                req = json.loads(body)
            except ValueError:
                return answer_json(h, 400, {"error": "body is not JSON"})
            self.posts.append((h.headers.get("Idempotency-Key"), req))
            m = {"id": "r%d" % self.next_id, "timestamp": int(time.time() * 1000),
                 "username": req.get("username", "?"), "text": req.get("text", ""),
                 "replyTo": req.get("replyTo"), "message-type": "AI"}
            self.next_id += 1
            self.messages.append(m)
        answer_json(h, 201, {"ok": True, "id": m["id"]})
