"""Every daemon's command line, the embedded demo, generated docs, the compose file."""
import json
import os
import shutil
import subprocess
import sys

from harness import Pipeline, check, main, wait_until, TestFailure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMONS = ["broker/parley-broker", "poller/parley-poller", "worker/parley-worker",
           "sink/parley-sink", "tools/parleyctl"]


def run(argv, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, **kw)


def test_help_and_version(bin_dir):
    for d in DAEMONS:
        exe = os.path.join(bin_dir, d)
        out = run([exe, "--help"])
        check(out.returncode == 0 and "Usage:" in out.stdout, "%s --help: %r" % (d, out))
        out = run([exe, "--version"])
        check(out.returncode == 0 and out.stdout.startswith(os.path.basename(d) + " "),
              "%s --version: %r" % (d, out.stdout))
        out = run([exe, "--no-such-option"])
        check(out.returncode == 2, "%s accepted an unknown option" % d)


def test_config_check_warns_about_what_runs_instead(bin_dir):
    """A seed user's own file that quietly runs something else is called out, by
    `config check` and by the daemons at start."""
    import tempfile
    d = tempfile.mkdtemp(prefix="parley-notes-")
    try:
        path = os.path.join(d, "parley.json")
        with open(path, "w") as f:
            json.dump({"entities": [{"id": "sage"}],
                       "lmStudioServers": [{"name": "m1", "ip": "10.0.0.102", "port": 1234}]}, f)
        out = run([os.path.join(bin_dir, "tools/parleyctl"), "config", "check", path])
        check(out.returncode == 0, "config check failed: %r" % (out.stderr,))
        for words in ('worker.backend is "template"', "poller.sources is not set",
                      "sink.destinations is not set"):
            check(words in out.stdout, "config check does not warn %r:\n%s" % (words, out.stdout))
        # A file that sets all three is quiet.
        with open(path, "w") as f:
            json.dump({"entities": [{"id": "sage"}], "worker": {"backend": "openai"},
                       "lmStudioServers": [{"name": "m1", "ip": "10.0.0.102", "port": 1234}],
                       "poller": {"sources": [{"name": "in", "type": "jsonl", "path": "-"}]},
                       "sink": {"destinations": [{"name": "out", "type": "jsonl", "path": "x"}]}}, f)
        out = run([os.path.join(bin_dir, "tools/parleyctl"), "config", "check", path])
        check("warning" not in out.stdout, "warnings for a complete file:\n%s" % out.stdout)
        # The worker logs its own note at start.
        with open(path, "w") as f:
            json.dump({"entities": [{"id": "sage"}], "storage": {"dataDir": ""},
                       "lmStudioServers": [{"name": "m1", "ip": "10.0.0.102", "port": 1234}]}, f)
        with Pipeline(bin_dir, json.load(open(path)), "notes") as p:
            p.start_broker()
            p.start_sink()
            p.start_worker()
            wait_until(lambda: 'worker.backend is "template"' in p.log("worker"), 10,
                       "the worker's warning at start")
            check("sink.destinations is not set" in p.log("sink"), "the sink did not warn")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_wildcard_port_is_reported(bin_dir):
    """Bound to "tcp://127.0.0.1:*", the broker reports the port it got in its ready file."""
    from harness import Proc
    ready = "/tmp/parley-wildcard-%d.ready" % os.getpid()
    argv = [os.path.join(bin_dir, "broker/parley-broker"), "--ready-file", ready,
            "--set", "network.brokerFrontend=tcp://127.0.0.1:*",
            "--set", "network.brokerBackend=tcp://127.0.0.1:*", "--set", "storage.dataDir="]
    proc = Proc("broker", argv, ready + ".log", dict(os.environ), ready).start()
    try:
        for key in ("frontend", "backend"):
            port = proc.ready[key].rsplit(":", 1)[1]
            check(port.isdigit() and int(port) > 0, "ready file: %s" % proc.ready)
        check(proc.stop() == 0, "the broker did not stop cleanly")
    finally:
        proc.kill()
        for f in (ready, ready + ".log"):
            if os.path.exists(f):
                os.unlink(f)


def test_bad_configuration_is_refused_with_its_path(bin_dir):
    broker = os.path.join(bin_dir, "broker/parley-broker")
    bad = "/tmp/parley-bad-config.json"
    with open(bad, "w") as f:
        json.dump({"entities": [{"id": "a", "rateLimits": {"maxPostsPerHour": -1}}]}, f)
    out = run([broker, "--config", bad])
    check(out.returncode == 2, "exit %d" % out.returncode)
    check("entities[0].rateLimits.maxPostsPerHour: -1 is out of range" in out.stderr, out.stderr)
    out = run([broker, "--config", "/nonexistent/parley.json"])
    check(out.returncode == 2 and "cannot open" in out.stderr, out.stderr)
    out = run([broker, "--set", "queueSettings.maxRetries=many"])
    check(out.returncode == 2 and "queueSettings.maxRetries: expected an integer, got a string"
          in out.stderr, out.stderr)
    os.unlink(bad)


def test_embedded_demo_replies_within_ten_seconds(bin_dir):
    """The README's first command, minus installing: the embedded default end to end."""
    with Pipeline(bin_dir, None, "demo") as p:
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: " -> @" in p.procs["sink"].tail(200), 10, "a reply printed by the sink")
        # The stats feed carries every component.
        roles = {c["role"] for c in p.ctl("stats")["components"]}
        check(roles >= {"sink", "broker", "worker"}, "stats feed has only %s" % roles)
        top = p.ctl_text("top", "--once")
        check("posted" in top and "queue" in top and "worker" in top, top)
        codes = p.stop()
        check(all(c == 0 for c in codes.values()), "unclean exits: %s" % codes)


def test_generated_docs_are_current(bin_dir):
    out = run([sys.executable, os.path.join(ROOT, "tools", "gen-docs.py"), "--check", "--bin", bin_dir])
    check(out.returncode == 0, out.stdout + out.stderr)


def test_compose_file_is_valid(bin_dir):
    if not shutil.which("docker-compose"):
        raise TestFailure("docker-compose is not installed (tools/install-deps.sh installs it)")
    out = run(["docker-compose", "-f", os.path.join(ROOT, "docker-compose.yml"), "config", "-q"])
    check(out.returncode == 0, "docker-compose config: %s" % out.stderr)


if __name__ == "__main__":
    main([test_help_and_version, test_config_check_warns_about_what_runs_instead, test_wildcard_port_is_reported,
          test_bad_configuration_is_refused_with_its_path,
          test_embedded_demo_replies_within_ten_seconds, test_generated_docs_are_current,
          test_compose_file_is_valid])
