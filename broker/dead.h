/*  dead - the dead-letter queue: jobs that will not be retried without a person.

    Each entry keeps the job (message key, entity, chat, payload), why it
    died, its attempt history, and whether its reply MAY have reached the
    chat (an "in doubt" post after a crash): `dlq retry` leaves those alone
    unless told to force them, because retrying could post a reply twice.
*/
#ifndef BROKER_DEAD_H_INCLUDED
#define BROKER_DEAD_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/store.h"
#include "proto/proto.h"

typedef struct {
    uint64_t id;
    char *msg_key;
    char *entity;
    char *chat;
    char *chat_kind;
    uint8_t priority;
    bool maybe_posted;          //  the reply may be in the chat already
    int64_t created_ms;
    int64_t dead_at;
    uint32_t attempts;
    char *reason;
    char *history;
    proto_bin_t payload;        //  owned
    store_anchor_t anchor;      //  its stored record
} bdead_t;

typedef struct bdlq_s bdlq_t;

//  `store` may be NULL (memory only).
bdlq_t *bdlq_new (store_t *store);
void bdlq_destroy (bdlq_t **self_p);

//  Adds a dead letter (strings and payload are copied); returns it.
bdead_t *bdlq_add (bdlq_t *self, const bdead_t *entry);
//  Recovery: an entry loaded from the store (a newer one replaces an older
//  one with the same id); and one that is gone.
void bdlq_load (bdlq_t *self, const bdead_t *entry, uint64_t segment);
void bdlq_load_gone (bdlq_t *self, uint64_t id);
//  Migration: writes the entry holding `anchor` again.
void bdlq_rewrite (bdlq_t *self, store_anchor_t *anchor);

size_t bdlq_size (bdlq_t *self);
//  Oldest first; NULL at the end.
bdead_t *bdlq_first (bdlq_t *self);
bdead_t *bdlq_next (bdlq_t *self);
//  Deletes one entry (and its stored row).
void bdlq_remove (bdlq_t *self, bdead_t *entry);

json_t *bdlq_entry_json (const bdead_t *entry);

#endif
