"""Transport security against real daemons: CurveZMQ on every connection,
allow-lists by role, and everything that must be refused.

Keys are made with `parleyctl keygen` in each test's directory and laid out
as a deployment would have them:

    keys/<name>/<name>.key, keys/<name>/<name>.key_secret   (broker, sink, poller, worker, operator)
    keys/allow/{pollers,workers,sinks,operators}/<name>.key  (the broker's and sink's allow-lists)

Clients the daemons must refuse are pyzmq sockets (pyzmq speaks CURVE and
reads czmq's certificate files easily: "public-key = ..." lines).
"""
import collections
import os
import shutil
import socket
import subprocess
import sys
import threading

import zmq

from harness import (Pipeline, TestFailure, base_config, check, free_endpoint, jsonl_input, main,
                     wait_until)
from pyworker import HEARTBEAT, frame, parse

CTL, CTL_REPLY = 13, 14
NAMES = ("broker", "sink", "poller", "worker", "operator")
ALLOW = {"poller": "pollers", "worker": "workers", "sink": "sinks", "operator": "operators"}
# zmq_curve(7), "TEST KEY VALUES": everyone has these secrets.
DOC_CLIENT = (b"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", b"D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs")
DOC_SERVER = (b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", b"JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6")
ENTITIES = [{"id": "alpha", "responseChance": 0}]


def cert_field(path, field):
    """A key from a czmq certificate file ("public-key" or "secret-key"), as bytes."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(field + " = "):
                return line.split("=", 1)[1].strip().strip('"').encode()
    raise TestFailure("%s has no %s" % (path, field))


class Keys:
    """Every key of a deployment, made with parleyctl keygen."""

    def __init__(self, p, extra=()):
        self.p = p
        self.dir = p.path("keys")
        self.allow = os.path.join(self.dir, "allow")
        for name in NAMES + tuple(extra):
            self.keygen(name)
        for name, sub in ALLOW.items():
            self.allow_key(name, sub)

    def keygen(self, name):
        ctl = self.p._binary("parleyctl")
        where = os.path.join(self.dir, name)
        out = subprocess.run([ctl, "keygen", name, "--dir", where], capture_output=True,
                             text=True, timeout=10)
        check(out.returncode == 0, "keygen %s: %s" % (name, out.stderr))
        printed = [l.split(":", 1)[1].strip() for l in out.stdout.splitlines()
                   if l.startswith("public key:")]
        check(printed == [self.public(name).decode()], "keygen printed %r" % out.stdout)
        check(self.secret(name).decode() not in out.stdout + out.stderr,
              "keygen printed the secret key")
        check(os.stat(self.cert(name)).st_mode & 0o777 == 0o600, "secret file mode")
        # Never overwritten without --force.
        again = subprocess.run([ctl, "keygen", name, "--dir", where], capture_output=True,
                               text=True, timeout=10)
        check(again.returncode != 0 and "exists" in again.stderr, "keygen overwrote %s" % name)
        return self.public(name)

    def allow_key(self, name, sub):
        os.makedirs(os.path.join(self.allow, sub), exist_ok=True)
        shutil.copy(self.public_file(name), os.path.join(self.allow, sub, name + ".key"))

    def cert(self, name):
        return os.path.join(self.dir, name, name + ".key_secret")

    def public_file(self, name):
        return os.path.join(self.dir, name, name + ".key")

    def public(self, name):
        return cert_field(self.public_file(name), "public-key")

    def secret(self, name):
        return cert_field(self.cert(name), "secret-key")

    def sets(self, name):
        """--set settings that give process `name` its key and the server keys."""
        return ["network.security.enabled=true",
                "network.security.certificate=" + self.cert(name),
                "network.security.brokerKey=" + self.public_file("broker"),
                "network.security.sinkKey=" + self.public_file("sink"),
                "network.security.allowDir=" + self.allow]

    def env(self, name):
        """The same by environment variables."""
        return {"PARLEY_SECURITY": "1", "PARLEY_CERT": self.cert(name),
                "PARLEY_BROKER_KEY": self.public_file("broker"),
                "PARLEY_SINK_KEY": self.public_file("sink"), "PARLEY_ALLOW_DIR": self.allow}

    def ctl(self, *args, name="operator"):
        """parleyctl as an operator (JSON answer)."""
        flags = []
        for s in self.sets(name):
            flags += ["--set", s]
        return self.p.ctl(*(flags + list(args)))


def curve_socket(ctx, kind, endpoint, public=None, secret=None, server=None, identity=None):
    """A pyzmq client: CURVE when given keys, plain text otherwise."""
    s = ctx.socket(kind)
    s.linger = 0
    # One attempt: a refused client would retry every 100 ms and use up the
    # broker's budget of refusal log lines the test reads.
    s.setsockopt(zmq.RECONNECT_IVL, 60000)
    if identity:
        s.setsockopt(zmq.ROUTING_ID, identity)
    if public:
        s.curve_publickey = public
        s.curve_secretkey = secret
        s.curve_serverkey = server
    s.connect(endpoint)
    return s


def ctl_request(sock, req_id):
    sock.send(frame(CTL, [req_id, "stats", []]))


def answered(sock, timeout_ms):
    """A CTL_REPLY arrived on `sock` within `timeout_ms`."""
    if not sock.poll(timeout_ms):
        return False
    parsed = parse(sock.recv())
    return bool(parsed) and parsed[0] == CTL_REPLY


def heartbeat(sock, worker_id):
    sock.send(frame(HEARTBEAT, [worker_id, 4, 4, [], socket.gethostname(), os.getpid(), 0]))


def log_count(p, key, text):
    return p.log(key).count(text)


def wait_log(p, key, text, before, what, timeout=10):
    """Waits until `text` appears in the log of `key` more often than `before`."""
    wait_until(lambda: log_count(p, key, text) > before, timeout, what)


def secure_config(p, msgs):
    config = base_config(ENTITIES, sink={"destinations": []})
    config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
    config["queueSettings"]["staleClaimTimeout"] = 1500
    jsonl_input(p, config, msgs)
    p.write_config(config)
    return config


def messages(n, word):
    return [{"id": "m%d" % i, "chat": "room", "author": "user%d" % (i % 5),
             "text": "@alpha what about %s%d?" % (word, i)} for i in range(n)]


class Recorder:
    """A TCP forwarder that keeps every byte it forwards (both directions)."""

    def __init__(self, upstream):
        host, port = upstream.replace("tcp://", "").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.endpoint = "tcp://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def bytes(self):
        with self.lock:
            return bytes(self.captured)

    def close(self):
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


# --- tests ---------------------------------------------------------------------------------------

def test_secure_pipeline_posts_every_reply(bin_dir):
    with Pipeline(bin_dir, {}, "secure") as p:
        secure_config(p, messages(200, "zanzibar"))
        keys = Keys(p)
        p.start_broker(sets=keys.sets("broker"))
        p.start_sink(sets=keys.sets("sink"))
        p.start_worker(env=keys.env("worker"))      # by environment, as containers do
        p.start_poller(sets=keys.sets("poller"))
        wait_until(lambda: len(p.posted()) >= 200, 60, "200 posted replies")
        pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
        check(len(pairs) == 200 and max(pairs.values()) == 1, "not exactly one reply per message")
        # Every connection was admitted by role.
        broker_log, sink_log = p.log("broker"), p.log("sink")
        for who in ("worker/worker", "poller/poller", "sink/sink"):
            check("admitted %s" % who in broker_log, "the broker did not admit %s" % who)
        check("admitted worker/worker" in sink_log and "on results" in sink_log,
              "the sink did not admit the worker on results")
        for key in ("broker", "sink", "worker", "poller"):
            check("CurveZMQ on" in p.log(key), "%s does not say CurveZMQ is on" % key)
        # The operator's tools work, over CURVE: the broker and the stats feed.
        stats = keys.ctl("broker-stats")
        check(stats["malformed"] == 0, "malformed frames: %d" % stats["malformed"])
        wait_until(lambda: {c["role"] for c in keys.ctl("stats")["components"]}
                   >= {"broker", "sink", "worker", "poller"}, 10, "every role in the stats feed")
        # No secret key in any log line or in `config show`.
        shown = str(keys.ctl("config", "show"))
        for name in NAMES:
            secret = keys.secret(name).decode()
            check(secret not in shown, "config show printed %s's secret key" % name)
            for key in p.procs:
                check(secret not in p.log(key), "%s's log holds %s's secret key" % (key, name))
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def test_strangers_are_refused(bin_dir):
    """Unknown keys, plain text, a worker key on the frontend, the documentation's keys."""
    with Pipeline(bin_dir, {}, "refused") as p:
        secure_config(p, [])
        keys = Keys(p)
        # The documentation's client key, even when someone put it in an allow-list.
        with open(os.path.join(keys.allow, "pollers", "doc.key"), "w") as f:
            f.write('metadata\n    name = "doc"\ncurve\n    public-key = "%s"\n'
                    % DOC_CLIENT[0].decode())
        p.start_broker(sets=keys.sets("broker"))
        broker_key = keys.public("broker")
        ctx = zmq.Context()
        try:
            # The control: an operator's request is answered (the frames are right).
            op = curve_socket(ctx, zmq.DEALER, p.frontend, keys.public("operator"),
                              keys.secret("operator"), broker_key)
            ctl_request(op, 1)
            check(answered(op, 5000), "the operator's request was not answered")
            stranger_pub, stranger_sec = zmq.curve_keypair()
            cases = [
                ("an unknown key", "refused a connection on frontend",
                 (stranger_pub, stranger_sec, broker_key)),
                # Either side may notice the mismatch first.
                ("plain text", "a plain-text client", (None, None, None)),
                ("a worker key", "allow-list of workers, which may not use frontend",
                 (keys.public("worker"), keys.secret("worker"), broker_key)),
                ("the documentation's client key", "example key from ZeroMQ's documentation",
                 (DOC_CLIENT[0], DOC_CLIENT[1], broker_key)),
                ("the documentation's server key, pinned", "cannot be decrypted",
                 (stranger_pub, stranger_sec, DOC_SERVER[0])),
            ]
            for i, (what, logged, (public, secret, server)) in enumerate(cases):
                before = log_count(p, "broker", logged)
                sock = curve_socket(ctx, zmq.DEALER, p.frontend, public, secret, server)
                ctl_request(sock, 100 + i)
                wait_log(p, "broker", logged, before, "the broker to refuse %s" % what)
                check(not answered(sock, 300), "%s was answered" % what)
                sock.close()
            # The same on the backend: a poller key may not be a worker.
            before = log_count(p, "broker", "which may not use backend")
            sneaky = curve_socket(ctx, zmq.DEALER, p.backend, keys.public("poller"),
                                  keys.secret("poller"), broker_key, identity=b"W:sneaky:1")
            heartbeat(sneaky, "sneaky")
            wait_log(p, "broker", "which may not use backend", before, "a poller key refused")
            check(not sneaky.poll(300), "the poller key got an answer on the backend")
            # Nothing any of them sent reached the broker's message handling.
            stats = keys.ctl("broker-stats")
            check(stats["malformed"] == 0, "frames reached the broker: malformed %d"
                  % stats["malformed"])
            check(keys.ctl("workers") == [], "a worker registered: %s" % keys.ctl("workers"))
            check("example key(s) from ZeroMQ's documentation" in p.log("broker"),
                  "the allow-listed documentation key was not pointed out")
            op.close()
            sneaky.close()
        finally:
            ctx.destroy(linger=0)


def test_traffic_is_encrypted(bin_dir):
    """Between worker and sink: reply texts are on the wire without security, not with it."""
    for secure in (False, True):
        with Pipeline(bin_dir, {}, "wire") as p:
            secure_config(p, messages(20, "quokka"))
            keys = Keys(p)
            sets = keys.sets if secure else (lambda name: [])
            p.start_broker(sets=sets("broker"))
            p.start_sink(sets=sets("sink"))
            recorder = Recorder(p.results)
            try:
                p.start_worker(sets=sets("worker") + ["network.sinkResults=" + recorder.endpoint])
                p.start_poller(sets=sets("poller"))
                wait_until(lambda: len(p.posted()) >= 20, 60, "20 posted replies")
                wire = recorder.bytes()
                texts = [r["text"].encode() for r in p.posted()]
                check(all(b"quokka" in t for t in texts), "replies do not quote the message")
                seen = [t for t in texts if t in wire]
                if secure:
                    check(not seen and b"quokka" not in wire,
                          "reply text in the encrypted traffic: %r" % seen[:2])
                else:
                    check(len(seen) == len(texts),
                          "plain text traffic holds only %d of %d replies" % (len(seen), len(texts)))
            finally:
                recorder.close()


def test_deleting_a_key_file_revokes_it(bin_dir):
    with Pipeline(bin_dir, {}, "revoke") as p:
        secure_config(p, [])
        keys = Keys(p)
        p.start_broker(sets=keys.sets("broker"))
        p.start_sink(sets=keys.sets("sink"))
        check(isinstance(keys.ctl("broker-stats"), dict), "the operator is not served")
        operator_key = os.path.join(keys.allow, "operators", "operator.key")
        os.unlink(operator_key)
        before = log_count(p, "broker", "is in no allow-list of frontend")
        try:
            keys.ctl("broker-stats")
            raise TestFailure("a revoked operator key was served")
        except TestFailure as e:
            check("did not answer" in str(e), "unexpected failure: %s" % e)
        check(log_count(p, "broker", "is in no allow-list of frontend") > before,
              "the refusal of the revoked key is not logged")
        check(keys.public("operator").decode()[:8] in p.log("broker"),
              "the refusal does not name the key")
        shutil.copy(keys.public_file("operator"), operator_key)
        check(isinstance(keys.ctl("broker-stats"), dict), "the restored key is not served")
        # A connected worker: once its key is gone, its messages are refused and the
        # broker loses it.
        p.start_worker(sets=keys.sets("worker"), env={"WORKER_ID": "doomed"})
        wait_until(lambda: [w["id"] for w in keys.ctl("workers")] == ["doomed"], 10,
                   "the worker to register")
        os.unlink(os.path.join(keys.allow, "workers", "worker.key"))
        wait_log(p, "broker", "its key was removed from the allow-list", 0,
                 "the worker's messages to be refused")
        # The sink refuses what it sends there too (its stats, every second).
        wait_log(p, "sink", "refused a message on results", 0, "the sink to refuse the worker")
        wait_until(lambda: keys.ctl("workers") == [], 15, "the broker to drop the worker")
        check(keys.ctl("broker-stats")["malformed"] > 0, "refused heartbeats are not counted")


def test_routing_id_takeover_is_refused(bin_dir):
    with Pipeline(bin_dir, {}, "takeover") as p:
        secure_config(p, [])
        keys = Keys(p, extra=("worker2",))
        keys.allow_key("worker2", "workers")
        p.start_broker(sets=keys.sets("broker"))
        broker_key = keys.public("broker")
        ctx = zmq.Context()
        try:
            victim = curve_socket(ctx, zmq.DEALER, p.backend, keys.public("worker"),
                                  keys.secret("worker"), broker_key, identity=b"W:victim:1")
            heartbeat(victim, "victim")
            wait_until(lambda: [w["id"] for w in keys.ctl("workers")] == ["victim"], 10,
                       "the victim to register")
            # Another allow-listed worker key presents the victim's routing id.
            before = log_count(p, "broker", "routing id is already used by another key")
            thief = curve_socket(ctx, zmq.DEALER, p.backend, keys.public("worker2"),
                                 keys.secret("worker2"), broker_key, identity=b"W:victim:1")
            heartbeat(thief, "thief")
            wait_log(p, "broker", "routing id is already used by another key", before,
                     "the takeover to be refused")
            # The control: the same key on its own routing id is served.
            honest = curve_socket(ctx, zmq.DEALER, p.backend, keys.public("worker2"),
                                  keys.secret("worker2"), broker_key, identity=b"W:honest:2")
            heartbeat(honest, "honest")
            wait_until(lambda: "honest" in [w["id"] for w in keys.ctl("workers")], 10,
                       "the honest worker to register")
            ids = [w["id"] for w in keys.ctl("workers")]
            check("thief" not in ids, "the thief registered: %s" % ids)
            for s in (victim, thief, honest):
                s.close()
        finally:
            ctx.destroy(linger=0)


def test_plain_text_binds_only_loopback(bin_dir):
    broker = os.path.join(bin_dir, "broker", "parley-broker")
    port = free_endpoint().rsplit(":", 1)[1]
    base = [broker, "--set", "storage.dataDir=", "--set", "network.brokerFrontend=tcp://0.0.0.0:" + port,
            "--set", "network.brokerBackend=" + free_endpoint()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    out = subprocess.run(base, capture_output=True, text=True, timeout=20, env=env)
    check(out.returncode == 1, "the broker ran with a plain wildcard bind (exit %s)" % out.returncode)
    check("refusing to bind tcp://0.0.0.0:%s in plain text" % port in out.stderr
          and "network.insecure" in out.stderr, out.stderr)
    with Pipeline(bin_dir, {}, "insecure") as p:
        secure_config(p, [])
        p.frontend = "tcp://0.0.0.0:" + port
        p.start_broker(sets=["network.insecure=true"])
        log = p.log("broker")
        check("WARN" in log and "anyone who can reach it can make the bot post" in log, log)
        check(p.stop()["broker"] == 0, "the insecure broker did not stop cleanly")


def test_compose_keys_serve_the_pipeline(bin_dir):
    """docker-compose.yml as shipped: its keygen script and each service's key settings,
    run here without Docker (paths moved into the test's directory)."""
    import yaml
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docker-compose.yml")) as f:
        services = yaml.safe_load(f)["services"]
    with Pipeline(bin_dir, {}, "compose") as p:
        secure_config(p, messages(30, "wombat"))
        keys = p.path("parley-keys")
        os.makedirs(keys, mode=0o700)      # the image has it (Dockerfile)
        script = (services["keygen"]["command"][0].replace("$$", "$")
                  .replace("/var/lib/parley-keys", keys))
        env = p._env({"PATH": os.path.join(bin_dir, "tools") + os.pathsep + os.environ["PATH"]})
        for run in range(2):
            out = subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True,
                                 env=env, timeout=30)
            check(out.returncode == 0, "keygen script: %s" % out.stderr)
            made = out.stdout.count("public key file:")
            check(made == (5 if run == 0 else 0), "run %d made %d key pairs" % (run, made))

        def security_env(service):
            # Endpoints come from the harness; the rest is the service's own.
            wanted = ("PARLEY_SECURITY", "PARLEY_CERT", "PARLEY_BROKER_KEY", "PARLEY_SINK_KEY",
                      "PARLEY_ALLOW_DIR")
            return {k: str(v).replace("/var/lib/parley-keys", keys)
                    for k, v in services[service]["environment"].items() if k in wanted}

        p.start_broker(env=security_env("broker"))
        p.start_sink(env=security_env("sink"))
        p.start_worker(env=security_env("worker"))
        p.start_poller(env=security_env("poller"))
        wait_until(lambda: len(p.posted()) >= 30, 60, "30 posted replies")
        ctl = security_env("ctl")
        flags = ["--set", "network.security.enabled=true",
                 "--set", "network.security.certificate=" + ctl["PARLEY_CERT"],
                 "--set", "network.security.brokerKey=" + ctl["PARLEY_BROKER_KEY"],
                 "--set", "network.security.sinkKey=" + ctl["PARLEY_SINK_KEY"]]
        check([w["id"] for w in p.ctl(*(flags + ["workers"]))] != [], "no worker seen by the ctl key")
        check(p.ctl(*(flags + ["broker-stats"]))["malformed"] == 0, "malformed frames")
        for key in ("broker", "sink", "worker", "poller"):
            check("CurveZMQ on" in p.log(key), "%s is not secure" % key)


def test_broken_security_settings_stop_the_daemon(bin_dir):
    with Pipeline(bin_dir, {}, "broken") as p:
        secure_config(p, [])
        keys = Keys(p)
        cases = [
            ("parley-broker", ["network.security.allowDir=" + p.path("nowhere")], "allowDir"),
            ("parley-broker", ["network.security.certificate=" + p.path("none.key_secret")],
             "cannot read the certificate"),
            ("parley-broker", ["network.security.certificate=" + keys.public_file("broker") + ".x"],
             "cannot read the certificate"),
            ("parley-worker", ["network.security.sinkKey="], "sinkKey"),
            ("parley-worker", ["network.security.brokerKey=" + keys.cert("broker")],
             "is a secret key file"),
            ("parley-sink", ["network.security.allowDir="], "allowDir"),
        ]
        for binary, change, expect in cases:
            name = binary.replace("parley-", "")
            argv = [p._binary(binary), "--config", p.config_path]
            for s in p.endpoint_sets() if p.frontend else []:
                argv += ["--set", s]
            for s in (["network.brokerFrontend=" + free_endpoint(),
                       "network.brokerBackend=" + free_endpoint(),
                       "network.sinkResults=" + free_endpoint(),
                       "network.statsPublish=" + free_endpoint()] + keys.sets(name) + change):
                argv += ["--set", s]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                                 env=p._env(None), cwd=p.dir)
            check(out.returncode == 1, "%s %s: exit %s\n%s" % (binary, change, out.returncode,
                                                               out.stderr))
            check(expect in out.stderr, "%s %s: no %r in:\n%s" % (binary, change, expect, out.stderr))
            for n in NAMES:
                check(keys.secret(n).decode() not in out.stderr, "a secret key in an error")


if __name__ == "__main__":
    main([test_secure_pipeline_posts_every_reply, test_strangers_are_refused,
          test_traffic_is_encrypted, test_deleting_a_key_file_revokes_it,
          test_routing_id_takeover_is_refused, test_plain_text_binds_only_loopback,
          test_compose_keys_serve_the_pipeline, test_broken_security_settings_stop_the_daemon])
