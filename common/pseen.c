/*  pseen - bounded set of fingerprints. See pseen.h. */
#include "common/pseen.h"
#include "common/palloc.h"

#include <assert.h>
#include <string.h>

typedef struct {
    pkey_fp_t fp;
    int64_t at;
    uint32_t tag;
    bool live;                  //  false once removed (the ring keeps its place)
} s_entry_t;

//  An index slot keeps the key's hash beside its ring position: a probe
//  that meets another key is told apart without reading the ring, where
//  every entry is a cache miss once the set is large, and a slot's home is
//  known without it when a removal shifts the cluster back.
typedef struct {
    uint32_t pos;               //  ring position + 1; 0 = empty
    uint32_t hash;
} s_slot_t;

struct pseen_s {
    s_entry_t *ring;            //  insertion order; head is the oldest
    size_t ring_cap;
    size_t head;
    size_t count;               //  ring slots in use, live or not
    size_t live;
    s_slot_t *index;
    size_t index_cap;           //  a power of two, at least twice ring_cap
    size_t max_keys;
    int64_t retention_ms;
    pseen_forget_fn *forget;
    void *forget_arg;
};

pseen_t *pseen_new (size_t max_keys, int64_t retention_ms)
{
    pseen_t *self = pcalloc (1, sizeof *self);
    self->max_keys = max_keys ? max_keys : 1;
    self->retention_ms = retention_ms;
    self->ring_cap = self->max_keys < 1024 ? self->max_keys : 1024;
    self->ring = pcalloc (self->ring_cap, sizeof (s_entry_t));
    self->index_cap = 2048;
    while (self->index_cap < 2 * self->ring_cap)
        self->index_cap *= 2;
    self->index = pcalloc (self->index_cap, sizeof (s_slot_t));
    return self;
}

void pseen_destroy (pseen_t **self_p)
{
    pseen_t *self = *self_p;
    if (!self)
        return;
    free (self->ring);
    free (self->index);
    free (self);
    *self_p = NULL;
}

void pseen_on_forget (pseen_t *self, pseen_forget_fn *fn, void *arg)
{
    self->forget = fn;
    self->forget_arg = arg;
}

static inline uint32_t s_hash (pkey_fp_t fp)
{
    return (uint32_t) (fp.lo ^ (fp.hi >> 7));
}

//  The index slot holding `fp`, or the empty slot where it would go.
static size_t s_find (const pseen_t *self, pkey_fp_t fp, bool *found)
{
    size_t mask = self->index_cap - 1;
    uint32_t h = s_hash (fp);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        s_slot_t slot = self->index[i];
        if (slot.pos == 0) {
            *found = false;
            return i;
        }
        if (slot.hash == h && pkey_fp_equal (self->ring[slot.pos - 1].fp, fp)) {
            *found = true;
            return i;
        }
    }
}

//  Removes index slot `i` by shifting later members of its cluster back
//  (linear probing needs no tombstones this way).
static void s_index_delete (pseen_t *self, size_t i)
{
    size_t mask = self->index_cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        s_slot_t slot = self->index[j];
        if (slot.pos == 0)
            break;
        size_t home = slot.hash & mask;
        //  Move the slot back to i if its home is not in the cyclic range (i, j].
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            self->index[i] = slot;
            i = j;
        }
    }
    self->index[i] = (s_slot_t) {0, 0};
}

static void s_reindex (pseen_t *self)
{
    memset (self->index, 0, self->index_cap * sizeof (s_slot_t));
    size_t mask = self->index_cap - 1;
    for (size_t k = 0; k < self->count; k++) {
        size_t pos = (self->head + k) % self->ring_cap;
        if (!self->ring[pos].live)
            continue;
        uint32_t h = s_hash (self->ring[pos].fp);
        size_t i = h & mask;
        while (self->index[i].pos)
            i = (i + 1) & mask;
        self->index[i] = (s_slot_t) {(uint32_t) pos + 1, h};
    }
}

//  Doubles the ring (up to max_keys), keeping insertion order, and the index with it.
static void s_grow (pseen_t *self)
{
    size_t cap = self->ring_cap * 2;
    if (cap > self->max_keys)
        cap = self->max_keys;
    s_entry_t *ring = pcalloc (cap, sizeof (s_entry_t));
    for (size_t k = 0; k < self->count; k++)
        ring[k] = self->ring[(self->head + k) % self->ring_cap];
    free (self->ring);
    self->ring = ring;
    self->ring_cap = cap;
    self->head = 0;
    if (self->index_cap < 2 * cap) {
        while (self->index_cap < 2 * cap)
            self->index_cap *= 2;
        self->index = prealloc (self->index, self->index_cap * sizeof (s_slot_t));
    }
    s_reindex (self);
}

//  Drops the oldest ring slot; `notify` calls the forget callback for a live one.
static void s_pop_oldest (pseen_t *self, bool notify)
{
    s_entry_t *e = &self->ring[self->head];
    if (e->live) {
        bool found;
        size_t i = s_find (self, e->fp, &found);
        assert (found);
        s_index_delete (self, i);
        e->live = false;
        self->live--;
        if (notify && self->forget)
            self->forget (self->forget_arg, e->fp, e->at, e->tag);
    }
    self->head = (self->head + 1) % self->ring_cap;
    self->count--;
}

bool pseen_has (pseen_t *self, pkey_fp_t fp)
{
    bool found;
    s_find (self, fp, &found);
    return found;
}

bool pseen_add (pseen_t *self, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    bool found;
    size_t i = s_find (self, fp, &found);
    if (found)
        return false;
    //  Dead slots at the head cost nothing to drop; a full set drops its oldest key.
    //  Either moves slots of the index: the free slot is looked for again then.
    bool moved = false;
    while (self->count && !self->ring[self->head].live) {
        s_pop_oldest (self, false);
        moved = true;
    }
    if (self->count == self->ring_cap) {
        if (self->ring_cap < self->max_keys)
            s_grow (self);
        else
            s_pop_oldest (self, true);
        moved = true;
    }
    size_t pos = (self->head + self->count) % self->ring_cap;
    self->ring[pos] = (s_entry_t) {fp, at, tag, true};
    self->count++;
    self->live++;
    if (moved)
        i = s_find (self, fp, &found);
    self->index[i] = (s_slot_t) {(uint32_t) pos + 1, s_hash (fp)};
    return true;
}

bool pseen_remove (pseen_t *self, pkey_fp_t fp, uint32_t *tag)
{
    bool found;
    size_t i = s_find (self, fp, &found);
    if (!found)
        return false;
    if (tag)
        *tag = self->ring[self->index[i].pos - 1].tag;
    self->ring[self->index[i].pos - 1].live = false;
    self->live--;
    s_index_delete (self, i);
    return true;
}

size_t pseen_prune (pseen_t *self, int64_t now)
{
    size_t dropped = 0;
    while (self->count) {
        s_entry_t *e = &self->ring[self->head];
        if (e->live && (self->retention_ms <= 0 || e->at + self->retention_ms > now))
            break;
        if (e->live)
            dropped++;
        s_pop_oldest (self, true);
    }
    return dropped;
}

size_t pseen_size (pseen_t *self)
{
    return self->live;
}

void pseen_each (pseen_t *self, pseen_each_fn *fn, void *arg)
{
    for (size_t k = 0; k < self->count; k++) {
        s_entry_t *e = &self->ring[(self->head + k) % self->ring_cap];
        if (e->live)
            fn (arg, e->fp, e->at, e->tag);
    }
}

void pseen_retag (pseen_t *self, pseen_retag_fn *fn, void *arg)
{
    for (size_t k = 0; k < self->count; k++) {
        s_entry_t *e = &self->ring[(self->head + k) % self->ring_cap];
        if (e->live)
            fn (arg, e->fp, e->at, &e->tag);
    }
}
