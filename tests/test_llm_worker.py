"""LLM workers in the pipeline: hot-model routing, SIGTERM drain, a broker restart.

Real daemons, real HTTP on 127.0.0.1 to tests/fake_llm.py servers.
"""
import collections
import time

from harness import (Pipeline, base_config, check, fake_llm_control, fake_llm_stats,
                     jsonl_input, main, mentions, wait_until, write_jsonl)


def pipeline(bin_dir, name, entities, **worker):
    config = base_config(entities, sink={"destinations": []})
    config["worker"].update({"backend": "openai", "requestTimeoutMs": 30000,
                             "connectTimeoutMs": 1000, "healthCheckMs": 200})
    config["worker"].update(worker)
    p = Pipeline(bin_dir, config, name)
    config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
    return p, config


def server(name, proc, **extra):
    s = {"name": name, "url": proc.ready["url"], "type": "llamacpp", "maxConcurrent": 64}
    s.update(extra)
    return s


def test_jobs_go_to_the_worker_with_the_model_hot(bin_dir):
    """Two workers, each with a server that has a different model loaded."""
    entities = [{"id": "alpha", "responseChance": 0, "model": "model-a"},
                {"id": "beta", "responseChance": 0, "model": "model-b"}]
    p, config = pipeline(bin_dir, "llm-hot", entities, concurrency=64)
    with p:
        sa = p.start_fake_llm("sa", models=["model-a"], latency_ms=50)
        sb = p.start_fake_llm("sb", models=["model-b"], latency_ms=50)
        msgs = mentions(40, 0, "alpha") + mentions(40, 40, "beta")
        msgs = [m for pair in zip(msgs[:40], msgs[40:]) for m in pair]  # interleaved
        jsonl_input(p, config, msgs)
        # Each worker knows only its own server (workers on two GPU boxes).
        config["lmStudioServers"] = [server("sa", sa)]
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker("wa", env={"WORKER_ID": "box-a"})
        config["lmStudioServers"] = [server("sb", sb)]
        p.write_config(config)
        p.start_worker("wb", env={"WORKER_ID": "box-b"})

        def hot():
            return {w["id"]: w["models"] for w in p.ctl("workers")}

        wait_until(lambda: hot() == {"box-a": ["model-a"], "box-b": ["model-b"]}, 10,
                   "both workers to report their hot model")
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 80, 20, "80 replies")
        writers = collections.Counter((r["entity"], r["text"].split(" ", 1)[0]) for r in p.posted())
        check(writers == {("alpha", "[sa/model-a]"): 40, ("beta", "[sb/model-b]"): 40},
              "who wrote what: %s" % dict(writers))
        workers = {w["id"]: w for w in p.ctl("workers")}
        check(workers["box-a"]["dispatched"] == 40 and workers["box-b"]["dispatched"] == 40,
              "dispatched: %s" % {k: w["dispatched"] for k, w in workers.items()})


def test_sigterm_finishes_calls_in_flight(bin_dir):
    """Calls that end within drainTimeoutMs are finished and posted; the worker exits 0."""
    p, config = pipeline(bin_dir, "llm-drain", [{"id": "alpha", "responseChance": 0}],
                         concurrency=10, drainTimeoutMs=8000)
    with p:
        s1 = p.start_fake_llm("s1", latency_ms=1500)
        config["lmStudioServers"] = [server("s1", s1)]
        jsonl_input(p, config, mentions(30))
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        w = p.start_worker()
        p.start_poller()
        wait_until(lambda: fake_llm_stats(s1.ready["url"])["in_flight"] == 10, 10,
                   "10 calls in flight")
        start = time.monotonic()
        code = w.stop(timeout=10)
        took = time.monotonic() - start
        check(code == 0, "worker exit %s" % code)
        check(took < 4, "draining took %.1f s" % took)
        wait_until(lambda: len(p.posted()) >= 10, 5, "the 10 drained replies")
        stats = p.broker_stats()
        check(stats["returned"] == 0 and stats["queued"] == 20, "broker: %s" % stats)
        check("draining: finishing 10 job(s)" in p.log("worker"), "drain not logged")


def test_sigterm_hands_back_what_cannot_finish(bin_dir):
    """Calls still running at drainTimeoutMs, and jobs waiting for a server, go back at once."""
    p, config = pipeline(bin_dir, "llm-handback", [{"id": "alpha", "responseChance": 0}],
                         concurrency=100, drainTimeoutMs=500)
    with p:
        slow = p.start_fake_llm("slow", latency_ms=20000)
        loading = p.start_fake_llm("loading", latency_ms=20000)
        fast = p.start_fake_llm("fast", latency_ms=10)
        fake_llm_control(loading.ready["url"], health=503)
        # 20 slots: the worker holds 20 jobs; 5 calls run on "slow", 15 jobs wait
        # because "loading" is still loading its model.
        config["lmStudioServers"] = [server("slow", slow, maxConcurrent=5),
                                     server("loading", loading, maxConcurrent=15)]
        jsonl_input(p, config, mentions(30))
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        w = p.start_worker("w-slow")
        wait_until(lambda: "LLM server loading is down" in p.log("w-slow"), 10,
                   "the loading server to be marked down")
        check([x["capacity"] for x in p.ctl("workers")] == [20], "capacity: %s" % p.ctl("workers"))
        p.start_poller()
        wait_until(lambda: p.broker_stats()["in_flight"] == 20
                   and fake_llm_stats(slow.ready["url"])["in_flight"] == 5, 10,
                   "20 jobs held, 5 calls in flight")
        start = time.monotonic()
        code = w.stop(timeout=10)
        check(code == 0, "worker exit %s" % code)
        check(time.monotonic() - start < 3, "the hand-back was slow")
        stats = wait_until(lambda: (lambda s: s if s["returned"] == 20 else None)(p.broker_stats()),
                           5, "20 jobs handed back")
        check(stats["retried"] == 0 and stats["dlq"] == 0, "broker: %s" % stats)
        check(fake_llm_stats(loading.ready["url"])["calls"] == 0, "a server that was down got calls")
        config["lmStudioServers"] = [server("fast", fast)]
        p.write_config(config)
        p.start_worker("w-fast")
        wait_until(lambda: len(p.posted()) >= 30, 10, "30 replies from the other worker")
        check(all(r["text"].startswith("[fast/") for r in p.posted()), "a reply from the slow server")


def test_worker_keeps_serving_across_a_broker_restart(bin_dir):
    p, config = pipeline(bin_dir, "llm-restart", [{"id": "alpha", "responseChance": 0}])
    with p:
        s1 = p.start_fake_llm("s1", latency_ms=10)
        config["lmStudioServers"] = [server("s1", s1)]
        jsonl_input(p, config, mentions(10), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        w = p.start_worker(env={"WORKER_ID": "steady"})
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 10, 10, "10 replies")
        p.procs["broker"].stop()
        p.start_broker()
        wait_until(lambda: [x["id"] for x in p.ctl("workers")] == ["steady"], 10,
                   "the worker to join the new broker")
        write_jsonl(p.path("in.jsonl"), mentions(10, 10), "a")
        wait_until(lambda: len(p.posted()) >= 20, 15, "10 more replies after the restart")
        check(w.alive(), "the worker was restarted or died")
        check("broker restarted" in p.log("worker"), "the restart was not noticed")
        check(fake_llm_stats(s1.ready["url"])["calls"] == 20, "calls to the LLM")


if __name__ == "__main__":
    main([test_jobs_go_to_the_worker_with_the_model_hot,
          test_sigterm_finishes_calls_in_flight,
          test_sigterm_hands_back_what_cannot_finish,
          test_worker_keeps_serving_across_a_broker_restart])
