/*  spec - the jobs the poller makes, checked against the protocol's bounds.

    A SUBMIT frame whose encoding fails, or that the broker cannot decode,
    would lose every job in it. So each job is checked on its own before it
    joins a batch, with the bounds of proto/proto_defs.c's JOB_SPEC and
    MESSAGE records (keys, ids and names at most PROTO_MAX_KEY bytes,
    chat_kind at most SPEC_MAX_KIND, text and payload at most
    PROTO_MAX_STR, every string valid UTF-8, priority 0..99): a job that
    breaks one is refused alone, with a reason, and the rest go.
*/
#ifndef SPEC_H_INCLUDED
#define SPEC_H_INCLUDED

#include <stddef.h>

#include "proto/proto.h"

#define SPEC_MAX_KIND       16      //  bytes of chat_kind (JOB_SPEC)
#define SPEC_MAX_PRIORITY   99

//  NULL if `spec` can be submitted, else why not (written into `why`).
const char *spec_check (const proto_job_spec_t *spec, char *why, size_t whylen);

//  NULL if `message` can be carried in a job's payload, else why not. Its
//  context lines are not checked (they were checked as messages).
const char *spec_message_check (const proto_message_t *message, char *why, size_t whylen);

//  The bytes `spec` takes in a SUBMIT frame, at most (for splitting batches).
size_t spec_wire_size (const proto_job_spec_t *spec);

//  Frees the strings and payload of a spec the poller made.
void spec_free (proto_job_spec_t *spec);

#endif
