"""The openai backend against tests/fake_llm.py: prompts, streaming, and every failure outcome.

Real daemons and real HTTP on 127.0.0.1: the worker calls a fake OpenAI-compatible
server whose replies, errors, hangs and resets are chosen by directives in the
chat messages (see fake_llm.py).
"""
import collections
import json
import os
import re
import subprocess

from harness import (Pipeline, base_config, check, fake_llm_stats, jsonl_input, main,
                     wait_until)

SECRET = "sk-test-0123456789abcdefSECRET"


def entity(eid="alpha", **extra):
    e = {"id": eid, "responseChance": 0, "systemPrompt": "You are %s." % eid.title(),
         "model": "m1", "temperature": 0.3, "maxTokens": 77, "messagesToRead": 3}
    e.update(extra)
    return e


def server(name, url, **extra):
    s = {"name": name, "url": url, "type": "llamacpp", "maxConcurrent": 64}
    s.update(extra)
    return s


def pipeline(bin_dir, name, entities, worker=None, queue=None, sink=None):
    config = base_config(entities, sink={"destinations": []})
    config["worker"].update({"backend": "openai", "requestTimeoutMs": 3000,
                             "connectTimeoutMs": 1000, "healthCheckMs": 500})
    config["worker"].update(worker or {})
    config["queueSettings"].update(queue or {})
    p = Pipeline(bin_dir, config, name)
    config["sink"]["destinations"] = [dict({"name": "out", "type": "jsonl", "path": p.output},
                                           **(sink or {}))]
    return p, config


def feed(p, config, texts, chat="room"):
    msgs = [{"id": "m%d" % i, "chat": chat, "author": "user%d" % (i % 5), "text": t}
            for i, t in enumerate(texts)]
    jsonl_input(p, config, msgs)
    return msgs


def worker_values(p, worker_id):
    for c in p.ctl("stats")["components"]:
        if c["role"] == "worker" and c["id"] == worker_id:
            return c["values"]
    return None


def dead_letters(p):
    return {d["msg_key"]: d for d in p.ctl("dlq", "list", "1000")["items"]}


def test_replies_prompt_key_and_usage(bin_dir):
    """Each job is one chat completion with the entity's settings; usage and hot models flow on."""
    p, config = pipeline(bin_dir, "llm-prompt", [entity(stop=["\nuser"])])
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"], api_key=SECRET)
        config["lmStudioServers"] = [server("s1", s1.ready["url"], apiKeyEnv="FAKE_LLM_KEY")]
        texts = ["@alpha question number %d?" % i for i in range(12)]
        feed(p, config, texts)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker(env={"WORKER_ID": "llm-1", "FAKE_LLM_KEY": SECRET})
        wait_until(lambda: any("m1" in w["models"] for w in p.ctl("workers")), 10,
                   "the worker to report model m1 as hot")
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 12, 20, "12 replies")
        posted = sorted(p.posted(), key=lambda r: int(r["msg_key"].split("m")[-1]))
        for r, t in zip(posted, texts):
            check(r["text"] == "[s1/m1] reply to: " + t, "unexpected reply %r" % r["text"])
        seen = fake_llm_stats(s1.ready["url"])
        reqs = seen["requests"]
        check(len(reqs) == 12 and seen["calls"] == 12, "calls: %d" % seen["calls"])
        for req in reqs:
            body = req["body"]
            check(req["bearer_ok"], "the API key was not sent as a bearer token")
            check(body["model"] == "m1" and body["max_tokens"] == 77
                  and abs(body["temperature"] - 0.3) < 1e-9 and body["stop"] == ["\nuser"]
                  and "stream" not in body, "request fields: %s" % body)
            check(body["messages"][0] == {"role": "system", "content": "You are Alpha."},
                  "system message: %s" % body["messages"][0])
            check(len(body["messages"]) == 2 and body["messages"][1]["role"] == "user",
                  "messages: %s" % body["messages"])
        # The last message had 11 earlier ones; messagesToRead keeps the last 3.
        last = [r for r in reqs if r["body"]["messages"][1]["content"].endswith(texts[11])][0]
        user = last["body"]["messages"][1]["content"]
        lines = user.split("\n")
        check(lines[0] == "Recent messages in the chat (oldest first):"
              and lines[1:4] == ["user3: " + texts[8], "user4: " + texts[9], "user0: " + texts[10]]
              and lines[5] == "Reply to this message from user1:" and lines[6] == texts[11],
              "prompt:\n%s" % user)
        values = wait_until(lambda: (lambda v: v if v and v["completed"] >= 12 else None)(
            worker_values(p, "llm-1")), 10, "worker stats")
        check(values["llm_calls"] == 12 and values["llm_ok"] == 12, "stats: %s" % values)
        check(values["tokens"] > 0 and values["prompt_tokens"] > 0, "usage not recorded: %s" % values)
        check(values["servers_usable"] == 1 and values["health_checks"] >= 1, "stats: %s" % values)
        codes = p.stop()
        check(codes["worker"] == 0, "worker exit %s" % codes["worker"])
        log = p.log("worker")
        check("WORKER llm-1 STARTED" in log and "LLM SERVER s1: %s" % s1.ready["url"] in log
              and "API key from FAKE_LLM_KEY" in log, "banner missing:\n%s" % log[:2000])
        check(SECRET not in log, "the API key appears in the worker's log")


def test_streaming_clean_up_and_field_names(bin_dir):
    """Streamed replies (SSE with comments) arrive whole; reasoning, empty and long replies are cleaned."""
    p, config = pipeline(bin_dir, "llm-stream", [entity()], worker={"stream": True},
                         sink={"maxLength": 60})
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"], type="openai", latency_ms=100)
        config["lmStudioServers"] = [server("s1", s1.ready["url"] + "/v1/", type="openai",
                                            maxTokensField="max_completion_tokens")]
        texts = ["@alpha tell me something %d" % i for i in range(5)]
        texts += ["@alpha #think what now", "@alpha #empty", "@alpha #long=500"]
        feed(p, config, texts)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        p.start_worker(env={"WORKER_ID": "streamer"})
        p.start_poller()
        wait_until(lambda: len(p.posted()) >= 7, 20, "7 replies")
        wait_until(lambda: p.broker_stats()["skipped"] == 1, 10, "the empty reply to be skipped")
        by_text = {r["msg_key"]: r["text"] for r in p.posted()}
        for i in range(5):
            check(by_text["in/room/m%d" % i] == "[s1/m1] reply to: " + texts[i],
                  "streamed reply %r" % by_text.get("in/room/m%d" % i))
        check(by_text["in/room/m5"] == "[s1/m1] reply to: @alpha #think what now",
              "reasoning not removed: %r" % by_text["in/room/m5"])
        long = by_text["in/room/m7"]
        check(len(long) <= 60 and long.endswith("\u2026"), "long reply not cut: %r" % long)
        reqs = fake_llm_stats(s1.ready["url"])["requests"]
        check(all(r["body"]["stream"] is True and r["body"]["max_completion_tokens"] == 77
                  and "max_tokens" not in r["body"] for r in reqs), "request: %s" % reqs[0]["body"])
        values = wait_until(lambda: (lambda v: v if v and v["skipped"] >= 1 else None)(
            worker_values(p, "streamer")), 10, "worker stats")
        check(values["ttft_avg_ms"] >= 90, "time to first token not measured: %s" % values)
        check(values["empty_replies"] == 1 and values["completion_tokens"] > 0, "stats: %s" % values)
        codes = p.stop()
        check(codes["worker"] == 0, "worker exit %s" % codes["worker"])


# directive -> (what must become of the job, words its dead-letter reason must contain)
FAILURES = {
    "#fail-first=2 then fine": ("posted", None),
    "#context400": ("dead", ["context too long", "exceed_context_size_error"]),
    "#context500": ("dead", ["context too long", "input is too large"]),
    "#malformed": ("dead", ["malformed answer", "not JSON"]),
    "#badtype": ("dead", ["malformed answer", "choices[0].message.content: expected a string"]),
    "#status=400": ("dead", ["request rejected", "HTTP 400"]),
    "#status=500": ("dead", ["LLM call failed 3 times", "HTTP 500"]),
    "#hang": ("dead", ["LLM call failed 3 times", "no complete answer within 1000 ms"]),
    "#reset": ("dead", ["LLM call failed 3 times", "reset"]),
    "#echo-auth": ("dead", ["request rejected", "Bearer ***"]),
    "#empty": ("skipped", None),
    "plain": ("posted", None),
}


def test_every_failure_has_its_documented_outcome(bin_dir):
    """5xx, timeouts and resets are retried; context, malformed and other 4xx dead-letter at once.

    (429 and 503 pause the server that sent them: see test_llm_servers.py, with several servers.)"""
    p, config = pipeline(bin_dir, "llm-fail", [entity()],
                         worker={"requestTimeoutMs": 1000, "retries": 2, "backoffMs": 100,
                                 "breakerFailures": 1000},
                         queue={"maxRetries": 0})
    with p:
        s1 = p.start_fake_llm("s1", models=["m1"], api_key=SECRET)
        config["lmStudioServers"] = [server("s1", s1.ready["url"], apiKeyEnv="FAKE_LLM_KEY")]
        texts = ["@alpha %s" % d for d in FAILURES]
        feed(p, config, texts)
        p.write_config(config)
        p.start_broker()
        p.start_sink()
        worker = p.start_worker(env={"WORKER_ID": "w-fail", "FAKE_LLM_KEY": SECRET})
        p.start_poller()
        want_dead = [d for d, (what, _) in FAILURES.items() if what == "dead"]
        wait_until(lambda: len(dead_letters(p)) >= len(want_dead), 30,
                   "%d dead letters" % len(want_dead))
        wait_until(lambda: len(p.posted()) >= 2 and p.broker_stats()["skipped"] >= 1, 10,
                   "the two replies and the skip")
        dead = dead_letters(p)
        posted = {r["msg_key"] for r in p.posted()}
        for i, (d, (what, words)) in enumerate(FAILURES.items()):
            key = "in/room/m%d" % i
            if what == "posted":
                check(key in posted, "%s: not posted" % d)
            elif what == "dead":
                check(key in dead, "%s: not dead-lettered" % d)
                reason = dead[key]["reason"]
                for w in words:
                    check(w in reason, "%s: reason %r lacks %r" % (d, reason, w))
                check(SECRET not in reason, "%s: the API key is in the reason" % d)
        stats = p.broker_stats()
        check(stats["skipped"] == 1 and stats["posted"] == 2, "broker: %s" % stats)
        # Permanent failures are not retried: one call each.
        seen = fake_llm_stats(s1.ready["url"])
        calls = collections.Counter(r["body"]["messages"][-1]["content"].split("\n")[-1]
                                    for r in seen["requests"])
        for d in ("#context400", "#context500", "#malformed", "#badtype", "#status=400"):
            check(calls["@alpha " + d] == 1, "%s was called %d times" % (d, calls["@alpha " + d]))
        for d in ("#status=500", "#hang", "#fail-first=2 then fine"):
            check(calls["@alpha " + d] == 3, "%s was called %d times" % (d, calls["@alpha " + d]))
        # libcurl itself sends a request again when a reused connection dies before any answer.
        check(calls["@alpha #reset"] >= 3, "#reset was called %d times" % calls["@alpha #reset"])
        values = worker_values(p, "w-fail")
        for name in ("llm_context_too_long", "llm_malformed", "llm_rejected", "llm_server_errors",
                     "llm_timeouts", "llm_transport_errors"):
            check(values[name] >= 1, "%s not counted: %s" % (name, values))
        check(worker.alive(), "the worker died")
        codes = p.stop()
        check(codes["worker"] == 0, "worker exit %s" % codes["worker"])
        log = p.log("worker")
        check(SECRET not in log, "the API key appears in the worker's log")


def test_readme_llm_snippets_are_valid_configurations(bin_dir):
    """The README's configuration for each kind of LLM server passes parleyctl config check."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    section = text[text.index("### LLM servers"):text.index("### Workers on other machines")]
    snippets = re.findall(r"```jsonc\n(.*?)```", section, re.S)
    check(len(snippets) == 4, "expected 4 snippets, found %d" % len(snippets))
    ctl = os.path.join(bin_dir, "tools", "parleyctl")
    for i, snippet in enumerate(snippets):
        path = "/tmp/parley-readme-llm-%d-%d.json" % (os.getpid(), i)
        with open(path, "w") as f:
            f.write(snippet)
        try:
            out = subprocess.run([ctl, "config", "check", path], capture_output=True, text=True,
                                 timeout=10)
        finally:
            os.unlink(path)
        check(out.returncode == 0 and "unknown key" not in out.stdout + out.stderr,
              "snippet %d refused (%d): %s%s" % (i, out.returncode, out.stdout, out.stderr))
        check(json.loads(snippet)["worker"]["backend"] == "openai", "snippet %d: backend" % i)


if __name__ == "__main__":
    main([test_replies_prompt_key_and_usage,
          test_streaming_clean_up_and_field_names,
          test_every_failure_has_its_documented_outcome,
          test_readme_llm_snippets_are_valid_configurations])
