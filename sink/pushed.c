/*  pushed - post verdicts the broker pushed at dispatch. See pushed.h. */
#include "sink/pushed.h"
#include "common/palloc.h"
#include "common/plist.h"
#include "common/ptable.h"

#include <assert.h>
#include <string.h>

struct pushed_verdict_s {
    uint64_t job_id;            //  the table's key
    int64_t at;                 //  when it arrived
    plist_node_t node;          //  in arrival order
    proto_verdict_item_t item;  //  its strings and payload follow the record
};

struct pushed_s {
    size_t max;
    int64_t keep_ms;
    ptable_t *by_job;           //  job_id -> pushed_verdict_t (owns them)
    plist_t order;              //  oldest first
};

static const void *s_key_of (const void *record)
{
    return &((const pushed_verdict_t *) record)->job_id;
}

static bool s_match (const void *record, const void *key)
{
    return ((const pushed_verdict_t *) record)->job_id == *(const uint64_t *) key;
}

pushed_t *pushed_new (size_t max, int64_t keep_ms)
{
    pushed_t *self = pcalloc (1, sizeof *self);
    self->max = max;
    self->keep_ms = keep_ms;
    self->by_job = ptable_new (ptable_hash_u64, s_key_of, s_match);
    plist_init (&self->order);
    return self;
}

void pushed_free (pushed_verdict_t **verdict_p)
{
    free (*verdict_p);
    *verdict_p = NULL;
}

void pushed_destroy (pushed_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pushed_t *self = *self_p;
    size_t cursor = 0;
    pushed_verdict_t *v;
    while ((v = ptable_next (self->by_job, &cursor)))
        free (v);
    ptable_destroy (&self->by_job);
    free (self);
    *self_p = NULL;
}

static pushed_verdict_t *s_remove (pushed_t *self, pushed_verdict_t *v)
{
    plist_remove (&self->order, &v->node);
    ptable_remove (self->by_job, &v->job_id);
    return v;
}

//  Copies `from` to `*at` and points `to` at the copy.
static void s_copy (char **at, const char **to, const char *from)
{
    size_t size = strlen (from) + 1;
    memcpy (*at, from, size);
    *to = *at;
    *at += size;
}

void pushed_put (pushed_t *self, const proto_verdict_item_t *item, int64_t now)
{
    assert (self);
    if (self->max == 0)
        return;
    pushed_verdict_t *old = ptable_lookup (self->by_job, &item->job_id);
    if (old)
        free (s_remove (self, old));
    else if (ptable_size (self->by_job) >= self->max) {
        pushed_verdict_t *oldest = PLIST_ITEM (plist_first (&self->order), pushed_verdict_t, node);
        free (s_remove (self, oldest));
    }
    size_t size = sizeof (pushed_verdict_t) + strlen (item->msg_key) + strlen (item->entity)
                  + strlen (item->chat) + strlen (item->chat_kind) + 4 + item->payload.size;
    pushed_verdict_t *v = pmalloc (size);
    v->job_id = item->job_id;
    v->at = now;
    v->item = *item;
    char *at = (char *) (v + 1);
    s_copy (&at, &v->item.msg_key, item->msg_key);
    s_copy (&at, &v->item.entity, item->entity);
    s_copy (&at, &v->item.chat, item->chat);
    s_copy (&at, &v->item.chat_kind, item->chat_kind);
    if (item->payload.size)
        memcpy (at, item->payload.data, item->payload.size);
    v->item.payload.data = (const uint8_t *) at;
    ptable_insert (self->by_job, v);
    plist_append (&self->order, &v->node);
}

pushed_verdict_t *pushed_take (pushed_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    pushed_verdict_t *v = ptable_lookup (self->by_job, &job_id);
    return v && v->item.token == token ? s_remove (self, v) : NULL;
}

const proto_verdict_item_t *pushed_item (const pushed_verdict_t *verdict)
{
    return &verdict->item;
}

void pushed_expire (pushed_t *self, int64_t now)
{
    assert (self);
    plist_node_t *node;
    while ((node = plist_first (&self->order))) {
        pushed_verdict_t *v = PLIST_ITEM (node, pushed_verdict_t, node);
        if (now - v->at < self->keep_ms)
            break;
        free (s_remove (self, v));
    }
}

size_t pushed_size (pushed_t *self)
{
    assert (self);
    return ptable_size (self->by_job);
}
