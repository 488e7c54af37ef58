/*  source - creates sources by kind. See source.h. */
#include "poller/source.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

//  Due when one of its items is ready (in, out or error: a connect
//  finishing counts) or its wake-up time has come; then polled within the
//  host's budget.
static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    source_t *self = source_of (io);
    if (!self->host.emit || self->finished (self))
        return;
    bool due = self->io.wakeup && self->io.wakeup (io, now) <= now;
    for (int i = 0; i < count && !due; i++)
        if (items[i].revents)
            due = true;
    if (!due)
        return;
    int budget = self->host.budget (self->host.ctx);
    if (budget > 0)
        self->poll (self, now, budget, self->host.emit, self->host.ctx);
}

void source_attach (source_t *self, const source_host_t *host)
{
    assert (self);
    self->host = *host;
}

source_t *source_new (const pcfg_source_t *config, const pcfg_t *root, uint64_t seed)
{
    source_t *self = pcalloc (1, sizeof *self);
    self->io.process = s_process;
    self->config = config;
    self->root = root;
    int rc;
    if (strcmp (config->type, "demo") == 0)
        rc = source_demo_init (self, seed);
    else if (strcmp (config->type, "jsonl") == 0)
        rc = source_jsonl_init (self);
    else if (strcmp (config->type, "http") == 0)
        rc = source_http_init (self);
    else if (strcmp (config->type, "telegram") == 0)
        rc = source_telegram_init (self);
    else if (strcmp (config->type, "twitch") == 0)
        rc = source_twitch_init (self);
    else {
        plog_error ("source %s: type \"%s\" is not available in this build", config->name,
                    config->type);
        rc = -1;
    }
    if (rc) {
        free (self);
        return NULL;
    }
    return self;
}

void source_destroy (source_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    source_t *self = *self_p;
    if (self->destroy)
        self->destroy (self);
    free (self);
    *self_p = NULL;
}

const char *source_token (source_t *self, bool required)
{
    const char *var = self->config->token_env;
    if (!*var) {
        if (required)
            plog_error ("source %s: %s needs \"tokenEnv\", the environment variable that holds "
                        "its token", self->config->name, self->config->type);
        return required ? NULL : "";
    }
    const char *token = getenv (var);
    if (!token || !*token) {
        plog_error ("source %s: the environment variable %s (tokenEnv) is not set",
                    self->config->name, var);
        return NULL;
    }
    return token;
}

bool source_is_bot_author (source_t *self, const char *author, const char *author_id)
{
    const pcfg_strs_t *bots = &self->config->bot_authors;
    for (size_t i = 0; i < bots->count; i++)
        if ((author && strcasecmp (bots->items[i], author) == 0)
            || (author_id && strcasecmp (bots->items[i], author_id) == 0))
            return true;
    return false;
}

int64_t source_interval_ms (source_t *self)
{
    int64_t ms = self->config->polling_interval_ms;
    return ms > 0 ? ms : self->root->polling_interval_ms;
}

bool source_endless (source_t *self)
{
    (void) self;
    return false;
}

const char *source_json_scalar (const json_t *v, char *buf, size_t len)
{
    if (json_is_string (v))
        return json_string_value (v);
    if (json_is_integer (v)) {
        snprintf (buf, len, "%lld", (long long) json_integer_value (v));
        return buf;
    }
    return NULL;
}
