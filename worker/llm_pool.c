/*  llm_pool - the LLM servers one worker calls. See llm_pool.h. */
#include "worker/llm_pool.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct llm_pool_s {
    const pcfg_t *config;
    llm_server_t *servers;
    size_t count;
    size_t cursor;              //  where the next pick starts, so ties rotate
};

//  --- set-up -------------------------------------------------------------------------

static char *s_trimmed (const char *s, size_t n)
{
    while (n && isspace ((unsigned char) *s))
        s++, n--;
    while (n && isspace ((unsigned char) s[n - 1]))
        n--;
    return pstrndup (s, n);
}

//  The key of server `i`, from the environment or a file. Never logged.
static int s_read_key (llm_server_t *s, size_t i, char *err, size_t errlen)
{
    const pcfg_llm_server_t *c = s->config;
    if (*c->api_key_env) {
        const char *value = getenv (c->api_key_env);
        if (!value || !*value) {
            snprintf (err, errlen,
                      "lmStudioServers[%zu].apiKeyEnv: the environment variable %s is not set", i,
                      c->api_key_env);
            return -1;
        }
        s->api_key = s_trimmed (value, strlen (value));
        s->api_key_from = c->api_key_env;
    }
    else if (*c->api_key_file) {
        FILE *f = fopen (c->api_key_file, "r");
        char line[4096];
        if (!f || !fgets (line, sizeof line, f)) {
            snprintf (err, errlen, "lmStudioServers[%zu].apiKeyFile: cannot read %s: %s", i,
                      c->api_key_file, f ? "the file is empty" : strerror (errno));
            if (f)
                fclose (f);
            return -1;
        }
        fclose (f);
        s->api_key = s_trimmed (line, strlen (line));
        s->api_key_from = c->api_key_file;
    }
    return 0;
}

//  "http://user:secret@host:1234/v1/" -> base "http://user:secret@host:1234",
//  shown "http://host:1234".
static void s_urls (llm_server_t *s, const char *url)
{
    size_t n = strlen (url);
    while (n && url[n - 1] == '/')
        n--;
    if (n >= 3 && !strncmp (url + n - 3, "/v1", 3))
        n -= 3;
    s->base = pstrndup (url, n);
    const char *scheme = strstr (s->base, "://");
    const char *host = scheme ? scheme + 3 : s->base;
    const char *slash = strchr (host, '/');
    const char *at = strchr (host, '@');
    if (at && (!slash || at < slash)) {
        size_t prefix = (size_t) (host - s->base);
        size_t len = prefix + strlen (at + 1) + 1;
        s->shown_url = pmalloc (len);
        snprintf (s->shown_url, len, "%.*s%s", (int) prefix, s->base, at + 1);
    }
    else
        s->shown_url = pstrdup (s->base);
}

llm_pool_t *llm_pool_new (const pcfg_t *config, char *err, size_t errlen)
{
    llm_pool_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    const pcfg_llm_server_t *all = config->llm_servers.items;
    self->servers = pcalloc (config->llm_servers.count + 1, sizeof (llm_server_t));
    for (size_t i = 0; i < config->llm_servers.count; i++) {
        if (!all[i].enabled)
            continue;
        llm_server_t *s = &self->servers[self->count++];
        s->config = &all[i];
        s->name = pstrdup (all[i].name);
        s->up = true;
        s_urls (s, all[i].url);
        //  OpenAI itself wants max_completion_tokens (its reasoning models refuse
        //  max_tokens); every local server knows max_tokens.
        if (strcmp (all[i].max_tokens_field, "auto"))
            s->max_tokens_field = all[i].max_tokens_field;
        else
            s->max_tokens_field = strstr (s->base, "://api.openai.com") ? "max_completion_tokens" : "max_tokens";
        if (s_read_key (s, i, err, errlen)) {
            llm_pool_destroy (&self);
            return NULL;
        }
    }
    if (self->count == 0) {
        snprintf (err, errlen, "lmStudioServers: no enabled server (worker.backend \"openai\" needs one)");
        llm_pool_destroy (&self);
        return NULL;
    }
    return self;
}

static void s_free_loaded (llm_server_t *s)
{
    for (size_t i = 0; i < s->loaded_count; i++)
        free (s->loaded[i]);
    free (s->loaded);
    s->loaded = NULL;
    s->loaded_count = 0;
}

void llm_pool_destroy (llm_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    llm_pool_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        llm_server_t *s = &self->servers[i];
        free (s->name);
        free (s->base);
        free (s->shown_url);
        if (s->api_key) {
            //  Do not leave the key lying in freed memory.
            memset (s->api_key, 0, strlen (s->api_key));
            free (s->api_key);
        }
        s_free_loaded (s);
    }
    free (self->servers);
    free (self);
    *self_p = NULL;
}

size_t llm_pool_size (llm_pool_t *self)
{
    assert (self);
    return self->count;
}

llm_server_t *llm_pool_server (llm_pool_t *self, size_t index)
{
    assert (self);
    return index < self->count ? &self->servers[index] : NULL;
}

//  --- models ------------------------------------------------------------------------------

bool llm_pool_model_match (const char *a, const char *b)
{
    if (!strcmp (a, b))
        return true;
    size_t la = strlen (a), lb = strlen (b);
    //  Ollama: "llama3.2" is "llama3.2:latest".
    if (lb == la + 7 && !strncmp (a, b, la) && !strcmp (b + la, ":latest"))
        return true;
    if (la == lb + 7 && !strncmp (a, b, lb) && !strcmp (a + lb, ":latest"))
        return true;
    //  llama.cpp lists the model file: "/models/Qwen2.5-7B-Q4_K_M.gguf".
    const char *base = strrchr (b, '/') ? strrchr (b, '/') + 1 : b;
    size_t lbase = strlen (base);
    if (lbase > 5 && !strcasecmp (base + lbase - 5, ".gguf"))
        lbase -= 5;
    return lbase == la && !strncasecmp (base, a, la);
}

static bool s_lists (char **names, size_t count, const char *model)
{
    for (size_t i = 0; i < count; i++)
        if (llm_pool_model_match (model, names[i]))
            return true;
    return false;
}

//  May this server be asked for `model`? Servers that list models in the
//  configuration serve only those.
static bool s_serves (const llm_server_t *s, const char *model)
{
    const pcfg_strs_t *m = &s->config->models;
    return !*model || m->count == 0 || s_lists (m->items, m->count, model);
}

//  Has this server `model` loaded? Without a listing, its configured models count.
static bool s_hot (const llm_server_t *s, const char *model)
{
    if (!*model)
        return true;
    if (s->listed)
        return s_lists (s->loaded, s->loaded_count, model);
    return s_lists (s->config->models.items, s->config->models.count, model);
}

const char *llm_pool_model_for (llm_pool_t *self, size_t index, const char *model)
{
    llm_server_t *s = llm_pool_server (self, index);
    if (model && *model)
        return model;
    if (s->config->models.count)
        return s->config->models.items[0];
    if (s->loaded_count)
        return s->loaded[0];
    return NULL;
}

void llm_pool_set_loaded (llm_pool_t *self, size_t index, const char **models, size_t count)
{
    llm_server_t *s = llm_pool_server (self, index);
    s_free_loaded (s);
    s->loaded = pcalloc (count + 1, sizeof (char *));
    for (size_t i = 0; i < count; i++)
        s->loaded[i] = pstrdup (models[i]);
    s->loaded_count = count;
    s->listed = true;
}

//  --- state -------------------------------------------------------------------------------

//  An open circuit whose time is up lets a trial call through.
static void s_tick (llm_server_t *s, int64_t now)
{
    if (s->circuit == LLM_CIRCUIT_OPEN && now >= s->open_until) {
        s->circuit = LLM_CIRCUIT_HALF_OPEN;
        s->trial_out = false;
    }
}

static bool s_usable (llm_server_t *s, int64_t now)
{
    s_tick (s, now);
    return s->up && s->paused_until <= now && s->circuit != LLM_CIRCUIT_OPEN
           && !(s->circuit == LLM_CIRCUIT_HALF_OPEN && s->trial_out);
}

static bool s_has_slot (const llm_server_t *s)
{
    return s->in_flight < s->config->max_concurrent;
}

size_t llm_pool_usable (llm_pool_t *self, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < self->count; i++) {
        llm_server_t *s = &self->servers[i];
        s_tick (s, now);
        if (s->up && s->circuit != LLM_CIRCUIT_OPEN)
            n++;
    }
    return n;
}

bool llm_pool_has_free_slot (llm_pool_t *self, int64_t now)
{
    for (size_t i = 0; i < self->count; i++)
        if (s_usable (&self->servers[i], now) && s_has_slot (&self->servers[i]))
            return true;
    return false;
}

llm_pick_t llm_pool_pick (llm_pool_t *self, const char *model, const bool *tried, int64_t now,
                          size_t *index)
{
    assert (self);
    bool any_serves = false, any_usable = false;
    int best_rank = 0;
    double best_load = 0;
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < self->count; k++) {
        size_t i = (self->cursor + k) % self->count;
        llm_server_t *s = &self->servers[i];
        if (!s_serves (s, model))
            continue;
        any_serves = true;
        if (!s_usable (s, now))
            continue;
        any_usable = true;
        if (!s_has_slot (s))
            continue;
        //  Lower is better: untried before tried, hot before cold, then load per weight.
        int rank = (tried && tried[i] ? 2 : 0) + (s_hot (s, model) ? 0 : 1);
        double load = (double) (s->in_flight + 1) / (double) s->config->weight;
        if (best == SIZE_MAX || rank < best_rank || (rank == best_rank && load < best_load)) {
            best = i;
            best_rank = rank;
            best_load = load;
        }
    }
    if (best != SIZE_MAX) {
        *index = best;
        self->cursor = (best + 1) % self->count;
        return LLM_PICK_OK;
    }
    return any_usable ? LLM_PICK_BUSY : any_serves ? LLM_PICK_DOWN : LLM_PICK_NONE;
}

void llm_pool_call_started (llm_pool_t *self, size_t index, int64_t now)
{
    llm_server_t *s = llm_pool_server (self, index);
    s_tick (s, now);
    s->in_flight++;
    s->calls++;
    if (s->circuit == LLM_CIRCUIT_HALF_OPEN)
        s->trial_out = true;
}

void llm_pool_call_cancelled (llm_pool_t *self, size_t index)
{
    llm_server_t *s = llm_pool_server (self, index);
    s->in_flight--;
    s->trial_out = false;
}

static void s_succeeded (llm_server_t *s)
{
    if (s->circuit != LLM_CIRCUIT_CLOSED)
        plog_info ("LLM server %s: circuit closed, a call succeeded", s->name);
    s->circuit = LLM_CIRCUIT_CLOSED;
    s->failures = 0;
    s->pauses = 0;
}

static void s_failed (llm_pool_t *self, llm_server_t *s, const char *why, int64_t now)
{
    s->failed++;
    s->failures++;
    snprintf (s->last_failure, sizeof s->last_failure, "%s", why ? why : "failed");
    bool trial = s->circuit == LLM_CIRCUIT_HALF_OPEN;
    if (trial || (s->circuit == LLM_CIRCUIT_CLOSED && s->failures >= self->config->breaker_failures)) {
        s->circuit = LLM_CIRCUIT_OPEN;
        s->open_until = now + self->config->breaker_open_ms;
        plog_warn ("LLM server %s: circuit open for %" PRId64 " ms after %d failed call%s (last: %s)",
                   s->name, self->config->breaker_open_ms, s->failures, s->failures == 1 ? "" : "s",
                   s->last_failure);
    }
}

static void s_pause (llm_pool_t *self, llm_server_t *s, int64_t retry_after, const char *why,
                     int64_t now)
{
    int64_t cap = self->config->backoff_max_ms;
    int64_t pause = self->config->backoff_ms;
    for (int i = 0; i < s->pauses && pause < cap; i++)
        pause *= 2;
    if (retry_after >= 0)
        pause = retry_after;
    if (pause > cap)
        pause = cap;
    bool was_paused = s->paused_until > now;
    s->pauses++;
    if (now + pause > s->paused_until)
        s->paused_until = now + pause;
    snprintf (s->last_failure, sizeof s->last_failure, "%s", why ? why : "busy");
    if (!was_paused)
        plog_info ("LLM server %s: %s; no calls for %" PRId64 " ms", s->name, s->last_failure, pause);
}

void llm_pool_call_ended (llm_pool_t *self, size_t index, llm_outcome_t outcome,
                          int64_t retry_after_ms, const char *why, int64_t now)
{
    llm_server_t *s = llm_pool_server (self, index);
    s->in_flight--;
    bool trial = s->trial_out;
    s->trial_out = false;
    switch (outcome) {
    case LLM_OK:
    case LLM_CONTEXT:
    case LLM_REJECTED:
    case LLM_NOT_FOUND:
        //  The server answered sensibly; the request was the problem.
        s_succeeded (s);
        break;
    case LLM_RATE_LIMITED:
    case LLM_BUSY:
        if (trial)
            s->circuit = LLM_CIRCUIT_CLOSED, s->failures = 0;
        s_pause (self, s, retry_after_ms, why, now);
        break;
    default:
        s_failed (self, s, why, now);
        break;
    }
}

void llm_pool_set_up (llm_pool_t *self, size_t index, bool up, const char *why)
{
    llm_server_t *s = llm_pool_server (self, index);
    if (up && !s->up)
        plog_info ("LLM server %s is up", s->name);
    else if (!up && s->up)
        plog_warn ("LLM server %s is down: %s", s->name, why ? why : "health check failed");
    if (!up)
        snprintf (s->last_failure, sizeof s->last_failure, "%s", why ? why : "health check failed");
    s->up = up;
}

size_t llm_pool_hot_models (llm_pool_t *self, const char **out, size_t max, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < self->count && n < max; i++) {
        llm_server_t *s = &self->servers[i];
        s_tick (s, now);
        if (!s->up || s->circuit == LLM_CIRCUIT_OPEN)
            continue;
        //  Entity models first, spelt as the broker will look for them.
        for (size_t e = 0; e < self->config->entities.count && n < max; e++) {
            const char *model = pcfg_entity (self->config, e)->model;
            if (!*model || !s_hot (s, model))
                continue;
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = !strcmp (out[k], model);
            if (!seen)
                out[n++] = model;
        }
        char **names = s->listed ? s->loaded : s->config->models.items;
        size_t count = s->listed ? s->loaded_count : s->config->models.count;
        for (size_t m = 0; m < count && n < max; m++) {
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = !strcmp (out[k], names[m]);
            if (!seen)
                out[n++] = names[m];
        }
    }
    return n;
}

int64_t llm_pool_next_change (llm_pool_t *self, int64_t now)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < self->count; i++) {
        llm_server_t *s = &self->servers[i];
        if (s->paused_until > now && s->paused_until < next)
            next = s->paused_until;
        if (s->circuit == LLM_CIRCUIT_OPEN && s->open_until < next)
            next = s->open_until;
    }
    return next;
}

void llm_pool_describe (llm_pool_t *self, int64_t now, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < self->count && o + 1 < outlen; i++) {
        llm_server_t *s = &self->servers[i];
        s_tick (s, now);
        char state[300];
        if (!s->up)
            snprintf (state, sizeof state, "down (%s)", s->last_failure);
        else if (s->circuit == LLM_CIRCUIT_OPEN)
            snprintf (state, sizeof state, "circuit open for %" PRId64 " ms more (last: %s)",
                      s->open_until - now, s->last_failure);
        else if (s->paused_until > now)
            snprintf (state, sizeof state, "paused for %" PRId64 " ms more (%s)",
                      s->paused_until - now, s->last_failure);
        else if (s->circuit == LLM_CIRCUIT_HALF_OPEN && s->trial_out)
            snprintf (state, sizeof state, "trial call in flight");
        else
            snprintf (state, sizeof state, "%" PRId64 "/%" PRId64 " calls in flight", s->in_flight,
                      s->config->max_concurrent);
        int w = snprintf (out + o, outlen - o, "%s%s: %s", i ? "; " : "", s->name, state);
        if (w < 0)
            break;
        o += (size_t) w;
    }
}
