/*  llm_probe - health checks and model listings. See llm_probe.h. */
#include "worker/llm_probe.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "proto/proto.h"

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LISTED 256  //  models kept per server

typedef enum { STAGE_HEALTH, STAGE_MODELS } s_stage_t;

typedef struct {
    llm_probe_t *owner;
    size_t index;               //  the server in the pool
    phttp_call_t *call;         //  the check in flight, or NULL
    s_stage_t stage;
    int64_t due;                //  next check
    bool no_lmstudio_api;       //  /api/v0/models answered 404: use /v1/models
} s_check_t;

struct llm_probe_s {
    const pcfg_t *config;
    llm_pool_t *pool;
    phttp_t *http;
    s_check_t *checks;          //  one per server
    size_t count;
    uint64_t probes, failures;
    plog_limiter_t bad_log;
};

//  --- listings ------------------------------------------------------------------------

int llm_probe_parse_models (llm_list_kind_t kind, const char *body, size_t len, void **doc_p,
                            const char **names, size_t max, char *why, size_t whylen)
{
    json_error_t error;
    json_t *doc = json_loadb (body, len, 0, &error);
    *doc_p = doc;
    if (!doc) {
        snprintf (why, whylen, "not JSON: %s at line %d, column %d", error.text, error.line,
                  error.column);
        return -1;
    }
    const char *key = kind == LLM_LIST_OLLAMA_PS ? "models" : "data";
    json_t *list = json_object_get (doc, key);
    if (!json_is_array (list)) {
        snprintf (why, whylen, "%s: expected an array of models", key);
        return -1;
    }
    int n = 0;
    size_t i;
    json_t *item;
    json_array_foreach (list, i, item) {
        const char *name = json_string_value (
            json_object_get (item, kind == LLM_LIST_OLLAMA_PS ? "name" : "id"));
        if (!name && kind == LLM_LIST_OLLAMA_PS)
            name = json_string_value (json_object_get (item, "model"));
        if (!name) {
            snprintf (why, whylen, "%s[%zu]: no model name", key, i);
            return -1;
        }
        if (strlen (name) > PROTO_MAX_KEY)
            continue;   //  could not travel in HEARTBEAT; no entity names such a model
        if (kind == LLM_LIST_LMSTUDIO) {
            const char *state = json_string_value (json_object_get (item, "state"));
            if (state && strcmp (state, "loaded"))
                continue;   //  downloaded, not in memory
        }
        if ((size_t) n < max)
            names[n++] = name;
    }
    return n;
}

//  --- checks ------------------------------------------------------------------------------

static void s_start (s_check_t *check, int64_t now);

static const char *s_health_path (const pcfg_llm_server_t *c)
{
    return !strcmp (c->type, "llamacpp") || !strcmp (c->type, "vllm") ? "/health" : NULL;
}

static llm_list_kind_t s_list_kind (const s_check_t *check, const pcfg_llm_server_t *c)
{
    if (!strcmp (c->type, "lmstudio") && !check->no_lmstudio_api)
        return LLM_LIST_LMSTUDIO;
    if (!strcmp (c->type, "ollama"))
        return LLM_LIST_OLLAMA_PS;
    return LLM_LIST_OPENAI;
}

static const char *s_list_path (llm_list_kind_t kind)
{
    return kind == LLM_LIST_LMSTUDIO ? "/api/v0/models" : kind == LLM_LIST_OLLAMA_PS ? "/api/ps" : "/v1/models";
}

static void s_finish (s_check_t *check, bool up, const char *why)
{
    llm_probe_t *self = check->owner;
    if (!up)
        self->failures++;
    llm_pool_set_up (self->pool, check->index, up, why);
    check->due = zclock_time () + self->config->health_check_ms;
}

static void s_read_listing (s_check_t *check, llm_list_kind_t kind, const phttp_response_t *r)
{
    llm_probe_t *self = check->owner;
    llm_server_t *s = llm_pool_server (self->pool, check->index);
    const char *names[MAX_LISTED];
    void *doc = NULL;
    char why[200];
    int n = llm_probe_parse_models (kind, r->body, r->size, &doc, names, MAX_LISTED, why,
                                    sizeof why);
    if (n >= 0)
        llm_pool_set_loaded (self->pool, check->index, names, (size_t) n);
    else {
        self->failures++;
        if (plog_limiter_allow (&self->bad_log, 5))
            plog_warn ("LLM server %s: unreadable model list from %s: %s", s->name,
                       s_list_path (kind), why);
    }
    json_decref ((json_t *) doc);
}

static void s_on_done (void *arg, const phttp_response_t *r)
{
    s_check_t *check = arg;
    llm_probe_t *self = check->owner;
    check->call = NULL;
    const pcfg_llm_server_t *c = llm_pool_server (self->pool, check->index)->config;
    char why[300];
    if (r->error) {
        snprintf (why, sizeof why, "%s", r->error);
        s_finish (check, false, why);
        return;
    }
    if (check->stage == STAGE_HEALTH) {
        if (r->status >= 500) {
            //  llama.cpp answers 503 while it loads the model.
            snprintf (why, sizeof why, "%s answered HTTP %ld", s_health_path (c), r->status);
            s_finish (check, false, why);
            return;
        }
        check->stage = STAGE_MODELS;
        s_start (check, zclock_time ());
        return;
    }
    llm_list_kind_t kind = s_list_kind (check, c);
    if (r->status == 404 && kind == LLM_LIST_LMSTUDIO) {
        check->no_lmstudio_api = true;
        s_start (check, zclock_time ());
        return;
    }
    if (r->status >= 500) {
        snprintf (why, sizeof why, "%s answered HTTP %ld", s_list_path (kind), r->status);
        s_finish (check, false, why);
        return;
    }
    //  A 4xx (no listing here, or it wants a key we do not send) says nothing about health.
    if (r->status >= 200 && r->status < 300)
        s_read_listing (check, kind, r);
    s_finish (check, true, NULL);
}

static void s_start (s_check_t *check, int64_t now)
{
    llm_probe_t *self = check->owner;
    llm_server_t *s = llm_pool_server (self->pool, check->index);
    const char *path = check->stage == STAGE_HEALTH ? s_health_path (s->config) : NULL;
    if (!path) {
        check->stage = STAGE_MODELS;
        path = s_list_path (s_list_kind (check, s->config));
    }
    char url[2048];
    snprintf (url, sizeof url, "%s%s", s->base, path);
    phttp_request_t request = {.url = url,
                               .bearer = s->api_key,
                               .connect_timeout_ms = self->config->connect_timeout_ms,
                               .timeout_ms = self->config->request_timeout_ms};
    self->probes++;
    check->call = phttp_request (self->http, &request, s_on_done, check);
    if (!check->call) {
        s_finish (check, false, "could not start the request");
        return;
    }
    check->due = now + self->config->health_check_ms;
}

void llm_probe_run (llm_probe_t *self, int64_t now)
{
    if (self->config->health_check_ms <= 0)
        return;
    for (size_t i = 0; i < self->count; i++) {
        s_check_t *check = &self->checks[i];
        if (!check->call && now >= check->due) {
            check->stage = STAGE_HEALTH;
            s_start (check, now);
        }
    }
}

int64_t llm_probe_wakeup (llm_probe_t *self)
{
    int64_t next = INT64_MAX;
    if (self->config->health_check_ms <= 0)
        return next;
    for (size_t i = 0; i < self->count; i++)
        if (!self->checks[i].call && self->checks[i].due < next)
            next = self->checks[i].due;
    return next;
}

uint64_t llm_probe_count (llm_probe_t *self)
{
    return self->probes;
}

uint64_t llm_probe_failures (llm_probe_t *self)
{
    return self->failures;
}

llm_probe_t *llm_probe_new (const pcfg_t *config, llm_pool_t *pool, phttp_t *http)
{
    llm_probe_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->pool = pool;
    self->http = http;
    self->count = llm_pool_size (pool);
    self->checks = pcalloc (self->count, sizeof (s_check_t));
    for (size_t i = 0; i < self->count; i++) {
        self->checks[i].owner = self;
        self->checks[i].index = i;
        self->checks[i].due = 0;    //  at once: the first HEARTBEATs should know the models
    }
    return self;
}

void llm_probe_destroy (llm_probe_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    llm_probe_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        phttp_cancel (self->http, &self->checks[i].call);
    free (self->checks);
    free (self);
    *self_p = NULL;
}
