/*  hub - the pipeline's live stats feed. See hub.h. */
#include "sink/hub.h"
#include "common/palloc.h"
#include "proto/proto_sock.h"

#include <string.h>

typedef struct {
    char *key;                  //  "role/id"
    char *role, *id;
    proto_num_t *values;        //  keys owned
    size_t count;
    int64_t at;                 //  last heard
    void *handle;               //  in the hub's order
} s_comp_t;

struct hub_s {
    zsock_t *publisher;
    zhashx_t *components;       //  key -> s_comp_t
    zlistx_t *order;            //  s_comp_t, heard from longest ago first
    hub_stats_t stats;
};

static void s_values_free (s_comp_t *c)
{
    for (size_t i = 0; i < c->count; i++)
        free ((char *) c->values[i].key);
    free (c->values);
    c->values = NULL;
    c->count = 0;
}

static void s_comp_free (hub_t *self, s_comp_t *c)
{
    zlistx_detach (self->order, c->handle);
    zhashx_delete (self->components, c->key);
    s_values_free (c);
    free (c->key);
    free (c->role);
    free (c->id);
    free (c);
}

hub_t *hub_new (zsock_t *publisher)
{
    hub_t *self = pcalloc (1, sizeof *self);
    self->publisher = publisher;
    //  Every subscriber gets everything, whatever it asks for.
    zsock_set_xpub_manual (publisher, 1);
    self->components = zhashx_new ();
    self->order = zlistx_new ();
    return self;
}

void hub_destroy (hub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hub_t *self = *self_p;
    s_comp_t *c;
    while ((c = zlistx_first (self->order)))
        s_comp_free (self, c);
    zhashx_destroy (&self->components);
    zlistx_destroy (&self->order);
    free (self);
    *self_p = NULL;
}

static void s_expire (hub_t *self, int64_t now)
{
    s_comp_t *c;
    while ((c = zlistx_first (self->order)) && now - c->at > HUB_EXPIRY_MS) {
        s_comp_free (self, c);
        self->stats.expired++;
    }
}

void hub_take (hub_t *self, const proto_stats_t *stats, int64_t now)
{
    assert (self);
    for (size_t i = 0; i < stats->count; i++) {
        const proto_component_t *in = &stats->components[i];
        size_t len = strlen (in->role) + strlen (in->id) + 2;
        char *key = pmalloc (len);
        snprintf (key, len, "%s/%s", in->role, in->id);
        s_comp_t *c = zhashx_lookup (self->components, key);
        if (c) {
            free (key);
            s_values_free (c);
            zlistx_detach (self->order, c->handle);
        }
        else {
            if (zhashx_size (self->components) >= HUB_MAX_COMPONENTS) {
                s_comp_free (self, zlistx_first (self->order));
                self->stats.dropped++;
            }
            c = pcalloc (1, sizeof *c);
            c->key = key;
            c->role = pstrdup (in->role);
            c->id = pstrdup (in->id);
            zhashx_insert (self->components, c->key, c);
        }
        c->count = in->count < HUB_MAX_VALUES ? in->count : HUB_MAX_VALUES;
        c->values = pcalloc (c->count + 1, sizeof (proto_num_t));
        for (size_t j = 0; j < c->count; j++)
            c->values[j] = (proto_num_t) {pstrdup (in->values[j].key), in->values[j].value};
        c->at = now;
        c->handle = zlistx_add_end (self->order, c);
    }
    s_expire (self, now);
}

int hub_read (void *arg, zsock_t *sock, int max)
{
    hub_t *self = arg;
    int n = 0;
    for (; n < max; n++) {
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, zsock_resolve (sock), ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&msg);
            break;
        }
        //  A subscription (1 + prefix): subscribe that subscriber to
        //  everything. Cancels (0 + prefix) are ignored: it keeps getting
        //  everything until it disconnects.
        const uint8_t *data = zmq_msg_data (&msg);
        if (zmq_msg_size (&msg) >= 1 && data[0] == 1) {
            self->stats.subscriptions++;
            zmq_setsockopt (zsock_resolve (sock), ZMQ_SUBSCRIBE, "", 0);
        }
        zmq_msg_close (&msg);
    }
    return n;
}

void hub_publish (hub_t *self, const proto_component_t *own, int64_t now)
{
    assert (self);
    s_expire (self, now);
    size_t n = zhashx_size (self->components) + 1;
    proto_component_t *components = pcalloc (n, sizeof *components);
    size_t k = 0;
    components[k++] = *own;
    for (s_comp_t *c = zlistx_first (self->order); c; c = zlistx_next (self->order))
        components[k++] = (proto_component_t) {c->role, c->id, c->values, c->count};
    proto_stats_t stats = {(uint64_t) now, components, k};
    //  A subscriber too slow to take it misses this one; the next comes soon.
    if (proto_send (self->publisher, PROTO_STATS, &stats) == 0)
        self->stats.published++;
    free (components);
}

double hub_sum (hub_t *self, const char *role, const char *name, int64_t now)
{
    assert (self);
    double total = 0;
    for (s_comp_t *c = zlistx_first (self->order); c; c = zlistx_next (self->order)) {
        if (now - c->at > HUB_EXPIRY_MS || strcmp (c->role, role) != 0)
            continue;
        for (size_t i = 0; i < c->count; i++)
            if (strcmp (c->values[i].key, name) == 0)
                total += c->values[i].value;
    }
    return total;
}

void hub_stats (hub_t *self, hub_stats_t *stats)
{
    assert (self);
    *stats = self->stats;
    stats->components = zhashx_size (self->components);
}
