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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


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
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._get(self)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                fake._post(self, self.rfile.read(n))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/messages" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

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

    def _answer(self, h, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass

    def _authorised(self, h):
        return self.token is None or h.headers.get("Authorization") == "Bearer " + self.token

    def _get(self, h):
        if not self._authorised(h):
            return self._answer(h, 401, {"error": "unauthorized"})
        q = {k: v[0] for k, v in parse_qs(urlparse(h.path).query).items()}
        limit = int(q.get("limit", 50))
        with self.lock:
            self.gets += 1
            self.get_times.append(time.monotonic())
            if self.raw_pages:
                return self._answer(h, 200, self.raw_pages.pop(0))
            if "after" in q:
                after = int(q["after"])
                page = sorted((m for m in self.messages if m["timestamp"] > after),
                              key=lambda m: m["timestamp"])[:limit]
            else:
                page = list(reversed(self.messages[-limit:]))
        self._answer(h, 200, {"messages": page})

    def _post(self, h, body):
        if not self._authorised(h):
            return self._answer(h, 401, {"error": "unauthorized"})
        with self.lock:
            if self.post_answers:
                status, answer = self.post_answers.pop(0)
                return self._answer(h, status, answer)
            try:
                req = json.loads(body)
            except ValueError:
                return self._answer(h, 400, {"error": "body is not JSON"})
            self.posts.append((h.headers.get("Idempotency-Key"), req))
            m = {"id": "r%d" % self.next_id, "timestamp": int(time.time() * 1000),
                 "username": req.get("username", "?"), "text": req.get("text", ""),
                 "replyTo": req.get("replyTo"), "message-type": "AI"}
            self.next_id += 1
            self.messages.append(m)
        self._answer(h, 201, {"ok": True, "id": m["id"]})
