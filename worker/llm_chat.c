/*  llm_chat - the OpenAI chat completions format, both ways. See llm_chat.h.

    Servers differ in small ways this reader absorbs: content may be null
    (a reply that is only a tool call or only reasoning) or an array of text
    parts; usage may be missing; errors come as {"error": {"message",
    "type", "code"}} (OpenAI, llama.cpp), {"error": "text"} (Ollama),
    {"object": "error", "message"} (vLLM) or {"detail"} (FastAPI proxies).
*/
#include "worker/llm_chat.h"
#include "common/palloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Longest error text we keep from a server.
#define MESSAGE_MAX 300

static llm_outcome_t s_fail (char *why, size_t whylen, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static llm_outcome_t s_fail (char *why, size_t whylen, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (why, whylen, fmt, args);
    va_end (args);
    return LLM_MALFORMED;
}

//  Copies outside text for logs and reasons: control characters become
//  spaces, runs of white space one space, and a long text is cut at a
//  character boundary with "...".
static void s_clean_text (const char *in, size_t n, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    size_t o = 0, limit = outlen - 1;
    bool space = true;  //  drops leading white space
    bool cut = false;
    for (size_t i = 0; i < n && in[i]; i++) {
        unsigned char c = (unsigned char) in[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            if (space)
                continue;
            c = ' ';
            space = true;
        }
        else
            space = false;
        if (o == limit) {
            cut = true;
            break;
        }
        out[o++] = (char) c;
    }
    if (cut && limit >= 3) {
        size_t at = limit - 3;
        while (at > 0 && ((unsigned char) out[at] & 0xc0) == 0x80)
            at--;
        memcpy (out + at, "...", 3);
        o = at + 3;
    }
    while (!cut && o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = 0;
}

static void s_append (llm_reply_t *reply, const char *s, size_t n)
{
    if (reply->len + n + 1 > reply->cap) {
        size_t cap = reply->cap ? reply->cap : 256;
        while (cap < reply->len + n + 1)
            cap *= 2;
        reply->text = prealloc (reply->text, cap);
        reply->cap = cap;
    }
    memcpy (reply->text + reply->len, s, n);
    reply->len += n;
    reply->text[reply->len] = 0;
}

//  --- the request ---------------------------------------------------------------------

char *llm_chat_request_body (const llm_chat_request_t *r)
{
    json_t *body = json_object ();
    if (r->model && *r->model)
        json_object_set_new (body, "model", json_string (r->model));
    json_object_set (body, "messages", r->messages);
    json_object_set_new (body, r->max_tokens_field, json_integer ((json_int_t) r->max_tokens));
    json_object_set_new (body, "temperature", json_real (r->temperature));
    if (r->stop && r->stop->count) {
        json_t *stop = json_array ();
        for (size_t i = 0; i < r->stop->count; i++)
            json_array_append_new (stop, json_string (r->stop->items[i]));
        json_object_set_new (body, "stop", stop);
    }
    if (r->stream) {
        json_object_set_new (body, "stream", json_true ());
        //  Usage comes in a last chunk only when asked for.
        json_object_set_new (body, "stream_options", json_pack ("{s:b}", "include_usage", 1));
    }
    char *text = json_dumps (body, JSON_COMPACT);
    json_decref (body);
    return text;
}

//  --- errors ------------------------------------------------------------------------------

bool llm_chat_is_context_error (const char *text)
{
    static const char *phrases[] = {
        "exceed_context_size",          //  llama.cpp error type
        "context_length_exceeded",      //  OpenAI error code
        "maximum context length",       //  OpenAI, vLLM
        "context size",                 //  llama.cpp: "exceeds the available context size"
        "context length",               //  LM Studio: "loaded with context length of only"
        "context window",
        "input is too large to process",   //  llama.cpp, older builds (HTTP 500)
        "prompt is too long",
    };
    if (!text)
        return false;
    for (size_t i = 0; i < sizeof phrases / sizeof phrases[0]; i++)
        if (strcasestr (text, phrases[i]))
            return true;
    return false;
}

//  The server's explanation in an error document, as "type: message".
static void s_error_message (json_t *root, char *out, size_t outlen)
{
    char text[1024] = "";
    json_t *err = json_object_get (root, "error");
    const char *message = NULL, *type = NULL, *code = NULL;
    if (json_is_string (err))
        message = json_string_value (err);
    else if (json_is_object (err)) {
        message = json_string_value (json_object_get (err, "message"));
        type = json_string_value (json_object_get (err, "type"));
        code = json_string_value (json_object_get (err, "code"));
    }
    if (!message)
        message = json_string_value (json_object_get (root, "message"));
    if (!type)
        type = json_string_value (json_object_get (root, "type"));
    if (!message)
        message = json_string_value (json_object_get (root, "detail"));
    if (!type)
        type = code;
    if (type && message)
        snprintf (text, sizeof text, "%s: %s", type, message);
    else if (message || type)
        snprintf (text, sizeof text, "%s", message ? message : type);
    s_clean_text (text, strlen (text), out, outlen);
}

llm_outcome_t llm_chat_classify (long status, const char *body, size_t len, char *message,
                                 size_t msglen)
{
    json_t *root = len ? json_loadb (body, len, 0, NULL) : NULL;
    if (json_is_object (root))
        s_error_message (root, message, msglen);
    else
        s_clean_text (body, len, message, msglen);
    json_decref (root);
    bool context = llm_chat_is_context_error (message);
    switch (status) {
    case 429: return LLM_RATE_LIMITED;
    case 503: return LLM_BUSY;
    case 401:
    case 403: return LLM_AUTH;
    case 404: return LLM_NOT_FOUND;
    case 408: return LLM_TIMEOUT;
    case 400:
    case 413:
    case 422:
    case 500: return context ? LLM_CONTEXT : status == 500 ? LLM_SERVER_ERROR : LLM_REJECTED;
    default: break;
    }
    if (status >= 400 && status < 500)
        return LLM_REJECTED;
    return LLM_SERVER_ERROR;
}

//  An error object inside a 200 answer (some servers and proxies do that).
static llm_outcome_t s_embedded_error (json_t *root, char *why, size_t whylen)
{
    char message[MESSAGE_MAX];
    s_error_message (root, message, sizeof message);
    snprintf (why, whylen, "error in the answer: %s", *message ? message : "(no message)");
    return llm_chat_is_context_error (message) ? LLM_CONTEXT : LLM_SERVER_ERROR;
}

//  --- answers ----------------------------------------------------------------------------

//  Appends a content value: a string, null, or an array of text parts.
static int s_content (llm_reply_t *reply, json_t *content, const char *path, char *why,
                      size_t whylen)
{
    if (!content || json_is_null (content))
        return 0;
    if (json_is_string (content)) {
        s_append (reply, json_string_value (content), json_string_length (content));
        return 0;
    }
    if (json_is_array (content)) {
        size_t i;
        json_t *part;
        json_array_foreach (content, i, part) {
            json_t *text = json_object_get (part, "text");
            if (json_is_string (text))
                s_append (reply, json_string_value (text), json_string_length (text));
        }
        return 0;
    }
    s_fail (why, whylen, "%s: expected a string, got %s", path, pcfg_json_type (content));
    return -1;
}

static void s_finish_and_usage (llm_reply_t *reply, json_t *choice, json_t *root)
{
    const char *finish = json_string_value (json_object_get (choice, "finish_reason"));
    if (finish)
        snprintf (reply->finish_reason, sizeof reply->finish_reason, "%s", finish);
    json_t *usage = json_object_get (root, "usage");
    json_t *prompt = json_object_get (usage, "prompt_tokens");
    json_t *completion = json_object_get (usage, "completion_tokens");
    if (json_is_integer (prompt) && json_integer_value (prompt) >= 0)
        reply->prompt_tokens = (uint64_t) json_integer_value (prompt);
    if (json_is_integer (completion) && json_integer_value (completion) >= 0)
        reply->completion_tokens = (uint64_t) json_integer_value (completion);
}

static json_t *s_load (const char *body, size_t len, char *why, size_t whylen)
{
    json_error_t error;
    json_t *root = json_loadb (body, len, 0, &error);
    if (!root) {
        s_fail (why, whylen, "not JSON: %s at line %d, column %d", error.text, error.line,
                error.column);
        return NULL;
    }
    if (!json_is_object (root)) {
        s_fail (why, whylen, "expected a JSON object, got %s", pcfg_json_type (root));
        json_decref (root);
        return NULL;
    }
    return root;
}

static void s_ensure_text (llm_reply_t *reply)
{
    if (!reply->text)
        s_append (reply, "", 0);
}

llm_outcome_t llm_chat_parse (const char *body, size_t len, llm_reply_t *reply, char *why,
                              size_t whylen)
{
    s_ensure_text (reply);
    json_t *root = s_load (body, len, why, whylen);
    if (!root)
        return LLM_MALFORMED;
    llm_outcome_t rc = LLM_OK;
    json_t *choices = json_object_get (root, "choices");
    json_t *choice = json_array_get (choices, 0);
    json_t *message = json_object_get (choice, "message");
    if (!choices && json_object_get (root, "error"))
        rc = s_embedded_error (root, why, whylen);
    else if (!json_is_array (choices))
        rc = s_fail (why, whylen, "choices: expected an array, got %s", pcfg_json_type (choices));
    else if (!choice)
        rc = s_fail (why, whylen, "choices: empty, no reply in the answer");
    else if (!json_is_object (choice))
        rc = s_fail (why, whylen, "choices[0]: expected an object, got %s", pcfg_json_type (choice));
    else if (!json_is_object (message))
        rc = s_fail (why, whylen, "choices[0].message: expected an object, got %s",
                     pcfg_json_type (message));
    else if (s_content (reply, json_object_get (message, "content"), "choices[0].message.content",
                        why, whylen))
        rc = LLM_MALFORMED;
    else
        s_finish_and_usage (reply, choice, root);
    json_decref (root);
    s_ensure_text (reply);
    return rc;
}

llm_outcome_t llm_chat_stream_event (llm_reply_t *reply, const char *data, size_t len,
                                     bool *got_text, char *why, size_t whylen)
{
    *got_text = false;
    s_ensure_text (reply);
    while (len && isspace ((unsigned char) *data))
        data++, len--;
    while (len && isspace ((unsigned char) data[len - 1]))
        len--;
    if (len == 6 && !memcmp (data, "[DONE]", 6)) {
        reply->done = true;
        return LLM_OK;
    }
    json_t *root = s_load (data, len, why, whylen);
    if (!root)
        return LLM_MALFORMED;
    llm_outcome_t rc = LLM_OK;
    json_t *choices = json_object_get (root, "choices");
    json_t *choice = json_array_get (choices, 0);
    if (json_object_get (root, "error"))
        rc = s_embedded_error (root, why, whylen);
    else if (choices && !json_is_array (choices))
        rc = s_fail (why, whylen, "choices: expected an array, got %s", pcfg_json_type (choices));
    else if (choice && !json_is_object (choice))
        rc = s_fail (why, whylen, "choices[0]: expected an object, got %s", pcfg_json_type (choice));
    else {
        //  Chunks without choices are allowed: the last one carries only usage.
        size_t before = reply->len;
        json_t *delta = json_object_get (choice, "delta");
        if (delta && !json_is_object (delta))
            rc = s_fail (why, whylen, "choices[0].delta: expected an object, got %s",
                         pcfg_json_type (delta));
        else if (s_content (reply, json_object_get (delta, "content"), "choices[0].delta.content",
                            why, whylen))
            rc = LLM_MALFORMED;
        else {
            s_finish_and_usage (reply, choice, root);
            *got_text = reply->len > before;
        }
    }
    json_decref (root);
    return rc;
}

void llm_reply_clear (llm_reply_t *reply)
{
    free (reply->text);
    memset (reply, 0, sizeof *reply);
}

const char *llm_outcome_name (llm_outcome_t outcome)
{
    static const char *names[LLM_OUTCOME_COUNT] = {
        "ok",           "context_too_long", "malformed", "rejected",  "rate_limited", "busy",
        "server_error", "timeout",          "transport", "auth",      "not_found"};
    return outcome < LLM_OUTCOME_COUNT ? names[outcome] : "?";
}

void llm_redact (char *text, const char *secret)
{
    if (!text || !secret || !*secret)
        return;
    size_t n = strlen (secret);
    size_t mask = n < 3 ? n : 3;
    //  "***" is never longer than the secret, so the text only shrinks.
    for (char *at = strstr (text, secret); at; at = strstr (at + mask, secret)) {
        memset (at, '*', mask);
        memmove (at + mask, at + n, strlen (at + n) + 1);
    }
}
