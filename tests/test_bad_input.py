"""The bad-input contract: for each kind of malformed input a Parley process
can be handed, what it says (the exact text, in its log or on the command
line) and that it keeps serving. Real daemons on 127.0.0.1; every row
sends its bad input, waits for its line, then sends a real chat message and
waits for its real reply to be posted.

The whole contract is the tables below, one row per case:

    CONFIG_ROWS        configuration files: parleyctl config check / a daemon's start
    FRAME_ROWS         frames sent to each socket: the broker's frontend and
                       backend, the sink's results socket, and (through a relay
                       that stands between them and the broker) the poller's,
                       the worker's and the sink's broker sockets
    SWEEP_*            every message type in four forms (well formed, cut in
                       half, every string empty, a list claiming 1,000,000
                       items) to each of those six sockets: no crash, no
                       sanitizer report, counted, still serving
    SOURCE_ROWS        source payloads: the HTTP JSON source, Telegram's
                       getUpdates, Twitch IRC lines
    LLM_ROWS           LLM answers (tests/fake_llm.py directives)
    DESTINATION_ROWS   destination errors: Telegram, the HTTP destination
    STATE_ROWS         damaged state: a flipped byte in each daemon's journal

Lines the daemons rate-limit (10 a minute per kind and peer) are kept
apart: no kind gets more than its burst within a run.

    test_bad_input.py --bin BUILD [--only NAME] [--rows TEXT] [--discover]

--rows runs only the rows whose name contains TEXT; --discover prints each
row's new log lines instead of failing (to write a new row's text).
"""
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import msgpack
import zmq

from fake_kv import FakeKV
from fake_telegram import FakeTelegram
from fake_twitch import FakeTwitch
from harness import (Pipeline, TestFailure, base_config, check, main, wait_until, write_jsonl)

SIG = b"\xa5\x50\x01"
(SUBMIT, ACK, HEARTBEAT, WELCOME, JOB, RELEASE, RESULT, COMMIT, VERDICT, OUTCOME, OUTCOME_ACK,
 STATS, CTL, CTL_REPLY) = range(1, 15)
U64 = 2 ** 64 - 1

READER, BOT = "111:reader-secret", "222:bot-secret"
KV_TOKEN, TW_TOKEN = "kv-secret", "tw-secret"
ENV = {"TG_READER": READER, "TG_BOT": BOT, "KV_TOKEN": KV_TOKEN, "TW_READER": TW_TOKEN}
OPTIONS = {"rows": None, "discover": False}


def frame(msg_type, fields):
    return SIG + bytes([msg_type]) + msgpack.packb(fields, use_bin_type=True)


def message(source="in", chat="room", msg_id="x1", text="hi @alpha"):
    return msgpack.packb([source, chat, msg_id, "mallory", "666", text, 0, 2, []],
                         use_bin_type=True)


def spec(msg_key="in/room/x1", entity="alpha", chat="in/room", created=None):
    created = int(time.time() * 1000) if created is None else created
    return [msg_key, entity, chat, "group", 10, created, message()]


def selected(rows):
    want = OPTIONS["rows"]
    return [r for r in rows if not want or want in r[0]]


# --- the tables --------------------------------------------------------------------------------
#
# Configuration: (row, file content, where the error must be reported, exact text).
# "check" is `parleyctl config check FILE` (exit 1); "broker" is parley-broker
# --config FILE (exit 2), which refuses to start.

CONFIG_ROWS = [
    ("wrong type", '{"queueSettings": {"maxRetries": "three"}}', "check",
     "queueSettings.maxRetries: expected an integer, got a string"),
    ("unknown enum", '{"storage": {"fsync": "sometimes"}}', "check",
     'storage.fsync: "sometimes" is not one of always|batch|off'),
    ("bad JSON, with its line", '{\n  "entities": [\n    {"id": "a"},,\n  ]\n}', "check",
     "bad.json: line 3, column 17: unexpected token near ','"),
    ("out of range", '{"entities": [{"id": "a", "rateLimits": {"maxPostsPerHour": -1}}]}', "broker",
     "entities[0].rateLimits.maxPostsPerHour: -1 is out of range 0..9000000000000000"),
    ("unknown source type", '{"poller": {"sources": [{"name": "s", "type": "carrier-pigeon"}]}}',
     "broker", 'poller.sources[0].type: "carrier-pigeon" is not one of demo|jsonl|http|telegram|twitch'),
]

# Frames: (row, socket, frame, process whose log says it, exact text).
# Sockets: "frontend" and "backend" of the broker, "results" of the sink;
# "to poller", "to worker", "to sink" go from the broker's side of the
# relay to that process (as if the broker had sent them). A text given as
# a tuple is one line holding its parts in order (around the peer's name).
FRONT = "dropped a frame on the frontend from "
BACK = "dropped a frame on the backend from "
FROM_BROKER = "dropped malformed frame from the broker: "
RESULTS = "dropped a malformed frame from a worker on the results socket: "
RESULT_ITEM = [1, 2, 1, "in/room/r1", "alpha", "in/room", 0, 0, "caf\u00e9", b"", 1, 1]

FRAME_ROWS = [
    ("frontend: shorter than the header", "frontend", b"\xa5\x50", "broker",
     (FRONT, ": frame of 2 bytes is shorter than the header")),
    ("frontend: bad signature", "frontend", b"\x00\x00\x01\x01\x90", "broker",
     (FRONT, ": bad signature 00 00")),
    ("frontend: unknown message type", "frontend", SIG + b"\x63\x90", "broker",
     (FRONT, ": unknown message type 99")),
    ("frontend: SUBMIT cut short", "frontend", frame(SUBMIT, [7, [spec()]])[:-9], "broker",
     (FRONT, ": SUBMIT: bad msgpack: string or number runs past the end")),
    ("frontend: SUBMIT claiming 1,000,000 jobs", "frontend",
     SIG + bytes([SUBMIT]) + b"\x92\x07\xdd\x00\x0f\x42\x40", "broker",
     (FRONT, ": SUBMIT: bad msgpack: container declares more items than bytes remain")),
    ("frontend: COMMIT with a string for a job id", "frontend",
     frame(COMMIT, [1, [["one", 2, 0]]]), "broker",
     (FRONT, ": COMMIT.items[0].job_id: expected an unsigned integer")),
    ("frontend: JOB (the broker's own message)", "frontend", frame(JOB, [[], 1]), "broker",
     (FRONT, ": JOB is not expected on the frontend")),
    ("backend: SUBMIT (a poller's message)", "backend", frame(SUBMIT, [1, [spec()]]), "broker",
     (BACK, ": SUBMIT is not expected on the backend")),
    ("backend: RELEASE with an empty item", "backend", frame(RELEASE, [[[]]]), "broker",
     (BACK, ": RELEASE.items[0].job_id: missing")),
    ("backend: HEARTBEAT claiming 1,000,000 held jobs", "backend",
     SIG + bytes([HEARTBEAT]) + b"\x9a" + b"".join(msgpack.packb(v) for v in
                                                  ["w", 1, 1, [], "h", 1, 0, 0])
     + b"\xdd\x00\x0f\x42\x40", "broker",
     (BACK, ": HEARTBEAT: bad msgpack: container declares more items than bytes remain")),
    ("frontend: SUBMIT with an empty message key", "frontend", frame(SUBMIT, [8, [spec("")]]),
     "broker", "refused job  for alpha: empty msg_key"),
    ("frontend: SUBMIT for an unknown entity", "frontend",
     frame(SUBMIT, [9, [spec("in/room/x2", "nobody")]]), "broker",
     "refused job in/room/x2 for nobody: unknown entity"),
    ("frontend: SUBMIT written after the year 9999", "frontend",
     frame(SUBMIT, [10, [spec("in/room/x3", created=2 ** 63)]]), "broker",
     "refused job in/room/x3 for alpha: created_ms after the year 9999"),
    ("results: RESULT cut short", "results", frame(RESULT, ["w", [RESULT_ITEM]])[:-3], "sink",
     RESULTS + "RESULT: bad msgpack: container declares more items than bytes remain"),
    ("results: RESULT whose text is not UTF-8", "results",
     frame(RESULT, ["w", [RESULT_ITEM]]).replace(b"caf\xc3\xa9", b"caf\xe9\xe9"), "sink",
     RESULTS + "RESULT.items[0].text: not valid UTF-8 (or contains NUL)"),
    ("results: SUBMIT on the results socket", "results", frame(SUBMIT, [1, [spec()]]), "sink",
     "dropped SUBMIT from a worker: the results socket takes only RESULT and STATS"),
    ("to poller: ACK cut short", "to poller", frame(ACK, [1, 1, 0, []])[:-1], "poller",
     FROM_BROKER + "ACK: bad msgpack: container declares more items than bytes remain"),
    ("to poller: JOB (not for a poller)", "to poller", frame(JOB, [[], 1]), "poller",
     "dropped JOB from the broker: not a message for a poller"),
    ("to worker: WELCOME with a string epoch", "to worker", frame(WELCOME, ["e", 100, 5000, 0, []]),
     "worker", FROM_BROKER + "WELCOME.epoch: expected an unsigned integer"),
    ("to worker: JOB whose item is empty", "to worker", frame(JOB, [[[]], 99]), "worker",
     FROM_BROKER + "JOB.items[0].job_id: missing"),
    ("to sink: VERDICT cut short", "to sink", frame(VERDICT, [1, [[1, 2, 0]], 5000])[:-2], "sink",
     "dropped a malformed frame from the broker: VERDICT: bad msgpack: string or number runs "
     "past the end"),
    ("to sink: SUBMIT (not for a sink)", "to sink", frame(SUBMIT, [1, []]), "sink",
     "dropped SUBMIT from the broker: the broker socket takes only VERDICT, OUTCOME_ACK and STATS"),
]

# Source payloads: (row, source, what it answers, exact text in the poller's log).
# "kv" is the HTTP JSON source (its next page), "tg" Telegram's getUpdates
# (an update's fields after update_id), "tw" a Twitch IRC line.
SOURCE_ROWS = [
    ("HTTP JSON: a page that is not JSON", "kv", b"<html>502 Bad Gateway</html>",
     "source kv: response: not JSON (line 1, column 1: invalid token near '<'); skipped"),
    ("HTTP JSON: messages is not a list", "kv", b'{"messages": {"id": 1}}',
     "source kv: response: the message list is not an array (set fields.list); skipped"),
    ("HTTP JSON: a message without text", "kv",
     b'{"messages": [{"id": "z1", "timestamp": 1, "username": "ana"}]}',
     "source kv: messages[0]: no text (set fields.text); skipped"),
    ("Telegram: a message that is a string", "tg", b'"message": "hi"',
     "source tg: getUpdates result[0].message: expected an object; skipped"),
    ("Telegram: text that is a number", "tg",
     b'"message": {"message_id": 5, "chat": {"id": -5, "type": "group"}, "date": 1, "text": 42}',
     "source tg: getUpdates result[0].message: text is not a string; skipped"),
    ("Telegram: text that is not UTF-8", "tg",
     b'"message": {"message_id": 6, "chat": {"id": -5, "type": "group"}, "date": 1, '
     b'"from": {"id": 9, "is_bot": false, "first_name": "x"}, "text": "caf\xe9 @alpha"}',
     "source tg: getUpdates result[0].message: text is not valid UTF-8; skipped"),
    ("Twitch: a PRIVMSG without a channel", "tw", ":ana!ana@ana.tmi.twitch.tv PRIVMSG",
     "source tw: PRIVMSG without a channel and text; skipped"),
    ("Twitch: 600 tags but no id", "tw", "@" + "a=b;" * 600 + " :x PRIVMSG #stream :hi",
     "source tw: PRIVMSG without an id tag (the tags capability was not granted?); skipped"),
]

# LLM answers: (row, directive in the chat message, exact text in the worker's log).
# Each is a malformed answer: the job fails at once (worker.retries 0,
# queueSettings.maxRetries 0) and goes to the dead-letter queue.
NOT_RETRIED = " not retried: malformed answer: LLM server llm, model (server default): "
LLM_ROWS = [
    ("not JSON", "#malformed",
     ("(in/room/malformed)" + NOT_RETRIED
      + "not JSON: premature end of input near '\"cut' at line 1, column 41")),
    ("no choices", "#nochoices",
     "(in/room/nochoices)" + NOT_RETRIED + "choices: expected an array, got nothing"),
    ("content that is a number", "#badtype",
     ("(in/room/badtype)" + NOT_RETRIED
      + "choices[0].message.content: expected a string, got an integer")),
    ("server-sent events that are garbage", "#ssegarbage",
     ("(in/room/ssegarbage)" + NOT_RETRIED
      + "not JSON: unexpected newline near '\"half' at line 1, column 40")),
]

# Destination errors: (row, destination, its next answer or answers, exact
# text in the sink's log). A reply "not posted" is dead-lettered by the
# broker with the same reason: its OUTCOME frame reached the broker.
DESTINATION_ROWS = [
    ("Telegram 400 with a description", "tg",
     (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
     ("reply to job ", " by alpha not posted: Telegram 400: Bad Request: chat not found")),
    ("HTTP 500, then a 200 whose body is not JSON (retried, then taken as posted)", "kv",
     [(500, b"<h1>oops</h1>"), (200, b"<html>thanks</html>")],
     ("post of kv/main/", " by alpha will be retried in ", " ms: kv answered HTTP 500: <h1>oops</h1>")),
    ("HTTP 400 with a body that is not UTF-8", "kv", (400, b"caf\xe9 refused"),
     ("reply to job ", " by alpha not posted: kv answered HTTP 400: caf? refused")),
    ("HTTP 400 with a long multi-byte body, cut at a character", "kv",
     (400, ("x" + "\u00e9" * 300).encode()),
     ("reply to job ", " by alpha not posted: kv answered HTTP 400: x" + "\u00e9" * 99 + "\n")),
]

# Damaged state: (row, daemon, exact text in its log after a restart). The
# byte flipped is in the first record's crc: the rest of the segment goes
# to quarantine.pj, the daemon starts without it.
STATE_ROWS = [
    ("broker journal, a byte flipped", "broker",
     ("/data/broker: segment 0000000000000001.pj: bad crc at offset 16: ",
      " bytes to quarantine.pj")),
    ("poller journal, a byte flipped", "poller",
     ("/data/poller: segment 0000000000000001.pj: bad crc at offset 16: ",
      " bytes to quarantine.pj")),
    ("sink journal, a byte flipped", "sink",
     ("/data/sink: segment 0000000000000001.pj: bad crc at offset 16: ", " bytes to quarantine.pj")),
]


# Every message type, in four forms, to every socket: (form, how it is made).
# Well-formed frames are harmless ones (a worker with no capacity, empty
# lists, an unknown CTL command); what a process must do with all of them:
# nothing crashes, nothing is reported by the sanitizers, each process keeps
# serving, and the malformed ones are counted.
SWEEP_FIELDS = {
    SUBMIT: [90, [["in/room/sweep", "alpha", "in/room", "group", 10, 1700000000000,
                   b"\x99"]]],
    ACK: [90, 1, 0, [[0, "why", 0]], 0, 0],
    HEARTBEAT: ["sweeper", 0, 0, ["m"], "host", 1, 0, 0, [[1, 2]], 0],
    WELCOME: [77, 1000, 5000, 0, [[1, 2]], 0],
    JOB: [[], 0],
    RELEASE: [[]],
    RESULT: ["sweeper", []],
    COMMIT: [90, [[1, 2, 0]]],
    VERDICT: [90, [], 5000],
    OUTCOME: [90, [[1, 2, 1, "why", 1700000000000]]],
    OUTCOME_ACK: [90],
    STATS: [1700000000000, [["poller", "sweeper", {"x": 1.0}]]],
    CTL: [1, "no-such-command", []],
    CTL_REPLY: [1, 0, "{}"],
}
SWEEP_SOCKETS = ("frontend", "backend", "results", "to poller", "to worker", "to sink")


def _emptied(value):
    if isinstance(value, str):
        return ""
    if isinstance(value, bytes):
        return b""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0
    if isinstance(value, float):
        return 0.0
    if isinstance(value, list):
        return [_emptied(v) for v in value]
    if isinstance(value, dict):
        return {_emptied(k): _emptied(v) for k, v in value.items()}
    return value


def _huge(fields):
    """The fields with their first list claiming 1,000,000 items it does not have."""
    out, done = b"\xdc" + len(fields).to_bytes(2, "big"), False
    for v in fields:
        if isinstance(v, list) and not done:
            out += b"\xdd\x00\x0f\x42\x40"
            done = True
        else:
            out += msgpack.packb(v, use_bin_type=True)
    return out


SWEEP_FORMS = (
    ("well formed", lambda t, f: frame(t, f)),
    ("cut in half", lambda t, f: frame(t, f)[:max(2, len(frame(t, f)) // 2)]),
    ("every string empty, every number 0", lambda t, f: frame(t, _emptied(f))),
    ("a list claiming 1,000,000 items", lambda t, f: SIG + bytes([t]) + _huge(f)),
)


# --- the pipeline ------------------------------------------------------------------------------

class Relay:
    """Stands between one process and the broker (a ROUTER where the process
    connects, a DEALER to the broker with the process's own identity) and
    passes every frame both ways; inject() sends a frame to the process as
    if the broker had."""

    def __init__(self, ctx, broker_endpoint):
        self.ctx = ctx
        self.broker_endpoint = broker_endpoint
        self.front = ctx.socket(zmq.ROUTER)
        self.front.linger = 0
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.back = None
        self.route = None
        self.pending = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def inject(self, data):
        with self.lock:
            self.pending.append(data)

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        while not self.stopped:
            for sock, _ in poller.poll(20):
                if sock is self.front:
                    route, data = self.front.recv_multipart()
                    if self.back is None:
                        self.back = self.ctx.socket(zmq.DEALER)
                        self.back.linger = 0
                        self.back.setsockopt(zmq.ROUTING_ID, route)
                        self.back.connect(self.broker_endpoint)
                        poller.register(self.back, zmq.POLLIN)
                    self.route = route
                    self.back.send(data)
                else:
                    data = self.back.recv()
                    if self.route is not None:
                        self.front.send_multipart([self.route, data])
            with self.lock:
                while self.pending and self.route is not None:
                    self.front.send_multipart([self.route, self.pending.pop(0)])

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.front.close()
        if self.back is not None:
            self.back.close()


class Rig:
    """One pipeline with every kind of source and destination, and the probe:
    a chat message whose reply must be posted."""

    def __init__(self, bin_dir, name, stack, storage=False):
        self.stack = stack
        self.ctx = zmq.Context()
        stack.callback(self.ctx.destroy, 0)
        self.kv = FakeKV(token=KV_TOKEN)
        stack.callback(self.kv.close)
        self.tg = FakeTelegram()
        stack.callback(self.tg.close)
        self.tg.add_bot(READER, "parleybot")
        self.tg.add_bot(BOT, "alphabot")
        self.tw = FakeTwitch(tokens={"reader": TW_TOKEN})
        stack.callback(self.tw.close)
        self.probes = 0
        self.sockets = {}
        config = base_config([{"id": "alpha", "name": "alpha", "aliases": ["alphabot"],
                               "responseChance": 0}])
        self.p = stack.enter_context(Pipeline(bin_dir, config, name))
        p = self.p
        config["storage"] = {"dataDir": p.path("data") if storage else "", "fsync": "batch"}
        config["queueSettings"]["maxRetries"] = 0
        config["poller"]["sources"] = [
            {"name": "in", "type": "jsonl", "path": p.path("in.jsonl"), "follow": True},
            {"name": "kv", "type": "http", "url": self.kv.url + "?limit=50",
             "tokenEnv": "KV_TOKEN", "pollingInterval": 200},
            {"name": "tg", "type": "telegram", "url": self.tg.url, "tokenEnv": "TG_READER",
             "longPollSeconds": 1},
            {"name": "tw", "type": "twitch", "url": self.tw.url, "nick": "reader",
             "tokenEnv": "TW_READER", "channels": ["stream"]},
        ]
        config["sink"]["destinations"] = [
            {"name": "tg", "type": "telegram", "source": "tg", "url": self.tg.url,
             "tokenEnv": "TG_BOT"},
            {"name": "kv", "type": "http", "source": "kv", "url": self.kv.url,
             "tokenEnv": "KV_TOKEN",
             "body": {"username": "{entity_name}", "text": "{text}", "replyTo": "{msg_ref}"}},
            {"name": "out", "type": "jsonl", "source": "*", "path": p.output},
        ]
        config["worker"].update({"backend": "openai", "retries": 0, "requestTimeoutMs": 5000,
                                 "connectTimeoutMs": 1000, "healthCheckMs": 200})
        self.config = config
        write_jsonl(p.path("in.jsonl"), [])

    def start(self):
        p = self.p
        llm = p.start_fake_llm("llm")
        self.config["lmStudioServers"] = [{"name": "llm", "url": llm.ready["url"],
                                           "type": "llamacpp", "maxConcurrent": 16}]
        p.write_config(self.config)
        p.start_broker()
        self.relays = {}
        for who in ("poller", "worker", "sink"):
            target = p.backend if who == "worker" else p.frontend
            self.relays[who] = Relay(self.ctx, target)
            self.stack.callback(self.relays[who].close)
        p.start_sink(sets=["network.brokerFrontend=" + self.relays["sink"].endpoint], env=ENV)
        # start_sink points the sink at the broker itself: restarted, it must use the relay.
        self.sink_sets = ["network.brokerFrontend=" + self.relays["sink"].endpoint]
        p.start_worker(sets=["network.brokerBackend=" + self.relays["worker"].endpoint])
        p.start_poller(sets=["network.brokerFrontend=" + self.relays["poller"].endpoint], env=ENV)
        wait_until(lambda: self.tw.joined("reader", "stream"), 15, "the poller to join Twitch")
        self.probe()

    def socket(self, name):
        if name not in self.sockets:
            kind = zmq.PUSH if name == "results" else zmq.DEALER
            s = self.ctx.socket(kind)
            s.linger = 0
            s.connect({"frontend": self.p.frontend, "backend": self.p.backend,
                       "results": self.p.results}[name])
            self.sockets[name] = s
        return self.sockets[name]

    def send(self, where, data):
        if where.startswith("to "):
            self.relays[where[3:]].inject(data)
        else:
            self.socket(where).send(data)

    def probe(self, text=None):
        """A chat message from the jsonl source; waits for its reply. Returns the reply."""
        self.probes += 1
        msg_id = "probe%d" % self.probes
        write_jsonl(self.p.path("in.jsonl"),
                    [{"id": msg_id, "chat": "room", "author": "prober",
                      "text": text or "@alpha are you there? %d" % self.probes}], "a")
        key = "in/room/" + msg_id

        def posted():
            return [r for r in self.p.posted() if r.get("msg_key") == key]
        return wait_until(posted, 20, "the reply to " + key)[0]


def probe_source(rig, source, n):
    """A chat message through `source`; waits for its reply at that source's destination."""
    text = "@alpha still there? %s%d" % (source, n)
    if source == "kv":
        rig.kv.add("ana", text)
        wait_until(lambda: any(text in (b or {}).get("text", "") for _, b in rig.kv.posts), 20,
                   "the reply through the HTTP source and destination")
    elif source == "tg":
        rig.tg.user_message(READER, -100, text)
        wait_until(lambda: any(text in m["text"] for m in rig.tg.sent_to(-100)), 20,
                   "the reply through Telegram")
    elif source == "tw":
        rig.tw.say("stream", "viewer", text)
        wait_until(lambda: any(text in r.get("text", "") for r in rig.p.posted()), 20,
                   "the reply to the Twitch message")
    else:
        rig.probe()


def log_mark(p):
    return {k: len(p.log(k)) for k in p.procs}


def new_lines(p, key, mark):
    return p.log(key)[mark.get(key, 0):]


def said(text, expect):
    """True when `expect` (a string, or a tuple of parts in order) is in one line of `text`."""
    parts = (expect,) if isinstance(expect, str) else expect
    for line in text.splitlines(True):
        at = 0
        for part in parts:
            at = line.find(part, at)
            if at < 0:
                break
            at += len(part)
        else:
            return True
    return False


def expect_line(p, key, mark, expect, row):
    """Waits for `expect` in what process `key` logged since `mark`."""
    if OPTIONS["discover"] or expect == "?":
        time.sleep(1.0)
        print("--- %s: new lines of %s:\n%s" % (row, key, new_lines(p, key, mark)), flush=True)
        return
    wait_until(lambda: said(new_lines(p, key, mark), expect), 10,
               "%s: %r in the %s log" % (row, expect, key))


# --- the tests ---------------------------------------------------------------------------------

def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)


def test_configuration(bin_dir):
    ctl = os.path.join(bin_dir, "tools", "parleyctl")
    broker = os.path.join(bin_dir, "broker", "parley-broker")
    with Pipeline(bin_dir, None, "bad-config") as p:
        for row, text, where, expect in selected(CONFIG_ROWS):
            path = p.path("bad.json")
            with open(path, "w") as f:
                f.write(text)
            if where == "check":
                out = run([ctl, "config", "check", path])
                code = 1
            else:
                out = run([broker, "--config", path, "--ready-file", p.path("r")])
                code = 2
            said = out.stdout + out.stderr
            if OPTIONS["discover"] or expect == "?":
                print("--- %s: exit %d: %s" % (row, out.returncode, said), flush=True)
                continue
            check(out.returncode == code, "%s: exit %d, not %d: %s" % (row, out.returncode, code,
                                                                       said))
            check(expect in said, "%s: %r not in %r" % (row, expect, said))


def test_frames(bin_dir):
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-frames", stack)
        rig.start()
        for row, where, data, key, expect in selected(FRAME_ROWS):
            mark = log_mark(rig.p)
            rig.send(where, data)
            expect_line(rig.p, key, mark, expect, row)
            rig.probe()
            check(rig.p.procs[key].alive(), "%s: the %s died" % (row, key))


def test_every_type_everywhere(bin_dir):
    """SWEEP_FIELDS in every SWEEP_FORMS to every SWEEP_SOCKETS."""
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-sweep", stack)
        rig.start()
        before = rig.p.broker_stats()
        sent = 0
        for where in SWEEP_SOCKETS:
            for form, make in SWEEP_FORMS:
                for msg_type, fields in SWEEP_FIELDS.items():
                    rig.send(where, make(msg_type, fields))
                    sent += 1
                    time.sleep(0.002)
            rig.probe()
            for key, proc in rig.p.procs.items():
                check(proc.alive(), "after the sweep of the %s: the %s died" % (where, key))
        after = rig.p.broker_stats()
        # To the broker's two sockets: 2 x 14 cut, 2 x 14 with a huge list, and
        # the well-formed and emptied frames of types that are not its own.
        check(after["malformed"] - before["malformed"] >= 4 * 14,
              "the broker counted %d malformed frames" % (after["malformed"] - before["malformed"]))
        check(sent == len(SWEEP_SOCKETS) * len(SWEEP_FORMS) * len(SWEEP_FIELDS), "sent %d" % sent)


def test_source_payloads(bin_dir):
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-sources", stack)
        rig.start()
        for n, (row, source, data, expect) in enumerate(selected(SOURCE_ROWS)):
            mark = log_mark(rig.p)
            if source == "kv":
                rig.kv.raw_pages.append(data)
            elif source == "tg":
                rig.tg.raw_update(READER, data)
            else:
                rig.tw.raw("stream", data)
            expect_line(rig.p, "poller", mark, expect, row)
            probe_source(rig, source, n)


def test_llm_answers(bin_dir):
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-llm", stack)
        rig.config["worker"]["stream"] = True
        rig.start()
        for row, directive, expect in selected(LLM_ROWS):
            mark = log_mark(rig.p)
            write_jsonl(rig.p.path("in.jsonl"),
                        [{"id": directive[1:], "chat": "room", "author": "mallory",
                          "text": "@alpha %s" % directive}], "a")
            expect_line(rig.p, "worker", mark, expect, row)
            rig.probe()


def test_destination_errors(bin_dir):
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-dests", stack)
        rig.start()
        for n, (row, dest, answer, expect) in enumerate(selected(DESTINATION_ROWS)):
            mark = log_mark(rig.p)
            text = "@alpha row %d" % n
            answers = answer if isinstance(answer, list) else [answer]
            if dest == "tg":
                rig.tg.inject.extend(answers)
                rig.tg.user_message(READER, -100, text)
            else:
                rig.kv.post_answers.extend(answers)
                rig.kv.add("ana", text)
            expect_line(rig.p, "sink", mark, expect, row)
            if len(answers) > 1:
                wait_until(lambda: not rig.kv.post_answers, 10, "%s: every answer used" % row)
            if "not posted: " in expect[-1] and not OPTIONS["discover"]:
                reason = expect[-1].split("not posted: ", 1)[1].rstrip("\n")
                wait_until(lambda: any(d.get("reason") == reason
                                       for d in rig.p.ctl("dlq", "list", "1000")["items"]),
                           10, "%s: the dead letter with the reason %r" % (row, reason))
            probe_source(rig, dest, n)


def test_damaged_state(bin_dir):
    with ExitStack() as stack:
        rig = Rig(bin_dir, "bad-state", stack, storage=True)
        rig.start()
        for i in range(3):
            rig.probe()
        for row, daemon, expect in selected(STATE_ROWS):
            proc = rig.p.procs[daemon]
            check(proc.stop() == 0, "%s: the %s did not stop cleanly" % (row, daemon))
            journal = rig.p.path(os.path.join("data", daemon))
            segments = sorted(f for f in os.listdir(journal) if f.endswith(".pj")
                              and f != "quarantine.pj")
            check(segments, "%s: no journal in %s" % (row, journal))
            with open(os.path.join(journal, segments[0]), "r+b") as f:
                f.seek(16 + 4)          # the first record's crc
                byte = f.read(1)
                f.seek(16 + 4)
                f.write(bytes([byte[0] ^ 0x40]))
            mark = log_mark(rig.p)
            if daemon == "broker":
                rig.p.start_broker()
            elif daemon == "sink":
                rig.p.start_sink(sets=rig.sink_sets, env=ENV)
            else:
                rig.p.start_poller(sets=["network.brokerFrontend=" + rig.relays["poller"].endpoint],
                                   env=ENV)
            expect_line(rig.p, daemon, mark, expect, row)
            rig.probe()


if __name__ == "__main__":
    argv = sys.argv[:]
    for flag in ("--discover",):
        if flag in argv:
            OPTIONS["discover"] = True
            argv.remove(flag)
    if "--rows" in argv:
        at = argv.index("--rows")
        OPTIONS["rows"] = argv[at + 1]
        del argv[at:at + 2]
    sys.argv = argv
    main([test_configuration, test_frames, test_every_type_everywhere, test_source_payloads, test_llm_answers,
          test_destination_errors, test_damaged_state])
