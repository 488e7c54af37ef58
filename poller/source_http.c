/*  source_http - chat messages polled from a JSON HTTP API.

    Fits "fetch the last 50 messages" endpoints like the Cloudflare KV
    worker of the seeds: GET the URL, find the list of messages, map each
    message's fields, emit the ones not seen before, oldest first. Field
    names are configurable ("fields"); the defaults try common names, so a
    response like
        {"messages": [{"id": "k1", "username": "ana", "text": "@Joker hi",
                       "timestamp": 1763900000000}, ...]}
    or a bare array of such objects works as it is.

    Polling adapts: a page whose messages were all new (pageSize or more)
    may have missed some, so the source asks again at once; an idle source
    slows down to maxPollingInterval; every interval has ±10% jitter so many
    pollers do not beat in step; failures back off exponentially.

    Bad input never stops it: a body that is not JSON, a message without id
    or text, a field of the wrong type, invalid UTF-8 (only that message is
    refused) or an oversized response is logged with the source name and
    the JSON path ("messages[3].text"), counted in errors and skipped.

    The cursor is the time of the newest message emitted: after a restart,
    older messages are not emitted again.

    The JSON side (field paths, mapping one message, the seen-set) is in
    source_http_map.c.
*/
#include "poller/source_http_int.h"
#include "common/palloc.h"
#include "poller/source_feed.h"
#include "net/phttp.h"
#include "net/ptext.h"

#include <stdlib.h>
#include <string.h>

#define RETRY_CAP_MS    300000

//  --- one response ----------------------------------------------------------------------

static int64_t s_jitter (int64_t ms)
{
    return ms - ms / 10 + (int64_t) (random () % (ms / 5 + 1));
}

static void s_schedule_failure (source_t *self, http_src_t *h, int64_t retry_after)
{
    int64_t base = source_interval_ms (self);
    int64_t delay = phttp_backoff_ms (h->failures++, base, RETRY_CAP_MS);
    if (retry_after > delay)
        delay = retry_after;
    h->next_at = h->now + delay;
}

static void s_on_response (void *arg, const phttp_response_t *r)
{
    source_t *self = arg;
    http_src_t *h = self->state;
    h->in_flight = false;
    h->now = zclock_time ();
    const char *name = self->config->name;
    if (r->error && !r->too_large) {
        if (plog_limiter_allow (&h->log, 20))
            plog_warn ("source %s: request failed: %s", name, r->error);
        s_schedule_failure (self, h, -1);
        return;
    }
    if (r->status < 200 || r->status > 299) {
        char excerpt[201], clean[300];
        snprintf (excerpt, sizeof excerpt, "%s", r->body);
        phttp_redact (excerpt, h->token, clean, sizeof clean);
        if (plog_limiter_allow (&h->log, 20))
            plog_warn ("source %s: HTTP %ld from the API: %s", name, r->status, clean);
        s_schedule_failure (self, h, r->retry_after_ms);
        return;
    }
    if (r->too_large) {
        char what[100];
        snprintf (what, sizeof what, "larger than %lld bytes (maxResponseBytes)",
                  (long long) self->config->max_response_bytes);
        source_http__bad (self, h, "response", what);
        s_schedule_failure (self, h, -1);
        return;
    }
    size_t page_len = 0;
    int fresh = source_http__page (self, h, r->body, r->size, &page_len);
    if (fresh < 0) {
        s_schedule_failure (self, h, -1);
        return;
    }
    h->failures = 0;
    int64_t interval = source_interval_ms (self);
    if (page_len >= (size_t) self->config->page_size && (size_t) fresh == page_len) {
        //  Everything on a full page was new: there may be more behind it.
        h->idle_polls = 0;
        h->next_at = h->now;
        plog_debug ("source %s: a full page of %zu new messages; polling again", name, page_len);
    }
    else if (fresh > 0) {
        h->idle_polls = 0;
        h->next_at = h->now + s_jitter (interval);
    }
    else {
        int64_t max = self->config->max_polling_interval_ms;
        if (max <= 0)
            max = interval * 4;
        int64_t d = interval;
        for (unsigned i = 1; i < h->idle_polls + 1 && d < max; i++)
            d *= 2;
        h->idle_polls++;
        h->next_at = h->now + s_jitter (d < max ? d : max);
    }
}

//  --- the source interface ----------------------------------------------------------------

static const char *s_lookup (void *ctx, const char *name)
{
    http_src_t *h = ctx;
    if (streq (name, "since")) {
        snprintf (h->cursor, sizeof h->cursor, "%lld", (long long) h->since);
        return h->cursor;
    }
    return NULL;
}

static void s_request (source_t *self, http_src_t *h)
{
    char *url = ptext_fill (self->config->url, s_lookup, h);
    phttp_request_t req = {.url = url,
                           .headers = (const char *const *) h->headers,
                           .bearer = h->bearer,
                           .timeout_ms = self->config->timeout_ms,
                           .max_response_bytes = (size_t) self->config->max_response_bytes};
    if (phttp_request (h->http, &req, s_on_response, self))
        h->in_flight = true;
    else {
        plog_error ("source %s: curl could not start a request", self->config->name);
        s_schedule_failure (self, h, -1);
    }
    free (url);
}

//  Hands pending messages over, oldest first. Returns false if the poller
//  refused one (it stays first in line).
static bool s_emit_pending (source_t *self, http_src_t *h, int budget, source_emit_fn *emit,
                            void *ctx)
{
    pending_t *m;
    while (budget > 0 && (m = zlistx_first (h->pending))) {
        chat_msg_t msg = {m->id,        m->chat,          m->chat_kind, m->author,
                          m->author_id, m->text,          m->reply_to_author,
                          m->ts_ms,     m->from_bot,      NULL,
                          0};
        if (!emit (ctx, self, &msg))
            return false;
        if (m->ts_ms > h->since)
            h->since = m->ts_ms;
        zlistx_delete (h->pending, zlistx_cursor (h->pending));
        budget--;
    }
    return true;
}

static void s_poll (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx)
{
    http_src_t *h = self->state;
    h->now = now;
    phttp_process (h->http);
    if (!s_emit_pending (self, h, budget, emit, ctx))
        return;
    //  The next page only once this one is handed over.
    if (!h->in_flight && zlistx_size (h->pending) == 0 && now >= h->next_at)
        s_request (self, h);
}

void source_http_feed (source_t *self, long status, const char *body, size_t size, int budget,
                       source_emit_fn *emit, void *ctx)
{
    http_src_t *h = self->state;
    phttp_response_t r = {.status = status, .body = body, .size = size, .retry_after_ms = -1,
                          .first_byte_ms = -1};
    h->in_flight = true;
    s_on_response (self, &r);
    s_emit_pending (self, h, budget, emit, ctx);
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    source_t *self = source_of (io);
    http_src_t *h = self->state;
    if (zlistx_size (h->pending))
        return now;
    return h->in_flight ? phttp_wakeup (h->http) : h->next_at;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    source_t *self = source_of (io);
    return phttp_pollitems (((http_src_t *) self->state)->http, items, max);
}

static const char *s_cursor (source_t *self)
{
    http_src_t *h = self->state;
    if (!h->since)
        return NULL;
    snprintf (h->cursor, sizeof h->cursor, "%lld", (long long) h->since);
    return h->cursor;
}

static void s_committed (source_t *self, const char *cursor)
{
    (void) self, (void) cursor;
}

static void s_restore (source_t *self, const char *cursor)
{
    http_src_t *h = self->state;
    h->since = h->skip_before = strtoll (cursor, NULL, 10);
}

static void s_destroy (source_t *self)
{
    http_src_t *h = self->state;
    phttp_destroy (&h->http);
    for (size_t i = 0; h->headers && h->headers[i]; i++)
        free (h->headers[i]);
    free (h->headers);
    json_decref (h->fields);
    zlistx_destroy (&h->pending);
    zhashx_destroy (&h->seen);
    zlistx_destroy (&h->seen_order);
    free (h->token);
    free (h);
}

static const char *s_token_lookup (void *ctx, const char *name)
{
    return streq (name, "token") ? ctx : NULL;
}

static void s_str_free (void **item)
{
    free (*item);
    *item = NULL;
}

int source_http_init (source_t *self)
{
    const pcfg_source_t *c = self->config;
    if (!*c->url) {
        plog_error ("source %s: http needs a \"url\"", c->name);
        return -1;
    }
    const char *token = source_token (self, false);
    if (!token)
        return -1;
    http_src_t *h = pcalloc (1, sizeof *h);
    self->state = h;
    h->token = *token ? pstrdup (token) : NULL;
    if (source_http__fields_init (self, h)) {
        s_destroy (self);
        return -1;
    }
    //  Headers; a token goes where "{token}" is, or as a bearer token.
    size_t n = json_is_object (c->headers) ? json_object_size (c->headers) : 0;
    h->headers = pcalloc (n + 1, sizeof (char *));
    size_t k = 0;
    bool token_used = false;
    const char *key;
    json_t *value;
    if (n)
        json_object_foreach (c->headers, key, value) {
            if (!json_is_string (value)) {
                plog_error ("source %s: headers.%s: expected a string", c->name, key);
                s_destroy (self);
                return -1;
            }
            token_used |= strstr (json_string_value (value), "{token}") != NULL;
            char *filled = ptext_fill (json_string_value (value), s_token_lookup,
                                       h->token ? h->token : (char *) "");
            h->headers[k] = pmalloc (strlen (key) + strlen (filled) + 3);
            sprintf (h->headers[k++], "%s: %s", key, filled);
            free (filled);
        }
    if (!token_used)
        h->bearer = h->token;
    h->http = phttp_new (h->token);
    if (!h->http) {
        plog_error ("source %s: libcurl could not be set up", c->name);
        s_destroy (self);
        return -1;
    }
    h->pending = zlistx_new ();
    zlistx_set_destructor (h->pending, source_http__pending_free);
    h->seen = zhashx_new ();
    zhashx_set_destructor (h->seen, s_str_free);
    h->seen_order = zlistx_new ();
    zlistx_set_destructor (h->seen_order, s_str_free);
    self->poll = s_poll;
    self->io.wakeup = s_wakeup;
    self->io.pollitems = s_pollitems;
    self->finished = source_endless;
    self->cursor = s_cursor;
    self->committed = s_committed;
    self->restore = s_restore;
    self->destroy = s_destroy;
    return 0;
}
