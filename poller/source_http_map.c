/*  source_http_map - the http source's JSON: where the messages are and
    what each of their fields is called. See source_http.c.

    A page is parsed, its list found, and each element mapped to a
    message or refused with its JSON path; the seen-set (chat and id,
    with the author, which replies are matched against) is kept here.
*/
#include "poller/source_http_int.h"
#include "common/palloc.h"
#include "net/ptext.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

int source_http__fields_init (source_t *self, http_src_t *h)
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

void source_http__bad (source_t *self, http_src_t *h, const char *where, const char *what)
{
    self->errors++;
    if (plog_limiter_allow (&h->log, 20))
        plog_warn ("source %s: %s: %s; skipped", self->config->name, where, what);
}

void source_http__pending_free (void **item)
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
    const char *text = source_json_scalar (v, buf, len);
    if (!text)
        *problem = "expected a string or an integer";
    return text;
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
        source_http__bad (self, h, where, what);
        return NULL;
    }
    const char *used, *problem = NULL;
    char idbuf[32], chatbuf[32], authorbuf[32], aidbuf[32], replybuf[32];

    json_t *v = s_field (h, obj, "id", &used);
    const char *id = v ? s_scalar (v, idbuf, sizeof idbuf, &problem) : NULL;
    snprintf (path, sizeof path, "%.250s.%.200s", where, used);
    if (!v) {
        source_http__bad (self, h, where, "no id (set fields.id)");
        return NULL;
    }
    if (!id || !*id || strlen (id) > MAX_ID || ptext_has_sentinel (id)) {
        source_http__bad (self, h, path,
               problem ? problem : !*id ? "empty" : strlen (id) > MAX_ID ? "longer than 200 bytes"
                                                                        : "invalid UTF-8");
        return NULL;
    }
    v = s_field (h, obj, "chat", &used);
    const char *chat =
        v ? s_scalar (v, chatbuf, sizeof chatbuf, &problem) : self->config->default_chat;
    snprintf (path, sizeof path, "%.250s.%.200s", where, used);
    if (!chat || !*chat || strlen (chat) > MAX_ID || ptext_has_sentinel (chat)) {
        source_http__bad (self, h, path, problem ? problem : "empty, too long or invalid UTF-8");
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
        source_http__bad (self, h, path, what);
        s_remember (h, key, "");
        void *item = m;
        source_http__pending_free (&item);
        return NULL;
    }
    m->id = pstrdup (id);
    m->chat = pstrdup (chat);
    return m;
}

//  --- one page --------------------------------------------------------------------------

static int s_compare_pending (const void *a, const void *b)
{
    const pending_t *x = *(pending_t *const *) a, *y = *(pending_t *const *) b;
    if (x->ts_ms != y->ts_ms)
        return x->ts_ms < y->ts_ms ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

//  Returns the number of new messages in the page, or -1 if it was refused.
int source_http__page (source_t *self, http_src_t *h, const char *body, size_t size,
                       size_t *page_len)
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
        source_http__bad (self, h, "response", what);
        return -1;
    }
    json_t *list = NULL;
    const char *list_name = "";
    if (json_is_array (root) && !h->list_configured)
        list = root;
    else
        list = s_field (h, root, "list", &list_name);
    if (!json_is_array (list)) {
        source_http__bad (self, h, "response",
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
            source_http__pending_free (&item);     //  handled before the restart
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
