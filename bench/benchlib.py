"""What bench/run's measurements share: helper processes spoken to over pipes,
free ports, and the bench's own binaries.

Every process is started inside a tests/harness.py Pipeline, so it is logged
in the pipeline's directory and stopped by PID when the measurement ends,
whatever happens."""
import json
import os
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import harness                                      # noqa: E402
from harness import free_endpoint, wait_until       # noqa: E402,F401


class PipedProc(harness.Proc):
    """A process whose standard input and output are pipes to the bench
    (stderr goes to its log): it says "ready", takes a "go", prints results."""

    def start(self):
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=log, env=self.env,
                                      cwd=os.path.dirname(self.log_path))
        log.close()
        harness._ALL.append(self)
        return self

    def readline(self, timeout):
        """Its next line of output; fails after `timeout` s or if it exits first."""
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        line = self.popen.stdout.readline() if ready else b""
        if not line:
            self.popen.poll()
            raise harness.TestFailure("%s: no output in %.0f s (exit %s):\n%s"
                                      % (self.name, timeout, self.popen.returncode, self.tail()))
        return line.decode().strip()

    def result(self, timeout):
        """Its next output line, as JSON."""
        return json.loads(self.readline(timeout))

    def send(self, line):
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()


def start_piped(p, key, argv, ready=True, timeout=15):
    """Starts `argv` in Pipeline `p` with pipes; waits for its "ready" line."""
    proc = PipedProc(key, list(argv), p.path(key + ".log"), p._env(None))
    p.procs[key] = proc
    proc.start()
    if ready:
        line = proc.readline(timeout)
        if line != "ready":
            raise harness.TestFailure("%s said %r, not ready" % (key, line))
    return proc


def free_port():
    return int(free_endpoint().rsplit(":", 1)[1])


def wait_port(port, proc, timeout=15):
    """Waits until something accepts connections on 127.0.0.1:`port`."""
    def accepting():
        if not proc.alive():
            raise harness.TestFailure("%s exited:\n%s" % (proc.name, proc.tail()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(accepting, timeout, "%s to listen on port %d" % (proc.name, port))


def binary(build, name):
    path = os.path.join(build, "bench", name)
    if not os.path.exists(path):
        raise harness.TestFailure("%s is not built (bench/run builds it)" % path)
    return path


def rate(result):
    """Jobs per second from a helper's {"jobs", "first_ns", "last_ns"}:
    the jobs after the first over the time from the first to the last."""
    return (result["jobs"] - 1) / max((result["last_ns"] - result["first_ns"]) / 1e9, 1e-9)
