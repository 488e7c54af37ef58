"""Runs real Parley daemons for integration tests.

Every daemon is a separate process bound to 127.0.0.1 on ephemeral ports:
the broker and sink bind "tcp://127.0.0.1:*" and report the ports they got
in a ready file; the others are started pointing at those. Every wait has
a deadline; every process is stopped by PID when the test ends, whatever
happens (atexit and signal handlers).
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ALL = []   # every Proc ever started, for the last-resort cleanup


def _cleanup():
    for p in _ALL:
        p.kill()


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, lambda *_: sys.exit(3))


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls `predicate` until it returns a true value; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TestFailure("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


class Proc:
    def __init__(self, name, argv, log, env, ready=None):
        self.name = name
        self.argv = argv
        self.log_path = log
        self.ready_path = ready
        self.env = env
        self.popen = None
        self.ready = None

    def start(self):
        if self.ready_path and os.path.exists(self.ready_path):
            os.unlink(self.ready_path)
        log = open(self.log_path, "ab")
        # The working directory is the test's own: relative paths (storage.dataDir's
        # default, "parley-data") stay inside it.
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env,
                                      stdin=subprocess.DEVNULL, cwd=os.path.dirname(self.log_path))
        log.close()
        _ALL.append(self)
        if self.ready_path:
            self.ready = wait_until(self._read_ready, 15, "%s to be ready" % self.name)
        return self

    def _read_ready(self):
        if self.popen.poll() is not None:
            raise TestFailure("%s exited with %s before it was ready:\n%s"
                              % (self.name, self.popen.returncode, self.tail()))
        try:
            with open(self.ready_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout=20):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if not self.popen:
            return None
        if self.alive():
            # A process a test froze (SIGSTOP) would not act on SIGTERM until continued.
            self.popen.send_signal(signal.SIGCONT)
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self):
        if self.popen and self.popen.poll() is None:
            self.popen.kill()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_endpoint():
    """A free 127.0.0.1 port below the kernel's ephemeral range.

    Listening ports must not come from the ephemeral range when a daemon is
    restarted on the same port: while it is down, a peer reconnecting to it
    can be given that very port as its own local port and connect to itself
    (TCP self-connect), and the restarted daemon then cannot bind."""
    import random
    import socket
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return "tcp://127.0.0.1:%d" % port
        except OSError:
            continue
        finally:
            s.close()
    raise TestFailure("no free port below %d" % low)


class Pipeline:
    """A broker, a sink, and any number of workers and pollers.

    Used as a context manager, it ends every test the same way:

        with Pipeline(bin_dir, config, "name") as p:
            p.start_broker()
            ...

    and whatever happens in the block, its processes are stopped and its
    directory removed (see __exit__)."""

    def __init__(self, bin_dir, config, name="pipeline"):
        """config: a dict written to parley.json, or None for the embedded default."""
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="parley-%s-" % name)
        self.config = config
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.dir, "parley.json")
            self.write_config(config)
        self.procs = {}
        self.proxies = []          # in-process TcpProxy objects, closed at cleanup
        self.frontend = self.backend = self.results = self.stats = None
        self.output = os.path.join(self.dir, "posted.jsonl")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Prints the logs if the block raised, then stops everything and cleans up.

        stop() checks the logs for sanitizer reports: after a block that passed,
        such a report fails the test; after a block that failed, it is printed
        and the block's own error is the one raised (it says what went wrong first)."""
        try:
            if exc_type is not None:
                print(self.logs())
            try:
                self.stop()
            except Exception as e:
                if exc_type is None:
                    raise
                # Unless it is the block's own error (it failed in its own call of stop()).
                if str(e) != str(exc):
                    print("also, while stopping: %s" % e)
        finally:
            self.cleanup()
        return False

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_config(self, config):
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    def _binary(self, name):
        for sub in (name.replace("parley-", ""), "tools", ""):
            p = os.path.join(self.bin, sub, name)
            if os.path.exists(p):
                return p
        raise TestFailure("binary %s not found under %s" % (name, self.bin))

    def _env(self, extra):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("PARLEY_") or k == "WORKER_ID":
                del env[k]
        env.update(extra or {})
        return env

    def _start(self, key, binary, sets, env=None, args=()):
        argv = [self._binary(binary), "--ready-file", self.path(key + ".ready")]
        if self.config_path:
            argv += ["--config", self.config_path]
        for s in sets:
            argv += ["--set", s]
        argv += list(args)
        proc = Proc(key, argv, self.path(key + ".log"), self._env(env), self.path(key + ".ready"))
        self.procs[key] = proc
        return proc.start()

    def endpoint_sets(self):
        return ["network.brokerFrontend=%s" % self.frontend,
                "network.brokerBackend=%s" % self.backend,
                "network.sinkResults=%s" % self.results,
                "network.statsPublish=%s" % self.stats]

    def start_broker(self, sets=(), env=None):
        # First start: free ports. Restarts: the same ports, so peers reconnect.
        front = self.frontend or free_endpoint()
        back = self.backend or free_endpoint()
        p = self._start("broker", "parley-broker",
                        ["network.brokerFrontend=" + front, "network.brokerBackend=" + back]
                        + list(sets), env)
        self.frontend, self.backend = p.ready["frontend"], p.ready["backend"]
        return p

    def start_sink(self, sets=(), env=None):
        check(self.frontend, "start the broker before the sink")
        results = self.results or free_endpoint()
        stats = self.stats or free_endpoint()
        p = self._start("sink", "parley-sink",
                        ["network.brokerFrontend=" + self.frontend,
                         "network.sinkResults=" + results, "network.statsPublish=" + stats]
                        + list(sets), env)
        self.results, self.stats = p.ready["results"], p.ready["stats"]
        return p

    def start_program(self, key, argv, env=None):
        """Any other program (no ready file), logged and stopped like the daemons."""
        proc = Proc(key, list(argv), self.path(key + ".log"), self._env(env))
        self.procs[key] = proc
        return proc.start()

    def start_worker(self, key="worker", sets=(), env=None):
        return self._start(key, "parley-worker", self.endpoint_sets() + list(sets), env)

    def start_poller(self, key="poller", sets=(), env=None):
        return self._start(key, "parley-poller", self.endpoint_sets() + list(sets), env)

    def start_fake_llm(self, key, models=(), type="llamacpp", latency_ms=0, api_key=""):
        """tests/fake_llm.py, an OpenAI-compatible server on an ephemeral port.

        Returns the Proc; its base URL is proc.ready["url"]."""
        here = os.path.dirname(os.path.abspath(__file__))
        ready = self.path(key + ".ready")
        argv = [sys.executable, os.path.join(here, "fake_llm.py"), "--ready", ready,
                "--name", key, "--models", ",".join(models), "--type", type,
                "--latency-ms", str(latency_ms)]
        if api_key:
            argv += ["--api-key", api_key]
        proc = Proc(key, argv, self.path(key + ".log"), self._env(None), ready)
        self.procs[key] = proc
        return proc.start()

    def proxy(self, target):
        """An in-process tests/tcpproxy.py TcpProxy to `target` ("tcp://host:port").

        Point a daemon at proxy.endpoint (e.g. sets=["network.brokerBackend=" +
        px.endpoint]) to inject faults on its link; closed when the pipeline is."""
        from tcpproxy import TcpProxy
        px = TcpProxy.to(target)
        self.proxies.append(px)
        return px

    def start_proxy(self, key, target):
        """tests/tcpproxy.py as a process of its own, stopped by PID like the daemons.

        proc.ready holds "endpoint", "port" and "control"; proxy_control(proc, line)
        sends it a control line."""
        here = os.path.dirname(os.path.abspath(__file__))
        ready = self.path(key + ".ready")
        argv = [sys.executable, os.path.join(here, "tcpproxy.py"), "--target", target,
                "--ready", ready]
        proc = Proc(key, argv, self.path(key + ".log"), self._env(None), ready)
        self.procs[key] = proc
        return proc.start()

    def ctl_text(self, *args, timeout=10):
        """parleyctl's plain output (no --json)."""
        argv = [self._binary("parleyctl"), "--timeout", "3000"]
        if self.config_path:
            argv += ["--config", self.config_path]
        for s in self.endpoint_sets():
            argv += ["--set", s]
        out = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                             env=self._env(None))
        if out.returncode != 0:
            raise TestFailure("parleyctl %s failed (%d): %s" % (" ".join(args), out.returncode,
                                                                out.stderr.strip()))
        return out.stdout

    def ctl(self, *args, timeout=10):
        argv = [self._binary("parleyctl"), "--json", "--timeout", "3000"]
        if self.config_path:
            argv += ["--config", self.config_path]
        for s in self.endpoint_sets():
            argv += ["--set", s]
        argv += list(args)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env=self._env(None))
        if out.returncode != 0:
            raise TestFailure("parleyctl %s failed (%d): %s" % (" ".join(args), out.returncode,
                                                                out.stderr.strip()))
        return json.loads(out.stdout)

    def broker_stats(self):
        return self.ctl("broker-stats")

    def component(self, role):
        """The counters of the first component with this role in the stats feed, or {}."""
        for c in self.ctl("stats")["components"]:
            if c["role"] == role:
                return c["values"]
        return {}

    def log(self, key):
        """The whole log of process `key`."""
        try:
            with open(self.procs[key].log_path, errors="replace") as f:
                return f.read()
        except (KeyError, OSError):
            return ""

    def posted(self, path=None):
        """The replies in the JSON-lines output, in posting order. A line
        without its newline is still being written (the sink writes a
        turn's lines in one write, which a reader may see in part): it is
        left for the next call."""
        lines = []
        try:
            with open(path or self.output) as f:
                for line in f:
                    if line.endswith("\n") and line.strip():
                        lines.append(json.loads(line))
        except FileNotFoundError:
            pass
        return lines

    def stop(self):
        """Stops everything: pollers and workers first, then sink, then broker.

        Fails if any process reported a sanitizer error or a leak in its log.
        Safe to call again (the end of a `with` block does): a process already
        stopped keeps its exit status."""
        order = sorted(self.procs, key=lambda k: ("poller" not in k, "worker" not in k,
                                                   k == "broker"))
        codes = {}
        for k in order:
            codes[k] = self.procs[k].stop()
        self.check_sanitizers()
        return codes

    def check_sanitizers(self):
        for k, p in self.procs.items():
            try:
                with open(p.log_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                at = text.find(marker)
                if at >= 0:
                    raise TestFailure("%s (pid %s) reported a sanitizer error:\n%s"
                                      % (k, p.pid, text[max(0, at - 200):at + 3000]))

    def logs(self):
        return "\n".join("--- %s (pid %s)\n%s" % (k, p.pid, p.tail()) for k, p in self.procs.items())

    def cleanup(self, keep=False):
        for p in self.procs.values():
            p.kill()
        for px in self.proxies:
            px.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def proxy_control(proc, line):
    """Sends a control line ("cut", "hold down 1", "stats", ...) to a proxy of start_proxy."""
    from tcpproxy import control
    return control(proc.ready["control"], line)


def fake_llm_stats(url):
    """What a fake LLM server has seen (its /_stats)."""
    with urllib.request.urlopen(url + "/_stats", timeout=5) as r:
        return json.load(r)


def fake_llm_control(url, **change):
    """Changes a fake LLM server's behaviour (its /_control)."""
    req = urllib.request.Request(url + "/_control", data=json.dumps(change).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def serve_http(on_get, on_post):
    """A threaded HTTP/1.1 server on 127.0.0.1 and an ephemeral port, for a fake API.

    on_get(handler) and on_post(handler, body bytes) answer every request (see
    answer_json); it serves from a daemon thread. Its port is
    server.server_address[1]; server.shutdown() and server.server_close() end it.

    handler.arrival is (time.monotonic(), Unix ms) taken the moment the whole
    request (with its body) was read, before anything else is done with it:
    when the request arrived, for fakes that count platform limits."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.arrival = (time.monotonic(), int(time.time() * 1000))
            on_get(self)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            self.arrival = (time.monotonic(), int(time.time() * 1000))
            on_post(self, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def answer_json(handler, status, payload, headers=None):
    """Answers a request of serve_http: `payload` as JSON, or as is if it is bytes;
    `headers` (a dict) are added, e.g. {"Retry-After": "3"}."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, str(v))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass     # the client went away: nothing to answer


def base_config(entities, **sections):
    """A test configuration: no delays, no caps, fast heartbeats, state in memory."""
    config = {
        "storage": {"dataDir": ""},
        "botSettings": {"pollingInterval": 1000},
        "queueSettings": {
            "globalMaxInFlight": 0, "perEntityMaxInFlight": 0, "maxAgeSeconds": 0,
            "staleClaimTimeout": 5000, "retryBaseMs": 100, "retryMaxMs": 1000,
            "responseDelays": {"urgent": {"minMs": 0, "maxMs": 0},
                               "normal": {"minMs": 0, "maxMs": 0},
                               "low": {"minMs": 0, "maxMs": 0}},
        },
        "network": {"heartbeatMs": 200, "resendMs": 500},
        "entities": entities,
        "worker": {"templateLatencyMs": 0, "templateJitterMs": 0, "concurrency": 16,
                   "drainTimeoutMs": 5000},
        "sink": {"statsIntervalMs": 200, "statsLogIntervalMs": 0},
        "poller": {"sources": []},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    return config


def write_jsonl(path, messages, mode="w"):
    """Writes one JSON object a line; mode "a" appends."""
    with open(path, mode) as f:
        for m in messages:
            f.write(json.dumps(m) + "\n")


def mentions(n, start=0, who="alpha"):
    """Messages m<start>... in one room, each mentioning `who`."""
    return [{"id": "m%d" % i, "chat": "room", "author": "user%d" % (i % 7),
             "text": "@%s message %d" % (who, i)} for i in range(start, start + n)]


def jsonl_input(p, config, msgs, follow=False):
    """Makes the pipeline's in.jsonl, holding `msgs`, the poller's only source."""
    write_jsonl(p.path("in.jsonl"), msgs)
    config["poller"]["sources"] = [{"name": "in", "type": "jsonl", "path": p.path("in.jsonl"),
                                    "follow": follow}]


def main(tests):
    """Runs test functions (each takes the bin dir); prints a summary line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the CMake build directory")
    parser.add_argument("--only", help="run only tests whose name contains this")
    args = parser.parse_args()
    passed = failed = 0
    for test in tests:
        if args.only and args.only not in test.__name__:
            continue
        start = time.monotonic()
        try:
            test(os.path.abspath(args.bin))
            passed += 1
            print("PASS %s (%.1f s)" % (test.__name__, time.monotonic() - start), flush=True)
        except Exception as e:   # any failure of one test is reported, the rest still run
            failed += 1
            print("FAIL %s: %s" % (test.__name__, e), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
