"""Several LLM servers behind one worker: pauses, circuit breaker, health checks, a server killed.

Real daemons, real HTTP on 127.0.0.1 to tests/fake_llm.py servers.
"""
import collections
import signal

from harness import (Pipeline, base_config, check, fake_llm_control, fake_llm_stats,
                     jsonl_input, main, mentions, wait_until, write_jsonl)


def entity(eid, model="m1"):
    return {"id": eid, "responseChance": 0, "model": model, "messagesToRead": 2}


def server(name, proc, **extra):
    s = {"name": name, "url": proc.ready["url"], "type": "llamacpp", "maxConcurrent": 16}
    s.update(extra)
    return s


def pipeline(bin_dir, name, entities, **worker):
    config = base_config(entities, sink={"destinations": []})
    config["worker"].update({"backend": "openai", "requestTimeoutMs": 3000,
                             "connectTimeoutMs": 1000, "healthCheckMs": 300, "concurrency": 32})
    config["worker"].update(worker)
    p = Pipeline(bin_dir, config, name)
    config["sink"]["destinations"] = [{"name": "out", "type": "jsonl", "path": p.output}]
    return p, config


def servers_of(posted):
    """Which fake server wrote each reply ("[s2/m1] reply to: ...")."""
    return collections.Counter(r["text"].split("/", 1)[0].lstrip("[") for r in posted)


def once_each(p, n):
    pairs = collections.Counter((r["msg_key"], r["entity"]) for r in p.posted())
    check(len(pairs) == n, "%d distinct replies, expected %d" % (len(pairs), n))
    check(max(pairs.values()) == 1, "a reply was posted twice")


def test_429_and_503_pause_only_that_server(bin_dir):
    p, config = pipeline(bin_dir, "llm-pause", [entity("alpha")], backoffMs=5000)
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"])
        s2 = p.start_fake_llm("s2", models=["m1"])
        s3 = p.start_fake_llm("s3", models=["m1"], latency_ms=20)
        fake_llm_control(s1.ready["url"], fail_status=429)
        fake_llm_control(s2.ready["url"], fail_status=503)
        config["lmStudioServers"] = [server("s1", s1, maxConcurrent=2),
                                     server("s2", s2, maxConcurrent=2), server("s3", s3)]
        jsonl_input(p, config, mentions(80), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 80, 20, "80 replies")
        once_each(p, 80)
        check(servers_of(p.posted()) == {"s3": 80}, "writers: %s" % servers_of(p.posted()))
        # Each busy server got its first calls (two slots), then none during its 5 s pause.
        for proc, status in ((s1, "429"), (s2, "503")):
            seen = fake_llm_stats(proc.ready["url"])["statuses"]
            check(list(seen) == [status] and seen[status] <= 2, "%s answered %s" % (proc.name, seen))
        check(p.broker_stats()["dlq"] == 0, "dead letters: %s" % p.ctl("dlq", "list"))
        log = p.log("worker")
        check("LLM server s1: HTTP 429" in log and "LLM server s2: HTTP 503" in log
              and "no calls for 5000 ms" in log, "pauses not logged")


def test_circuit_breaker_opens_then_a_trial_closes_it(bin_dir):
    p, config = pipeline(bin_dir, "llm-breaker", [entity("alpha")], breakerFailures=3,
                         breakerOpenMs=800)
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"])
        s2 = p.start_fake_llm("s2", models=["m1"], latency_ms=20)
        fake_llm_control(s1.ready["url"], fail_status=500)
        config["lmStudioServers"] = [server("s1", s1, maxConcurrent=2), server("s2", s2)]
        jsonl_input(p, config, mentions(60), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 60, 20, "60 replies")
        check(servers_of(p.posted()) == {"s2": 60}, "writers: %s" % servers_of(p.posted()))
        failed = fake_llm_stats(s1.ready["url"])["statuses"].get("500", 0)
        check(3 <= failed <= 10, "s1 was called %d times while failing" % failed)
        wait_until(lambda: "circuit open" in p.log("worker"), 5, "the circuit to open")
        # s1 recovers: after breakerOpenMs one trial call, then it serves again.
        fake_llm_control(s1.ready["url"], fail_status=0)
        for round_ in range(20):
            write_jsonl(p.path("in.jsonl"), mentions(10, 60 + 10 * round_), "a")
            want = 70 + 10 * round_
            wait_until(lambda: len(p.posted()) >= want, 10, "%d replies" % want)
            if servers_of(p.posted()).get("s1"):
                break
        check(servers_of(p.posted()).get("s1"), "s1 never served again")
        check("circuit closed" in p.log("worker"), "closing not logged")
        once_each(p, len(p.posted()))
        check(p.broker_stats()["dlq"] == 0, "dead letters")


def test_health_checks_and_model_listings(bin_dir):
    """/health 503 keeps a server out; listings of each server type make models hot."""
    entities = [entity("alpha", "m1"), entity("beta", "m2"), entity("gamma", "m3")]
    p, config = pipeline(bin_dir, "llm-health", entities)
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"], type="llamacpp")
        s2 = p.start_fake_llm("s2", models=["m2:latest"], type="ollama")
        s3 = p.start_fake_llm("s3", models=["m3"], type="lmstudio")
        fake_llm_control(s1.ready["url"], health=503)
        config["lmStudioServers"] = [server("s1", s1), server("s2", s2, type="ollama"),
                                     server("s3", s3, type="lmstudio")]
        jsonl_input(p, config, mentions(10, 0, "alpha"), follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker(env={"WORKER_ID": "hw"})

        def hot():
            workers = p.ctl("workers")
            return set(workers[0]["models"]) if workers else set()

        wait_until(lambda: {"m2", "m3"} <= hot(), 10, "m2 and m3 to be hot")
        check("m1" not in hot() and "not-in-memory" not in hot(), "hot: %s" % hot())
        wait_until(lambda: "LLM server s1 is down: /health answered HTTP 503" in p.log("worker"),
                   5, "s1 to be marked down")
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 10, 20, "10 replies")
        check("s1" not in servers_of(p.posted()), "a server that is down got calls")
        fake_llm_control(s1.ready["url"], health=200)
        wait_until(lambda: "m1" in hot(), 5, "m1 to be hot once s1 is up")
        check("LLM server s1 is up" in p.log("worker"), "recovery not logged")
        # Hot first: with s1 up, alpha's model m1 is loaded only there.
        write_jsonl(p.path("in.jsonl"), mentions(10, 10, "alpha"), "a")
        wait_until(lambda: len(p.posted()) >= 20, 20, "20 replies")
        late = [r for r in p.posted() if int(r["msg_key"].split("/m")[-1]) >= 10]
        check(servers_of(late) == {"s1": 10}, "writers after recovery: %s" % servers_of(late))
        # The models s1 lists change (a model was swapped in): the heartbeat follows.
        fake_llm_control(s1.ready["url"], models=["m9"])
        wait_until(lambda: "m9" in hot() and "m1" not in hot(), 5, "the new listing")


def test_two_servers_one_killed_mid_run_all_replies_arrive(bin_dir):
    p, config = pipeline(bin_dir, "llm-kill", [entity("alpha"), entity("beta")])
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"], latency_ms=100)
        s2 = p.start_fake_llm("s2", models=["m1"], latency_ms=100)
        config["lmStudioServers"] = [server("s1", s1), server("s2", s2)]
        msgs = mentions(150, 0, "alpha") + mentions(150, 150, "beta")
        jsonl_input(p, config, msgs, follow=True)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        worker = p.start_worker()
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 60, 20, "60 replies")
        check(servers_of(p.posted()).get("s2"), "s2 served nothing before it was killed")
        s2.signal(signal.SIGKILL)
        wait_until(lambda: len(p.posted()) >= 300, 40, "300 replies")
        wait_until(lambda: p.broker_stats()["jobs"] == 0, 10, "the broker to finish every job")
        once_each(p, 300)
        stats = p.broker_stats()
        check(stats["dlq"] == 0, "dead letters: %s" % p.ctl("dlq", "list"))
        check(worker.alive(), "the worker died")
        log = p.log("worker")
        check("LLM server s2: circuit open" in log or "LLM server s2 is down" in log,
              "the dead server was not noticed")
        codes = p.stop()
        check(codes["worker"] == 0, "worker exit %s" % codes["worker"])


if __name__ == "__main__":
    main([test_429_and_503_pause_only_that_server,
          test_circuit_breaker_opens_then_a_trial_closes_it,
          test_health_checks_and_model_listings,
          test_two_servers_one_killed_mid_run_all_replies_arrive])
