#!/usr/bin/env python3
"""Self-test of tests/tcpproxy.py: plain sockets and real ZeroMQ through the proxy.

Every wait has a deadline; a "nothing arrives" check waits a bounded time
for bytes that must not come (that wait is the assertion's window, not a
guess at how long something takes)."""
import os
import select
import socket
import threading
import time

import zmq

from harness import Pipeline, TestFailure, check, main, proxy_control, wait_until
from tcpproxy import TcpProxy, control


# --- plain sockets ----------------------------------------------------------------------

class Server:
    """A listening socket on 127.0.0.1 whose accepted connections the test drives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout=5):
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        conn.settimeout(timeout)
        return conn

    def close(self):
        self.sock.close()


def recv_exact(sock, n, timeout=10):
    deadline = time.monotonic() + timeout
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestFailure("got %d of %d bytes in %.0f s" % (len(out), n, timeout))
        sock.settimeout(left)
        data = sock.recv(n - len(out))
        if not data:
            raise TestFailure("connection closed after %d of %d bytes" % (len(out), n))
        out += data
    return bytes(out)


def nothing_arrives(sock, window):
    """True if no byte (and no close) can be read from `sock` within `window` s."""
    readable, _, _ = select.select([sock], [], [], window)
    return not readable


def pair(px, server):
    client = socket.create_connection(("127.0.0.1", px.port), timeout=5)
    return client, server.accept()


def test_bytes_pass_both_ways(_bin):
    srv = Server()
    with TcpProxy("127.0.0.1", srv.port) as px:
        check(px.endpoint == "tcp://127.0.0.1:%d" % px.port, "endpoint %s" % px.endpoint)
        client, conn = pair(px, srv)
        blob = os.urandom(3 << 20)
        t = threading.Thread(target=client.sendall, args=(blob,))
        t.start()
        got = recv_exact(conn, len(blob))
        t.join(10)
        check(got == blob, "the 3 MiB sent up arrived changed")
        conn.sendall(b"pong" * 1000)
        check(recv_exact(client, 4000) == b"pong" * 1000, "down bytes changed")
        s = px.stats()
        check(s["up_in"] == s["up_out"] == len(blob) and s["down_out"] == 4000,
              "counts %s" % s)
        check(s["accepted"] == 1 and s["active"] == 1, "connections %s" % s)
        # A close on one side reaches the other as an end of stream, not a reset.
        client.shutdown(socket.SHUT_WR)
        check(conn.recv(10) == b"", "the client's FIN did not come through")
        conn.sendall(b"last")
        check(recv_exact(client, 4) == b"last", "half-closed link lost the last bytes")
        conn.close()
        check(client.recv(10) == b"", "the server's FIN did not come through")
        client.close()
        wait_until(lambda: px.stats()["active"] == 0, 5, "the closed pair to be forgotten")
    srv.close()


def test_hold_buffers_and_release_delivers_in_order(_bin):
    srv = Server()
    with TcpProxy("127.0.0.1", srv.port) as px:
        client, conn = pair(px, srv)
        px.hold("up")
        for part in (b"one ", b"two ", b"three"):
            client.sendall(part)
        wait_until(lambda: px.stats()["up_buffered"] == 13, 5, "the proxy to read the held bytes")
        check(nothing_arrives(conn, 0.3), "held bytes were forwarded")
        # The other direction still flows while "up" is held.
        conn.sendall(b"down is open")
        check(recv_exact(client, 12) == b"down is open", "down stopped while only up was held")
        px.release()
        check(recv_exact(conn, 13) == b"one two three", "released bytes out of order")
        # A timed hold of both directions ends by itself.
        px.hold("both", 0.6)
        start = time.monotonic()
        conn.sendall(b"late")
        check(recv_exact(client, 4) == b"late", "bytes lost by a timed hold")
        waited = time.monotonic() - start
        check(0.45 <= waited < 3, "a 0.6 s hold delivered after %.2f s" % waited)
        check(px.stats()["held"] == [], "the hold did not end")
        # A connection made during a hold is held too.
        px.hold("down")
        c2, s2 = pair(px, srv)
        s2.sendall(b"x")
        check(nothing_arrives(c2, 0.3), "a new connection was not held")
        px.release()
        check(recv_exact(c2, 1) == b"x", "the new connection's byte was lost")
        for s in (client, conn, c2, s2):
            s.close()
    srv.close()


def test_cut_resets_and_new_connections_work(_bin):
    srv = Server()
    with TcpProxy("127.0.0.1", srv.port) as px:
        client, conn = pair(px, srv)
        px.hold("down")
        conn.sendall(b"dropped")
        wait_until(lambda: px.stats()["down_buffered"] == 7, 5, "the held bytes")
        check(px.cut() == 1, "cut did not count one connection")
        for side in (client, conn):
            try:
                data = side.recv(10)
                raise TestFailure("a cut side read %r instead of a reset" % data)
            except ConnectionResetError:
                pass
        px.release()
        c2, s2 = pair(px, srv)
        c2.sendall(b"again")
        check(recv_exact(s2, 5) == b"again", "no traffic after the cut")
        s2.sendall(b"ok")
        check(recv_exact(c2, 2) == b"ok", "the held bytes of the cut connection came through")
        s = px.stats()
        check(s["cut"] == 1 and s["accepted"] == 2 and s["active"] == 1, "stats %s" % s)
        for x in (client, conn, c2, s2):
            x.close()
    srv.close()


def test_blackhole_stalls_then_resumes(_bin):
    srv = Server()
    with TcpProxy("127.0.0.1", srv.port) as px:
        client, conn = pair(px, srv)
        px.blackhole(1.0)
        start = time.monotonic()
        # The proxy reads nothing: the client's send buffer and the proxy's receive
        # buffer fill, and a non-blocking send then refuses more.
        client.setblocking(False)
        chunk = os.urandom(1 << 16)
        sent = bytearray()
        blocked = False
        while len(sent) < (64 << 20) and time.monotonic() - start < 0.7:
            try:
                n = client.send(chunk)
                sent += chunk[:n]
            except BlockingIOError:
                blocked = True
                break
        check(blocked, "no backpressure: %d bytes went in during the blackhole" % len(sent))
        check(px.stats()["up_in"] == 0, "the proxy read during the blackhole")
        check(nothing_arrives(conn, 0.2), "bytes arrived during the blackhole")
        client.setblocking(True)
        got = recv_exact(conn, len(sent))
        waited = time.monotonic() - start
        check(got == bytes(sent), "the stalled bytes arrived changed")
        check(waited >= 0.9, "the 1 s blackhole let bytes through after %.2f s" % waited)
        conn.sendall(b"after")
        check(recv_exact(client, 5) == b"after", "down did not resume")
        client.close()
        conn.close()
    srv.close()


def test_refuse_and_reopen(_bin):
    srv = Server()
    with TcpProxy("127.0.0.1", srv.port) as px:
        px.refuse(True)
        try:
            socket.create_connection(("127.0.0.1", px.port), timeout=5).close()
            raise TestFailure("a connection was accepted while refusing")
        except (ConnectionRefusedError, ConnectionResetError):
            pass    #  refused, or reset while the listener closed under a busy machine
        px.refuse(False)
        client, conn = pair(px, srv)
        client.sendall(b"back")
        check(recv_exact(conn, 4) == b"back", "no traffic after refuse(False)")
        client.close()
        conn.close()
    # A target that is not there: the client's connection is reset, the failure counted.
    dead = Server()
    port = dead.port
    dead.close()
    with TcpProxy("127.0.0.1", port) as px:
        try:
            c = socket.create_connection(("127.0.0.1", px.port), timeout=5)
            try:
                data = c.recv(10)
                check(data == b"", "read %r from a proxy to nowhere" % data)
            finally:
                c.close()
        except ConnectionResetError:
            pass    #  the reset can come before connect() returns
        wait_until(lambda: px.stats()["target_failed"] == 1, 5, "the failed target counted")
        check(px.stats()["target_failed"] == 1, "stats %s" % px.stats())
    srv.close()


# --- ZeroMQ -------------------------------------------------------------------------------

class Zmq:
    """A ROUTER on 127.0.0.1 and a DEALER reaching it through a proxy."""

    def __init__(self, heartbeat_ms=100, timeout_ms=300):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind("tcp://127.0.0.1:*")
        self.px = TcpProxy.to(self.router.last_endpoint.decode())
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
        self.dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 50)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        self.events = self.dealer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.dealer.connect(self.px.endpoint)

    def recv_router(self, timeout):
        if not self.router.poll(int(timeout * 1000)):
            return None
        return self.router.recv_multipart()

    def wait_event(self, event, timeout):
        """True once the DEALER's monitor reports `event` (zmq.EVENT_...), within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.events.poll(int(left * 1000)):
                return False
            frames = self.events.recv_multipart()
            if int.from_bytes(frames[0][:2], "little") == event:
                return True

    def roundtrip(self, text, timeout=5):
        """DEALER -> ROUTER -> DEALER; returns the time it took."""
        start = time.monotonic()
        self.dealer.send(text)
        got = self.recv_router(timeout)
        check(got is not None and got[-1] == text, "ROUTER got %r, wanted %r" % (got, text))
        self.router.send_multipart([got[0], b"re:" + text])
        check(self.dealer.poll(int(timeout * 1000)), "no answer to %r" % text)
        answer = self.dealer.recv()
        check(answer == b"re:" + text, "DEALER got %r" % answer)
        return time.monotonic() - start

    def close(self):
        self.dealer.disable_monitor()
        for s in (self.events, self.dealer, self.router):
            s.close(0)
        self.px.close()
        self.ctx.term()


def test_zmq_passes_and_hold_keeps_order(_bin):
    z = Zmq(heartbeat_ms=100, timeout_ms=3000)
    try:
        z.roundtrip(b"hello")
        z.px.hold("up")
        for i in range(5):
            z.dealer.send(b"m%d" % i)
        check(z.recv_router(0.4) is None, "a message passed the hold")
        z.px.release()
        got = [z.recv_router(5) for _ in range(5)]
        check([g and g[-1] for g in got] == [b"m%d" % i for i in range(5)],
              "released messages: %s" % got)
        check(z.px.stats()["accepted"] == 1, "the hold broke the connection")
    finally:
        z.close()


def test_zmq_cut_reconnects(_bin):
    z = Zmq(heartbeat_ms=100, timeout_ms=300)
    try:
        z.roundtrip(b"before")
        check(z.wait_event(zmq.EVENT_CONNECTED, 1), "no connected event")
        check(z.px.cut() == 1, "no connection to cut")
        check(z.wait_event(zmq.EVENT_DISCONNECTED, 5), "the DEALER did not see the cut")
        check(z.wait_event(zmq.EVENT_CONNECTED, 5), "the DEALER did not connect again")
        wait_until(lambda: z.px.stats()["accepted"] >= 2, 5, "the DEALER to reconnect")
        z.roundtrip(b"after")
    finally:
        z.close()


def test_zmq_blip_down_then_heartbeat_reconnects(_bin):
    # The scenario of the fault tests: for 1 s nothing comes back from the server,
    # the DEALER's heartbeat gives up on the link, the link drops, and it reconnects.
    z = Zmq(heartbeat_ms=100, timeout_ms=300)
    try:
        z.roundtrip(b"before")
        z.px.hold("down")
        z.dealer.send(b"during")      # reaches the ROUTER: only "down" is lost
        got = z.recv_router(2)
        check(got and got[-1] == b"during", "up was stopped by a hold of down: %r" % got)
        z.router.send_multipart([got[0], b"lost"])
        # The heartbeat (300 ms timeout) notices the silence within the hold.
        check(z.wait_event(zmq.EVENT_DISCONNECTED, 1.0),
              "the heartbeat did not drop the link within 1 s")
        z.px.cut()
        z.px.release()
        wait_until(lambda: z.px.stats()["active"] >= 1, 5, "a new connection")
        z.roundtrip(b"after", timeout=5)
        check(not z.dealer.poll(100), "the reply lost in the blip came through")
        # blip() does the same in one call.
        n = z.px.blip("down", 0.5)
        check(n >= 1, "blip cut nothing")
        z.roundtrip(b"after blip", timeout=5)
    finally:
        z.close()


def test_zmq_blackhole_stalls_then_resumes(_bin):
    z = Zmq(heartbeat_ms=200, timeout_ms=5000)
    try:
        z.roundtrip(b"before")
        z.px.blackhole(1.0)
        start = time.monotonic()
        z.dealer.send(b"stalled")
        check(z.recv_router(0.7) is None, "a message passed the blackhole")
        got = z.recv_router(5)
        waited = time.monotonic() - start
        check(got and got[-1] == b"stalled", "the stalled message: %r" % got)
        check(waited >= 0.9, "delivered %.2f s into a 1 s blackhole" % waited)
        z.roundtrip(b"after")
        check(z.px.stats()["accepted"] == 1, "the blackhole broke the connection")
    finally:
        z.close()


# --- the program --------------------------------------------------------------------------

def test_program_and_control_port(bin_dir):
    # As the integration tests use it: a process of the Pipeline, stopped by PID.
    srv = Server()
    try:
        with Pipeline(bin_dir, None, "tcpproxy") as p:
            proc = p.start_proxy("proxy", "tcp://127.0.0.1:%d" % srv.port)
            port = proc.ready["port"]
            check(proc.ready["endpoint"] == "tcp://127.0.0.1:%d" % port, "ready %s" % proc.ready)
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn = srv.accept()
            check(proxy_control(proc, "hold up") == "ok", "hold refused")
            client.sendall(b"abc")
            wait_until(lambda: control(proc.ready["control"], "stats")["up_buffered"] == 3, 5,
                       "the held bytes")
            check(nothing_arrives(conn, 0.2), "held bytes passed")
            proxy_control(proc, "release")
            check(recv_exact(conn, 3) == b"abc", "released bytes")
            try:
                proxy_control(proc, "hold sideways")
                raise TestFailure("a bad direction was accepted")
            except RuntimeError as e:
                check("up, down or both" in str(e), "error: %s" % e)
            check(proxy_control(proc, "cut") == "ok 1", "cut")
            try:
                check(client.recv(10) == b"", "read after the cut")
            except ConnectionResetError:
                pass
            s = proxy_control(proc, "stats")
            check(s["cut"] == 1 and s["up_out"] == 3, "stats %s" % s)
            # The in-process kind, closed with the pipeline.
            px = p.proxy("tcp://127.0.0.1:%d" % srv.port)
            c2 = socket.create_connection(("127.0.0.1", px.port), timeout=5)
            c2.close()
            codes = p.stop()
            check(codes == {"proxy": 0}, "the program did not exit cleanly: %s" % codes)
        check(not px.thread.is_alive(), "the pipeline left its proxy running")
    finally:
        srv.close()


if __name__ == "__main__":
    main([test_bytes_pass_both_ways,
          test_hold_buffers_and_release_delivers_in_order,
          test_cut_resets_and_new_connections_work,
          test_blackhole_stalls_then_resumes,
          test_refuse_and_reopen,
          test_zmq_passes_and_hold_keeps_order,
          test_zmq_cut_reconnects,
          test_zmq_blip_down_then_heartbeat_reconnects,
          test_zmq_blackhole_stalls_then_resumes,
          test_program_and_control_port])
