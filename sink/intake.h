/*  intake - results waiting for the broker's verdict.

    A worker's RESULT says "here is the text for (job, token)". The sink
    keeps the text, keyed by (job_id, token), until the broker answers its
    COMMIT: post (then the broker's own fields say what to post) or drop.

    Bounded by queueSettings.maxPendingResults: beyond it a result is
    dropped and counted as overflow; the broker gets no COMMIT for it and
    dispatches the job again once its lease runs out. Nothing here is
    stored: if the sink stops, the broker takes these jobs back after the
    lease and dispatches them again under new tokens.
*/
#ifndef INTAKE_H_INCLUDED
#define INTAKE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

typedef struct intake_s intake_t;

//  One result: what a worker contributes (the job itself is what the
//  broker's verdict names). A plain record: whoever takes it owns it.
typedef struct {
    uint64_t job_id;
    uint64_t token;
    char *text;
    uint64_t llm_ms;
    uint64_t tokens;
    int64_t received_at;
} intake_result_t;

typedef enum {
    INTAKE_ADDED = 0,
    INTAKE_REPEATED = 1,        //  already waiting
    INTAKE_OVERFLOW = 2         //  full: dropped
} intake_add_t;

intake_t *intake_new (size_t max);
void intake_destroy (intake_t **self_p);

//  Keeps a worker's result (copied). Returns an intake_add_t.
int intake_add (intake_t *self, const proto_result_item_t *item, int64_t now);
//  Keeps a result made elsewhere (after a restart); takes ownership, even
//  when it is not added.
int intake_put (intake_t *self, intake_result_t *result);
//  Takes a result out; the caller owns it (NULL if there is none).
intake_result_t *intake_take (intake_t *self, uint64_t job_id, uint64_t token);
bool intake_has (intake_t *self, uint64_t job_id, uint64_t token);
size_t intake_size (intake_t *self);

void intake_result_free (intake_result_t **result_p);

#endif
