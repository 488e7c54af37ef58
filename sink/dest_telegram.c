/*  dest_telegram - replies posted with the Telegram Bot API (sendMessage).

    Each reply answers its message (reply_parameters, with
    allow_sending_without_reply so a deleted original does not lose the
    reply). An entity listed in accounts[] posts as its own bot; the others
    post as the default bot (tokenEnv), with textTemplate to say who speaks.

    Limits per bot, as Telegram counts them: 30 messages per second, 20 per
    minute in a group, 1 per second in a private chat (chat ids above zero
    are private chats), plus the configured ones, each held with the
    destination's margins. A 429 names how long to wait
    (parameters.retry_after) but not what for: it pauses the chat it came
    from for exactly that long, since the group and private-chat limits are
    what a bot within its overall rate runs into; a second 429 from another
    chat while one chat is paused means the bot as a whole is over its
    limit, and pauses all of the bot's posts. The reply goes back to the
    sink, to retry no sooner than retry_after. Texts over 4096 UTF-16 units are split
    (each part is one message, the parts already sent are not sent again on
    a retry) or trimmed. The token is part of every URL: URLs are never
    logged and errors are redacted.
*/
#include "sink/dest.h"
#include "sink/dest_outbox.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_API     "https://api.telegram.org"
#define TELEGRAM_MAX    4096

typedef struct {
    dest_t *dest;
    char *entity;               //  NULL for the default bot
    char *token;
    phttp_t *http;              //  redacts this bot's token
    dest_limit_t *limit;
} tg_account_t;

typedef struct {
    char *base;                 //  API base, no trailing slash
    tg_account_t **accounts;    //  [0] is the default bot (NULL if none)
    size_t account_count;
    dest_outbox_t *outbox;
} tg_dest_t;

//  --- posting -----------------------------------------------------------------------------

int dest_telegram_outcome (const phttp_response_t *r, const char *token, char *why, size_t whylen,
                           int64_t *retry_after_ms)
{
    int status = dest_http_outcome (r, "Telegram", why, whylen);
    int64_t retry_after = -1;
    json_t *root = r->size ? json_loadb (r->body, r->size, 0, NULL) : NULL;
    const char *description = json_string_value (json_object_get (root, "description"));
    json_t *parameters = json_object_get (root, "parameters");
    if (status != DEST_OK && description && !r->error) {
        char clean[300];
        phttp_redact (description, token, clean, sizeof clean);
        dest_reason_utf8 (clean);       //  cut at 300 bytes, maybe inside a character
        json_t *moved = json_object_get (parameters, "migrate_to_chat_id");
        if (json_is_integer (moved))
            snprintf (why, whylen, "Telegram %ld: %s (the chat is now %lld)", r->status, clean,
                      (long long) json_integer_value (moved));
        else
            snprintf (why, whylen, "Telegram %ld: %s", r->status, clean);
    }
    if (r->status == 429) {
        json_t *after = json_object_get (parameters, "retry_after");
        json_int_t seconds = json_integer_value (after);
        if (!json_is_integer (after))
            retry_after = r->retry_after_ms;
        else
            retry_after = seconds < 0 ? -1 : seconds == 0 ? 0 : phttp_retry_after_ms (seconds);
        if (retry_after < 0)
            retry_after = 1000;
    }
    else if (r->status == 401)
        snprintf (why, whylen, "Telegram refused the bot token (401 Unauthorized)");
    json_decref (root);
    //  An answer that is not Telegram's (a proxy's error page) may quote the
    //  URL, which holds the token.
    char clean[600];
    phttp_redact (why, token, clean, sizeof clean);
    snprintf (why, whylen, "%s", clean);
    dest_reason_utf8 (why);
    *retry_after_ms = retry_after;
    return status;
}

static void s_on_response (void *arg, const phttp_response_t *r)
{
    dest_item_t *item = arg;
    tg_account_t *acc = item->account;
    tg_dest_t *t = acc->dest->state;
    int64_t now = zclock_time ();
    char why[500] = "";
    int64_t retry_after;
    int status = dest_telegram_outcome (r, acc->token, why, sizeof why, &retry_after);
    if (r->status == 429) {
        //  Another chat already paused: the bot as a whole is over its limit.
        bool bot = dest_limit_paused_chats (acc->limit, now)
                   > (dest_limit_chat_paused (acc->limit, item->chat, now) ? 1u : 0u);
        dest_limit_pause (acc->limit, bot ? NULL : item->chat, now + retry_after);
        plog_warn ("destination %s: Telegram asks to wait %lld ms (429); %s paused",
                   acc->dest->config->name, (long long) retry_after, bot ? "the bot is" : "the chat is");
    }
    dest_outbox_part_done (t->outbox, item, status, status == DEST_OK ? NULL : why,
                           retry_after > 0 ? retry_after : 0, now);
}

static int s_send (dest_t *dest, dest_item_t *item, int64_t now, char *why, size_t whylen)
{
    (void) now;
    tg_dest_t *t = dest->state;
    tg_account_t *acc = item->account;
    json_t *body = json_object ();
    char *end;
    long long chat = strtoll (item->chat, &end, 10);
    json_object_set_new (body, "chat_id",
                         *end || !*item->chat ? json_string (item->chat) : json_integer (chat));
    json_object_set_new (body, "text", json_string (item->parts[item->part_next]));
    long long reply = strtoll (item->msg_ref, &end, 10);
    if (*item->msg_ref && !*end)
        json_object_set_new (body, "reply_parameters",
                             json_pack ("{s:I, s:b}", "message_id", (json_int_t) reply,
                                        "allow_sending_without_reply", 1));
    char *text = json_dumps (body, JSON_COMPACT);
    json_decref (body);
    char url[1200];
    snprintf (url, sizeof url, "%s/bot%s/sendMessage", t->base, acc->token);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    phttp_request_t req = {.method = "POST",
                           .url = url,
                           .headers = headers,
                           .body = text,
                           .timeout_ms = dest->config->timeout_ms};
    bool started = text && phttp_request (acc->http, &req, s_on_response, item);
    memset (url, 0, sizeof url);
    free (text);
    if (!started) {
        snprintf (why, whylen, "curl could not start the request");
        return 1;
    }
    return 0;
}

static tg_account_t *s_account_for (tg_dest_t *t, const char *entity_id)
{
    tg_account_t *acc = t->accounts[0];
    for (size_t i = 1; i < t->account_count; i++)
        if (strcmp (t->accounts[i]->entity, entity_id) == 0)
            acc = t->accounts[i];
    return acc;
}

static int s_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    tg_dest_t *t = self->state;
    tg_account_t *acc = s_account_for (t, post->entity_id);
    if (!acc) {
        char why[300];
        snprintf (why, sizeof why,
                  "no Telegram bot posts for entity %s (no tokenEnv, not in accounts)",
                  post->entity_id);
        self->done (self->ctx, tag, DEST_FAIL, why, 0);
        return 0;
    }
    dest_vars_t vars = {post, post->text, NULL, ""};
    char *text = ptext_fill (self->config->text_template, dest_var, &vars);
    //  Telegram's private chats are users, with ids above zero.
    bool is_private = post->chat_ref[0] != '-';
    dest_outbox_add (t->outbox, post, tag, text, post->chat_ref, is_private, acc, acc->limit);
    free (text);
    dest_outbox_run (t->outbox, now);
    return 0;
}

//  --- the loop --------------------------------------------------------------------------------

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    tg_dest_t *t = dest_of (io)->state;
    int n = 0;
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i])
            n += phttp_pollitems (t->accounts[i]->http, items + n, max - n);
    return n;
}

static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) items, (void) count;
    tg_dest_t *t = dest_of (io)->state;
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i])
            phttp_process (t->accounts[i]->http);
    dest_outbox_run (t->outbox, now);
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    tg_dest_t *t = dest_of (io)->state;
    int64_t wake = dest_outbox_wakeup (t->outbox, now);
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i]) {
            int64_t w = phttp_wakeup (t->accounts[i]->http);
            if (w < wake)
                wake = w;
        }
    return wake;
}

static int s_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    (void) self, (void) msg_key, (void) entity_id;
    return -1;  //  the Bot API cannot list a bot's own messages
}

static void s_restore (dest_t *self, const char *entity_id, const char *chat_ref, int64_t at)
{
    tg_account_t *acc = s_account_for (self->state, entity_id);
    if (acc)
        dest_limit_record (acc->limit, chat_ref, chat_ref[0] != '-', at);
}

//  --- life ------------------------------------------------------------------------------------

static void s_account_free (tg_account_t *acc)
{
    if (!acc)
        return;
    phttp_destroy (&acc->http);
    dest_limit_destroy (&acc->limit);
    if (acc->token)
        memset (acc->token, 0, strlen (acc->token));
    free (acc->token);
    free (acc->entity);
    free (acc);
}

static void s_destroy (dest_t *self)
{
    tg_dest_t *t = self->state;
    //  Requests in flight are cancelled first: their callbacks point at items.
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i])
            phttp_destroy (&t->accounts[i]->http);
    dest_outbox_destroy (&t->outbox);
    for (size_t i = 0; i < t->account_count; i++)
        s_account_free (t->accounts[i]);
    free (t->accounts);
    free (t->base);
    free (t);
}

static tg_account_t *s_account_new (dest_t *self, const char *entity, const char *token)
{
    tg_account_t *acc = pcalloc (1, sizeof *acc);
    acc->dest = self;
    acc->entity = pstrdup (entity);
    acc->token = pstrdup (token);
    acc->http = phttp_new (token);
    if (!acc->http) {
        plog_error ("destination %s: libcurl could not be set up", self->config->name);
        s_account_free (acc);
        return NULL;
    }
    dest_rule_t rules[DEST_MAX_RULES];
    size_t n = dest_limit_held_rules (self->config, rules, DEST_MAX_RULES);
    acc->limit = dest_limit_new (rules, n);
    return acc;
}

int dest_telegram_init (dest_t *self)
{
    const pcfg_destination_t *c = self->config;
    if (!*c->token_env && c->accounts.count == 0) {
        plog_error ("destination %s: telegram needs \"tokenEnv\" (the bot's token) or \"accounts\"",
                    c->name);
        return -1;
    }
    tg_dest_t *t = pcalloc (1, sizeof *t);
    self->state = t;
    t->base = pstrdup (*c->url ? c->url : DEFAULT_API);
    size_t n = strlen (t->base);
    while (n > 0 && t->base[n - 1] == '/')
        t->base[--n] = 0;
    t->accounts = pcalloc (c->accounts.count + 1, sizeof (tg_account_t *));
    t->account_count = 1;
    t->outbox = dest_outbox_new (self, s_send, PTEXT_UTF16, TELEGRAM_MAX);
    int rc = 0;
    if (*c->token_env) {
        const char *token = dest_token (self, c->token_env, "the bot token");
        if (!token || !(t->accounts[0] = s_account_new (self, NULL, token)))
            rc = -1;
    }
    const pcfg_account_t *accounts = c->accounts.items;
    for (size_t i = 0; i < c->accounts.count && rc == 0; i++) {
        char what[300];
        snprintf (what, sizeof what, "the bot token of %s", accounts[i].entity);
        const char *token = dest_token (self, accounts[i].token_env, what);
        tg_account_t *acc = token ? s_account_new (self, accounts[i].entity, token) : NULL;
        if (!acc)
            rc = -1;
        else
            t->accounts[t->account_count++] = acc;
    }
    self->post = s_post;
    self->io.pollitems = s_pollitems;
    self->io.process = s_process;
    self->io.wakeup = s_wakeup;
    self->was_posted = s_was_posted;
    self->restore = s_restore;
    self->destroy = s_destroy;
    if (rc)
        s_destroy (self);
    return rc;
}
