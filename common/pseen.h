/*  pseen - a bounded set of recently seen keys (fingerprints).

    The poller's seen messages, the broker's finished pairs and the sink's
    posted pairs are all "have I handled this one lately?" sets. Each must
    not grow for ever (a busy chat writes millions of messages a day), so a
    key is forgotten when it is older than the retention or when the set
    holds `max_keys` (the oldest goes first). Keys are pkey fingerprints:
    48 to 64 bytes a key in memory, whatever the key's length.

    Entries live in a ring in insertion order (so the oldest is at hand for
    eviction and persistence; 32 bytes each) and an open-addressing index
    of ring positions and hashes finds them (8 bytes a slot, two to four
    slots a key). Each entry carries a small tag for its owner
    (e.g. the journal segment that holds its record).
*/
#ifndef PSEEN_H_INCLUDED
#define PSEEN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pkey.h"

typedef struct pseen_s pseen_t;

//  Called for every key the set forgets on its own (evicted or pruned).
typedef void (pseen_forget_fn) (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag);

//  max_keys: at most this many keys; retention_ms: forget keys older than
//  this at pseen_prune (0 = only the count bounds it).
pseen_t *pseen_new (size_t max_keys, int64_t retention_ms);
void pseen_destroy (pseen_t **self_p);
void pseen_on_forget (pseen_t *self, pseen_forget_fn *fn, void *arg);

bool pseen_has (pseen_t *self, pkey_fp_t fp);
//  Adds a key seen at `at`; returns true if it was not there. The oldest
//  key goes when the set is full. Times should not decrease (a key added
//  with an older time is still forgotten in insertion order).
bool pseen_add (pseen_t *self, pkey_fp_t fp, int64_t at, uint32_t tag);
//  Forgets a key (no callback); returns true if it was there, and its tag
//  in *tag (may be NULL).
bool pseen_remove (pseen_t *self, pkey_fp_t fp, uint32_t *tag);
//  Forgets keys older than the retention at `now`; returns how many.
size_t pseen_prune (pseen_t *self, int64_t now);
size_t pseen_size (pseen_t *self);

//  Every key, oldest first.
typedef void (pseen_each_fn) (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag);
void pseen_each (pseen_t *self, pseen_each_fn *fn, void *arg);
//  The same, letting `fn` change each key's tag.
typedef void (pseen_retag_fn) (void *arg, pkey_fp_t fp, int64_t at, uint32_t *tag);
void pseen_retag (pseen_t *self, pseen_retag_fn *fn, void *arg);

#endif
