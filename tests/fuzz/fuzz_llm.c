/*  fuzz_llm - what an LLM server answers: complete, streamed, or an error.

    Input: byte 0 picks the HTTP status; the rest is the answer. Bytes 0xFF
    (never part of UTF-8 text) mark where the stream is cut into the pieces
    that arrive, and are dropped from it. The answer goes, as the worker's
    OpenAI backend takes it:
      - whole, to llm_chat_parse (a 2xx body) and llm_chat_classify (any
        status);
      - in its pieces, through sse_feed and sse_finish, each event to
        llm_chat_stream_event ("error" events to llm_chat_classify), until
        one is refused.
    The reply must stay a NUL-terminated string of its recorded length.
    The answer is also read as each kind of model listing (llm_probe).
    Seeds: tests/fuzz/llm/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "proto/proto.h"
#include "worker/llm_chat.h"
#include "worker/llm_probe.h"
#include "worker/sse.h"

#define CUT 0xFF

static const long s_statuses[16] = {200, 400, 401, 403, 404, 408, 413, 422,
                                    429, 500, 502, 503, 504, 0,   302, 418};

typedef struct {
    llm_reply_t reply;
    llm_outcome_t outcome;
    char why[300];
} s_stream_t;

static void s_check_reply (const llm_reply_t *reply)
{
    size_t finish_max = sizeof reply->finish_reason;
    if (!reply->text || strlen (reply->text) != reply->len || reply->len >= reply->cap
        || strnlen (reply->finish_reason, finish_max) == finish_max)
        abort ();
}

//  As the backend's event callback: stop at the first event refused.
static int s_on_event (void *arg, const char *event, const char *data, size_t size)
{
    s_stream_t *s = arg;
    bool got_text = false;
    llm_outcome_t rc;
    if (!strcmp (event, "error")) {
        char message[240];
        rc = llm_chat_classify (500, data, size, message, sizeof message);
        if (strnlen (message, sizeof message) == sizeof message)
            abort ();
    }
    else {
        rc = llm_chat_stream_event (&s->reply, data, size, &got_text, s->why, sizeof s->why);
        s_check_reply (&s->reply);
    }
    if (rc != LLM_OK) {
        s->outcome = rc;
        return -1;
    }
    return 0;
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    long status = s_statuses[data[0] & 15];
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    //  The answer as one body: the cut marks dropped, NUL-terminated as phttp keeps it.
    char *body = malloc (len + 1);
    size_t body_len = 0;
    for (size_t i = 0; i < len; i++)
        if (in[i] != CUT)
            body[body_len++] = (char) in[i];
    body[body_len] = 0;
    char why[300], message[300];
    if (status >= 200 && status < 300) {
        llm_reply_t reply = {0};
        llm_chat_parse (body, body_len, &reply, why, sizeof why);
        s_check_reply (&reply);
        llm_redact (reply.text, "sk-secret");
        llm_reply_clear (&reply);
    }
    llm_outcome_t outcome = llm_chat_classify (status, body, body_len, message, sizeof message);
    if (outcome >= LLM_OUTCOME_COUNT || strnlen (message, sizeof message) == sizeof message)
        abort ();
    llm_redact (message, "sk-secret");
    llm_chat_is_context_error (body);
    for (int kind = LLM_LIST_OPENAI; kind <= LLM_LIST_OLLAMA_PS; kind++) {
        const char *names[16];
        void *doc = NULL;
        int n = llm_probe_parse_models ((llm_list_kind_t) kind, body, body_len, &doc, names, 16,
                                        why, sizeof why);
        if (n > 16 || (n < 0 && strnlen (why, sizeof why) == sizeof why))
            abort ();
        for (int i = 0; i < n; i++)
            if (!names[i] || strlen (names[i]) > PROTO_MAX_KEY)
                abort ();
        json_decref (doc);
    }

    //  The same bytes as a stream, in the pieces the marks cut.
    s_stream_t stream = {.outcome = LLM_OK};
    sse_t *sse = sse_new (s_on_event, &stream);
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i <= len && rc == 0; i++)
        if (i == len || in[i] == CUT) {
            //  Each piece in a buffer of its own size, so a read past it is caught.
            size_t n = i - start;
            char *piece = malloc (n ? n : 1);
            memcpy (piece, in + start, n);
            rc = sse_feed (sse, piece, n);
            free (piece);
            start = i + 1;
        }
    if (rc == 0)
        sse_finish (sse);
    else if (!sse_error (sse))
        abort ();   //  a failed feed says why
    sse_destroy (&sse);
    llm_reply_clear (&stream.reply);
    free (body);
    return 0;
}
