/*  llm_pool - the LLM servers one worker calls, and which one gets a call.

    One entry per enabled lmStudioServers[] item, with what the worker has
    learnt about it: calls in flight (never more than maxConcurrent), whether
    its health check passes, a pause after 429/503 (Retry-After, or a
    doubling back-off), a circuit breaker that keeps a failing server out
    for breakerOpenMs and then lets one trial call through, and the models
    it has loaded ("hot").

    A call goes to a server that can serve the entity's model, that is up,
    not paused, not open, and has a free slot. Preferred, in order: a server
    this job has not tried yet (failover), one with the model loaded (a cold
    model costs seconds to load), then the least loaded relative to weight.

    Plain data with the clock passed in: no sockets, no time of its own, so
    every rule is tested deterministically (tests/test_llm_pool.c).
*/
#ifndef LLM_POOL_H_INCLUDED
#define LLM_POOL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "worker/llm_chat.h"

typedef enum {
    LLM_CIRCUIT_CLOSED = 0,     //  calls flow
    LLM_CIRCUIT_OPEN,           //  too many failures: no calls until open_until
    LLM_CIRCUIT_HALF_OPEN       //  one trial call decides
} llm_circuit_t;

typedef struct {
    const pcfg_llm_server_t *config;
    char *name;
    char *base;                 //  URL without a trailing "/v1": paths are appended
    char *shown_url;            //  URL without any user:password, for logs
    char *api_key;              //  NULL = none; never logged
    const char *api_key_from;   //  where it came from, for the banner ("$OPENAI_API_KEY")
    const char *max_tokens_field;
    int64_t in_flight;
    bool up;                    //  the last health check passed (true until one fails)
    int64_t paused_until;       //  after 429/503; 0 = not paused
    int pauses;                 //  429/503 in a row, for the doubling
    int failures;               //  failed calls in a row
    llm_circuit_t circuit;
    int64_t open_until;
    bool trial_out;             //  half open: the trial call is in flight
    char last_failure[200];     //  for messages: why it was paused, opened or marked down
    char **loaded;              //  models loaded, from the last listing
    size_t loaded_count;
    bool listed;                //  `loaded` comes from a listing (else: configured models)
    uint64_t calls, failed;     //  counters
} llm_server_t;

typedef enum {
    LLM_PICK_OK = 0,    //  *index is the server
    LLM_PICK_BUSY,      //  servers are there but all slots are taken: wait
    LLM_PICK_DOWN,      //  every server that could serve it is down, paused or open
    LLM_PICK_NONE       //  no enabled server serves this model
} llm_pick_t;

typedef struct llm_pool_s llm_pool_t;

//  Reads the enabled servers and their API keys (from the environment or a
//  file). Returns NULL with a message naming the setting in `err` when a key
//  cannot be read or no server is enabled. Caller owns the result.
llm_pool_t *llm_pool_new (const pcfg_t *config, char *err, size_t errlen);
void llm_pool_destroy (llm_pool_t **self_p);

size_t llm_pool_size (llm_pool_t *self);
llm_server_t *llm_pool_server (llm_pool_t *self, size_t index);

//  Chooses a server for a call of `model` ("" = any). `tried` (NULL, or one
//  flag per server) marks servers this job already failed on.
llm_pick_t llm_pool_pick (llm_pool_t *self, const char *model, const bool *tried, int64_t now,
                          size_t *index);

//  True when some usable server has a free slot (a cheap test before picking).
bool llm_pool_has_free_slot (llm_pool_t *self, int64_t now);

//  The model name to send to a server: the entity's, or else the server's
//  first configured or loaded model; NULL leaves it to the server.
const char *llm_pool_model_for (llm_pool_t *self, size_t index, const char *model);

void llm_pool_call_started (llm_pool_t *self, size_t index, int64_t now);

//  A call ended. `retry_after_ms` (-1 = none) is the server's Retry-After;
//  `why` says what happened, for the log line when the server's state changes.
void llm_pool_call_ended (llm_pool_t *self, size_t index, llm_outcome_t outcome,
                          int64_t retry_after_ms, const char *why, int64_t now);

//  A call was abandoned (shutdown): only its slot comes back.
void llm_pool_call_cancelled (llm_pool_t *self, size_t index);

//  Health check result; `why` says what failed when !up.
void llm_pool_set_up (llm_pool_t *self, size_t index, bool up, const char *why);

//  The models a listing found loaded (replaces the previous list).
void llm_pool_set_loaded (llm_pool_t *self, size_t index, const char **models, size_t count);

//  True when `a` (as an entity names it) and `b` (as a server lists it) are
//  the same model: equal, or equal but for Ollama's ":latest" tag, or for a
//  llama.cpp file path and ".gguf" (case-insensitive).
bool llm_pool_model_match (const char *a, const char *b);

//  The models hot in the pool, for HEARTBEAT: what usable servers have
//  loaded, spelt as the entities spell them when they match. Returns how
//  many were written; the strings are borrowed.
size_t llm_pool_hot_models (llm_pool_t *self, const char **out, size_t max, int64_t now);

//  When a paused or open server next becomes usable; INT64_MAX = none waiting.
int64_t llm_pool_next_change (llm_pool_t *self, int64_t now);

//  A sentence on each server's state, for reasons ("a: paused 800 ms (HTTP
//  429); b: circuit open (5 failures, last: timeout)").
void llm_pool_describe (llm_pool_t *self, int64_t now, char *out, size_t outlen);

//  Servers that are up and not open.
size_t llm_pool_usable (llm_pool_t *self, int64_t now);

#endif
