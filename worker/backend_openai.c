/*  backend_openai - replies from OpenAI-compatible LLM servers.

    Every job becomes a chat completion call (prompt.c builds it, llm_chat.c
    reads the answer) to a server the pool picks (llm_pool.c). All calls of
    the process are in flight at once on one thread through phttp
    (libcurl multi), so a worker holds as many calls as worker.concurrency
    and the servers' maxConcurrent allow, with no thread per call.

    A job waits in `waiting` until a server has a free slot (the worker
    holds no more jobs than its servers have slots, so jobs wait only while
    servers are paused, down or open, or for a retry's pause). What a call's
    end means for its job (the table in the README, "When an LLM call
    fails"):

        reply                    done; empty after clean-up -> skipped
        context too long         dead-lettered with the reason, not retried
        malformed answer         dead-lettered with the reason
        other 4xx                dead-lettered with the reason
        429, 503                 that server pauses; the job tries another
        5xx, timeout, refused,   counts against the server's circuit; the
        reset, 401/403, 404      job tries another server

    A job tries worker.retries more times (other servers first) and then goes
    back to the broker (RETRY), which retries it later or dead-letters it
    after queueSettings.maxRetries. A job that finds no usable server for
    requestTimeoutMs goes back the same way, so another worker may do it.
*/
#include "worker/backend.h"
#include "common/palloc.h"
#include "worker/llm_chat.h"
#include "worker/llm_pool.h"
#include "worker/llm_probe.h"
#include "worker/prompt.h"
#include "worker/sse.h"
#include "common/plog.h"
#include "net/phttp.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

//  Pause before a retry on a server the job already tried, times the attempt.
#define SAME_SERVER_RETRY_MS 250
#define REASON_MAX           600

typedef struct oai_s oai_t;

typedef struct {
    wjob_t *job;
    oai_t *owner;
    json_t *messages;           //  the prompt, built once
    bool *tried;                //  one flag per server: failed there already
    int attempts;               //  calls made
    void *waiting;              //  handle in owner->waiting, or NULL while a call is out
    int64_t waiting_since;
    int64_t not_before;         //  earliest next call
    size_t server;              //  of the call in flight
    phttp_call_t *call;
    int64_t call_started;
    //  Streaming
    sse_t *sse;
    llm_reply_t reply;
    int64_t first_text_at;      //  0 = no text yet
    llm_outcome_t stream_outcome;
    char stream_why[300];
    char last_error[REASON_MAX + 100];  //  of the last failed call, for the reason
    int64_t retry_after;            //  server's advice from the last failed call
} ojob_t;

typedef struct {
    uint64_t calls, retries, handed_back, prompt_tokens, completion_tokens, streamed;
    uint64_t outcomes[LLM_OUTCOME_COUNT];
    uint64_t call_ms_total, ttft_ms_total, ttft_count;
} ocounters_t;

struct oai_s {
    backend_t *backend;
    const pcfg_t *config;
    phttp_t *http;
    llm_pool_t *pool;
    llm_probe_t *probe;
    zlistx_t *waiting;          //  ojob_t, oldest first (retries go to the front)
    size_t in_call;             //  jobs with a call in flight
    bool draining;
    ocounters_t counters;
    plog_limiter_t fail_log;
};

//  --- jobs ----------------------------------------------------------------------------------

static void s_ojob_free (ojob_t **oj_p)
{
    ojob_t *oj = *oj_p;
    json_decref (oj->messages);
    free (oj->tried);
    sse_destroy (&oj->sse);
    llm_reply_clear (&oj->reply);
    free (oj);
    *oj_p = NULL;
}

//  Ends a job: the worker learns of it through done; nothing of it stays here.
static void s_finish (ojob_t *oj, int status, const char *text, uint64_t tokens, int64_t retry_after)
{
    oai_t *self = oj->owner;
    wjob_t *job = oj->job;
    if (oj->waiting)
        zlistx_delete (self->waiting, oj->waiting);
    job->backend_data = NULL;
    backend_t *backend = self->backend;
    //  done may free the job; the ojob goes first.
    char *copy = pstrdup (text ? text : "");
    s_ojob_free (&oj);
    if (status == PROTO_REL_RETRY || status == PROTO_REL_RETURN)
        self->counters.handed_back++;
    backend->done (backend->ctx, job, status, copy, tokens, retry_after);
    free (copy);
}

static void s_wait (oai_t *self, ojob_t *oj, bool front, int64_t now)
{
    oj->waiting_since = now;
    oj->waiting = front ? zlistx_add_start (self->waiting, oj) : zlistx_add_end (self->waiting, oj);
}

//  --- one call ---------------------------------------------------------------------------

static int s_on_event (void *arg, const char *event, const char *data, size_t size)
{
    ojob_t *oj = arg;
    bool got_text = false;
    llm_outcome_t rc;
    if (!strcmp (event, "error")) {
        char message[240];
        rc = llm_chat_classify (500, data, size, message, sizeof message);
        snprintf (oj->stream_why, sizeof oj->stream_why, "error event in the stream: %s", message);
    }
    else
        rc = llm_chat_stream_event (&oj->reply, data, size, &got_text, oj->stream_why,
                                    sizeof oj->stream_why);
    if (got_text && !oj->first_text_at)
        oj->first_text_at = zclock_time ();
    if (rc != LLM_OK) {
        oj->stream_outcome = rc;
        return -1;
    }
    return 0;
}

static int s_on_data (void *arg, const char *data, size_t size)
{
    ojob_t *oj = arg;
    if (!oj->sse)
        oj->sse = sse_new (s_on_event, oj);
    if (sse_feed (oj->sse, data, size)) {
        if (oj->stream_outcome == LLM_OK) {
            oj->stream_outcome = LLM_MALFORMED;
            snprintf (oj->stream_why, sizeof oj->stream_why, "unreadable event stream: %s",
                      sse_error (oj->sse));
        }
        return -1;
    }
    return 0;
}

//  What the answer of a finished call means; `why` explains anything but LLM_OK.
static llm_outcome_t s_outcome (ojob_t *oj, const phttp_response_t *r, char *why, size_t whylen)
{
    oai_t *self = oj->owner;
    if (r->aborted && oj->stream_outcome != LLM_OK) {
        snprintf (why, whylen, "%s", oj->stream_why);
        return oj->stream_outcome;
    }
    if (r->error && !(oj->reply.done && r->status == 200)) {
        if (r->timed_out) {
            snprintf (why, whylen, "no complete answer within %" PRId64 " ms",
                      self->config->request_timeout_ms);
            return LLM_TIMEOUT;
        }
        snprintf (why, whylen, "%s", r->error);
        return LLM_TRANSPORT;
    }
    if (r->status < 200 || r->status >= 300) {
        char message[300];
        llm_outcome_t rc = llm_chat_classify (r->status, r->body, r->size, message, sizeof message);
        snprintf (why, whylen, "HTTP %ld%s%s", r->status, *message ? ": " : "", message);
        return rc;
    }
    if (r->size || !oj->sse) {
        //  Not streamed: asked not to, or the server ignored "stream".
        llm_reply_clear (&oj->reply);
        return llm_chat_parse (r->body, r->size, &oj->reply, why, whylen);
    }
    if (sse_finish (oj->sse) || oj->stream_outcome != LLM_OK) {
        snprintf (why, whylen, "%s", oj->stream_why);
        return oj->stream_outcome != LLM_OK ? oj->stream_outcome : LLM_MALFORMED;
    }
    if (!oj->reply.done && !*oj->reply.finish_reason) {
        snprintf (why, whylen, "the stream ended before [DONE]");
        return LLM_TRANSPORT;
    }
    return LLM_OK;
}

static void s_call_done (void *arg, const phttp_response_t *r);

static void s_start_call (oai_t *self, ojob_t *oj, size_t server, int64_t now)
{
    const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) oj->job->entity);
    llm_server_t *s = llm_pool_server (self->pool, server);
    llm_chat_request_t request = {llm_pool_model_for (self->pool, server, e->model),
                                  oj->messages,
                                  s->max_tokens_field,
                                  e->max_tokens,
                                  e->temperature,
                                  &e->stop,
                                  self->config->llm_stream};
    char *body = llm_chat_request_body (&request);
    char url[2048];
    snprintf (url, sizeof url, "%s/v1/chat/completions", s->base);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    phttp_request_t call = {.method = "POST",
                            .url = url,
                            .headers = headers,
                            .body = body,
                            .bearer = s->api_key,
                            .connect_timeout_ms = self->config->connect_timeout_ms,
                            .timeout_ms = self->config->request_timeout_ms,
                            .on_data = self->config->llm_stream ? s_on_data : NULL};
    oj->server = server;
    oj->attempts++;
    oj->tried[server] = true;
    oj->call_started = now;
    oj->first_text_at = 0;
    oj->stream_outcome = LLM_OK;
    llm_reply_clear (&oj->reply);
    sse_destroy (&oj->sse);
    self->counters.calls++;
    if (oj->attempts > 1)
        self->counters.retries++;
    llm_pool_call_started (self->pool, server, now);
    self->in_call++;
    oj->call = body ? phttp_request (self->http, &call, s_call_done, oj) : NULL;
    free (body);
    if (!oj->call) {
        //  Only when libcurl is out of memory: as a failed call.
        phttp_response_t failed = {.error = "could not start the request",
                                   .retry_after_ms = -1,
                                   .first_byte_ms = -1};
        s_call_done (oj, &failed);
    }
}

static void s_call_done (void *arg, const phttp_response_t *r)
{
    ojob_t *oj = arg;
    oai_t *self = oj->owner;
    int64_t now = zclock_time ();
    llm_server_t *s = llm_pool_server (self->pool, oj->server);
    oj->call = NULL;
    self->in_call--;
    char why[REASON_MAX] = "";
    llm_outcome_t outcome = s_outcome (oj, r, why, sizeof why);
    //  A server may quote our request back, key included.
    llm_redact (why, s->api_key);
    llm_pool_call_ended (self->pool, oj->server, outcome, r->retry_after_ms, why, now);
    self->counters.outcomes[outcome]++;
    self->counters.call_ms_total += (uint64_t) (now - oj->call_started);
    const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) oj->job->entity);
    if (outcome == LLM_OK) {
        if (oj->sse) {
            self->counters.streamed++;
            if (oj->first_text_at) {
                self->counters.ttft_ms_total += (uint64_t) (oj->first_text_at - oj->call_started);
                self->counters.ttft_count++;
            }
        }
        self->counters.prompt_tokens += oj->reply.prompt_tokens;
        self->counters.completion_tokens += oj->reply.completion_tokens;
        plog_trace ("job %" PRIu64 ": %s answered in %" PRId64 " ms (%" PRIu64 " tokens, %s)",
                    oj->job->id, s->name, now - oj->call_started, oj->reply.completion_tokens,
                    *oj->reply.finish_reason ? oj->reply.finish_reason : "?");
        s_finish (oj, PROTO_REL_DONE, oj->reply.text, oj->reply.completion_tokens, 0);
        return;
    }
    char reason[REASON_MAX + 200];
    if (outcome == LLM_CONTEXT || outcome == LLM_MALFORMED || outcome == LLM_REJECTED) {
        static const char *what[LLM_OUTCOME_COUNT] = {
            [LLM_CONTEXT] = "context too long",
            [LLM_MALFORMED] = "malformed answer",
            [LLM_REJECTED] = "request rejected",
        };
        snprintf (reason, sizeof reason, "%s: LLM server %s, model %s: %s", what[outcome], s->name,
                  *e->model ? e->model : "(server default)", why);
        if (plog_limiter_allow (&self->fail_log, 10))
            plog_warn ("job %" PRIu64 " (%s) not retried: %s", oj->job->id, oj->job->msg_key, reason);
        s_finish (oj, PROTO_REL_FAIL, reason, 0, 0);
        return;
    }
    snprintf (oj->last_error, sizeof oj->last_error, "LLM server %s: %s", s->name, why);
    oj->retry_after = r->retry_after_ms;
    plog_debug ("job %" PRIu64 ": call %d failed: %s", oj->job->id, oj->attempts, oj->last_error);
    if (oj->attempts <= self->config->llm_retries && !self->draining) {
        //  Another server at once if there is one; the same one after a pause.
        bool untried = false;
        for (size_t i = 0; i < llm_pool_size (self->pool) && !untried; i++)
            untried = !oj->tried[i];
        oj->not_before = untried ? now : now + SAME_SERVER_RETRY_MS * oj->attempts;
        s_wait (self, oj, true, now);
        return;
    }
    snprintf (reason, sizeof reason, "LLM call failed %d time%s; last: %s", oj->attempts,
              oj->attempts == 1 ? "" : "s", oj->last_error);
    if (plog_limiter_allow (&self->fail_log, 10))
        plog_warn ("job %" PRIu64 " (%s) back to the broker: %s", oj->job->id, oj->job->msg_key,
                   reason);
    int64_t after = outcome == LLM_RATE_LIMITED || outcome == LLM_BUSY
                        ? llm_pool_server (self->pool, oj->server)->paused_until - now
                        : 0;
    s_finish (oj, PROTO_REL_RETRY, reason, 0, after > 0 ? after : 0);
}

//  --- waiting jobs -----------------------------------------------------------------------------

//  Hands a job that cannot be served here back to the broker.
static void s_give_back (oai_t *self, ojob_t *oj, const char *what, int64_t now)
{
    char state[800], reason[REASON_MAX + 1000];
    llm_pool_describe (self->pool, now, state, sizeof state);
    if (oj->attempts)
        snprintf (reason, sizeof reason, "%s after %d failed call%s (last: %s); servers: %s", what,
                  oj->attempts, oj->attempts == 1 ? "" : "s", oj->last_error, state);
    else
        snprintf (reason, sizeof reason, "%s; servers: %s", what, state);
    int64_t next = llm_pool_next_change (self->pool, now);
    if (plog_limiter_allow (&self->fail_log, 10))
        plog_warn ("job %" PRIu64 " (%s) back to the broker: %s", oj->job->id, oj->job->msg_key,
                   reason);
    s_finish (oj, PROTO_REL_RETRY, reason, 0, next == INT64_MAX ? 0 : next - now);
}

//  Starts calls for waiting jobs while servers have free slots; hands back
//  jobs that waited too long and drops those that are too late anyway.
static void s_dispatch (oai_t *self, int64_t now)
{
    //  A snapshot: starting a call may put its job back at the front at once.
    size_t count = zlistx_size (self->waiting);
    if (count == 0)
        return;
    ojob_t **list = pmalloc (count * sizeof (ojob_t *));
    size_t n = 0;
    for (ojob_t *oj = zlistx_first (self->waiting); oj; oj = zlistx_next (self->waiting))
        list[n++] = oj;
    for (size_t i = 0; i < n; i++) {
        ojob_t *oj = list[i];
        wjob_t *job = oj->job;
        const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) job->entity);
        size_t server;
        llm_pick_t pick = LLM_PICK_BUSY;
        if (job->expires_ms && now > job->expires_ms)
            s_finish (oj, PROTO_REL_EXPIRED, "expired while waiting for an LLM server", 0, 0);
        else if (oj->not_before > now)
            ;   //  a retry's pause
        else if (llm_pool_has_free_slot (self->pool, now)
                 && (pick = llm_pool_pick (self->pool, e->model, oj->tried, now, &server)) == LLM_PICK_OK) {
            zlistx_delete (self->waiting, oj->waiting);
            oj->waiting = NULL;
            s_start_call (self, oj, server, now);
        }
        else if (pick == LLM_PICK_NONE) {
            char reason[600];
            snprintf (reason, sizeof reason, "no enabled LLM server serves model \"%s\"", e->model);
            s_finish (oj, PROTO_REL_FAIL, reason, 0, 0);
        }
        else if (now - oj->waiting_since > self->config->request_timeout_ms) {
            char what[100];
            snprintf (what, sizeof what, "no LLM server could take the call within %" PRId64 " ms",
                      self->config->request_timeout_ms);
            s_give_back (self, oj, what, now);
        }
    }
    free (list);
}

//  --- the backend interface ------------------------------------------------------------------

static int s_start (backend_t *backend, wjob_t *job, int64_t now)
{
    oai_t *self = backend->state;
    ojob_t *oj = pcalloc (1, sizeof *oj);
    oj->job = job;
    oj->owner = self;
    oj->tried = pcalloc (llm_pool_size (self->pool), sizeof (bool));
    oj->messages = prompt_messages (pcfg_entity (self->config, (size_t) job->entity), &job->message);
    job->backend_data = oj;
    s_wait (self, oj, false, now);
    return 0;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    oai_t *self = backend_of (io)->state;
    return phttp_pollitems (self->http, items, max);
}

static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) items, (void) count;
    oai_t *self = backend_of (io)->state;
    phttp_process (self->http);
    llm_probe_run (self->probe, now);
    s_dispatch (self, now);
    //  New calls want libcurl's attention now, not after another poll.
    if (phttp_wakeup (self->http) <= now)
        phttp_process (self->http);
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    oai_t *self = backend_of (io)->state;
    int64_t wake = phttp_wakeup (self->http);
    int64_t probe = llm_probe_wakeup (self->probe);
    if (probe < wake)
        wake = probe;
    if (zlistx_size (self->waiting)) {
        int64_t change = llm_pool_next_change (self->pool, now);
        if (change < wake)
            wake = change;
        for (ojob_t *oj = zlistx_first (self->waiting); oj; oj = zlistx_next (self->waiting)) {
            int64_t due = oj->not_before > now ? oj->not_before
                                               : oj->waiting_since + self->config->request_timeout_ms + 1;
            if (due < wake)
                wake = due;
        }
    }
    return wake;
}

static void s_cancel (backend_t *backend, wjob_t *job)
{
    oai_t *self = backend->state;
    ojob_t *oj = job->backend_data;
    if (!oj)
        return;
    if (oj->call) {
        phttp_cancel (self->http, &oj->call);
        llm_pool_call_cancelled (self->pool, oj->server);
        self->in_call--;
    }
    if (oj->waiting)
        zlistx_delete (self->waiting, oj->waiting);
    job->backend_data = NULL;
    s_ojob_free (&oj);
}

static void s_drain (backend_t *backend)
{
    oai_t *self = backend->state;
    self->draining = true;
    int64_t now = zclock_time ();
    ojob_t *oj;
    while ((oj = zlistx_first (self->waiting))) {
        if (oj->attempts)
            s_give_back (self, oj, "worker draining", now);
        else
            s_finish (oj, PROTO_REL_RETURN, "worker draining", 0, 0);
    }
}

static size_t s_models (backend_t *backend, const char **out, size_t max)
{
    oai_t *self = backend->state;
    return llm_pool_hot_models (self->pool, out, max, zclock_time ());
}

static size_t s_stats (backend_t *backend, proto_num_t *out, size_t max)
{
    oai_t *self = backend->state;
    const ocounters_t *c = &self->counters;
    //  Keys must outlive the call: one static name per outcome.
    static const char *outcome_keys[LLM_OUTCOME_COUNT] = {
        "llm_ok",        "llm_context_too_long", "llm_malformed", "llm_rejected",
        "llm_rate_limited", "llm_busy",           "llm_server_errors", "llm_timeouts",
        "llm_transport_errors", "llm_auth_errors", "llm_not_found"};
    int64_t now = zclock_time ();
    size_t n = 0;
    proto_num_t all[32];
    all[n++] = (proto_num_t) {"llm_calls", (double) c->calls};
    all[n++] = (proto_num_t) {"llm_retries", (double) c->retries};
    all[n++] = (proto_num_t) {"llm_handed_back", (double) c->handed_back};
    all[n++] = (proto_num_t) {"prompt_tokens", (double) c->prompt_tokens};
    all[n++] = (proto_num_t) {"completion_tokens", (double) c->completion_tokens};
    for (int i = 0; i < LLM_OUTCOME_COUNT; i++)
        all[n++] = (proto_num_t) {outcome_keys[i], (double) c->outcomes[i]};
    all[n++] = (proto_num_t) {"health_checks", (double) llm_probe_count (self->probe)};
    all[n++] = (proto_num_t) {"health_failures", (double) llm_probe_failures (self->probe)};
    all[n++] = (proto_num_t) {"llm_in_flight", (double) self->in_call};
    all[n++] = (proto_num_t) {"llm_waiting", (double) zlistx_size (self->waiting)};
    all[n++] = (proto_num_t) {"servers", (double) llm_pool_size (self->pool)};
    all[n++] = (proto_num_t) {"servers_usable", (double) llm_pool_usable (self->pool, now)};
    all[n++] = (proto_num_t) {"llm_avg_ms", c->calls ? (double) c->call_ms_total / (double) c->calls : 0};
    all[n++] = (proto_num_t) {"ttft_avg_ms",
                              c->ttft_count ? (double) c->ttft_ms_total / (double) c->ttft_count : 0};
    if (n > max)
        n = max;
    memcpy (out, all, n * sizeof (proto_num_t));
    return n;
}

static void s_banner (backend_t *backend)
{
    oai_t *self = backend->state;
    for (size_t i = 0; i < llm_pool_size (self->pool); i++) {
        llm_server_t *s = llm_pool_server (self->pool, i);
        char key[300] = "no API key";
        if (s->api_key)
            snprintf (key, sizeof key, "API key from %s", s->api_key_from);
        plog_info ("  LLM SERVER %s: %s (%s, weight %" PRId64 ", up to %" PRId64 " calls, %s)",
                   s->name, s->shown_url, s->config->type, s->config->weight,
                   s->config->max_concurrent, key);
    }
    if (backend->max_jobs < self->config->worker_concurrency)
        plog_info ("  %" PRId64 " slots, not worker.concurrency %" PRId64
                   ": the servers' maxConcurrent allow no more calls at once",
                   backend->max_jobs, self->config->worker_concurrency);
}

static void s_destroy (backend_t *backend)
{
    oai_t *self = backend->state;
    ojob_t *oj;
    while ((oj = zlistx_first (self->waiting))) {
        zlistx_delete (self->waiting, oj->waiting);
        oj->job->backend_data = NULL;
        s_ojob_free (&oj);
    }
    zlistx_destroy (&self->waiting);
    llm_probe_destroy (&self->probe);
    phttp_destroy (&self->http);
    llm_pool_destroy (&self->pool);
    free (self);
}

int backend_openai_init (backend_t *backend)
{
    char err[600];
    oai_t *self = pcalloc (1, sizeof *self);
    self->backend = backend;
    self->config = backend->config;
    self->pool = llm_pool_new (backend->config, err, sizeof err);
    if (!self->pool) {
        plog_error ("%s", err);
        free (self);
        return -1;
    }
    self->http = phttp_new (NULL);
    if (!self->http) {
        plog_error ("libcurl could not be initialised");
        llm_pool_destroy (&self->pool);
        free (self);
        return -1;
    }
    self->probe = llm_probe_new (backend->config, self->pool, self->http);
    self->waiting = zlistx_new ();
    for (size_t i = 0; i < llm_pool_size (self->pool); i++)
        backend->max_jobs += llm_pool_server (self->pool, i)->config->max_concurrent;
    backend->state = self;
    backend->start = s_start;
    backend->io.pollitems = s_pollitems;
    backend->io.process = s_process;
    backend->io.wakeup = s_wakeup;
    backend->cancel = s_cancel;
    backend->models = s_models;
    backend->destroy = s_destroy;
    backend->drain = s_drain;
    backend->stats = s_stats;
    backend->banner = s_banner;
    return 0;
}
