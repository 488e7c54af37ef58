"""A local Telegram Bot API for tests: the real shapes, on 127.0.0.1.

    bot = FakeTelegram(limits=[("group", 10, 2.0)]); tg.add_bot(token, "jokerbot")
    tg.user_message(token, chat_id, "@jokerbot hi", entities=[...])

Speaks /bot<token>/getUpdates (long polling with `timeout`, `offset`
confirming and forgetting earlier updates, `limit`, and 409 Conflict for
the older of two concurrent readers, as Telegram does) and
/bot<token>/sendMessage (JSON body, `reply_parameters`, 4096 UTF-16 units
at most, 429 with `parameters.retry_after` when a configured limit is
passed, or when a test injects it). Everything it sees is recorded for the
test to check.

Arrivals: every sendMessage is recorded the moment it is read, accepted or
not, with its time on time.monotonic() ("mono", the same clock in every
process of the machine) and the wall clock ("wall_ms"): tg.arrivals(...)
in the test, GET /_arrivals (JSON) from elsewhere. With
telegram_limits=True the server holds Telegram's own limits, at arrival and
exactly (limits_check's half-open sliding windows over the accepted
arrivals; a refused message counts for nothing): 30 messages per second per
bot, 20 per minute per group chat and 1 per second per private chat, each
per bot. Past one it answers 429 with parameters.retry_after, the whole
seconds until the window frees, rounded up.
"""
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

from harness import answer_json, serve_http
from limits_check import SlidingWindow, retry_after_seconds

# Telegram's published limits, per bot: (scope, count, seconds).
TELEGRAM_LIMITS = (("all", 30, 1.0), ("group", 20, 60.0), ("private", 1, 1.0))


def utf16_len(text):
    return len(text.encode("utf-16-le")) // 2


def mention_entities(text, names):
    """Telegram "mention" entities (UTF-16 offsets) for each @name in `text`."""
    out = []
    for name in names:
        at = text.find("@" + name)
        if at >= 0:
            out.append({"type": "mention", "offset": utf16_len(text[:at]),
                        "length": utf16_len("@" + name)})
    return out


class Bot:
    def __init__(self, token, username):
        self.token = token
        self.username = username
        self.updates = []          # (update_id, raw JSON bytes)
        self.next_update = 1000
        self.confirmed = 0         # offsets below this are forgotten
        self.offsets = []          # every offset a reader sent, in order
        self.delivered = {}        # update_id -> times returned
        self.generation = 0        # the newest getUpdates call
        self.conflicts = 0


def chat_kind(chat_id):
    """Telegram's private chats have positive ids; groups, supergroups and channels negative."""
    try:
        return "private" if int(chat_id) > 0 else "group"
    except (TypeError, ValueError):
        return "group"      # "@channelname"


class FakeTelegram:
    def __init__(self, limits=(), telegram_limits=False, slack=0.15):
        """limits: (scope, count, seconds) rules per bot, scope all|group|private,
        counted `slack` s short (a post spaced by the sender's clock may arrive a
        little early); telegram_limits: Telegram's own, exact (TELEGRAM_LIMITS)."""
        self.cond = threading.Condition()
        self.bots = {}
        self.sent = []             # every accepted sendMessage
        self.refused = []          # (token, chat, reason) for limit violations
        self.limits = list(limits)
        self.slack = slack
        self.telegram_limits = telegram_limits
        self.windows = {}          # (scope, token, chat or None) -> SlidingWindow
        self.arrival_log = []      # every sendMessage, as it arrived (see arrivals())
        self.inject = []           # (status, body dict) answers for the next sendMessage calls
        self.next_message = {}     # chat id -> next message_id
        self.closing = False
        self.server = serve_http(lambda handler: self._handle(handler, None), self._handle)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do --------------------------------------------------------------

    def add_bot(self, token, username):
        with self.cond:
            self.bots[token] = Bot(token, username)
        return self.bots[token]

    def _message_id(self, chat_id):
        n = self.next_message.get(chat_id, 1)
        self.next_message[chat_id] = n + 1
        return n

    def user_message(self, token, chat_id, text, user="ana", user_id=1001, is_bot=False,
                     entities=None, reply_to=None, chat_type=None):
        """A message written in a chat, as update for the bot `token`. Returns the message."""
        with self.cond:
            kind = chat_type or ("private" if chat_id > 0 else "supergroup")
            msg = {"message_id": self._message_id(chat_id),
                   "from": {"id": user_id, "is_bot": is_bot, "first_name": user.title(),
                            "username": user},
                   "chat": {"id": chat_id, "type": kind},
                   "date": int(time.time()), "text": text}
            if entities:
                msg["entities"] = entities
            if reply_to:
                msg["reply_to_message"] = reply_to
            self._add(token, json.dumps({"message": msg}, ensure_ascii=False).encode()[:-1])
            return msg

    def raw_update(self, token, fragment):
        """An update whose fields (after update_id) are the raw bytes `fragment`."""
        with self.cond:
            self._add(token, b'{' + fragment)

    def _add(self, token, body_without_close):
        bot = self.bots[token]
        uid = bot.next_update
        bot.next_update += 1
        raw = b'{"update_id":%d,' % uid + body_without_close[1:] + b'}'
        bot.updates.append((uid, raw))
        self.cond.notify_all()

    def sent_to(self, chat_id):
        with self.cond:
            return [s for s in self.sent if s["chat_id"] == chat_id]

    def arrivals(self, token=None, chat_id=None, accepted=None):
        """Every sendMessage as it arrived, oldest first, optionally filtered.

        Each is {"mono", "wall_ms", "token", "bot", "chat_id", "chat_kind",
        "text", "reply_to", "status", "accepted", "retry_after", "why"}:
        status is what was answered (200, 429, 400...), retry_after the
        429's parameters.retry_after (else None), why the limit that refused
        it. Copies: safe to keep while the server goes on."""
        with self.cond:
            out = [dict(a) for a in self.arrival_log
                   if (token is None or a["token"] == token)
                   and (chat_id is None or a["chat_id"] == chat_id)
                   and (accepted is None or a["accepted"] == accepted)]
        return sorted(out, key=lambda a: a["mono"])

    # --- the API ------------------------------------------------------------------------

    def _handle(self, handler, body):
        url = urlparse(handler.path)
        if url.path == "/_arrivals":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            chat = q.get("chat_id")
            if chat is not None and chat.lstrip("-").isdigit():
                chat = int(chat)
            ok = {"1": True, "true": True, "0": False, "false": False}.get(q.get("accepted"))
            return answer_json(handler, 200, {"arrivals": self.arrivals(q.get("token"), chat, ok)})
        parts = url.path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            return answer_json(handler, 404, {"ok": False, "error_code": 404,
                                              "description": "Not Found"})
        token, method = parts[1][3:], parts[2]
        bot = self.bots.get(token)
        if not bot:
            return answer_json(handler, 401, {"ok": False, "error_code": 401,
                                              "description": "Unauthorized"})
        if method == "getUpdates":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            return self._get_updates(handler, bot, q)
        if method == "sendMessage":
            return self._send_message(handler, bot, body)
        return answer_json(handler, 404, {"ok": False, "error_code": 404,
                                          "description": "Not Found: method not found"})

    def _get_updates(self, handler, bot, q):
        timeout = min(float(q.get("timeout", 0)), 10.0)
        limit = int(q.get("limit", 100))
        with self.cond:
            bot.generation += 1
            me = bot.generation
            self.cond.notify_all()
            if "offset" in q:
                offset = int(q["offset"])
                bot.offsets.append(offset)
                bot.confirmed = max(bot.confirmed, offset)
            deadline = time.monotonic() + timeout
            while True:
                if me != bot.generation:
                    bot.conflicts += 1
                    result = None
                    break
                result = [(u, raw) for u, raw in bot.updates if u >= bot.confirmed][:limit]
                left = deadline - time.monotonic()
                if result or left <= 0 or self.closing:
                    break
                self.cond.wait(left)
            if result is None:
                return answer_json(handler, 409, {
                    "ok": False, "error_code": 409,
                    "description": "Conflict: terminated by other getUpdates request; make sure "
                                   "that only one bot instance is running"})
            for u, _ in result:
                bot.delivered[u] = bot.delivered.get(u, 0) + 1
        body = b'{"ok":true,"result":[' + b",".join(raw for _, raw in result) + b"]}"
        answer_json(handler, 200, body)

    def _refuse_by_limits(self, bot, chat_id, now):
        kind = chat_kind(chat_id)
        for scope, count, seconds in self.limits:
            if scope in ("group", "private") and scope != kind:
                continue
            recent = [s for s in self.sent if s["token"] == bot.token
                      and (scope == "all" or s["chat_id"] == chat_id)
                      and s["at"] > now - seconds + self.slack]
            if len(recent) >= count:
                return "%s: %d per %.1f s" % (scope, count, seconds)
        return None

    def _telegram_windows(self, bot, chat_id):
        """The windows of Telegram's limits this message counts in: [(why, window)]."""
        out = []
        kind = chat_kind(chat_id)
        for scope, count, seconds in TELEGRAM_LIMITS:
            if scope != "all" and scope != kind:
                continue
            key = (scope, bot.token, None if scope == "all" else chat_id)
            if key not in self.windows:
                self.windows[key] = SlidingWindow(count, seconds)
            out.append(("telegram %s: %d per %g s" % (scope, count, seconds), self.windows[key]))
        return out

    def _record(self, arrival, bot, chat_id, text, reply, status, retry_after=None, why=None):
        self.arrival_log.append({
            "mono": arrival[0], "wall_ms": arrival[1], "token": bot.token, "bot": bot.username,
            "chat_id": chat_id, "chat_kind": chat_kind(chat_id) if chat_id is not None else None,
            "text": text, "reply_to": reply, "status": status, "accepted": status == 200,
            "retry_after": retry_after, "why": why})

    def _send_message(self, handler, bot, body):
        arrival = getattr(handler, "arrival", None) or (time.monotonic(), int(time.time() * 1000))
        try:
            req = json.loads(body or b"{}")
            chat_id, text = req["chat_id"], req["text"]
            reply = (req.get("reply_parameters") or {}).get("message_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            with self.cond:
                self._record(arrival, bot, None, None, None, 400, why="bad request")
            return answer_json(handler, 400, {"ok": False, "error_code": 400,
                                              "description": "Bad Request: chat_id and text needed"})
        now = arrival[0]
        with self.cond:
            if self.inject:
                status, payload = self.inject.pop(0)
                after = (payload.get("parameters") or {}).get("retry_after") \
                    if isinstance(payload, dict) else None
                self._record(arrival, bot, chat_id, text, reply, status, after, "injected")
                return answer_json(handler, status, payload)
            if not isinstance(text, str) or not text.strip() or utf16_len(text) > 4096:
                self._record(arrival, bot, chat_id, text, reply, 400, why="bad text")
                return answer_json(handler, 400, {"ok": False, "error_code": 400,
                                                  "description": "Bad Request: message is too long"
                                                  if text else "Bad Request: message text is empty"})
            why = self._refuse_by_limits(bot, chat_id, now)
            after = 1
            windows = self._telegram_windows(bot, chat_id) if self.telegram_limits else []
            if not why:
                worst = None        # the rule that frees last decides retry_after
                for name, win in windows:
                    ok, wait = win.check(now)
                    if not ok and (worst is None or wait > worst[0]):
                        worst = (wait, name)
                if worst:
                    after, why = retry_after_seconds(worst[0]), worst[1]
            if why:
                self.refused.append((bot.token, chat_id, why))
                self._record(arrival, bot, chat_id, text, reply, 429, after, why)
                return answer_json(handler, 429, {
                    "ok": False, "error_code": 429,
                    "description": "Too Many Requests: retry after %d" % after,
                    "parameters": {"retry_after": after}})
            for _, win in windows:
                win.add(now)
            msg = {"message_id": self._message_id(chat_id),
                   "from": {"id": hash(bot.token) & 0xffffff, "is_bot": True,
                            "first_name": bot.username, "username": bot.username},
                   "chat": {"id": chat_id, "type": "private" if chat_kind(chat_id) == "private"
                            else "supergroup"},
                   "date": int(time.time()), "text": text}
            self.sent.append({"token": bot.token, "bot": bot.username, "chat_id": chat_id,
                              "text": text, "reply_to": reply, "at": now, "message": msg})
            self._record(arrival, bot, chat_id, text, reply, 200)
        answer_json(handler, 200, {"ok": True, "result": msg})
