/*  ptable - an open-addressing hash table of pointers to records that hold
    their own keys.

    The broker keeps a million queued jobs findable by id and by (entity,
    message) pair; czmq's zhashx spends a node and a key copy per item and
    showed as a quarter of the broker's CPU. Here a slot is one pointer and
    32 bits of its hash (about 11 bytes an item at the load the table keeps), the key stays
    inside the record, and a lookup is one hash and a short linear probe.
    Deletion shifts the probe run back, so there are no tombstones.

    The caller gives three functions: the hash of a key, the key of a record,
    and whether a record has a key.
*/
#ifndef PTABLE_H_INCLUDED
#define PTABLE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t (ptable_hash_fn) (const void *key);
typedef const void *(ptable_key_fn) (const void *item);
typedef bool (ptable_match_fn) (const void *item, const void *key);

typedef struct ptable_s ptable_t;

ptable_t *ptable_new (ptable_hash_fn *hash, ptable_key_fn *key_of, ptable_match_fn *match);
//  Frees the table, not the records.
void ptable_destroy (ptable_t **self_p);

void *ptable_lookup (const ptable_t *self, const void *key);
//  Adds a record; its key must not be in the table (check with lookup).
void ptable_insert (ptable_t *self, void *item);
//  The same, in steps, for a caller with other work to do between them:
//  the hash of a key, a hint to fetch its slot into the cache, then the
//  lookup or insertion with that hash. A restart fills two tables of a
//  million jobs each; asking for both slots before using either makes their
//  cache misses overlap instead of following one another.
uint64_t ptable_hash_key (const ptable_t *self, const void *key);
void ptable_prefetch (const ptable_t *self, uint64_t hash);
void *ptable_lookup_hashed (const ptable_t *self, const void *key, uint64_t hash);
void ptable_insert_hashed (ptable_t *self, void *item, uint64_t hash);

//  Removes every record `doomed` says yes to, and hands each to `dispose`
//  (if any) once it is out; returns how many. For the sweeps that forget
//  idle state: a walk with ptable_next cannot remove as it goes (a removal
//  shifts later records back). `doomed` may be asked twice about a record
//  it keeps.
typedef bool (ptable_doomed_fn) (const void *item, void *arg);
size_t ptable_remove_if (ptable_t *self, ptable_doomed_fn *doomed, void *arg, void (*dispose) (void *item));
//  Removes and returns the record with `key`, or NULL.
void *ptable_remove (ptable_t *self, const void *key);
size_t ptable_size (const ptable_t *self);

//  Walks the records in no particular order; the table must not change
//  during the walk. Start with *cursor = 0; returns NULL at the end.
void *ptable_next (const ptable_t *self, size_t *cursor);

//  Hashes for common keys: a uint64 passed by address, and a C string.
uint64_t ptable_hash_u64 (const void *key);
uint64_t ptable_hash_str (const void *key);

//  A key of two 64-bit numbers, such as a job's (id, token): a record keeps
//  it as two adjacent uint64_t fields, in this order, and key_of returns
//  the address of the first.
typedef struct {
    uint64_t a, b;
} ptable_u64x2_t;

uint64_t ptable_hash_u64x2 (const void *key);

//  Compares two keys (a match function compares a record with a key).
static inline bool ptable_u64x2_equal (const void *x, const void *y)
{
    const ptable_u64x2_t *p = x, *q = y;
    return p->a == q->a && p->b == q->b;
}

#endif
