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
*/
#include "poller/source.h"
#include "common/palloc.h"
#include "poller/source_feed.h"
#include "common/plog.h"
#include "net/phttp.h"
#include "net/ptext.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SEEN_MAX        20000       //  message ids remembered (with their authors)
#define MAX_ID          200
#define MAX_TEXT        65536
#define RETRY_CAP_MS    300000
#define MAX_TIME        1e14        //  a time (s or ms) past this is nonsense (and would overflow)

//  The fields and the names tried when the configuration names none.
static const struct {
    const char *key;
    const char *defaults;
} s_fields[] = {
    {"list", "messages|comments|items|data|results|result|data.messages"},
    {"id", "id|messageId|message_id|_id|key|uuid"},
    {"chat", "chat|chatId|chat_id|channel|room|roomId"},
    {"chatKind", "chatKind|chat_kind|chatType"},
    {"author", "username|author|userName|user|name|from|sender|nick"},
    {"authorId", "authorId|author_id|userId|user_id|senderId"},
    {"text", "text|message|content|body|msg"},
    {"time", "timestamp|ts|time|createdAt|created_at|date"},
    {"replyTo", "replyTo|reply_to|inReplyTo|replyToId|parentId"},
    {"replyToAuthor", "replyToAuthor|reply_to_author|replyToUsername"},
    {"isBot", "isBot|is_bot|bot|fromBot|message-type|messageType"},
};
#define FIELD_COUNT (sizeof s_fields / sizeof s_fields[0])

typedef struct {
    char *id, *chat, *chat_kind, *author, *author_id, *text, *reply_to_author;
    int64_t ts_ms;
    bool from_bot;
    size_t order;               //  position in the page, to keep ties stable
} pending_t;

typedef struct {
    phttp_t *http;
    char *token;                //  from tokenEnv, or NULL
    const char *bearer;         //  the token, when no header names "{token}"
    char **headers;             //  "Name: value", NULL-terminated
    json_t *fields;             //  field key -> array of paths
    bool list_configured;       //  the user named where the list is
    bool in_flight;
    int64_t now;
    int64_t next_at;            //  next poll
    unsigned failures;
    unsigned idle_polls;        //  polls in a row that brought nothing new
    zlistx_t *pending;          //  pending_t, oldest first
    zhashx_t *seen;             //  "chat \x1f id" -> author (strdup)
    zlistx_t *seen_order;
    int64_t since;              //  newest message time emitted
    int64_t skip_before;        //  after a restore: older messages were handled
    char cursor[32];
    plog_limiter_t log;
} http_src_t;

//  --- fields ---------------------------------------------------------------------------

static json_t *s_resolve (json_t *root, const char *path)
{
    if (!*path)
        return root;
    char buf[256];
    snprintf (buf, sizeof buf, "%s", path);
    json_t *at = root;
    for (char *save = NULL, *part = strtok_r (buf, ".", &save); part && at;
         part = strtok_r (NULL, ".", &save)) {
        if (json_is_object (at))
            at = json_object_get (at, part);
        else if (json_is_array (at) && part[0] >= '0' && part[0] <= '9')
            at = json_array_get (at, (size_t) atol (part));
        else
            at = NULL;
    }
    return at;
}

//  The first of the field's paths present in `obj`; *used gets which one.
static json_t *s_field (http_src_t *h, json_t *obj, const char *key, const char **used)
{
    json_t *paths = json_object_get (h->fields, key);
    size_t i;
    json_t *path;
    json_array_foreach (paths, i, path) {
        json_t *v = s_resolve (obj, json_string_value (path));
        if (v && !json_is_null (v)) {
            *used = json_string_value (path);
            return v;
        }
    }
    *used = json_string_value (json_array_get (paths, 0));
    return NULL;
}

static int s_fields_init (source_t *self, http_src_t *h)
{
    h->fields = json_object ();
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        json_t *paths = json_array ();
        char buf[256];
        snprintf (buf, sizeof buf, "%s", s_fields[i].defaults);
        for (char *save = NULL, *p = strtok_r (buf, "|", &save); p; p = strtok_r (NULL, "|", &save))
            json_array_append_new (paths, json_string (p));
        json_object_set_new (h->fields, s_fields[i].key, paths);
    }
    json_t *user = self->config->fields;
    if (!user || json_is_null (user))
        return 0;
    if (!json_is_object (user)) {
        plog_error ("source %s: fields: expected an object, got %s", self->config->name,
                    pcfg_json_type (user));
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach (user, key, value) {
        if (!json_object_get (h->fields, key)) {
            plog_error ("source %s: fields.%s: unknown field (known: list, id, chat, chatKind, "
                        "author, authorId, text, time, replyTo, replyToAuthor, isBot)",
                        self->config->name, key);
            return -1;
        }
        json_t *paths = json_array ();
        if (json_is_string (value))
            json_array_append (paths, value);
        else if (json_is_array (value) && json_array_size (value) > 0) {
            size_t i;
            json_t *p;
            json_array_foreach (value, i, p) {
                if (!json_is_string (p)) {
                    plog_error ("source %s: fields.%s[%zu]: expected a string, got %s",
                                self->config->name, key, i, pcfg_json_type (p));
                    json_decref (paths);
                    return -1;
                }
                json_array_append (paths, p);
            }
        }
        else {
            plog_error ("source %s: fields.%s: expected a path or a list of paths, got %s",
                        self->config->name, key, pcfg_json_type (value));
            json_decref (paths);
            return -1;
        }
        json_object_set_new (h->fields, key, paths);
        if (streq (key, "list"))
            h->list_configured = true;
    }
    return 0;
}

//  --- one message -----------------------------------------------------------------------

static void s_bad (source_t *self, http_src_t *h, const char *where, const char *what)
{
    self->errors++;
    if (plog_limiter_allow (&h->log, 20))
        plog_warn ("source %s: %s: %s; skipped", self->config->name, where, what);
}

static void s_pending_free (void **item)
{
    pending_t *p = *item;
    free (p->id);
    free (p->chat);
    free (p->chat_kind);
    free (p->author);
    free (p->author_id);
    free (p->text);
    free (p->reply_to_author);
    free (p);
    *item = NULL;
}

static void s_remember (http_src_t *h, const char *key, const char *author)
{
    if (zhashx_lookup (h->seen, key))
        return;
    zhashx_insert (h->seen, key, pstrdup (author ? author : ""));
    zlistx_add_end (h->seen_order, pstrdup (key));
    while (zlistx_size (h->seen_order) > SEEN_MAX) {
        char *oldest = zlistx_detach (h->seen_order, NULL);
        zhashx_delete (h->seen, oldest);
        free (oldest);
    }
}

//  A string or integer field as text; NULL and *problem set if it is neither.
static const char *s_scalar (json_t *v, char *buf, size_t len, const char **problem)
{
    if (json_is_string (v))
        return json_string_value (v);
    if (json_is_integer (v)) {
        snprintf (buf, len, "%lld", (long long) json_integer_value (v));
        return buf;
    }
    *problem = "expected a string or an integer";
    return NULL;
}

//  "2025-11-23T14:10:21.962Z" (or with an offset) to Unix ms; -1 if not that.
static int64_t s_iso_time (const char *s)
{
    struct tm tm = {0};
    int frac_len = 0, consumed = 0;
    char frac[16] = "";
    if (sscanf (s, "%4d-%2d-%2d%*[T ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) < 6)
        return -1;
    const char *p = s + consumed;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (frac_len < 3)
                frac[frac_len++] = *p;
    while (frac_len < 3)
        frac[frac_len++] = '0';
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    int64_t t = (int64_t) timegm (&tm);
    if (*p == '+' || *p == '-') {
        int oh = 0, om = 0;
        if (sscanf (p + 1, "%2d:%2d", &oh, &om) < 1)
            return -1;
        t -= (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    }
    else if (*p && *p != 'Z' && *p != 'z')
        return -1;
    return t * 1000 + atoi (frac);
}

static bool s_truthy (json_t *v)
{
    if (json_is_true (v))
        return true;
    if (json_is_integer (v))
        return json_integer_value (v) != 0;
    const char *s = json_string_value (v);
    return s && (strcasecmp (s, "true") == 0 || strcasecmp (s, "bot") == 0
                 || strcasecmp (s, "ai") == 0 || strcasecmp (s, "yes") == 0);
}

//  Maps one element of the list. Returns the message, or NULL after
//  logging why it was refused. *key gets its seen-set key (if it has an id).
static pending_t *s_map (source_t *self, http_src_t *h, json_t *obj, const char *where,
                         char *key, size_t keylen, bool *is_new)
{
    char path[500];
    *is_new = false;
    key[0] = 0;
    if (!json_is_object (obj)) {
        char what[80];
        snprintf (what, sizeof what, "expected an object, got %s", pcfg_json_type (obj));
        s_bad (self, h, where, what);
        return NULL;
    }
    const char *used, *problem = NULL;
    char idbuf[32], chatbuf[32], authorbuf[32], aidbuf[32], replybuf[32];

    json_t *v = s_field (h, obj, "id", &used);
    const char *id = v ? s_scalar (v, idbuf, sizeof idbuf, &problem) : NULL;
    snprintf (path, sizeof path, "%.250s.%.200s", where, used);
    if (!v) {
        s_bad (self, h, where, "no id (set fields.id)");
        return NULL;
    }
    if (!id || !*id || strlen (id) > MAX_ID || ptext_has_sentinel (id)) {
        s_bad (self, h, path,
               problem ? problem : !*id ? "empty" : strlen (id) > MAX_ID ? "longer than 200 bytes"
                                                                        : "invalid UTF-8");
        return NULL;
    }
    v = s_field (h, obj, "chat", &used);
    const char *chat =
        v ? s_scalar (v, chatbuf, sizeof chatbuf, &problem) : self->config->default_chat;
    snprintf (path, sizeof path, "%.250s.%.200s", where, used);
    if (!chat || !*chat || strlen (chat) > MAX_ID || ptext_has_sentinel (chat)) {
        s_bad (self, h, path, problem ? problem : "empty, too long or invalid UTF-8");
        return NULL;
    }
    snprintf (key, keylen, "%s\x1f%s", chat, id);
    *is_new = !zhashx_lookup (h->seen, key);
    if (!*is_new)
        return NULL;

    //  From here on, a refused message is remembered, so it is reported once.
    pending_t *m = pcalloc (1, sizeof *m);
    const char *what = NULL;
    char type_problem[80];
    v = s_field (h, obj, "text", &used);
    snprintf (path, sizeof path, "%.250s.%.200s", where, used);
    if (!v) {
        what = "no text (set fields.text)";
        snprintf (path, sizeof path, "%s", where);
    }
    else if (!json_is_string (v)) {
        snprintf (type_problem, sizeof type_problem, "expected a string, got %s", pcfg_json_type (v));
        what = type_problem;
    }
    else if (json_string_length (v) > MAX_TEXT)
        what = "longer than 65536 bytes";
    else if (ptext_has_sentinel (json_string_value (v)))
        what = "invalid UTF-8";
    if (!what) {
        m->text = pstrdup (json_string_value (v));
        v = s_field (h, obj, "author", &used);
        snprintf (path, sizeof path, "%.250s.%.200s", where, used);
        const char *author = v ? s_scalar (v, authorbuf, sizeof authorbuf, &problem) : "someone";
        if (!author || strlen (author) > MAX_ID || ptext_has_sentinel (author))
            what = problem ? problem : "too long or invalid UTF-8";
        else
            m->author = pstrdup (*author ? author : "someone");
    }
    if (!what) {
        v = s_field (h, obj, "authorId", &used);
        snprintf (path, sizeof path, "%.250s.%.200s", where, used);
        const char *aid = v ? s_scalar (v, aidbuf, sizeof aidbuf, &problem) : m->author;
        if (!aid || strlen (aid) > MAX_ID || ptext_has_sentinel (aid))
            what = problem ? problem : "too long or invalid UTF-8";
        else
            m->author_id = pstrdup (aid);
    }
    if (!what) {
        v = s_field (h, obj, "time", &used);
        snprintf (path, sizeof path, "%.250s.%.200s", where, used);
        if (!v)
            m->ts_ms = h->now;
        else if (json_is_number (v) && json_number_value (v) > -MAX_TIME
                 && json_number_value (v) < MAX_TIME) {
            m->ts_ms = (int64_t) json_number_value (v);
            if (m->ts_ms < 100000000000LL)
                m->ts_ms *= 1000;   //  seconds
        }
        else if (json_is_string (v) && (m->ts_ms = s_iso_time (json_string_value (v))) >= 0)
            ;
        else
            what = "expected Unix time or an ISO 8601 date";
    }
    if (!what) {
        v = s_field (h, obj, "chatKind", &used);
        const char *kind = json_string_value (v);
        if (kind)
            m->chat_kind = pstrdup (strcasecmp (kind, "private") == 0 || strcasecmp (kind, "dm") == 0
                                           || strcasecmp (kind, "direct") == 0
                                       ? "private"
                                       : "group");
        else
            m->chat_kind = pstrdup (self->config->chat_kind);
        v = s_field (h, obj, "replyToAuthor", &used);
        const char *reply_author = json_string_value (v);
        if (!reply_author) {
            //  A reply names the message it answers: its author is known if we saw it.
            v = s_field (h, obj, "replyTo", &used);
            const char *reply_id = v ? s_scalar (v, replybuf, sizeof replybuf, &problem) : NULL;
            if (reply_id) {
                char rkey[600];
                snprintf (rkey, sizeof rkey, "%s\x1f%s", chat, reply_id);
                reply_author = zhashx_lookup (h->seen, rkey);
            }
        }
        if (reply_author && *reply_author && !ptext_has_sentinel (reply_author))
            m->reply_to_author = pstrdup (reply_author);
        v = s_field (h, obj, "isBot", &used);
        m->from_bot = (v && s_truthy (v)) || source_is_bot_author (self, m->author, m->author_id);
    }
    if (what) {
        s_bad (self, h, path, what);
        s_remember (h, key, "");
        void *item = m;
        s_pending_free (&item);
        return NULL;
    }
    m->id = pstrdup (id);
    m->chat = pstrdup (chat);
    return m;
}

//  --- one response ----------------------------------------------------------------------

static int s_compare_pending (const void *a, const void *b)
{
    const pending_t *x = *(pending_t *const *) a, *y = *(pending_t *const *) b;
    if (x->ts_ms != y->ts_ms)
        return x->ts_ms < y->ts_ms ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

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

//  Returns the number of new messages in the page, or -1 if it was refused.
static int s_page (source_t *self, http_src_t *h, const char *body, size_t size, size_t *page_len)
{
    size_t scrubbed_len, bad_bytes;
    char *clean = ptext_scrub (body, size, &scrubbed_len, &bad_bytes);
    json_error_t err;
    json_t *root = json_loadb (clean, scrubbed_len, JSON_DECODE_ANY, &err);
    free (clean);
    if (!root) {
        char what[300];
        snprintf (what, sizeof what, "not JSON (line %d, column %d: %s)", err.line, err.column,
                  err.text);
        s_bad (self, h, "response", what);
        return -1;
    }
    json_t *list = NULL;
    const char *list_name = "";
    if (json_is_array (root) && !h->list_configured)
        list = root;
    else
        list = s_field (h, root, "list", &list_name);
    if (!json_is_array (list)) {
        s_bad (self, h, "response",
               list ? "the message list is not an array (set fields.list)"
                    : "no message list found (set fields.list)");
        json_decref (root);
        return -1;
    }
    size_t n = json_array_size (list);
    *page_len = n;
    pending_t **fresh = pcalloc (n + 1, sizeof *fresh);
    size_t count = 0, new_count = 0;
    for (size_t i = 0; i < n; i++) {
        char where[300], key[600];
        snprintf (where, sizeof where, "%s[%zu]", list == root ? "" : list_name, i);
        bool is_new;
        pending_t *m = s_map (self, h, json_array_get (list, i), where, key, sizeof key, &is_new);
        new_count += is_new;
        if (!m)
            continue;
        s_remember (h, key, m->author);
        if (m->ts_ms < h->skip_before) {
            void *item = m;
            s_pending_free (&item);     //  handled before the restart
            continue;
        }
        m->order = i;
        fresh[count++] = m;
    }
    //  Oldest first, whatever order the API lists them in.
    qsort (fresh, count, sizeof *fresh, s_compare_pending);
    for (size_t i = 0; i < count; i++)
        zlistx_add_end (h->pending, fresh[i]);
    free (fresh);
    json_decref (root);
    return (int) new_count;
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
        s_bad (self, h, "response", what);
        s_schedule_failure (self, h, -1);
        return;
    }
    size_t page_len = 0;
    int fresh = s_page (self, h, r->body, r->size, &page_len);
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
    if (s_fields_init (self, h)) {
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
    zlistx_set_destructor (h->pending, s_pending_free);
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
