/*  test_llm_chat - the chat completions format and the event-stream reader.

    Requests as the servers expect them, answers as llama.cpp, OpenAI, vLLM,
    LM Studio and Ollama write them, and every way an answer can be wrong:
    each gives LLM_MALFORMED (or the right error outcome) with a reason
    that says where, never a crash.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "worker/llm_chat.h"
#include "worker/llm_probe.h"
#include "worker/sse.h"

static llm_outcome_t s_parse (const char *body, llm_reply_t *reply, char *why)
{
    memset (reply, 0, sizeof *reply);
    return llm_chat_parse (body, strlen (body), reply, why, 300);
}

static void test_request_body (void **state)
{
    (void) state;
    char *stops[] = {"\nuser:", "###"};
    pcfg_strs_t stop = {stops, 2};
    json_t *messages = json_pack ("[{s:s, s:s}]", "role", "user", "content", "hi");
    llm_chat_request_t r = {"qwen2.5", messages, "max_completion_tokens", 150, 0.5, &stop, true};
    char *text = llm_chat_request_body (&r);
    json_t *body = json_loads (text, 0, NULL);
    assert_non_null (body);
    assert_string_equal (json_string_value (json_object_get (body, "model")), "qwen2.5");
    assert_int_equal (json_integer_value (json_object_get (body, "max_completion_tokens")), 150);
    assert_null (json_object_get (body, "max_tokens"));
    assert_true (json_real_value (json_object_get (body, "temperature")) == 0.5);
    assert_int_equal (json_array_size (json_object_get (body, "stop")), 2);
    assert_true (json_is_true (json_object_get (body, "stream")));
    assert_true (json_is_true (json_object_get (json_object_get (body, "stream_options"),
                                                "include_usage")));
    assert_true (json_equal (json_object_get (body, "messages"), messages));
    json_decref (body);
    free (text);
    //  No model, no stop, no stream: the keys are left out.
    llm_chat_request_t bare = {NULL, messages, "max_tokens", 10, 1.0, NULL, false};
    text = llm_chat_request_body (&bare);
    body = json_loads (text, 0, NULL);
    assert_null (json_object_get (body, "model"));
    assert_null (json_object_get (body, "stop"));
    assert_null (json_object_get (body, "stream"));
    assert_int_equal (json_integer_value (json_object_get (body, "max_tokens")), 10);
    json_decref (body);
    free (text);
    json_decref (messages);
}

static void test_parse_answers (void **state)
{
    (void) state;
    llm_reply_t reply;
    char why[300];
    //  OpenAI / llama.cpp
    assert_int_equal (s_parse ("{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                               "\"content\":\"Hello there\"},\"finish_reason\":\"stop\"}],"
                               "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}",
                               &reply, why),
                      LLM_OK);
    assert_string_equal (reply.text, "Hello there");
    assert_string_equal (reply.finish_reason, "stop");
    assert_int_equal (reply.prompt_tokens, 12);
    assert_int_equal (reply.completion_tokens, 3);
    llm_reply_clear (&reply);
    //  null content (only a tool call, or only reasoning), no usage: an empty reply.
    assert_int_equal (s_parse ("{\"choices\":[{\"message\":{\"content\":null,"
                               "\"reasoning_content\":\"hmm\"}}]}", &reply, why),
                      LLM_OK);
    assert_string_equal (reply.text, "");
    assert_int_equal (reply.completion_tokens, 0);
    llm_reply_clear (&reply);
    //  content as text parts
    assert_int_equal (s_parse ("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\","
                               "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}}]}",
                               &reply, why),
                      LLM_OK);
    assert_string_equal (reply.text, "ab");
    llm_reply_clear (&reply);
}

static void s_expect_malformed (const char *body, const char *where)
{
    llm_reply_t reply;
    char why[300] = "";
    llm_outcome_t rc = s_parse (body, &reply, why);
    if (rc != LLM_MALFORMED)
        fail_msg ("%s: outcome %s, expected malformed", body, llm_outcome_name (rc));
    if (!strstr (why, where))
        fail_msg ("%s: reason \"%s\" does not say \"%s\"", body, why, where);
    assert_non_null (reply.text);   //  always a string, even on failure
    llm_reply_clear (&reply);
}

static void test_parse_malformed (void **state)
{
    (void) state;
    s_expect_malformed ("", "not JSON");
    s_expect_malformed ("{\"choices\": [", "not JSON");
    s_expect_malformed ("<html>502 Bad Gateway</html>", "not JSON");
    s_expect_malformed ("[1, 2]", "expected a JSON object, got an array");
    s_expect_malformed ("{}", "choices: expected an array, got nothing");
    s_expect_malformed ("{\"choices\": {}}", "choices: expected an array, got an object");
    s_expect_malformed ("{\"choices\": []}", "choices: empty");
    s_expect_malformed ("{\"choices\": [7]}", "choices[0]: expected an object, got an integer");
    s_expect_malformed ("{\"choices\": [{}]}", "choices[0].message: expected an object, got nothing");
    s_expect_malformed ("{\"choices\": [{\"message\": {\"content\": 42}}]}",
                        "choices[0].message.content: expected a string, got an integer");
    s_expect_malformed ("{\"choices\": [{\"message\": {\"content\": {\"a\": 1}}}]}",
                        "got an object");
    //  Invalid UTF-8 is refused by the JSON reader.
    s_expect_malformed ("{\"choices\": [{\"message\": {\"content\": \"\xff\xfe\"}}]}", "not JSON");
}

static void test_error_inside_a_200 (void **state)
{
    (void) state;
    llm_reply_t reply;
    char why[300];
    assert_int_equal (s_parse ("{\"error\": {\"message\": \"model crashed\"}}", &reply, why),
                      LLM_SERVER_ERROR);
    assert_non_null (strstr (why, "model crashed"));
    llm_reply_clear (&reply);
    assert_int_equal (s_parse ("{\"error\": \"This model's maximum context length is 4096 tokens\"}",
                               &reply, why),
                      LLM_CONTEXT);
    llm_reply_clear (&reply);
}

static llm_outcome_t s_classify (long status, const char *body, char *message)
{
    return llm_chat_classify (status, body, strlen (body), message, 200);
}

static void test_classify_errors (void **state)
{
    (void) state;
    char m[200];
    //  llama.cpp: 400 with its own error type
    assert_int_equal (s_classify (400, "{\"error\":{\"code\":400,\"message\":\"the request exceeds "
                                       "the available context size, try increasing it\","
                                       "\"type\":\"exceed_context_size_error\"}}", m),
                      LLM_CONTEXT);
    assert_string_equal (m, "exceed_context_size_error: the request exceeds the available "
                            "context size, try increasing it");
    //  older llama.cpp: 500
    assert_int_equal (s_classify (500, "{\"error\":{\"code\":500,\"message\":\"input is too large "
                                       "to process. increase the physical batch size\"}}", m),
                      LLM_CONTEXT);
    //  OpenAI: code context_length_exceeded
    assert_int_equal (s_classify (400, "{\"error\":{\"message\":\"This model's maximum context "
                                       "length is 8192 tokens.\",\"type\":\"invalid_request_error\","
                                       "\"code\":\"context_length_exceeded\"}}", m),
                      LLM_CONTEXT);
    //  vLLM
    assert_int_equal (s_classify (400, "{\"object\":\"error\",\"message\":\"This model's maximum "
                                       "context length is 2048 tokens\",\"type\":\"BadRequestError\"}", m),
                      LLM_CONTEXT);
    assert_string_equal (m, "BadRequestError: This model's maximum context length is 2048 tokens");
    //  Ollama: the error is a string
    assert_int_equal (s_classify (404, "{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}", m),
                      LLM_NOT_FOUND);
    assert_string_equal (m, "model \"llama9\" not found, try pulling it first");
    assert_int_equal (s_classify (429, "{\"error\":{\"message\":\"Rate limit reached\"}}", m),
                      LLM_RATE_LIMITED);
    assert_int_equal (s_classify (503, "{\"error\":{\"message\":\"Loading model\"}}", m), LLM_BUSY);
    assert_int_equal (s_classify (500, "{\"error\":{\"message\":\"CUDA error\"}}", m), LLM_SERVER_ERROR);
    assert_int_equal (s_classify (502, "<html><body>Bad\n\tGateway</body></html>", m),
                      LLM_SERVER_ERROR);
    assert_string_equal (m, "<html><body>Bad Gateway</body></html>");
    assert_int_equal (s_classify (401, "{\"error\":{\"message\":\"Incorrect API key\"}}", m), LLM_AUTH);
    assert_int_equal (s_classify (403, "", m), LLM_AUTH);
    assert_string_equal (m, "");
    assert_int_equal (s_classify (400, "{\"error\":{\"message\":\"bad temperature\"}}", m), LLM_REJECTED);
    assert_int_equal (s_classify (422, "{\"detail\":\"field required\"}", m), LLM_REJECTED);
    assert_string_equal (m, "field required");
    assert_int_equal (s_classify (408, "", m), LLM_TIMEOUT);
    //  A long message is cut, with "...".
    char body[2000];
    memset (body, 'x', sizeof body - 1);
    body[sizeof body - 1] = 0;
    assert_int_equal (s_classify (500, body, m), LLM_SERVER_ERROR);
    assert_int_equal (strlen (m), 199);
    assert_string_equal (m + 196, "...");
}

static void test_stream_events (void **state)
{
    (void) state;
    llm_reply_t reply = {0};
    char why[300];
    bool text;
    const char *events[] = {
        "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}",
    };
    bool want_text[] = {false, true, true, false, false};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal (llm_chat_stream_event (&reply, events[i], strlen (events[i]), &text,
                                                 why, sizeof why),
                          LLM_OK);
        assert_int_equal (text, want_text[i]);
    }
    assert_false (reply.done);
    assert_int_equal (llm_chat_stream_event (&reply, " [DONE] ", 8, &text, why, sizeof why), LLM_OK);
    assert_true (reply.done);
    assert_string_equal (reply.text, "Hello");
    assert_string_equal (reply.finish_reason, "length");
    assert_int_equal (reply.prompt_tokens, 9);
    assert_int_equal (reply.completion_tokens, 2);
    llm_reply_clear (&reply);
    //  Bad events
    assert_int_equal (llm_chat_stream_event (&reply, "{\"choices\":[{\"delta\":", 20, &text, why,
                                             sizeof why),
                      LLM_MALFORMED);
    assert_non_null (strstr (why, "not JSON"));
    const char *bad = "{\"choices\":[{\"delta\":{\"content\":[1]}}]}";
    assert_int_equal (llm_chat_stream_event (&reply, bad, strlen (bad), &text, why, sizeof why), LLM_OK);
    bad = "{\"choices\":[{\"delta\":\"x\"}]}";
    assert_int_equal (llm_chat_stream_event (&reply, bad, strlen (bad), &text, why, sizeof why),
                      LLM_MALFORMED);
    assert_string_equal (why, "choices[0].delta: expected an object, got a string");
    bad = "{\"error\":{\"message\":\"the request exceeds the available context size\"}}";
    assert_int_equal (llm_chat_stream_event (&reply, bad, strlen (bad), &text, why, sizeof why),
                      LLM_CONTEXT);
    llm_reply_clear (&reply);
}

//  --- sse ---------------------------------------------------------------------------

typedef struct {
    char events[16][128];
    char types[16][32];
    int count;
} s_seen_t;

static int s_on_event (void *arg, const char *event, const char *data, size_t size)
{
    s_seen_t *seen = arg;
    assert_true (seen->count < 16);
    snprintf (seen->types[seen->count], 32, "%s", event);
    snprintf (seen->events[seen->count], 128, "%.*s", (int) size, data);
    seen->count++;
    return 0;
}

static void test_sse_stream (void **state)
{
    (void) state;
    const char *stream = ": keep-alive\n\n"
                         "data: {\"a\":1}\r\n\r\n"
                         "data:{\"b\":2}\n"
                         "id: 7\n\n"
                         ":comment\r"
                         "data: one\ndata: two\r\rdata: [DONE]\n\n"
                         "event: error\ndata: oops\n\n"
                         "retry: 100\n\n";
    //  The same events whatever the pieces the bytes arrive in.
    for (size_t piece = 1; piece <= strlen (stream); piece++) {
        s_seen_t seen = {0};
        sse_t *sse = sse_new (s_on_event, &seen);
        for (size_t at = 0; at < strlen (stream); at += piece) {
            size_t n = strlen (stream) - at < piece ? strlen (stream) - at : piece;
            assert_int_equal (sse_feed (sse, stream + at, n), 0);
        }
        assert_int_equal (sse_finish (sse), 0);
        assert_int_equal (seen.count, 5);
        assert_string_equal (seen.events[0], "{\"a\":1}");
        assert_string_equal (seen.events[1], "{\"b\":2}");
        assert_string_equal (seen.events[2], "one\ntwo");
        assert_string_equal (seen.events[3], "[DONE]");
        assert_string_equal (seen.types[3], "message");
        assert_string_equal (seen.events[4], "oops");
        assert_string_equal (seen.types[4], "error");
        sse_destroy (&sse);
        assert_null (sse);
    }
}

static void test_sse_ends_and_limits (void **state)
{
    (void) state;
    s_seen_t seen = {0};
    sse_t *sse = sse_new (s_on_event, &seen);
    //  A stream cut without its final blank line still yields its event.
    assert_int_equal (sse_feed (sse, "data: last", 10), 0);
    assert_int_equal (seen.count, 0);
    assert_int_equal (sse_finish (sse), 0);
    assert_int_equal (seen.count, 1);
    assert_string_equal (seen.events[0], "last");
    sse_destroy (&sse);
    //  A line over 1 MiB is refused, not buffered forever.
    sse = sse_new (s_on_event, &seen);
    char *big = malloc (SSE_MAX_LINE + 10);
    memset (big, 'x', SSE_MAX_LINE + 10);
    assert_int_equal (sse_feed (sse, big, SSE_MAX_LINE + 10), -1);
    assert_non_null (sse_error (sse));
    assert_int_equal (sse_feed (sse, "\n\n", 2), -1);
    free (big);
    sse_destroy (&sse);
}

static void test_redact (void **state)
{
    (void) state;
    char text[] = "header Authorization: Bearer sk-abcdef123456, again sk-abcdef123456.";
    llm_redact (text, "sk-abcdef123456");
    assert_string_equal (text, "header Authorization: Bearer ***, again ***.");
    char same[] = "***";
    llm_redact (same, "***");
    assert_string_equal (same, "***");
    llm_redact (same, NULL);
    llm_redact (same, "");
}

static void test_model_listings (void **state)
{
    (void) state;
    const char *names[8];
    void *doc;
    char why[200];
    const char *v1 = "{\"object\":\"list\",\"data\":[{\"id\":\"/models/qwen.gguf\"},{\"id\":\"b\"}]}";
    assert_int_equal (llm_probe_parse_models (LLM_LIST_OPENAI, v1, strlen (v1), &doc, names, 8,
                                              why, sizeof why),
                      2);
    assert_string_equal (names[0], "/models/qwen.gguf");
    json_decref (doc);
    const char *lms = "{\"data\":[{\"id\":\"a\",\"state\":\"not-loaded\"},{\"id\":\"b\",\"state\":\"loaded\"}]}";
    assert_int_equal (llm_probe_parse_models (LLM_LIST_LMSTUDIO, lms, strlen (lms), &doc, names, 8,
                                              why, sizeof why),
                      1);
    assert_string_equal (names[0], "b");
    json_decref (doc);
    const char *ps = "{\"models\":[{\"name\":\"llama3.2:latest\",\"size_vram\":1}]}";
    assert_int_equal (llm_probe_parse_models (LLM_LIST_OLLAMA_PS, ps, strlen (ps), &doc, names, 8,
                                              why, sizeof why),
                      1);
    assert_string_equal (names[0], "llama3.2:latest");
    json_decref (doc);
    const char *bad[] = {"", "[]", "{\"data\": 3}", "{\"data\": [{\"name\": 1}]}"};
    const char *where[] = {"not JSON", "data: expected an array", "data: expected an array",
                           "data[0]: no model name"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal (llm_probe_parse_models (LLM_LIST_OPENAI, bad[i], strlen (bad[i]), &doc,
                                                  names, 8, why, sizeof why),
                          -1);
        assert_non_null (strstr (why, where[i]));
        json_decref (doc);
    }
    //  A name too long for HEARTBEAT is left out; the others stay.
    char huge[700];
    snprintf (huge, sizeof huge, "{\"data\":[{\"id\":\"%0600d\"},{\"id\":\"ok\"}]}", 0);
    assert_int_equal (llm_probe_parse_models (LLM_LIST_OPENAI, huge, strlen (huge), &doc, names, 8,
                                              why, sizeof why),
                      1);
    assert_string_equal (names[0], "ok");
    json_decref (doc);
}

//  Mutates real answers at random: every reader refuses or accepts, never
//  crashes, and a refusal always says why.
static void test_random_mutations (void **state)
{
    (void) state;
    const char *samples[] = {
        "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"Hi \\u00e9 there\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}",
        "{\"choices\":[{\"delta\":{\"content\":\"par\"},\"finish_reason\":null}]}",
        "{\"error\":{\"code\":400,\"message\":\"the request exceeds the available context size\","
        "\"type\":\"exceed_context_size_error\"}}",
        ": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: [DONE]\n\n",
        "{\"data\":[{\"id\":\"m1\",\"state\":\"loaded\"},{\"id\":\"m2\",\"state\":\"not-loaded\"}]}",
        "{\"models\":[{\"name\":\"llama3.2:latest\"}]}",
    };
    srandom (4321);
    char buf[512];
    for (int round = 0; round < 20000; round++) {
        const char *sample = samples[round % 6];
        size_t size = strlen (sample);
        memcpy (buf, sample, size);
        int flips = 1 + (int) (random () % 4);
        for (int f = 0; f < flips; f++)
            buf[(size_t) random () % size] = (char) random ();
        size_t len = random () % 4 == 0 ? (size_t) random () % size : size;
        char why[300] = "";
        llm_reply_t reply = {0};
        llm_outcome_t rc = llm_chat_parse (buf, len, &reply, why, sizeof why);
        assert_non_null (reply.text);
        assert_true (rc == LLM_OK || *why);
        llm_reply_clear (&reply);
        bool text;
        *why = 0;
        rc = llm_chat_stream_event (&reply, buf, len, &text, why, sizeof why);
        assert_true (rc == LLM_OK || *why);
        llm_reply_clear (&reply);
        char message[200];
        llm_chat_classify (400 + random () % 200, buf, len, message, sizeof message);
        assert_true (strlen (message) < sizeof message);
        s_seen_t seen = {0};
        sse_t *sse = sse_new (s_on_event, &seen);
        for (size_t at = 0; at < len && seen.count < 12; at += 7)
            sse_feed (sse, buf + at, len - at < 7 ? len - at : 7);
        if (seen.count < 12)
            sse_finish (sse);
        sse_destroy (&sse);
        const char *names[8];
        void *doc;
        llm_probe_parse_models ((llm_list_kind_t) (random () % 3), buf, len, &doc, names, 8, why,
                                sizeof why);
        json_decref (doc);
    }
}

int main (void)
{
    plog_init ("test", PLOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_request_body),       cmocka_unit_test (test_parse_answers),
        cmocka_unit_test (test_parse_malformed),    cmocka_unit_test (test_error_inside_a_200),
        cmocka_unit_test (test_classify_errors),    cmocka_unit_test (test_stream_events),
        cmocka_unit_test (test_sse_stream),         cmocka_unit_test (test_sse_ends_and_limits),
        cmocka_unit_test (test_redact),             cmocka_unit_test (test_model_listings),
        cmocka_unit_test (test_random_mutations),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
