/*  ptable - open-addressing table of records. See ptable.h. */
#include "common/ptable.h"
#include "common/palloc.h"

#include <string.h>

#define FIRST_CAPACITY 64       //  slots; always a power of two

//  A slot keeps the record and the low 32 bits of its hash side by side, so
//  a probe in a table of a million records costs one cache miss, not one in
//  an array of pointers and another in an array of hashes. Packed to 12
//  bytes, the size the two arrays had; one slot in sixteen straddles two
//  cache lines.
typedef struct __attribute__ ((packed)) {
    void *item;
    uint32_t hash;
} s_slot_t;

struct ptable_s {
    s_slot_t *slots;
    size_t capacity;
    size_t size;
    ptable_hash_fn *hash;
    ptable_key_fn *key_of;
    ptable_match_fn *match;
};

ptable_t *ptable_new (ptable_hash_fn *hash, ptable_key_fn *key_of, ptable_match_fn *match)
{
    ptable_t *self = pcalloc (1, sizeof *self);
    self->hash = hash;
    self->key_of = key_of;
    self->match = match;
    self->capacity = FIRST_CAPACITY;
    self->slots = pcalloc (self->capacity, sizeof (s_slot_t));
    return self;
}

void ptable_destroy (ptable_t **self_p)
{
    ptable_t *self = *self_p;
    if (!self)
        return;
    free (self->slots);
    free (self);
    *self_p = NULL;
}

//  Where the probe for a key of hash `h` begins (capacities stay below 2^32).
static inline size_t s_home (const ptable_t *self, uint32_t h)
{
    return (size_t) h & (self->capacity - 1);
}

//  The slot holding the record with `key`, or the empty slot that ends its
//  probe. Only a record whose stored hash bits equal the key's is read.
static size_t s_find (const ptable_t *self, const void *key, uint32_t h)
{
    size_t mask = self->capacity - 1;
    for (size_t i = s_home (self, h);; i = (i + 1) & mask) {
        const s_slot_t *slot = &self->slots[i];
        if (!slot->item || (slot->hash == h && self->match (slot->item, key)))
            return i;
    }
}

void *ptable_lookup (const ptable_t *self, const void *key)
{
    return self->slots[s_find (self, key, (uint32_t) self->hash (key))].item;
}

uint64_t ptable_hash_key (const ptable_t *self, const void *key)
{
    return self->hash (key);
}

void ptable_prefetch (const ptable_t *self, uint64_t hash)
{
    __builtin_prefetch (&self->slots[s_home (self, (uint32_t) hash)]);
}

void *ptable_lookup_hashed (const ptable_t *self, const void *key, uint64_t hash)
{
    return self->slots[s_find (self, key, (uint32_t) hash)].item;
}

static void s_place (ptable_t *self, void *item, uint32_t h)
{
    size_t mask = self->capacity - 1;
    size_t i = s_home (self, h);
    while (self->slots[i].item)
        i = (i + 1) & mask;
    self->slots[i].item = item;
    self->slots[i].hash = h;
}

//  Keeps the load at most 0.7 (probe runs stay short) for `size` records.
static void s_grow_for (ptable_t *self, size_t size)
{
    size_t capacity = self->capacity;
    while (size * 10 > capacity * 7)
        capacity *= 2;
    if (capacity == self->capacity)
        return;
    s_slot_t *old = self->slots;
    size_t old_capacity = self->capacity;
    self->capacity = capacity;
    self->slots = pcalloc_table (capacity, sizeof (s_slot_t));
    //  The stored hashes place every record again without reading it.
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].item)
            s_place (self, old[i].item, old[i].hash);
    free (old);
}

//  Empties slot `i` by backward shift: later members of its run move into
//  the hole when their home is not between the hole and where they sit.
static void s_delete_at (ptable_t *self, size_t i)
{
    size_t mask = self->capacity - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!self->slots[j].item)
            break;
        size_t home = s_home (self, self->slots[j].hash);
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            self->slots[i] = self->slots[j];
            i = j;
        }
    }
    self->slots[i].item = NULL;
    self->size--;
}

size_t ptable_remove_if (ptable_t *self, ptable_doomed_fn *doomed, void *arg, void (*dispose) (void *item))
{
    //  In place: a removal shifts later members of its run back into the
    //  hole, so the slot is looked at again. A record that wraps from the
    //  start of the array to its end is one already seen (and kept): seen
    //  twice, never skipped.
    size_t n = 0;
    for (size_t i = 0; i < self->capacity;) {
        void *item = self->slots[i].item;
        if (item && doomed (item, arg)) {
            s_delete_at (self, i);
            if (dispose)
                dispose (item);
            n++;
        }
        else
            i++;
    }
    return n;
}

void ptable_insert (ptable_t *self, void *item)
{
    ptable_insert_hashed (self, item, self->hash (self->key_of (item)));
}

void ptable_insert_hashed (ptable_t *self, void *item, uint64_t hash)
{
    s_grow_for (self, self->size + 1);
    s_place (self, item, (uint32_t) hash);
    self->size++;
}

void *ptable_remove (ptable_t *self, const void *key)
{
    size_t i = s_find (self, key, (uint32_t) self->hash (key));
    void *found = self->slots[i].item;
    if (found)
        s_delete_at (self, i);
    return found;
}

size_t ptable_size (const ptable_t *self)
{
    return self->size;
}

void *ptable_next (const ptable_t *self, size_t *cursor)
{
    while (*cursor < self->capacity) {
        void *item = self->slots[(*cursor)++].item;
        if (item)
            return item;
    }
    return NULL;
}

uint64_t ptable_hash_u64 (const void *key)
{
    //  A 64-bit finaliser (MurmurHash3's fmix64) spreads sequential ids.
    uint64_t x = *(const uint64_t *) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t ptable_hash_u64x2 (const void *key)
{
    const ptable_u64x2_t *k = key;
    uint64_t x = k->a ^ (k->b * 0x9E3779B97F4A7C15ULL);
    return ptable_hash_u64 (&x);
}

uint64_t ptable_hash_str (const void *key)
{
    //  Eight bytes at a time, each mixed in by a multiply; fmix64 at the end.
    //  Not keyed: a key fixed in the source (SipHash's here before) keeps
    //  no one from choosing colliding strings either, and cost more than the
    //  rest of a lookup.
    const unsigned char *s = key;
    size_t n = strlen (key);
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n, w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy (&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy (&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return ptable_hash_u64 (&h);
}
