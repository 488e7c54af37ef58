/*  hub - pollers' counters, bounded. See hub.h. */
#include "broker/hub.h"
#include "common/palloc.h"

#include <string.h>

typedef struct {
    char *role;
    char *id;
    proto_num_t *values;        //  keys owned
    size_t count;
    int64_t at;
} s_snap_t;

struct bhub_s {
    s_snap_t snaps[HUB_MAX];
    size_t count;
};

bhub_t *bhub_new (void)
{
    return pcalloc (1, sizeof (bhub_t));
}

static void s_clear (s_snap_t *s)
{
    free (s->role);
    free (s->id);
    for (size_t i = 0; i < s->count; i++)
        free ((char *) s->values[i].key);
    free (s->values);
    memset (s, 0, sizeof *s);
}

void bhub_destroy (bhub_t **self_p)
{
    bhub_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        s_clear (&self->snaps[i]);
    free (self);
    *self_p = NULL;
}

static void s_expire (bhub_t *self, int64_t now)
{
    for (size_t i = 0; i < self->count;)
        if (now - self->snaps[i].at > HUB_EXPIRE_MS) {
            s_clear (&self->snaps[i]);
            self->snaps[i] = self->snaps[--self->count];
            memset (&self->snaps[self->count], 0, sizeof (s_snap_t));
        }
        else
            i++;
}

bool bhub_update (bhub_t *self, const proto_component_t *c, int64_t now)
{
    s_expire (self, now);
    s_snap_t *snap = NULL;
    for (size_t i = 0; i < self->count && !snap; i++)
        if (strcmp (self->snaps[i].id, c->id) == 0 && strcmp (self->snaps[i].role, c->role) == 0)
            snap = &self->snaps[i];
    if (!snap) {
        if (self->count == HUB_MAX)
            return false;
        snap = &self->snaps[self->count++];
    }
    else
        s_clear (snap);
    snap->role = pstrdup (c->role);
    snap->id = pstrdup (c->id);
    snap->values = pcalloc (c->count + 1, sizeof (proto_num_t));
    for (size_t i = 0; i < c->count; i++)
        snap->values[i] = (proto_num_t) {pstrdup (c->values[i].key), c->values[i].value};
    snap->count = c->count;
    snap->at = now;
    return true;
}

size_t bhub_components (bhub_t *self, int64_t now, proto_component_t *out, size_t max)
{
    s_expire (self, now);
    size_t n = 0;
    for (size_t i = 0; i < self->count && n < max; i++)
        out[n++] = (proto_component_t) {self->snaps[i].role, self->snaps[i].id,
                                        self->snaps[i].values, self->snaps[i].count};
    return n;
}
