/*  dests - the sink's destinations. See dests.h. */
#include "sink/dests.h"
#include "common/palloc.h"

#include <string.h>

struct dests_s {
    dest_t **items;
    size_t count;
};

dests_t *dests_new (const pcfg_t *config, const dest_events_t *events)
{
    dests_t *self = pcalloc (1, sizeof *self);
    const pcfg_destination_t *configs = config->destinations.items;
    self->items = pcalloc (config->destinations.count + 1, sizeof (dest_t *));
    for (size_t i = 0; i < config->destinations.count; i++) {
        if (!configs[i].enabled)
            continue;
        dest_t *dest = dest_new (&configs[i], config, events);
        if (!dest) {
            dests_destroy (&self);
            return NULL;
        }
        self->items[self->count++] = dest;
    }
    return self;
}

void dests_destroy (dests_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dests_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        dest_destroy (&self->items[i]);
    free (self->items);
    free (self);
    *self_p = NULL;
}

size_t dests_count (dests_t *self)
{
    return self->count;
}

dest_t *dests_get (dests_t *self, size_t index)
{
    return index < self->count ? self->items[index] : NULL;
}

dest_t *dests_route (dests_t *self, const char *source)
{
    for (size_t i = 0; i < self->count; i++) {
        const char *want = self->items[i]->config->source;
        if (strcmp (want, "*") == 0 || strcmp (want, source ? source : "") == 0)
            return self->items[i];
    }
    return NULL;
}

void dests_flush (dests_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->items[i]->flush)
            self->items[i]->flush (self->items[i]);
}

void dests_restore (dests_t *self, const char *entity, const char *chat, int64_t at)
{
    const char *slash = strchr (chat, '/');
    char *source = pstrndup (chat, slash ? (size_t) (slash - chat) : strlen (chat));
    dest_t *dest = dests_route (self, source);
    if (dest && dest->restore)
        dest->restore (dest, entity, slash ? slash + 1 : chat, at);
    free (source);
}
