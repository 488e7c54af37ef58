/*  intake - turns each new chat message into jobs.

    For every message a source emits: drop it if its key was seen (the seen
    set, a pseen of message-key fingerprints bounded by
    storage.dedupeMaxKeys and dedupeRetentionSeconds, and with a store also
    kept in it), pick who answers (select.h), attach the chat's recent lines
    (context.h) and hand one job per answering entity to submit.h.

    A message is taken whole or not at all: when its jobs do not fit in the
    submit window, the source keeps it and offers it again later (unless
    nothing is outstanding: a message that picks more entities than the
    window holds still goes, alone). A message the protocol cannot carry
    (a key, id or name over 512 bytes, a text over 1 MiB, invalid UTF-8)
    makes no jobs: each job it would have made is counted as invalid and
    the message is logged (a few lines a minute); it is never put in the
    context of later messages.
*/
#ifndef INTAKE_H_INCLUDED
#define INTAKE_H_INCLUDED

#include "common/pconfig.h"
#include "common/prt.h"
#include "poller/poller_store.h"
#include "poller/source.h"
#include "poller/submit.h"

typedef struct {
    uint64_t messages;      //  messages taken
    uint64_t duplicates;    //  messages whose key was seen before
    uint64_t selected;      //  messages with at least one job
    uint64_t unanswered;    //  messages nobody drew or that came from a bot
    uint64_t from_bots;     //  of the unanswered, written by a bot (ours included)
    uint64_t skipped;       //  (message, entity) picks dropped: priority 99
    uint64_t jobs;          //  jobs handed to submit
    uint64_t invalid;       //  jobs not made: their message breaks the protocol's bounds
} intake_counters_t;

typedef struct intake_s intake_t;

//  `rt` gives the clock; `submit` and `store` (may be NULL) are borrowed.
//  With a store, the seen set is filled by poller_store_load.
intake_t *intake_new (const pcfg_t *config, prt_t *rt, submit_t *submit, poller_store_t *store);
void intake_destroy (intake_t **self_p);

//  The sources' emit function (source_emit_fn); `ctx` is the intake.
bool intake_message (void *ctx, source_t *source, const chat_msg_t *msg);

//  The jobs the last message intake_message refused needs (the source
//  should not offer it again before the window has that much room).
size_t intake_refused_need (intake_t *self);

//  Forgets seen keys past the retention (the store frees their records).
void intake_prune (intake_t *self, int64_t now);

//  Message keys remembered.
size_t intake_seen (intake_t *self);

const intake_counters_t *intake_counters (intake_t *self);

#endif
