"""A full disk loses nothing: not under the jsonl output, not under a journal.

A full disk is made with a file size limit (RLIMIT_FSIZE, set on the running
daemon with prlimit): a write that would grow a file beyond it fails with
EFBIG, as it would with ENOSPC, and the daemons ignore SIGXFSZ. Then the
limit is lifted, as an operator frees space, and every reply must be posted
exactly once.
"""
import json
import os
import resource
import signal

from harness import (Pipeline, base_config, check, jsonl_input, main, mentions, wait_until,
                     write_jsonl)


def set_file_limit(proc, limit):
    """The soft limit only: raising it back needs no privilege."""
    _, hard = resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE,
                     (hard if limit == resource.RLIM_INFINITY else limit, hard))


def whole_lines(path):
    """Every line of the file, each of which must be whole JSON ending in a newline."""
    with open(path) as f:
        text = f.read()
    check(text == "" or text.endswith("\n"), "the output ends in a torn line: %r" % text[-80:])
    return [json.loads(line) for line in text.splitlines()]


def test_jsonl_output_on_a_full_disk(bin_dir):
    """The sink's jsonl output hits the limit mid-line: the torn line is cut back,
    the post is retried, and once there is room every reply is there once."""
    config = base_config([{"id": "alpha", "responseChance": 0}], sink={"destinations": []})
    with Pipeline(bin_dir, config, "disk-full-jsonl") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        jsonl_input(p, config, mentions(10), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) == 10, 20, "the first 10 replies")
        # Room for part of one more line only. The sink's log goes to a
        # file of the harness that is larger already; its lines are lost
        # while the limit holds, which the daemon must survive too.
        size = os.path.getsize(p.output)
        set_file_limit(p.procs["sink"], size + 40)
        write_jsonl(p.path("in.jsonl"), mentions(20, start=10), mode="a")
        wait_until(lambda: p.component("sink").get("post_retries", 0) >= 2, 20,
                   "the sink to retry the posts that did not fit")
        check(os.path.getsize(p.output) == size,
              "the output grew to %d bytes while full (was %d): a torn line was left"
              % (os.path.getsize(p.output), size))
        check(len(whole_lines(p.output)) == 10, "the output changed while the disk was full")
        check(p.procs["sink"].alive(), "the sink died on a full disk")
        set_file_limit(p.procs["sink"], resource.RLIM_INFINITY)
        wait_until(lambda: len(p.posted()) == 30, 30, "all 30 replies once there is room")
        lines = whole_lines(p.output)
        keys = [r["msg_key"] for r in lines]
        check(len(keys) == len(set(keys)) == 30,
              "%d lines, %d distinct replies" % (len(keys), len(set(keys))))
        stats = p.component("sink")
        check(stats.get("failed", 0) == 0 and stats.get("in_doubt", 0) == 0,
              "replies were given up on: %r" % stats)


def test_broker_journal_on_a_full_disk(bin_dir):
    """The broker cannot store a SUBMIT: it acknowledges nothing and stops. Restarted
    with room, it recovers its last commit, the poller sends again what was not
    acknowledged, and every reply is posted once."""
    config = base_config([{"id": "alpha", "responseChance": 0}], sink={"destinations": []})
    config["storage"] = {"dataDir": "data", "fsync": "always"}
    with Pipeline(bin_dir, config, "disk-full-journal") as p:
        config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
        jsonl_input(p, config, mentions(10), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_poller()
        wait_until(lambda: p.broker_stats()["queued"] == 10, 20, "10 queued jobs")
        # No room to grow any file: the next commit fails.
        journal = p.path("data/broker")
        largest = max(os.path.getsize(os.path.join(journal, f)) for f in os.listdir(journal))
        set_file_limit(p.procs["broker"], largest)
        write_jsonl(p.path("in.jsonl"), mentions(20, start=10), mode="a")
        wait_until(lambda: not p.procs["broker"].alive(), 20,
                   "the broker to stop when it cannot store")
        log = p.log("broker")
        check(p.procs["broker"].popen.returncode not in (0, -signal.SIGXFSZ),
              "the broker's exit status: %r" % p.procs["broker"].popen.returncode)
        check(p.procs["poller"].alive(), "the poller died with its broker")
        # Room again: restart the broker; the rest of the pipeline follows.
        p.start_broker()
        p.start_sink()
        p.start_worker()
        wait_until(lambda: len(p.posted()) == 30, 40, "all 30 replies after the restart")
        lines = whole_lines(p.output)
        keys = [r["msg_key"] for r in lines]
        check(len(keys) == len(set(keys)) == 30,
              "%d lines, %d distinct replies" % (len(keys), len(set(keys))))
        check(p.ctl("dlq", "list")["total"] == 0, "dead letters: %r" % p.ctl("dlq", "list"))
        if len(log.encode()) < largest:
            check("stopped" in log, "the broker did not say why it stopped:\n%s" % log[-1500:])


if __name__ == "__main__":
    main([test_jsonl_output_on_a_full_disk,
          test_broker_journal_on_a_full_disk])
