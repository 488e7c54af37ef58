/*  outbox - the broker's messages held until the turn's changes are stored.

    Nothing the broker sends may promise what is not on disk yet: an ACK
    says jobs are stored, a JOB frame carries rate slots that must survive
    a restart. So handlers queue their messages here, and the send phase of
    the loop sends them, in order, after the commit: what workers wait for
    (WELCOME, JOB) and the verdicts pushed with the jobs first, since every
    reply waits on them; answers to pollers and sinks after. A message ZeroMQ will
    not take (the peer is gone, or stalled past the high-water mark) is
    dropped; its `failed` callback lets the owner undo what sending meant
    (a JOB frame's jobs go back to the queue at once).
*/
#ifndef BROKER_OUTBOX_H_INCLUDED
#define BROKER_OUTBOX_H_INCLUDED

#include <czmq.h>

#include "proto/proto.h"

typedef struct bout_s bout_t;

//  Called for a message that could not be sent, with its tag.
typedef void (bout_failed_fn) (void *arg, const uint8_t *route, size_t route_size, uint64_t tag);

bout_t *bout_new (void);
void bout_destroy (bout_t **self_p);

//  Queues `body` of `type` for the peer `route` on the ROUTER `sock`.
//  Returns 0, or -1 when the body breaks the protocol's bounds (logged).
int bout_add (bout_t *self, zsock_t *sock, const uint8_t *route, size_t route_size,
              proto_type_t type, const void *body, bout_failed_fn *failed, void *arg, uint64_t tag);

//  Marks the message queued last as one a reply waits on: it goes before
//  the others (the order among such messages is kept).
void bout_urgent (bout_t *self);

//  Sends everything queued: the urgent messages, then the others, each in
//  the order queued.
void bout_flush (bout_t *self);
size_t bout_size (bout_t *self);

#endif
