/*  hub - the pipeline's live stats feed.

    Workers send their STATS to the sink on the results socket; the broker
    answers the sink's own STATS with its counters and its pollers'. The hub
    keeps the latest counters of each component (role/id) and publishes
    them, with the sink's own, every sink.statsIntervalMs.

    Bounded: at most HUB_MAX_COMPONENTS components (beyond that the one
    heard from longest ago is dropped and counted), and a component silent
    for HUB_EXPIRY_MS is forgotten. The feed socket is an XPUB in manual
    mode that subscribes every subscriber to everything, whatever prefixes
    it asks for (every frame is STATS anyway): a subscriber with many
    subscriptions costs nothing, and plain SUB clients work unchanged.
*/
#ifndef HUB_H_INCLUDED
#define HUB_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

#define HUB_MAX_COMPONENTS 1024
#define HUB_EXPIRY_MS      10000
#define HUB_MAX_VALUES     256      //  counters kept per component

typedef struct hub_s hub_t;

typedef struct {
    size_t components;          //  known now
    uint64_t dropped;           //  forgotten because the hub was full
    uint64_t expired;           //  forgotten after HUB_EXPIRY_MS of silence
    uint64_t subscriptions;     //  subscription requests seen
    uint64_t published;         //  frames published
} hub_stats_t;

//  `publisher` is borrowed: the XPUB socket (made manual here).
hub_t *hub_new (zsock_t *publisher);
void hub_destroy (hub_t **self_p);

//  Keeps the components of a STATS message heard at `now`.
void hub_take (hub_t *self, const proto_stats_t *stats, int64_t now);

//  Reads subscription requests from the feed socket (a prt reader).
int hub_read (void *self, zsock_t *sock, int max);

//  Publishes `own` and every component heard within HUB_EXPIRY_MS.
void hub_publish (hub_t *self, const proto_component_t *own, int64_t now);

//  The sum of counter `name` over the live components of `role`.
double hub_sum (hub_t *self, const char *role, const char *name, int64_t now);

void hub_stats (hub_t *self, hub_stats_t *stats);

#endif
