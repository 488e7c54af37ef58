/*  source_telegram - chat messages from the Telegram Bot API (getUpdates).

    Long polling: one getUpdates call waits up to longPollSeconds on
    Telegram's side and returns the moment a message arrives, so discovery
    is instant without hammering the API.

    Offsets are Telegram's acknowledgement: asking with offset=N forgets
    every update below N for good. So the source only sends an offset the
    poller has committed (stored with the jobs of those messages), and does
    not ask again while emitted updates are uncommitted (asking with the old
    offset would only return the same updates). cursor() is "last update_id
    + 1".

    A 409 Conflict means another getUpdates reader (a second poller on the
    same token, or a webhook) exists; Telegram allows one. It is logged as
    such and retried with backoff, never silently.

    Messages: text or caption; the author is the sender's @username (or
    name); a reply carries the replied-to sender as reply_to_author; the
    message's "mention", "text_mention" and "/command@bot" entities, whose
    offsets count UTF-16 code units, become chat_msg_t.mentions. Private
    chats have chat_kind "private", the others "group". The token is part of
    every URL, so no URL is ever logged and errors are redacted.
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

#define DEFAULT_API     "https://api.telegram.org"
#define MAX_LIMIT       100         //  Telegram's maximum updates per call
#define MAX_MENTIONS    16
#define RETRY_BASE_MS   1000
#define RETRY_MAX_MS    60000
#define CONFLICT_MS     5000        //  first retry after a 409
#define AUTH_RETRY_MS   30000       //  after the token was refused
#define AUTH_RETRY_MAX  600000
#define NAME_MAX_BYTES  256         //  longer names are cut (Telegram's are at most 64 characters)
#define MAX_DATE        100000000000LL  //  a date (Unix s) past this is nonsense (year 5138)

typedef struct {
    phttp_t *http;
    char *token;
    char *base;                 //  API base, no trailing slash
    bool in_flight;
    int64_t now;
    int64_t next_at;            //  next getUpdates, once committed
    unsigned failures;
    int64_t confirmed;          //  offset we may send (committed)
    int64_t read_to;            //  last update_id handled + 1
    json_t *page;               //  updates of the last call, being emitted
    size_t page_pos;
    int limit;                  //  updates per call; halved after an oversized page
    char cursor[32];
    plog_limiter_t log;
    plog_limiter_t conflict_log;
} tg_src_t;

static void s_bad (source_t *self, tg_src_t *t, const char *where, const char *what)
{
    self->errors++;
    if (plog_limiter_allow (&t->log, 20))
        plog_warn ("source %s: getUpdates %s: %s; skipped", self->config->name, where, what);
}

//  Copies a name into `buf`, cut to fit without splitting a UTF-8 sequence
//  (Telegram's names are short; an answer that is not Telegram's may not
//  be). NULL if it holds a scrubbed invalid byte.
static const char *s_copy_name (const char *name, char *buf, size_t len)
{
    if (!name || ptext_has_sentinel (name))
        return NULL;
    size_t n = ptext_cut (name, strlen (name), len - 1, PTEXT_BYTES, false);
    memcpy (buf, name, n);
    buf[n] = 0;
    return buf;
}

//  A user's name as chats show it: @username, else first (and last) name.
static const char *s_user_name (json_t *user, char *buf, size_t len)
{
    const char *username = json_string_value (json_object_get (user, "username"));
    if (username && *username)
        return s_copy_name (username, buf, len);
    const char *first = json_string_value (json_object_get (user, "first_name"));
    const char *last = json_string_value (json_object_get (user, "last_name"));
    if (!first)
        return NULL;
    char first_buf[NAME_MAX_BYTES + 1], last_buf[NAME_MAX_BYTES + 1], full[2 * NAME_MAX_BYTES + 2];
    first = s_copy_name (first, first_buf, sizeof first_buf);
    last = s_copy_name (last, last_buf, sizeof last_buf);
    if (!first)
        return NULL;
    snprintf (full, sizeof full, "%s%s%s", first, last ? " " : "", last ? last : "");
    return s_copy_name (full, buf, len);
}

//  The names Telegram marked as mentioned; `text` is what entities index.
static size_t s_mentions (json_t *entities, const char *text, char names[][130], size_t max)
{
    size_t n = 0, i;
    json_t *e;
    json_array_foreach (entities, i, e) {
        if (n == max)
            break;
        const char *type = json_string_value (json_object_get (e, "type"));
        json_t *off = json_object_get (e, "offset"), *len = json_object_get (e, "length");
        if (!type || !json_is_integer (off) || !json_is_integer (len) ||
            json_integer_value (off) < 0 || json_integer_value (len) < 0)
            continue;
        if (streq (type, "text_mention")) {
            //  A user without a username: the entity carries the user.
            json_t *user = json_object_get (e, "user");
            const char *username = json_string_value (json_object_get (user, "username"));
            if (username) {
                if (s_copy_name (username, names[n], 130))
                    n++;
            }
            else if (json_is_integer (json_object_get (user, "id")))
                snprintf (names[n++], 130, "%lld",
                          (long long) json_integer_value (json_object_get (user, "id")));
            continue;
        }
        if (!streq (type, "mention") && !streq (type, "bot_command"))
            continue;
        char slice[130];
        if (ptext_utf16_slice (text, (size_t) json_integer_value (off),
                               (size_t) json_integer_value (len), slice, sizeof slice))
            continue;   //  an entity outside the text: ignore it, keep the message
        const char *at = strchr (slice, '@');
        if (at && at[1])
            snprintf (names[n++], 130, "%s", at + 1);   //  "@name" or "/cmd@name"
    }
    return n;
}

//  Emits one update's message. Returns false if the poller refused it.
static bool s_update (source_t *self, tg_src_t *t, json_t *update, const char *where,
                      source_emit_fn *emit, void *ctx)
{
    json_t *m = json_object_get (update, "message");
    if (!m)
        return true;    //  another kind of update: nothing to answer
    char path[120];
    const char *what = NULL;
    json_t *text_v = json_object_get (m, "text");
    json_t *entities = json_object_get (m, "entities");
    if (!text_v) {
        text_v = json_object_get (m, "caption");
        entities = json_object_get (m, "caption_entities");
    }
    if (!text_v && json_is_object (m))
        return true;    //  a sticker, a photo without caption, a member joining...
    json_t *chat = json_object_get (m, "chat");
    json_t *from = json_object_get (m, "from");
    snprintf (path, sizeof path, "%s.message", where);
    if (!json_is_object (m))
        what = "expected an object";
    else if (!json_is_integer (json_object_get (m, "message_id")))
        what = "message_id is missing or not an integer";
    else if (!json_is_integer (json_object_get (chat, "id")))
        what = "chat.id is missing or not an integer";
    else if (!json_is_string (text_v))
        what = "text is not a string";
    else if (ptext_has_sentinel (json_string_value (text_v)))
        what = "text is not valid UTF-8";
    else if (from && !json_is_object (from))
        what = "from is not an object";
    if (what) {
        s_bad (self, t, path, what);
        return true;
    }
    char msg_ref[32], chat_ref[32], author_id[32] = "", author_buf[300], reply_buf[300];
    snprintf (msg_ref, sizeof msg_ref, "%lld",
              (long long) json_integer_value (json_object_get (m, "message_id")));
    snprintf (chat_ref, sizeof chat_ref, "%lld",
              (long long) json_integer_value (json_object_get (chat, "id")));
    const char *type = json_string_value (json_object_get (chat, "type"));
    const char *author = from ? s_user_name (from, author_buf, sizeof author_buf) : NULL;
    if (!author)
        author = s_copy_name (
            json_string_value (json_object_get (json_object_get (m, "sender_chat"), "title")),
            author_buf, sizeof author_buf);
    if (!author)
        author = "someone";
    if (json_is_integer (json_object_get (from, "id")))
        snprintf (author_id, sizeof author_id, "%lld",
                  (long long) json_integer_value (json_object_get (from, "id")));
    json_t *reply_from = json_object_get (json_object_get (m, "reply_to_message"), "from");
    const char *reply_to =
        reply_from ? s_user_name (reply_from, reply_buf, sizeof reply_buf) : NULL;
    const char *text = json_string_value (text_v);
    char names[MAX_MENTIONS][130];
    const char *mentions[MAX_MENTIONS];
    size_t mention_count = json_is_array (entities)
                               ? s_mentions (entities, text, names, MAX_MENTIONS)
                               : 0;
    for (size_t i = 0; i < mention_count; i++)
        mentions[i] = names[i];
    json_t *date = json_object_get (m, "date");
    chat_msg_t msg = {msg_ref,
                      chat_ref,
                      type && streq (type, "private") ? "private" : "group",
                      author,
                      author_id,
                      text,
                      reply_to,
                      json_is_integer (date) && json_integer_value (date) >= 0
                              && json_integer_value (date) < MAX_DATE
                          ? json_integer_value (date) * 1000
                          : t->now,
                      json_is_true (json_object_get (from, "is_bot"))
                          || source_is_bot_author (self, author, author_id),
                      mentions,
                      mention_count};
    return emit (ctx, self, &msg);
}

//  --- getUpdates ---------------------------------------------------------------------------

static void s_retry_later (tg_src_t *t, int64_t base, int64_t cap, int64_t retry_after)
{
    int64_t delay = phttp_backoff_ms (t->failures++, base, cap);
    if (retry_after > delay)
        delay = retry_after;
    t->next_at = t->now + delay;
}

static void s_on_response (void *arg, const phttp_response_t *r)
{
    source_t *self = arg;
    tg_src_t *t = self->state;
    const char *name = self->config->name;
    t->in_flight = false;
    t->now = zclock_time ();
    if (r->too_large) {
        char what[120];
        snprintf (what, sizeof what, "response larger than %lld bytes (maxResponseBytes)",
                  (long long) self->config->max_response_bytes);
        s_bad (self, t, "", what);
        if (t->limit > 1)
            t->limit /= 2;  //  fewer updates per call until it fits
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, -1);
        return;
    }
    if (r->error) {
        if (plog_limiter_allow (&t->log, 20))
            plog_warn ("source %s: getUpdates failed: %s", name, r->error);
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, -1);
        return;
    }
    size_t clean_len;
    char *clean = ptext_scrub (r->body, r->size, &clean_len, NULL);
    json_error_t err;
    json_t *root = json_loadb (clean, clean_len, 0, &err);
    free (clean);
    char description[400] = "";
    if (root) {
        const char *d = json_string_value (json_object_get (root, "description"));
        if (d)
            phttp_redact (d, t->token, description, sizeof description);
    }
    json_t *result = json_object_get (root, "result");
    if (r->status == 200 && json_is_true (json_object_get (root, "ok")) && json_is_array (result)) {
        t->failures = 0;
        t->page = json_incref (result);
        t->page_pos = 0;
        t->next_at = t->now;
        if (t->limit < MAX_LIMIT)
            t->limit++;
    }
    else if (r->status == 409) {
        if (plog_limiter_allow (&t->conflict_log, 1))
            plog_error (
                "source %s: Telegram refused getUpdates with 409 Conflict (\"%s\"): another "
                "poller or a webhook is reading this bot's updates, and Telegram allows "
                "only one reader per bot token; stop the other one (or delete the "
                "webhook). Retrying.",
                name, description);
        s_retry_later (t, CONFLICT_MS, RETRY_MAX_MS, -1);
    }
    else if (r->status == 401 || r->status == 404) {
        plog_error ("source %s: Telegram refused the bot token (%ld %s); check the variable %s",
                    name, r->status, description, self->config->token_env);
        s_retry_later (t, AUTH_RETRY_MS, AUTH_RETRY_MAX, -1);
    }
    else if (r->status == 429) {
        json_t *after = json_object_get (json_object_get (root, "parameters"), "retry_after");
        int64_t ms = r->retry_after_ms;
        if (json_is_integer (after))
            ms = json_integer_value (after) <= 0
                     ? 0
                     : phttp_retry_after_ms (json_integer_value (after));
        plog_warn ("source %s: Telegram asks to wait %lld ms before the next getUpdates", name,
                   (long long) ms);
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, ms);
    }
    else if (!root) {
        char what[300];
        snprintf (what, sizeof what, "HTTP %ld, body is not JSON (line %d, column %d: %s)",
                  r->status, err.line, err.column, err.text);
        s_bad (self, t, "response", what);
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, r->retry_after_ms);
    }
    else {
        if (plog_limiter_allow (&t->log, 20))
            plog_warn ("source %s: getUpdates answered HTTP %ld: %s", name, r->status,
                       *description ? description : "no description");
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, r->retry_after_ms);
    }
    json_decref (root);
}

static void s_request (source_t *self, tg_src_t *t)
{
    char url[1200], offset[48] = "";
    if (t->confirmed > 0)
        snprintf (offset, sizeof offset, "&offset=%lld", (long long) t->confirmed);
    snprintf (url, sizeof url, "%s/bot%s/getUpdates?timeout=%lld&limit=%d%s"
              "&allowed_updates=%%5B%%22message%%22%%5D",
              t->base, t->token, (long long) self->config->long_poll_seconds, t->limit, offset);
    phttp_request_t req = {
        .url = url,
        .timeout_ms = self->config->timeout_ms + self->config->long_poll_seconds * 1000,
        .max_response_bytes = (size_t) self->config->max_response_bytes};
    bool started = phttp_request (t->http, &req, s_on_response, self) != NULL;
    memset (url, 0, sizeof url);
    if (started)
        t->in_flight = true;
    else {
        plog_error ("source %s: curl could not start getUpdates", self->config->name);
        s_retry_later (t, RETRY_BASE_MS, RETRY_MAX_MS, -1);
    }
}

//  --- the source interface ----------------------------------------------------------------

//  Emits the updates of the page in hand. Returns false if the poller
//  refused one (it is emitted again next time).
static bool s_emit_page (source_t *self, tg_src_t *t, int budget, source_emit_fn *emit, void *ctx)
{
    while (t->page && t->page_pos < json_array_size (t->page) && budget > 0) {
        json_t *update = json_array_get (t->page, t->page_pos);
        json_t *id = json_object_get (update, "update_id");
        char where[48];
        snprintf (where, sizeof where, "result[%zu]", t->page_pos);
        if (!json_is_integer (id)) {
            s_bad (self, t, where, "update_id is missing or not an integer");
            t->page_pos++;
            continue;
        }
        if (json_integer_value (id) >= t->read_to) {
            if (!s_update (self, t, update, where, emit, ctx))
                return false;   //  the poller is full: this update again next time
            t->read_to = json_integer_value (id) + 1;
            budget--;
        }
        t->page_pos++;
    }
    if (t->page && t->page_pos >= json_array_size (t->page)) {
        json_decref (t->page);
        t->page = NULL;
    }
    return true;
}

static void s_poll (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx)
{
    tg_src_t *t = self->state;
    t->now = now;
    phttp_process (t->http);
    if (!s_emit_page (self, t, budget, emit, ctx))
        return;
    //  Ask again only when everything emitted is committed: the offset we
    //  send confirms it to Telegram.
    if (!t->in_flight && !t->page && t->confirmed >= t->read_to && now >= t->next_at)
        s_request (self, t);
}

bool source_telegram_feed (source_t *self, long status, const char *body, size_t size,
                           int budget, source_emit_fn *emit, void *ctx)
{
    tg_src_t *t = self->state;
    //  What is left of the last answer goes first: until it is all handed
    //  over, the source asks for no new one.
    s_emit_page (self, t, budget, emit, ctx);
    if (t->page)
        return false;
    phttp_response_t r = {.status = status, .body = body, .size = size, .retry_after_ms = -1,
                          .first_byte_ms = -1};
    t->in_flight = true;
    s_on_response (self, &r);
    s_emit_page (self, t, budget, emit, ctx);
    return true;
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    source_t *self = source_of (io);
    tg_src_t *t = self->state;
    if (t->page)
        return now;
    if (t->in_flight)
        return phttp_wakeup (t->http);
    if (t->confirmed < t->read_to)
        return PRT_NEVER;   //  committed() comes first
    return t->next_at;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    source_t *self = source_of (io);
    return phttp_pollitems (((tg_src_t *) self->state)->http, items, max);
}

static const char *s_cursor (source_t *self)
{
    tg_src_t *t = self->state;
    if (t->read_to <= 0)
        return NULL;
    snprintf (t->cursor, sizeof t->cursor, "%lld", (long long) t->read_to);
    return t->cursor;
}

static void s_committed (source_t *self, const char *cursor)
{
    tg_src_t *t = self->state;
    int64_t offset = strtoll (cursor, NULL, 10);
    if (offset > t->confirmed)
        t->confirmed = offset;
}

static void s_restore (source_t *self, const char *cursor)
{
    tg_src_t *t = self->state;
    t->confirmed = t->read_to = strtoll (cursor, NULL, 10);
    plog_info ("source %s: resuming at update %lld", self->config->name, (long long) t->read_to);
}

static void s_destroy (source_t *self)
{
    tg_src_t *t = self->state;
    phttp_destroy (&t->http);
    json_decref (t->page);
    if (t->token)
        memset (t->token, 0, strlen (t->token));
    free (t->token);
    free (t->base);
    free (t);
}

int source_telegram_init (source_t *self)
{
    const char *token = source_token (self, true);
    if (!token)
        return -1;
    tg_src_t *t = pcalloc (1, sizeof *t);
    t->token = pstrdup (token);
    const char *base = *self->config->url ? self->config->url : DEFAULT_API;
    t->base = pstrdup (base);
    size_t n = strlen (t->base);
    while (n > 0 && t->base[n - 1] == '/')
        t->base[--n] = 0;
    t->http = phttp_new (t->token);
    t->limit = MAX_LIMIT;
    self->state = t;
    if (!t->http) {
        plog_error ("source %s: libcurl could not be set up", self->config->name);
        s_destroy (self);
        return -1;
    }
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
