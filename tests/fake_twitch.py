"""A local Twitch chat (IRC) server for tests: plain TCP on 127.0.0.1.

    tw = FakeTwitch(tokens={"stickyman1776": "tok1"}, moderators={"stickyman1776"})
    tw.say("somechannel", "viewer1", "@stickyman1776 hi")

Speaks what Twitch's IRC does for bots: CAP REQ (tags, commands), PASS
oauth:..., NICK (a wrong token gets "Login authentication failed"), the
welcome, JOIN (echo, USERSTATE, ROOMSTATE, NAMES), PING/PONG both ways,
PRIVMSG with IRCv3 tags (id, display-name, user-id, tmi-sent-ts,
reply-parent-*), USERSTATE to the sender of every accepted message, and a
msg_ratelimit NOTICE (the message is dropped) when an account passes 20
messages per 30 s, or 100 as a moderator. Messages are relayed to the
other connections in the channel, so bots see each other, as on Twitch.

Arrivals: every PRIVMSG a client sends is recorded when its bytes are read,
accepted or not, with time.monotonic() ("mono") and the wall clock
("wall_ms"): tw.arrivals(nick=..., channel=..., accepted=...). The limit
is held at arrival on limits_check's half-open sliding window over the
account's accepted messages (in every channel; a dropped message counts
for nothing), `slack` seconds short of the window: 0 is Twitch's exact rule,
the default 0.15 forgives a sender whose spacing is shortened by the way.
"""
import socket
import socketserver
import threading
import time
import uuid

from limits_check import SlidingWindow


def escape_tag(value):
    return (value.replace("\\", "\\\\").replace(";", "\\:").replace(" ", "\\s")
            .replace("\r", "\\r").replace("\n", "\\n"))


def parse_tags(raw):
    tags = {}
    for part in raw.split(";"):
        k, _, v = part.partition("=")
        tags[k] = v
    return tags


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.nick = None
        self.password = None
        self.channels = set()
        self.lock = threading.Lock()
        self.alive = True

    def send(self, line):
        data = line if isinstance(line, bytes) else line.encode()
        with self.lock:
            try:
                self.sock.sendall(data + b"\r\n")
            except OSError:
                self.alive = False


class FakeTwitch:
    def __init__(self, tokens=None, moderators=(), limit=(20, 30.0), mod_limit=(100, 30.0),
                 slack=0.15):
        """tokens: login -> token (None accepts any); moderators: logins with mod_limit;
        slack: seconds the limits' windows are counted short (0: exactly Twitch's)."""
        self.tokens = tokens
        self.moderators = set(moderators)
        self.limit = limit
        self.mod_limit = mod_limit
        self.slack = slack
        self.windows = {}          # (login, count, seconds) -> SlidingWindow
        self.arrival_log = []      # every PRIVMSG from a client (see arrivals())
        self.lock = threading.Lock()
        self.clients = []
        self.posts = []            # accepted PRIVMSGs from clients
        self.refused = []          # (nick, channel) dropped by the rate limit
        self.pongs = []            # logins that answered our PING
        self.logins = []           # successful logins, in order
        self.author_of = {}        # message id -> login
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                fake._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "irc://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for c in self.clients:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # --- what tests do -------------------------------------------------------------------

    def joined(self, nick, channel):
        with self.lock:
            return any(c.nick == nick and channel in c.channels and c.alive for c in self.clients)

    def say(self, channel, login, text, reply_to=None, msg_id=None):
        """A viewer writes in `channel`; returns the message id."""
        msg_id = msg_id or str(uuid.uuid4())
        tags = {"badge-info": "", "badges": "", "color": "", "display-name": login.title(),
                "emotes": "", "id": msg_id, "mod": "0", "room-id": "1", "subscriber": "0",
                "tmi-sent-ts": str(int(time.time() * 1000)), "turbo": "0",
                "user-id": str(abs(hash(login)) % 10 ** 8), "user-type": ""}
        if reply_to:
            tags["reply-parent-msg-id"] = reply_to
            tags["reply-parent-user-login"] = self.author_of.get(reply_to, "someone")
        line = "@%s :%s!%s@%s.tmi.twitch.tv PRIVMSG #%s :%s" % (
            ";".join("%s=%s" % (k, escape_tag(v)) for k, v in tags.items()),
            login, login, login, channel, text)
        with self.lock:
            self.author_of[msg_id] = login
            targets = [c for c in self.clients if channel in c.channels]
        for c in targets:
            c.send(line)
        return msg_id

    def raw(self, channel, data):
        """Sends raw bytes (one line) to every connection in `channel`."""
        with self.lock:
            targets = [c for c in self.clients if channel in c.channels]
        for c in targets:
            c.send(data)

    def ping_all(self):
        with self.lock:
            targets = list(self.clients)
        for c in targets:
            c.send("PING :tmi.twitch.tv")

    def arrivals(self, nick=None, channel=None, accepted=None):
        """Every PRIVMSG clients sent, oldest first, optionally filtered.

        Each is {"mono", "wall_ms", "nick", "channel", "text", "reply_to",
        "accepted", "notice" (the msg-id of the refusal, else None), "id"
        (of the accepted message, else None)}. Copies."""
        with self.lock:
            out = [dict(a) for a in self.arrival_log
                   if (nick is None or a["nick"] == nick)
                   and (channel is None or a["channel"] == channel)
                   and (accepted is None or a["accepted"] == accepted)]
        return sorted(out, key=lambda a: a["mono"])

    def kick(self, nick):
        """Drops every connection of `nick`, as a network failure would."""
        with self.lock:
            targets = [c for c in self.clients if c.nick == nick]
        for c in targets:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- the server ------------------------------------------------------------------------

    def _serve(self, sock):
        client = Client(sock)
        with self.lock:
            self.clients.append(client)
        buf = b""
        try:
            while True:
                data = sock.recv(65536)
                arrival = (time.monotonic(), int(time.time() * 1000))
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not self._line(client, line.rstrip(b"\r").decode("utf-8", "replace"),
                                      arrival):
                        return
        except OSError:
            pass
        finally:
            client.alive = False
            with self.lock:
                if client in self.clients:
                    self.clients.remove(client)
            try:
                sock.close()
            except OSError:
                pass

    def _line(self, c, line, arrival):
        """One line from a client; arrival is when its last bytes were read."""
        tags = {}
        if line.startswith("@"):
            raw, _, line = line.partition(" ")
            tags = parse_tags(raw[1:])
        cmd, _, rest = line.partition(" ")
        if cmd == "CAP":
            c.send(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands")
        elif cmd == "PASS":
            c.password = rest.strip()
        elif cmd == "NICK":
            nick = rest.strip()
            anonymous = nick.startswith("justinfan")
            if self.tokens is not None and not anonymous and \
                    c.password != "oauth:%s" % self.tokens.get(nick, object()):
                c.send(":tmi.twitch.tv NOTICE * :Login authentication failed")
                return False
            c.nick = nick
            with self.lock:
                self.logins.append(nick)
            for n, text in (("001", "Welcome, GLHF!"), ("002", "Your host is tmi.twitch.tv"),
                            ("372", "You are in a maze of twisty passages."), ("376", ">")):
                c.send(":tmi.twitch.tv %s %s :%s" % (n, nick, text))
        elif cmd == "PING":
            c.send(":tmi.twitch.tv PONG tmi.twitch.tv %s" % rest)
        elif cmd == "PONG":
            with self.lock:
                self.pongs.append(c.nick)
        elif cmd == "JOIN" and c.nick:
            for channel in rest.strip().split(","):
                channel = channel.lstrip("#")
                c.channels.add(channel)
                n = c.nick
                c.send(":%s!%s@%s.tmi.twitch.tv JOIN #%s" % (n, n, n, channel))
                c.send("@badge-info=;badges=;color=;display-name=%s;emote-sets=0;mod=0;"
                       "subscriber=0;user-type= :tmi.twitch.tv USERSTATE #%s" % (n, channel))
                c.send("@emote-only=0;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=0 "
                       ":tmi.twitch.tv ROOMSTATE #%s" % channel)
                c.send(":%s.tmi.twitch.tv 353 %s = #%s :%s" % (n, n, channel, n))
                c.send(":%s.tmi.twitch.tv 366 %s #%s :End of /NAMES list" % (n, n, channel))
        elif cmd == "PRIVMSG" and c.nick:
            target, _, text = rest.partition(" :")
            self._privmsg(c, target.lstrip("#"), text, tags, arrival)
        return True

    def _privmsg(self, c, channel, text, tags, arrival):
        count, seconds = self.mod_limit if c.nick in self.moderators else self.limit
        now = arrival[0]
        parent = tags.get("reply-parent-msg-id")
        record = {"mono": now, "wall_ms": arrival[1], "nick": c.nick, "channel": channel,
                  "text": text, "reply_to": parent, "accepted": False, "notice": None, "id": None}
        with self.lock:
            key = (c.nick, count, seconds)
            if key not in self.windows:
                self.windows[key] = SlidingWindow(count, seconds - self.slack)
            refused = not self.windows[key].admit(now)[0]
            if refused:
                self.refused.append((c.nick, channel))
                record["notice"] = "msg_ratelimit"
            else:
                msg_id = str(uuid.uuid4())
                record.update(accepted=True, id=msg_id)
                self.posts.append({"nick": c.nick, "channel": channel, "text": text,
                                   "reply_to": parent, "id": msg_id, "at": now})
                self.author_of[msg_id] = c.nick
                others = [o for o in self.clients if o is not c and channel in o.channels]
            self.arrival_log.append(record)
        if refused:
            c.send("@msg-id=msg_ratelimit :tmi.twitch.tv NOTICE #%s :Your message was not sent "
                   "because you are sending messages too quickly." % channel)
            return
        relay = {"badge-info": "", "badges": "", "display-name": c.nick, "id": msg_id,
                 "mod": "1" if c.nick in self.moderators else "0", "room-id": "1",
                 "tmi-sent-ts": str(int(time.time() * 1000)), "user-id": str(abs(hash(c.nick)) % 10 ** 8)}
        if parent:
            relay["reply-parent-msg-id"] = parent
            relay["reply-parent-user-login"] = self.author_of.get(parent, "someone")
        line = "@%s :%s!%s@%s.tmi.twitch.tv PRIVMSG #%s :%s" % (
            ";".join("%s=%s" % (k, escape_tag(v)) for k, v in relay.items()),
            c.nick, c.nick, c.nick, channel, text)
        for o in others:
            o.send(line)
        c.send("@badge-info=;badges=;color=;display-name=%s;emote-sets=0;id=%s;mod=0;subscriber=0;"
               "user-type= :tmi.twitch.tv USERSTATE #%s" % (c.nick, msg_id, channel))
