/*  submit - hands the poller's jobs to the broker, and keeps them until it has.

    Jobs are checked one by one (spec.h) as they come: a job the protocol
    cannot carry is refused alone, counted and logged. The rest are cut into
    SUBMIT batches (at most poller.submitBatch jobs and one frame of
    network.maxFrameBytes), stored with the turn's commit when there is a
    store, and sent once stored. A batch is the poller's until its ACK: sent
    again every network.resendMs (the broker drops duplicates), and, with a
    store, sent again after a restart.

    The broker refuses a job as busy (REJECT code 1) when its queue is full.
    Busy jobs are kept: they become a new batch (stored in the same commit
    that forgets the old one) that waits at least ACK.retry_after_ms, and
    longer with full-jitter backoff (pbackoff, capped at 30 s) while the
    broker stays busy. Waiting jobs still occupy the submit window, so the
    poller reads no faster than the broker takes: that is the backpressure.
    Jobs refused as invalid (code 0) are counted and logged, never resent.
*/
#ifndef SUBMIT_H_INCLUDED
#define SUBMIT_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "poller/poller_store.h"
#include "proto/proto.h"

#define SUBMIT_BUSY_BASE_MS 250     //  first busy wait when the broker names none
#define SUBMIT_BUSY_CAP_MS  30000   //  busy backoff ceiling (a longer retry_after_ms wins)

typedef struct {
    uint64_t submitted;         //  jobs put in batches for the first time
    uint64_t acked;             //  jobs the broker answered for good (stored, known or refused)
    uint64_t accepted;
    uint64_t broker_duplicates;
    uint64_t rejected;          //  refused by the broker as invalid
    uint64_t busy;              //  refused by the broker as busy (each time)
    uint64_t resubmitted;       //  busy jobs sent again in a new batch
    uint64_t resent;            //  jobs sent again because no ACK came
    uint64_t invalid;           //  refused by the poller's own checks
} submit_counters_t;

typedef struct submit_s submit_t;

//  `store` (may be NULL: memory only) is borrowed; submit owns the stored
//  batches (poller_store_set_owner) until it is destroyed.
submit_t *submit_new (const pcfg_t *config, poller_store_t *store);
void submit_destroy (submit_t **self_p);

//  A stored batch from before a restart (poller_store_load hands it over
//  with the segment of its record): it goes first at the next send.
void submit_restore (submit_t *self, uint64_t seq, const void *frame, size_t size, size_t count,
                     uint64_t segment);

//  Takes a job over (its strings and payload, which it frees). Returns 0,
//  or -1 when the job breaks the protocol's bounds (counted, logged,
//  freed).
int submit_add (submit_t *self, proto_job_spec_t *spec);

//  Jobs added and not yet answered for good (waiting busy ones included).
size_t submit_outstanding (submit_t *self);
//  Jobs that may still be added before the submit window is full.
size_t submit_room (submit_t *self);
//  Jobs refused as busy, waiting to be submitted again.
size_t submit_waiting (submit_t *self);

//  Cuts the added jobs into batches and stores them (with the turn's commit).
void submit_flush (submit_t *self, int64_t now);

//  The broker's answer to a batch. Busy jobs become a new batch, stored in
//  the same commit that forgets the old one.
void submit_on_ack (submit_t *self, const proto_ack_t *ack, int64_t now);

//  Sends, without blocking, what is due: batches stored this turn, busy
//  batches whose wait is over, and batches unanswered for resendMs. Call
//  only after the turn's commit.
void submit_send (submit_t *self, zsock_t *broker, int64_t now);

//  When submit_send has something to do next; PRT_NEVER if nothing.
int64_t submit_wakeup (submit_t *self, int64_t now);

const submit_counters_t *submit_counters (submit_t *self);

#endif
