/*  hub - the pollers' latest counters, which the broker passes to the sink.

    Pollers report their STATS to the broker (they have no other peer); the
    sink asks the broker for its counters every stats interval and gets the
    pollers' with them. Bounded: at most HUB_MAX components, each forgotten
    after HUB_EXPIRE_MS without a report, so a flood of made-up ids costs
    nothing lasting.
*/
#ifndef BROKER_HUB_H_INCLUDED
#define BROKER_HUB_H_INCLUDED

#include "proto/proto.h"

#define HUB_MAX       256       //  pollers remembered at most
#define HUB_EXPIRE_MS 10000     //  a poller silent this long is dropped

typedef struct bhub_s bhub_t;

bhub_t *bhub_new (void);
void bhub_destroy (bhub_t **self_p);

//  Keeps the latest snapshot of `component`. Returns false when it was
//  refused (the table is full of live components).
bool bhub_update (bhub_t *self, const proto_component_t *component, int64_t now);

//  The live snapshots, written into `out` (at most `max`); their strings
//  and values stay valid until the next bhub_update.
size_t bhub_components (bhub_t *self, int64_t now, proto_component_t *out, size_t max);

#endif
