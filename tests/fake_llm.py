#!/usr/bin/env python3
"""An OpenAI-compatible LLM server for tests and benchmarks (stdlib only).

    fake_llm.py [--port 0] [--ready FILE] [--name NAME] [--models a,b]
                [--type openai|llamacpp|lmstudio|ollama|vllm] [--latency-ms N]
                [--api-key KEY]

Real HTTP/1.1 on 127.0.0.1 (keep-alive, chunked streaming), one asyncio
loop, so a thousand calls can wait at once. It answers

    POST /v1/chat/completions   a reply "[NAME/MODEL] reply to: TEXT", where
                                TEXT is the message being answered; streamed
                                as server-sent events (with ": keep-alive"
                                comments) when the request says "stream"
    GET  /health                200, or what /_control set (503 = loading)
    GET  /v1/models, /api/v0/models (LM Studio), /api/ps and /api/tags (Ollama)
    GET  /_stats                what it has seen (calls, requests, in flight)
    POST /_control              {"health": 503, "latency_ms": 10, "models": [...],
                                 "fail_status": 500 (every chat call fails; 0 = none)}

and the message being answered may carry directives that make it misbehave:

    #slow=MS        answer after MS ms instead of --latency-ms
    #status=N       answer HTTP N with an error body (add #retry-after=S)
    #fail-first=N   answer 500 to the first N calls for this message, then reply
    #hang           never answer
    #reset          reset the connection without answering
    #malformed      200 with a body that is not JSON
    #nochoices      200 with a completion that has no "choices"
    #ssegarbage     a streamed answer whose events are not JSON (when asked to stream)
    #badtype        200 with JSON whose content is a number
    #context400     400 exceed_context_size_error (llama.cpp)
    #context500     500 "input is too large to process" (older llama.cpp)
    #empty          an empty reply
    #think          a reply wrapped in <think> reasoning first
    #echo-auth      400 quoting the Authorization header back
    #long=N         a reply of N characters
"""
import argparse
import asyncio
import json
import os
import re
import signal
import socket
import struct
import sys
import time

STATE = {
    "calls": 0, "in_flight": 0, "max_in_flight": 0, "health": 200, "latency_ms": 0,
    "requests": [], "fail_counts": {}, "statuses": {}, "models": [], "fail_status": 0,
    "health_checks": 0,
}
KEEP_REQUESTS = 200


def reply_text(args, model, text):
    return "[%s/%s] reply to: %s" % (args.name, model or "default", text)


def last_message(body):
    """The text of the message being answered (after the prompt's last line break)."""
    try:
        content = body["messages"][-1]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    marker = "Reply to this message from "
    at = content.rfind(marker)
    if at >= 0:
        content = content[at:].split("\n", 1)[1] if "\n" in content[at:] else ""
    return content


def directive(text, name):
    m = re.search(r"#%s(?:=([^\s#]+))?" % re.escape(name), text)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else True


def response(status, body, ctype="application/json", headers=()):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = ["HTTP/1.1 %d X" % status, "Content-Type: " + ctype,
            "Content-Length: %d" % len(data)] + list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def error(status, message, etype="server_error", headers=()):
    return response(status, {"error": {"code": status, "message": message, "type": etype}},
                    headers=headers)


def completion(model, text, prompt_tokens):
    words = len(text.split())
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model or "default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words,
                      "total_tokens": prompt_tokens + words}}


async def stream(writer, model, text, prompt_tokens):
    head = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    writer.write(head.encode())

    def chunk(data):
        raw = data.encode()
        writer.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    chunk(": keep-alive\n\n")
    pieces = re.findall(r"\S+\s*", text) or [""]
    for i, piece in enumerate(pieces):
        delta = {"content": piece} if i else {"role": "assistant", "content": piece}
        event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        chunk("data: %s\r\n\r\n" % json.dumps(event))
        if i == 0:
            chunk(": still thinking\n\n")
        await writer.drain()
    words = len(text.split())
    chunk("data: %s\n\n" % json.dumps({"choices": [{"index": 0, "delta": {},
                                                    "finish_reason": "stop"}]}))
    chunk("data: %s\n\n" % json.dumps({"choices": [], "usage": {
        "prompt_tokens": prompt_tokens, "completion_tokens": words}}))
    chunk("data: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def chat(args, headers, raw, writer):
    """Returns bytes to send, None when it has answered itself, or "reset"."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return error(400, "request body is not JSON", "invalid_request_error")
    auth = headers.get("authorization", "")
    record = {"body": body, "authorization": bool(auth), "bearer_ok": None}
    if args.api_key:
        record["bearer_ok"] = auth == "Bearer " + args.api_key
    STATE["requests"].append(record)
    del STATE["requests"][:-KEEP_REQUESTS]
    text = last_message(body)
    model = body.get("model")
    if args.api_key and auth != "Bearer " + args.api_key:
        return error(401, "Incorrect API key provided", "invalid_request_error")
    if directive(text, "echo-auth"):
        return error(400, "bad request from client with header Authorization: %s" % auth,
                     "invalid_request_error")
    if STATE["fail_status"]:
        return error(STATE["fail_status"], "fake failure of the whole server")
    slow = directive(text, "slow")
    delay = int(slow) if slow not in (None, True) else STATE["latency_ms"]
    if directive(text, "hang"):
        await asyncio.sleep(3600)
    if delay:
        await asyncio.sleep(delay / 1000.0)
    if directive(text, "reset"):
        return "reset"
    status = directive(text, "status")
    if status not in (None, True):
        extra = []
        after = directive(text, "retry-after")
        if after not in (None, True):
            extra.append("Retry-After: %s" % after)
        return error(int(status), "fake failure %s" % status, headers=extra)
    first = directive(text, "fail-first")
    if first not in (None, True):
        seen = STATE["fail_counts"].get(text, 0)
        STATE["fail_counts"][text] = seen + 1
        if seen < int(first):
            return error(500, "fake failure %d of %s" % (seen + 1, first))
    if directive(text, "context400"):
        return error(400, "the request exceeds the available context size, try increasing it",
                     "exceed_context_size_error")
    if directive(text, "context500"):
        return error(500, "input is too large to process. increase the physical batch size")
    if directive(text, "malformed"):
        return response(200, b'{"choices": [{"message": {"content": "cut')
    if directive(text, "nochoices"):
        return response(200, {"id": "chatcmpl-fake", "object": "chat.completion",
                              "model": model or "default"})
    if directive(text, "ssegarbage") and body.get("stream"):
        return response(200, b'data: {"choices": [{"delta": {"content": "half\n'
                             b'data: [1, 2]\n\n', "text/event-stream")
    if directive(text, "badtype"):
        return response(200, {"choices": [{"message": {"content": 42}}]})
    answer = reply_text(args, model, text)
    if directive(text, "empty"):
        answer = "   "
    if directive(text, "think"):
        answer = "<think>the user wants a reply; let me think.</think>\n" + answer
    long = directive(text, "long")
    if long not in (None, True):
        answer = ("word " * int(long))[:int(long)]
    prompt_tokens = len(json.dumps(body.get("messages", [])).split())
    if body.get("stream"):
        await stream(writer, model, answer, prompt_tokens)
        return None
    return response(200, completion(model, answer, prompt_tokens))


def models_answer(args, path):
    loaded = STATE["models"]
    if path == "/v1/models":
        return response(200, {"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "fake"} for m in loaded]})
    if path == "/api/v0/models":
        if args.type != "lmstudio":
            return error(404, "not found")
        data = [{"id": m, "state": "loaded", "type": "llm"} for m in loaded]
        data.append({"id": "not-in-memory", "state": "not-loaded", "type": "llm"})
        return response(200, {"object": "list", "data": data})
    if path in ("/api/ps", "/api/tags"):
        return response(200, {"models": [{"name": m, "model": m} for m in loaded]})
    return None


async def handle(args, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                method, path, _ = line.decode("latin-1").split(" ", 2)
            except ValueError:
                return
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            raw = await reader.readexactly(length) if length else b""
            out = await route(args, method, path, headers, raw, writer)
            if out == "reset":
                reset(writer)
                return
            if out is not None:
                writer.write(out)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if not writer.transport.is_closing():
            writer.close()


async def route(args, method, path, headers, raw, writer):
    path = path.split("?", 1)[0]
    if method == "POST" and path == "/v1/chat/completions":
        STATE["calls"] += 1
        STATE["in_flight"] += 1
        STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            out = await chat(args, headers, raw, writer)
        finally:
            STATE["in_flight"] -= 1
        status = int(out[9:12]) if isinstance(out, bytes) else 200
        STATE["statuses"][str(status)] = STATE["statuses"].get(str(status), 0) + 1
        return out
    if method == "GET" and path == "/health":
        if args.type not in ("llamacpp", "vllm"):
            return error(404, "not found")
        ok = STATE["health"] == 200
        return response(STATE["health"], {"status": "ok"} if ok else
                        {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    if method == "GET" and path == "/_stats":
        return response(200, {k: v for k, v in STATE.items() if k != "fail_counts"})
    if method == "POST" and path == "/_control":
        change = json.loads(raw or b"{}")
        for key in ("health", "latency_ms", "models", "fail_status"):
            if key in change:
                STATE[key] = change[key]
        return response(200, {"ok": True})
    if method == "GET":
        if STATE["health"] != 200:
            return error(503, "Loading model")
        STATE["health_checks"] += 1
        out = models_answer(args, path)
        if out is not None:
            return out
    return error(404, "no route for %s %s" % (method, path), "not_found_error")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready")
    ap.add_argument("--name", default="fake")
    ap.add_argument("--models", default="")
    ap.add_argument("--type", default="llamacpp")
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--api-key", default="")
    args = ap.parse_args()
    STATE["latency_ms"] = args.latency_ms
    STATE["models"] = [m for m in args.models.split(",") if m]
    server = await asyncio.start_server(lambda r, w: handle(args, r, w), "127.0.0.1", args.port,
                                        backlog=4096, limit=1 << 22)
    port = server.sockets[0].getsockname()[1]
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": port, "pid": os.getpid(), "url": "http://127.0.0.1:%d" % port}, f)
        os.rename(tmp, args.ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
