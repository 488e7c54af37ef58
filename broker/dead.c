/*  dead - the dead-letter queue. See dead.h. */
#include "broker/dead.h"
#include "common/palloc.h"

#include <czmq.h>
#include <string.h>

struct bdlq_s {
    zlistx_t *entries;          //  bdead_t, oldest first
    store_t *store;
    uint64_t next_id;
};

static void s_entry_free (void **item)
{
    bdead_t *d = *item;
    free (d->msg_key);
    free (d->entity);
    free (d->chat);
    free (d->chat_kind);
    free (d->reason);
    free (d->history);
    free ((void *) d->payload.data);
    free (d);
    *item = NULL;
}

bdlq_t *bdlq_new (store_t *store)
{
    bdlq_t *self = pcalloc (1, sizeof *self);
    self->entries = zlistx_new ();
    zlistx_set_destructor (self->entries, s_entry_free);
    self->store = store;
    return self;
}

void bdlq_destroy (bdlq_t **self_p)
{
    bdlq_t *self = *self_p;
    if (!self)
        return;
    zlistx_destroy (&self->entries);
    free (self);
    *self_p = NULL;
}

static bdead_t *s_copy (const bdead_t *e)
{
    bdead_t *d = pcalloc (1, sizeof *d);
    *d = *e;
    memset (&d->anchor, 0, sizeof d->anchor);
    d->msg_key = pstrdup (e->msg_key ? e->msg_key : "");
    d->entity = pstrdup (e->entity ? e->entity : "");
    d->chat = pstrdup (e->chat ? e->chat : "");
    d->chat_kind = pstrdup (e->chat_kind ? e->chat_kind : "");
    d->reason = pstrdup (e->reason ? e->reason : "");
    d->history = pstrdup (e->history ? e->history : "");
    d->payload = (proto_bin_t) {pmemdup (e->payload.data, e->payload.size), e->payload.size};
    return d;
}

static void s_put (bdlq_t *self, bdead_t *d)
{
    if (self->store) {
        store_dead_t row = {d->id,       d->msg_key, d->entity,  d->chat,          d->chat_kind,
                            d->priority, d->maybe_posted, d->created_ms, d->dead_at, d->attempts,
                            d->reason,   d->history, d->payload.data, d->payload.size};
        store_dead_put (self->store, &d->anchor, &row);
    }
}

bdead_t *bdlq_add (bdlq_t *self, const bdead_t *entry)
{
    bdead_t *d = s_copy (entry);
    d->id = ++self->next_id;
    zlistx_add_end (self->entries, d);
    s_put (self, d);
    return d;
}

static bdead_t *s_find (bdlq_t *self, uint64_t id)
{
    for (bdead_t *d = zlistx_first (self->entries); d; d = zlistx_next (self->entries))
        if (d->id == id)
            return d;
    return NULL;
}

static void s_drop (bdlq_t *self, bdead_t *d)
{
    if (self->store)
        store_anchor_drop (self->store, &d->anchor);
    void *handle = zlistx_find (self->entries, d);
    if (handle)
        zlistx_delete (self->entries, handle);
}

void bdlq_load (bdlq_t *self, const bdead_t *entry, uint64_t segment)
{
    bdead_t *old = s_find (self, entry->id);
    if (old)
        s_drop (self, old);
    bdead_t *d = s_copy (entry);
    zlistx_add_end (self->entries, d);
    if (self->store)
        store_anchor_loaded (self->store, &d->anchor, STORE_ANCHOR_DEAD, segment);
    if (d->id > self->next_id)
        self->next_id = d->id;
}

void bdlq_load_gone (bdlq_t *self, uint64_t id)
{
    bdead_t *d = s_find (self, id);
    if (d)
        s_drop (self, d);
}

void bdlq_rewrite (bdlq_t *self, store_anchor_t *anchor)
{
    s_put (self, PJOURNAL_CONTAINER (anchor, bdead_t, anchor));
}

size_t bdlq_size (bdlq_t *self)
{
    return zlistx_size (self->entries);
}

bdead_t *bdlq_first (bdlq_t *self)
{
    return zlistx_first (self->entries);
}

bdead_t *bdlq_next (bdlq_t *self)
{
    return zlistx_next (self->entries);
}

void bdlq_remove (bdlq_t *self, bdead_t *entry)
{
    if (self->store)
        store_dead_gone (self->store, &entry->anchor, entry->id);
    void *handle = zlistx_find (self->entries, entry);
    if (handle)
        zlistx_delete (self->entries, handle);
}

json_t *bdlq_entry_json (const bdead_t *d)
{
    return json_pack ("{s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:i, s:s, s:s, s:b}", "id",
                      (json_int_t) d->id, "msg_key", d->msg_key, "entity", d->entity, "chat", d->chat,
                      "priority", d->priority, "created_ms", (json_int_t) d->created_ms, "dead_at",
                      (json_int_t) d->dead_at, "attempts", d->attempts, "reason", d->reason,
                      "history", d->history, "maybe_posted", d->maybe_posted);
}
