/*  dest_http - replies sent to any HTTP API as JSON.

    The body is a JSON template: every string in it is filled in
    ("{text}", "{entity_name}", "{chat_ref}", "{msg_ref}", ...; see
    dest_var). Without a template the body is
        {"chat": "{chat_ref}", "replyTo": "{msg_ref}", "entity": "{entity}",
         "username": "{entity_name}", "text": "{text}",
         "replyToAuthor": "{author}", "messageKey": "{msg_key}"}
    so a KV-style chat API of the seeds takes the reply as one more message.
    Headers are templates too; a token from tokenEnv goes where "{token}"
    is, or as "Authorization: Bearer". Every request carries an
    Idempotency-Key (entity/message[/part]), so an API that honours it can
    drop a repeated post.

    Outcomes follow dest_http_outcome: 2xx posted; 408/429/500/503 retried
    (after Retry-After); no answer after sending, or a gateway's 502/504,
    in doubt; other statuses failed with the API's answer as the reason.
    Limits are the configured limits[] (there are no platform defaults),
    with the destination's margins. A 429 (or a 503 with Retry-After)
    holds every post of the destination for exactly the Retry-After it
    gave (one second if it gave none).
*/
#include "sink/dest.h"
#include "sink/dest_outbox.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char s_default_body[] =
    "{\"chat\": \"{chat_ref}\", \"replyTo\": \"{msg_ref}\", \"entity\": \"{entity}\","
    " \"username\": \"{entity_name}\", \"text\": \"{text}\", \"replyToAuthor\": \"{author}\","
    " \"messageKey\": \"{msg_key}\"}";

typedef struct {
    dest_t *dest;
    phttp_t *http;
    char *token;                //  from tokenEnv, or NULL
    bool token_in_headers;      //  a header uses "{token}"
    bool own_idempotency_key;   //  the configuration sets Idempotency-Key itself
    json_t *body;               //  the template
    dest_limit_t *limit;
    dest_outbox_t *outbox;
} http_dest_t;

//  A copy of `tpl` with every string filled in.
static json_t *s_fill (json_t *tpl, dest_vars_t *vars)
{
    if (json_is_string (tpl)) {
        char *s = ptext_fill (json_string_value (tpl), dest_var, vars);
        json_t *v = json_string (s);
        free (s);
        return v ? v : json_string ("");
    }
    if (json_is_object (tpl)) {
        json_t *out = json_object ();
        const char *key;
        json_t *value;
        json_object_foreach (tpl, key, value)
            json_object_set_new (out, key, s_fill (value, vars));
        return out;
    }
    if (json_is_array (tpl)) {
        json_t *out = json_array ();
        size_t i;
        json_t *value;
        json_array_foreach (tpl, i, value)
            json_array_append_new (out, s_fill (value, vars));
        return out;
    }
    return json_deep_copy (tpl);
}

static void s_on_response (void *arg, const phttp_response_t *r)
{
    dest_item_t *item = arg;
    http_dest_t *h = item->account;
    int64_t now = zclock_time ();
    char why[600] = "", clean[700];
    int status = dest_http_outcome (r, h->dest->config->name, why, sizeof why);
    phttp_redact (why, h->token, clean, sizeof clean);
    int64_t retry_after = r->retry_after_ms > 0 ? r->retry_after_ms : 0;
    if (r->status == 429 || (r->status == 503 && retry_after)) {
        if (!retry_after)
            retry_after = 1000;     //  the API did not say: a second, and the sink's backoff
        dest_limit_pause (h->limit, NULL, now + retry_after);
    }
    dest_outbox_part_done (h->outbox, item, status, status == DEST_OK ? NULL : clean, retry_after,
                           now);
}

static int s_send (dest_t *dest, dest_item_t *item, int64_t now, char *why, size_t whylen)
{
    (void) now;
    http_dest_t *h = dest->state;
    dest_vars_t vars = {&item->post, item->parts[item->part_next], h->token ? h->token : "", ""};
    json_t *body = s_fill (h->body, &vars);
    char *text = json_dumps (body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref (body);
    //  Headers: ours, then the configured ones (filled in).
    json_t *conf = dest->config->headers;
    size_t n = json_is_object (conf) ? json_object_size (conf) : 0;
    char **headers = pcalloc (n + 3, sizeof (char *));
    size_t k = 0;
    headers[k++] = pstrdup ("Content-Type: application/json");
    if (!h->own_idempotency_key) {
        headers[k] = pmalloc (strlen (item->key) + 64);
        const char *sep = strchr (item->key, '\x1f');
        if (item->part_next)
            sprintf (headers[k++], "Idempotency-Key: %.*s/%s#%zu", (int) (sep - item->key),
                     item->key, sep + 1, item->part_next + 1);
        else
            sprintf (headers[k++], "Idempotency-Key: %.*s/%s", (int) (sep - item->key), item->key,
                     sep + 1);
    }
    const char *key;
    json_t *value;
    if (n)
        json_object_foreach (conf, key, value) {
            char *filled = ptext_fill (json_string_value (value), dest_var, &vars);
            headers[k] = pmalloc (strlen (key) + strlen (filled) + 3);
            sprintf (headers[k++], "%s: %s", key, filled);
            free (filled);
        }
    phttp_request_t req = {.method = dest->config->method,
                           .url = dest->config->url,
                           .headers = (const char *const *) headers,
                           .body = text,
                           .bearer = h->token_in_headers ? NULL : h->token,
                           .timeout_ms = dest->config->timeout_ms};
    bool started = text && phttp_request (h->http, &req, s_on_response, item);
    for (size_t i = 0; i < k; i++) {
        memset (headers[i], 0, strlen (headers[i]));
        free (headers[i]);
    }
    free (headers);
    free (text);
    if (!started) {
        snprintf (why, whylen, "curl could not start the request");
        return 1;
    }
    return 0;
}

static int s_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    http_dest_t *h = self->state;
    dest_outbox_add (h->outbox, post, tag, post->text, post->chat_ref, false, h, h->limit);
    dest_outbox_run (h->outbox, now);
    return 0;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    return phttp_pollitems (((http_dest_t *) dest_of (io)->state)->http, items, max);
}

static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) items, (void) count;
    http_dest_t *h = dest_of (io)->state;
    phttp_process (h->http);
    dest_outbox_run (h->outbox, now);
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    http_dest_t *h = dest_of (io)->state;
    int64_t a = dest_outbox_wakeup (h->outbox, now), b = phttp_wakeup (h->http);
    return a < b ? a : b;
}

static void s_restore (dest_t *self, const char *entity_id, const char *chat_ref, int64_t at)
{
    (void) entity_id;
    dest_limit_record (((http_dest_t *) self->state)->limit, chat_ref, false, at);
}

static int s_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    (void) self, (void) msg_key, (void) entity_id;
    return -1;
}

static void s_destroy (dest_t *self)
{
    http_dest_t *h = self->state;
    phttp_destroy (&h->http);   //  first: its callbacks point at items
    dest_outbox_destroy (&h->outbox);
    dest_limit_destroy (&h->limit);
    json_decref (h->body);
    if (h->token)
        memset (h->token, 0, strlen (h->token));
    free (h->token);
    free (h);
}

int dest_http_init (dest_t *self)
{
    const pcfg_destination_t *c = self->config;
    if (!*c->url) {
        plog_error ("destination %s: http needs a \"url\"", c->name);
        return -1;
    }
    const char *token = NULL;
    if (*c->token_env && !(token = dest_token (self, c->token_env, "the API token")))
        return -1;
    http_dest_t *h = pcalloc (1, sizeof *h);
    self->state = h;
    h->dest = self;
    h->token = pstrdup (token);
    if (c->headers && !json_is_null (c->headers)) {
        if (!json_is_object (c->headers)) {
            plog_error ("destination %s: headers: expected an object of strings", c->name);
            free (h->token);
            free (h);
            return -1;
        }
        const char *key;
        json_t *value;
        json_object_foreach (c->headers, key, value) {
            if (!json_is_string (value)) {
                plog_error ("destination %s: headers.%s: expected a string", c->name, key);
                free (h->token);
                free (h);
                return -1;
            }
            h->token_in_headers |= strstr (json_string_value (value), "{token}") != NULL;
            h->own_idempotency_key |= strcasecmp (key, "Idempotency-Key") == 0;
        }
    }
    h->body = c->body && !json_is_null (c->body) ? json_incref (c->body)
                                                   : json_loads (s_default_body, 0, NULL);
    h->http = phttp_new (h->token);
    dest_rule_t rules[DEST_MAX_RULES];
    h->limit = dest_limit_new (rules, dest_limit_held_rules (c, rules, DEST_MAX_RULES));
    h->outbox = dest_outbox_new (self, s_send, PTEXT_BYTES, 0);
    if (!h->http) {
        plog_error ("destination %s: libcurl could not be set up", c->name);
        s_destroy (self);
        return -1;
    }
    self->post = s_post;
    self->io.pollitems = s_pollitems;
    self->io.process = s_process;
    self->io.wakeup = s_wakeup;
    self->was_posted = s_was_posted;
    self->restore = s_restore;
    self->destroy = s_destroy;
    return 0;
}
