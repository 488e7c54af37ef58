/*  llm_probe - health checks and model listings of the LLM servers.

    Every worker.healthCheckMs, each server is asked, by its type:

        llamacpp, vllm   GET /health (200 = up; 503 = still loading = down),
                         then GET /v1/models
        lmstudio         GET /api/v0/models (models with state "loaded";
                         /v1/models on servers without that API)
        ollama           GET /api/ps (the models in memory)
        openai           GET /v1/models

    No answer, a 5xx or a failed /health marks the server down (it gets no
    calls) until a check passes. The loaded models go to the pool, and from
    there into HEARTBEAT so the broker sends each entity's jobs to a worker
    whose server has its model hot. A listing the worker cannot read is
    logged and counted; the server stays up.
*/
#ifndef LLM_PROBE_H_INCLUDED
#define LLM_PROBE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "net/phttp.h"
#include "worker/llm_pool.h"

typedef enum {
    LLM_LIST_OPENAI = 0,    //  {"data": [{"id": ...}]}: every model listed
    LLM_LIST_LMSTUDIO,      //  {"data": [{"id": ..., "state": "loaded"}]}
    LLM_LIST_OLLAMA_PS      //  {"models": [{"name": ...}]}
} llm_list_kind_t;

typedef struct llm_probe_s llm_probe_t;

//  Caller owns the result; the pool and client are borrowed.
llm_probe_t *llm_probe_new (const pcfg_t *config, llm_pool_t *pool, phttp_t *http);
void llm_probe_destroy (llm_probe_t **self_p);

//  Starts the checks that are due.
void llm_probe_run (llm_probe_t *self, int64_t now);

//  When the next check is due; INT64_MAX = never (checks disabled).
int64_t llm_probe_wakeup (llm_probe_t *self);

//  Checks made, and checks that found a server down or a listing unreadable.
uint64_t llm_probe_count (llm_probe_t *self);
uint64_t llm_probe_failures (llm_probe_t *self);

//  Reads a model listing. Returns the number of loaded models written to
//  `names` (borrowed from `*doc_p`, which the caller frees with
//  json_decref), or -1 with `why` saying what is wrong and where. Names
//  longer than PROTO_MAX_KEY are left out.
int llm_probe_parse_models (llm_list_kind_t kind, const char *body, size_t len, void **doc_p,
                            const char **names, size_t max, char *why, size_t whylen);

#endif
