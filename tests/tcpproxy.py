"""A TCP proxy for fault injection between two Parley processes.

    px = TcpProxy("127.0.0.1", broker_backend_port)
    p.start_worker(sets=["network.brokerBackend=" + px.endpoint])
    px.hold("down", 1.0)      # the worker hears nothing from the broker for 1 s
    px.cut()                  # then its connection drops (RST); it reconnects

It listens on 127.0.0.1 and forwards every accepted connection to the
target, both directions, as a byte stream (ZMTP is not parsed). One thread
runs a selector over every socket; the controls, callable from any thread
at any time, are applied by that thread between two I/O steps and return
once they are in force, so nothing moves after hold() returns:

    hold(direction, seconds=None)  "up" (client->server), "down" or "both":
                                   read and buffer, forward nothing, until
                                   release() or for `seconds`
    release()                      ends every hold and any blackhole; the
                                   buffered bytes go out in order
    blackhole(seconds)             a stalled link: nothing forwarded and
                                   nothing read either way, so the peers'
                                   TCP windows fill and they block
    cut()                          every current connection closed at once
                                   with RST on both sides, buffered bytes
                                   dropped; new connections are accepted
    refuse(True/False)             the listening socket closes (connects get
                                   ECONNREFUSED), then reopens on the same port
    blip(direction, seconds)       hold, wait, cut, release: bytes one way
                                   lost for `seconds`, then the connection drops
    stats()                        bytes each way, connections
    close()

Holds and blackholes are states of the proxy, not of a connection: a
connection made meanwhile is held too, as on a real link.

The port is chosen below the kernel's ephemeral range (as harness.py's
free_endpoint does): while refuse() has the port closed, a peer
reconnecting to it could otherwise be given that very port as its own and
connect to itself, and the proxy could not reopen.

Run as a program it is the same proxy in its own process, for the harness's
Proc (stopped by PID):

    python3 tests/tcpproxy.py --listen 127.0.0.1:0 --target 127.0.0.1:7532 --ready FILE

FILE gets {"port", "endpoint", "control"} as JSON once it listens. Controls
are lines, on standard input or on the control port (127.0.0.1, one line
per command, one line answered):

    hold up|down|both [SECONDS]   release   blackhole SECONDS   cut
    refuse on|off   blip up|down|both SECONDS   stats   quit

Each answers "ok", stats answers one JSON line, a bad line "error: ...".
"""
import argparse
import errno
import json
import os
import random
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

DIRECTIONS = ("up", "down")
MAX_BUFFER = 16 << 20     # per direction and connection; past it reading stops (backpressure)
CHUNK = 256 << 10


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _listener(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen(128)
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        raise


def _free_listener(host):
    """A listening socket on a free port below the ephemeral range."""
    low = _ephemeral_low()
    for _ in range(200):
        try:
            return _listener(host, random.randrange(max(1024, low - 12000), low))
        except OSError:
            continue
    raise OSError("no free port below %d on %s" % (low, host))


def parse_hostport(text):
    """"host:port" or "tcp://host:port" -> (host, port)."""
    if text.startswith("tcp://"):
        text = text[6:]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("expected host:port, got %r" % text)
    return host, int(port)


def _reset(sock):
    """Closes with RST rather than FIN, as a dropped network connection looks."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Conn:
    """One accepted connection and its connection to the target."""

    def __init__(self, client, server):
        self.c = client
        self.s = server
        self.connected = False
        self.buf = {"up": bytearray(), "down": bytearray()}
        self.eof = {"up": False, "down": False}        # the reading side of a direction closed
        self.shut = {"up": False, "down": False}       # ...and we passed the close on
        self.registered = {}                           # socket -> events now in the selector

    def reader(self, direction):
        return self.c if direction == "up" else self.s

    def writer(self, direction):
        return self.s if direction == "up" else self.c


class TcpProxy:
    def __init__(self, target_host, target_port, listen_host="127.0.0.1", listen_port=0):
        self.target = socket.getaddrinfo(target_host, target_port, socket.AF_INET,
                                         socket.SOCK_STREAM)[0][4]
        self.host = listen_host
        self.listen = (_listener(listen_host, listen_port) if listen_port
                       else _free_listener(listen_host))
        self.port = self.listen.getsockname()[1]
        self.endpoint = "tcp://%s:%d" % (self.host, self.port)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listen, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.conns = []
        self.held_until = {"up": None, "down": None}   # None: not held; else monotonic deadline
        self.blackhole_until = None
        self.counts = {"up_in": 0, "up_out": 0, "down_in": 0, "down_out": 0,
                       "accepted": 0, "closed": 0, "cut": 0, "target_failed": 0}
        self.lock = threading.Lock()
        self.commands = []
        self.running = True
        self.error = None
        self.thread = threading.Thread(target=self._run, name="tcpproxy:%d" % self.port,
                                       daemon=True)
        self.thread.start()

    @classmethod
    def to(cls, endpoint, **kw):
        """A proxy for a ZeroMQ endpoint "tcp://host:port"."""
        host, port = parse_hostport(endpoint)
        return cls(host, port, **kw)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- the controls ---------------------------------------------------------------------

    def _call(self, fn, timeout=10.0):
        """Runs fn() on the proxy's thread between two I/O steps and returns its result."""
        if threading.current_thread() is self.thread:
            return fn()
        done = threading.Event()
        box = {}

        def wrapped():
            try:
                box["value"] = fn()
            except Exception as e:      # handed back to the caller
                box["error"] = e
            done.set()

        with self.lock:
            if not self.running:
                raise RuntimeError("the proxy is closed%s"
                                   % (": %s" % self.error if self.error else ""))
            self.commands.append(wrapped)
        self._wake()
        if not done.wait(timeout):
            raise RuntimeError("the proxy did not act within %.0f s" % timeout)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _wake(self):
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    @staticmethod
    def _directions(direction):
        if direction == "both":
            return DIRECTIONS
        if direction not in DIRECTIONS:
            raise ValueError("direction must be up, down or both, not %r" % (direction,))
        return (direction,)

    def hold(self, direction, seconds=None):
        dirs = self._directions(direction)
        until = float("inf") if seconds is None else time.monotonic() + seconds

        def apply():
            for d in dirs:
                self.held_until[d] = until
        self._call(apply)

    def release(self):
        def apply():
            self.held_until = {"up": None, "down": None}
            self.blackhole_until = None
        self._call(apply)

    def blackhole(self, seconds):
        until = time.monotonic() + seconds

        def apply():
            self.blackhole_until = until
        self._call(apply)

    def cut(self):
        """Closes every current connection with RST; returns how many."""
        def apply():
            n = len(self.conns)
            for conn in list(self.conns):
                self._drop(conn, reset=True)
            self.counts["cut"] += n
            return n
        return self._call(apply)

    def refuse(self, on=True):
        def apply():
            if on and self.listen is not None:
                self.sel.unregister(self.listen)
                self.listen.close()
                self.listen = None
            elif not on and self.listen is None:
                deadline = time.monotonic() + 5
                while True:
                    try:
                        self.listen = _listener(self.host, self.port)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                self.sel.register(self.listen, selectors.EVENT_READ, None)
        self._call(apply)

    def blip(self, direction="down", seconds=1.0):
        """Bytes going `direction` are lost for `seconds`, then the connections drop.

        The peers see silence, then a reset; they reconnect through the proxy,
        which forwards again. Returns the number of connections cut."""
        self.hold(direction)
        time.sleep(seconds)     # the fault's length, not a wait for a result
        n = self.cut()
        self.release()
        return n

    def stats(self):
        def collect():
            out = dict(self.counts)
            out["active"] = len(self.conns)
            out["up_buffered"] = sum(len(c.buf["up"]) for c in self.conns)
            out["down_buffered"] = sum(len(c.buf["down"]) for c in self.conns)
            out["held"] = [d for d in DIRECTIONS if self._held(d)]
            out["blackhole"] = self._blackholed()
            out["refusing"] = self.listen is None
            return out
        return self._call(collect)

    def close(self):
        with self.lock:
            if not self.running:
                return
            self.running = False
        self._wake()
        self.thread.join(5)

    # --- the loop ---------------------------------------------------------------------------

    def _held(self, d):
        until = self.held_until[d]
        return until is not None and time.monotonic() < until

    def _blackholed(self):
        return self.blackhole_until is not None and time.monotonic() < self.blackhole_until

    def _next_deadline(self):
        now = time.monotonic()
        times = [t for t in list(self.held_until.values()) + [self.blackhole_until]
                 if t is not None and t != float("inf") and t > now]
        return min(times) - now if times else None

    def _expire(self):
        now = time.monotonic()
        for d in DIRECTIONS:
            if self.held_until[d] is not None and now >= self.held_until[d]:
                self.held_until[d] = None
        if self.blackhole_until is not None and now >= self.blackhole_until:
            self.blackhole_until = None

    def _run(self):
        try:
            while True:
                with self.lock:
                    commands, self.commands = self.commands, []
                    running = self.running
                for fn in commands:
                    fn()
                if not running:
                    break
                self._expire()
                for conn in list(self.conns):
                    self._pump(conn)
                    if conn in self.conns:
                        self._register(conn)
                for key, events in self.sel.select(self._next_deadline()):
                    self._event(key, events)
        except Exception as e:      # reported by the next control call
            self.error = e
            raise
        finally:
            with self.lock:
                self.running = False
                leftover, self.commands = self.commands, []
            for fn in leftover:
                fn()
            for conn in list(self.conns):
                self._drop(conn, reset=True)
            if self.listen is not None:
                self.listen.close()
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()

    def _event(self, key, events):
        sock = key.fileobj
        if sock is self.wake_r:
            try:
                while self.wake_r.recv(4096):
                    pass
            except OSError:
                pass
        elif sock is self.listen:
            self._accept()
        else:
            conn = key.data
            if conn not in self.conns:
                return
            if sock is conn.s and not conn.connected:
                err = conn.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.counts["target_failed"] += 1
                    self._drop(conn, reset=True)
                    return
                conn.connected = True
            if events & selectors.EVENT_READ:
                for d in DIRECTIONS:
                    if conn in self.conns and sock is conn.reader(d):
                        self._read(conn, d)

    def _accept(self):
        while True:
            try:
                client, _ = self.listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, server)
            self.counts["accepted"] += 1
            self.conns.append(conn)
            rc = server.connect_ex(self.target)
            if rc == 0:
                conn.connected = True
            elif rc != errno.EINPROGRESS:
                self.counts["target_failed"] += 1
                self._drop(conn, reset=True)
                continue
            self._register(conn)

    def _register(self, conn):
        flowing = not self._blackholed()
        want = {conn.c: 0, conn.s: 0}
        for d in DIRECTIONS:
            src, dst = conn.reader(d), conn.writer(d)
            can_read = conn.connected or d == "up"
            if flowing and can_read and not conn.eof[d] and len(conn.buf[d]) < MAX_BUFFER:
                want[src] |= selectors.EVENT_READ
            if flowing and conn.connected and conn.buf[d] and not self._held(d):
                want[dst] |= selectors.EVENT_WRITE
        if not conn.connected:
            want[conn.s] |= selectors.EVENT_WRITE      # the connect's completion
        for sock, events in want.items():
            now = conn.registered.get(sock, 0)
            if events == now:
                continue
            if now == 0:
                self.sel.register(sock, events, conn)
            elif events == 0:
                self.sel.unregister(sock)
            else:
                self.sel.modify(sock, events, conn)
            conn.registered[sock] = events

    def _read(self, conn, d):
        try:
            data = conn.reader(d).recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn, reset=True)    # a reset on one side is passed on to the other
            return
        if not data:
            conn.eof[d] = True
            return
        self.counts[d + "_in"] += len(data)
        conn.buf[d] += data

    def _pump(self, conn):
        """Writes what may be written now; passes on closes; ends finished connections."""
        if self._blackholed() or not conn.connected:
            return
        for d in DIRECTIONS:
            if self._held(d):
                continue
            buf = conn.buf[d]
            while buf:
                try:
                    n = conn.writer(d).send(buf[:CHUNK])
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self._drop(conn, reset=True)
                    return
                self.counts[d + "_out"] += n
                del buf[:n]
            if conn.eof[d] and not buf and not conn.shut[d]:
                conn.shut[d] = True
                try:
                    conn.writer(d).shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if conn.shut["up"] and conn.shut["down"]:
            self._drop(conn, reset=False)

    def _drop(self, conn, reset):
        if conn not in self.conns:
            return
        self.conns.remove(conn)
        self.counts["closed"] += 1
        for sock in (conn.c, conn.s):
            if conn.registered.get(sock):
                self.sel.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()


# --- the program ------------------------------------------------------------------------------

def command(px, line):
    """Runs one control line; returns the answer line."""
    words = line.split()
    if not words:
        return None
    try:
        cmd, args = words[0].lower(), words[1:]
        if cmd == "hold":
            px.hold(args[0], float(args[1]) if len(args) > 1 else None)
        elif cmd == "release":
            px.release()
        elif cmd == "blackhole":
            px.blackhole(float(args[0]))
        elif cmd == "cut":
            return "ok %d" % px.cut()
        elif cmd == "refuse":
            if args[0] not in ("on", "off"):
                raise ValueError("refuse on|off")
            px.refuse(args[0] == "on")
        elif cmd == "blip":
            return "ok %d" % px.blip(args[0], float(args[1]) if len(args) > 1 else 1.0)
        elif cmd == "stats":
            return json.dumps(px.stats())
        elif cmd == "quit":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise ValueError("unknown command %r" % cmd)
        return "ok"
    except (IndexError, ValueError) as e:
        return "error: %s" % (e or "missing argument")
    except RuntimeError as e:
        return "error: %s" % e


def control(port, line, host="127.0.0.1", timeout=10.0):
    """Sends one control line to a proxy program's control port; returns its answer.

    Raises RuntimeError on an "error: ..." answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(line.strip().encode() + b"\n")
        f = s.makefile("r")
        answer = f.readline().strip()
    if answer.startswith("error"):
        raise RuntimeError("tcpproxy %r: %s" % (line, answer))
    return json.loads(answer) if answer.startswith("{") else answer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT; port 0 picks a free one")
    ap.add_argument("--target", required=True, help="HOST:PORT or tcp://HOST:PORT")
    ap.add_argument("--ready", help="file written with the ports as JSON once listening")
    ap.add_argument("--control", default="127.0.0.1:0", help="HOST:PORT of the control port")
    args = ap.parse_args(argv)
    lhost, lport = parse_hostport(args.listen)
    thost, tport = parse_hostport(args.target)
    px = TcpProxy(thost, tport, listen_host=lhost, listen_port=lport)

    class Control(socketserver.StreamRequestHandler):
        def handle(self):
            for raw in self.rfile:
                answer = command(px, raw.decode("utf-8", "replace"))
                if answer is not None:
                    self.wfile.write(answer.encode() + b"\n")
                    self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    chost, cport = parse_hostport(args.control)
    ctl = Server((chost, cport), Control)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()

    def from_stdin():
        # Standard input may be /dev/null (the harness's Proc): its end is not a stop.
        for raw in sys.stdin:
            answer = command(px, raw)
            if answer is not None:
                print(answer, flush=True)
    threading.Thread(target=from_stdin, daemon=True).start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": px.port, "endpoint": px.endpoint,
                       "control": ctl.server_address[1]}, f)
        os.replace(tmp, args.ready)
    print("tcpproxy %s -> %s:%d, control port %d" % (px.endpoint, thost, tport,
                                                    ctl.server_address[1]), flush=True)
    while not stop.wait(0.5):
        if not px.thread.is_alive():
            print("tcpproxy: the proxy stopped: %s" % px.error, file=sys.stderr, flush=True)
            return 1
    ctl.shutdown()
    ctl.server_close()
    px.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
