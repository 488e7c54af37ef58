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
"""
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

from harness import answer_json, serve_http


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


class FakeTelegram:
    def __init__(self, limits=()):
        """limits: (scope, count, seconds) rules per bot, scope all|group|private."""
        self.cond = threading.Condition()
        self.bots = {}
        self.sent = []             # every accepted sendMessage
        self.refused = []          # (token, chat, reason) for limit violations
        self.limits = list(limits)
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

    # --- the API ------------------------------------------------------------------------

    def _handle(self, handler, body):
        url = urlparse(handler.path)
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
        slack = 0.15   # the network may bring two posts closer than they were sent
        for scope, count, seconds in self.limits:
            if scope == "group" and chat_id > 0 or scope == "private" and chat_id < 0:
                continue
            recent = [s for s in self.sent if s["token"] == bot.token
                      and (scope == "all" or s["chat_id"] == chat_id)
                      and s["at"] > now - seconds + slack]
            if len(recent) >= count:
                return "%s: %d per %.1f s" % (scope, count, seconds)
        return None

    def _send_message(self, handler, bot, body):
        try:
            req = json.loads(body or b"{}")
            chat_id, text = req["chat_id"], req["text"]
        except (ValueError, KeyError, TypeError):
            return answer_json(handler, 400, {"ok": False, "error_code": 400,
                                              "description": "Bad Request: chat_id and text needed"})
        with self.cond:
            if self.inject:
                status, payload = self.inject.pop(0)
                return answer_json(handler, status, payload)
            if not isinstance(text, str) or not text.strip() or utf16_len(text) > 4096:
                return answer_json(handler, 400, {"ok": False, "error_code": 400,
                                                  "description": "Bad Request: message is too long"
                                                  if text else "Bad Request: message text is empty"})
            now = time.monotonic()
            why = self._refuse_by_limits(bot, chat_id, now)
            if why:
                self.refused.append((bot.token, chat_id, why))
                return answer_json(handler, 429, {
                    "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1}})
            reply = (req.get("reply_parameters") or {}).get("message_id")
            msg = {"message_id": self._message_id(chat_id),
                   "from": {"id": hash(bot.token) & 0xffffff, "is_bot": True,
                            "first_name": bot.username, "username": bot.username},
                   "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
                   "date": int(time.time()), "text": text}
            self.sent.append({"token": bot.token, "bot": bot.username, "chat_id": chat_id,
                              "text": text, "reply_to": reply, "at": now, "message": msg})
        answer_json(handler, 200, {"ok": True, "result": msg})
