/*  dests - the sink's destinations: made from sink.destinations[], chosen
    by the source a message came from (the first destination whose `source`
    is that source's name, or "*").
*/
#ifndef DESTS_H_INCLUDED
#define DESTS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "sink/dest.h"

typedef struct dests_s dests_t;

//  Makes every enabled destination, each reporting through `events`.
//  NULL (logged) when one cannot start.
dests_t *dests_new (const pcfg_t *config, const dest_events_t *events);
void dests_destroy (dests_t **self_p);

size_t dests_count (dests_t *self);
dest_t *dests_get (dests_t *self, size_t index);

//  The destination for replies to messages from `source`, or NULL.
dest_t *dests_route (dests_t *self, const char *source);

//  Finishes what every destination gathered (dest_t.flush).
void dests_flush (dests_t *self);

//  A post made before a restart to chat key `chat` ("source/chat id"):
//  the destination that takes that source holds its limits to it.
void dests_restore (dests_t *self, const char *entity, const char *chat, int64_t at);

#endif
