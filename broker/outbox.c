/*  outbox - messages held for the commit. See outbox.h. */
#include "broker/outbox.h"
#include "common/palloc.h"
#include "proto/proto_sock.h"

typedef struct {
    zsock_t *sock;
    uint8_t route[256];
    size_t route_size;
    zmq_msg_t frame;
    bout_failed_fn *failed;
    void *arg;
    uint64_t tag;
    bool urgent;
} s_out_t;

struct bout_s {
    s_out_t *items;
    size_t count, capacity;
};

bout_t *bout_new (void)
{
    return pcalloc (1, sizeof (bout_t));
}

void bout_destroy (bout_t **self_p)
{
    bout_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        zmq_msg_close (&self->items[i].frame);
    free (self->items);
    free (self);
    *self_p = NULL;
}

int bout_add (bout_t *self, zsock_t *sock, const uint8_t *route, size_t route_size,
              proto_type_t type, const void *body, bout_failed_fn *failed, void *arg, uint64_t tag)
{
    self->items = pgrow (self->items, &self->capacity, self->count + 1, sizeof (s_out_t));
    s_out_t *out = &self->items[self->count];
    if (proto_encode (type, body, &out->frame))
        return -1;
    out->sock = sock;
    if (route_size > sizeof out->route)
        route_size = sizeof out->route;
    memcpy (out->route, route, route_size);
    out->route_size = route_size;
    out->failed = failed;
    out->arg = arg;
    out->tag = tag;
    out->urgent = false;
    self->count++;
    return 0;
}

void bout_urgent (bout_t *self)
{
    if (self->count)
        self->items[self->count - 1].urgent = true;
}

void bout_flush (bout_t *self)
{
    //  A failure callback may queue nothing here (it runs after the commit);
    //  the count is read once so the walk stays well defined regardless.
    size_t count = self->count;
    self->count = 0;
    for (int pass = 0; pass < 2; pass++) {
        bool urgent = pass == 0;
        for (size_t i = 0; i < count; i++) {
            s_out_t *out = &self->items[i];
            if (out->urgent != urgent)
                continue;
            if (proto_send_frame (out->sock, out->route, out->route_size, &out->frame) && out->failed)
                out->failed (out->arg, out->route, out->route_size, out->tag);
        }
    }
}

size_t bout_size (bout_t *self)
{
    return self->count;
}
