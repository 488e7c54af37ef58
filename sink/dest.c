/*  dest - creates destinations by kind. See dest.h. */
#include "sink/dest.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/ptext.h"

#include <stdlib.h>
#include <string.h>

dest_t *dest_new (const pcfg_destination_t *config, const pcfg_t *root,
                  const dest_events_t *events)
{
    dest_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->root = root;
    self->done = events->done;
    self->sending = events->sending;
    self->first = events->first;
    self->ctx = events->ctx;
    int rc;
    if (strcmp (config->type, "stdout") == 0)
        rc = dest_stdout_init (self);
    else if (strcmp (config->type, "jsonl") == 0)
        rc = dest_jsonl_init (self);
    else if (strcmp (config->type, "http") == 0)
        rc = dest_http_init (self);
    else if (strcmp (config->type, "telegram") == 0)
        rc = dest_telegram_init (self);
    else if (strcmp (config->type, "twitch") == 0)
        rc = dest_twitch_init (self);
    else {
        plog_error ("destination %s: type \"%s\" is not available in this build", config->name,
                    config->type);
        rc = -1;
    }
    if (rc) {
        free (self);
        return NULL;
    }
    return self;
}

void dest_destroy (dest_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dest_t *self = *self_p;
    if (self->destroy)
        self->destroy (self);
    free (self);
    *self_p = NULL;
}

const char *dest_token (dest_t *self, const char *var, const char *what)
{
    if (!var || !*var) {
        plog_error ("destination %s: %s needs \"tokenEnv\", the environment variable that holds it",
                    self->config->name, what);
        return NULL;
    }
    const char *token = getenv (var);
    if (!token || !*token) {
        plog_error ("destination %s: the environment variable %s (%s) is not set",
                    self->config->name, var, what);
        return NULL;
    }
    return token;
}

const pcfg_account_t *dest_account (dest_t *self, const char *entity_id)
{
    const pcfg_account_t *accounts = self->config->accounts.items;
    for (size_t i = 0; i < self->config->accounts.count; i++)
        if (strcmp (accounts[i].entity, entity_id) == 0)
            return &accounts[i];
    return NULL;
}

const char *dest_var (void *ctx, const char *name)
{
    dest_vars_t *v = ctx;
    const dest_post_t *p = v->post;
    if (strcmp (name, "text") == 0)
        return v->text;
    if (strcmp (name, "entity") == 0)
        return p->entity_id;
    if (strcmp (name, "entity_name") == 0)
        return p->entity_name;
    if (strcmp (name, "author") == 0)
        return p->author;
    if (strcmp (name, "chat") == 0)
        return p->chat;
    if (strcmp (name, "chat_ref") == 0)
        return p->chat_ref;
    if (strcmp (name, "msg_ref") == 0)
        return p->msg_ref;
    if (strcmp (name, "msg_key") == 0)
        return p->msg_key;
    if (strcmp (name, "source") == 0)
        return p->source;
    if (strcmp (name, "token") == 0)
        return v->token;
    if (strcmp (name, "created_ms") == 0) {
        snprintf (v->scratch, sizeof v->scratch, "%lld", (long long) p->created_ms);
        return v->scratch;
    }
    return NULL;
}

//  Bytes in the UTF-8 sequence `lead` starts (0: it cannot start one).
static size_t s_utf8_length (unsigned char lead)
{
    return lead < 0x80   ? 1
           : lead < 0xC2 ? 0        //  a continuation byte, or an overlong lead
           : lead < 0xE0 ? 2
           : lead < 0xF0 ? 3
           : lead < 0xF5 ? 4
                         : 0;       //  beyond U+10FFFF
}

void dest_reason_utf8 (char *why)
{
    unsigned char *s = (unsigned char *) why;
    size_t len = strlen (why);
    for (size_t i = 0; i < len;) {
        size_t n = s_utf8_length (s[i]);
        if (n > 1 && i + n > len) {
            s[i] = 0;       //  a character cut short by the end
            return;
        }
        if (n && ptext_utf8_valid ((const char *) s + i, n))
            i += n;
        else
            s[i++] = '?';
    }
}

int dest_http_outcome (const phttp_response_t *r, const char *platform, char *why, size_t whylen)
{
    if (r->status >= 200 && r->status <= 299)
        return DEST_OK;     //  accepted, even if the rest of the answer was lost
    if (r->error && !r->too_large) {   //  a body cut off at the cap still has its status
        snprintf (why, whylen, "%s: %s%s", platform, r->error,
                  r->maybe_sent ? " (after the request was sent: it may have been posted)" : "");
        return r->maybe_sent ? DEST_IN_DOUBT : DEST_RETRY;
    }
    char excerpt[201];
    snprintf (excerpt, sizeof excerpt, "%s", r->body ? r->body : "");
    for (char *c = excerpt; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    snprintf (why, whylen, "%s answered HTTP %ld: %s", platform, r->status, excerpt);
    dest_reason_utf8 (why);
    switch (r->status) {
    case 408:
    case 429:
    case 500:
    case 503: return DEST_RETRY;
    case 502:
    case 504: return DEST_IN_DOUBT;     //  a gateway gave up waiting: the post may be made
    default: return r->status >= 500 ? DEST_RETRY : DEST_FAIL;
    }
}
