/*  pkey - the identity of a reply: one (entity, message) pair.

    Every stage dedupes on it: the poller on the message key, the broker on
    (entity, message) for one active job per pair, the sink on (entity,
    message) for one post per pair. They all build it here, so they agree.

    The text form is "entity \x1f msg_key" (0x1f cannot appear in either:
    ids and keys are printable). The fingerprint is a 128-bit keyed hash of
    it (libsodium's SipHash-1-3 with a 128-bit output); sets of finished
    pairs keep fingerprints, 16 bytes a pair whatever the key's length. Two
    pairs share a fingerprint with probability about n^2 / 2^129: never, in
    practice.
*/
#ifndef PKEY_H_INCLUDED
#define PKEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PKEY_SEP '\x1f'

typedef struct {
    uint64_t hi, lo;
} pkey_fp_t;

//  Writes "entity \x1f msg_key" into `out` (NUL-terminated, truncated to
//  `len`); returns the length it needed.
size_t pkey_pair (char *out, size_t len, const char *entity, const char *msg_key);
//  The same, allocated (caller frees).
char *pkey_pair_new (const char *entity, const char *msg_key);
//  In a pair key: the message key part, or NULL if it is not a pair key.
const char *pkey_pair_msg (const char *pair);

//  Fingerprints of a pair and of any key (e.g. a message key alone).
pkey_fp_t pkey_pair_fp (const char *entity, const char *msg_key);
pkey_fp_t pkey_fp (const void *data, size_t size);

static inline bool pkey_fp_equal (pkey_fp_t a, pkey_fp_t b)
{
    return a.hi == b.hi && a.lo == b.lo;
}

//  For tables keyed by a fingerprint (common/ptable): `key` points to a
//  pkey_fp_t. Its bits are already uniform: half of them is the hash.
static inline uint64_t pkey_fp_hash (const void *key)
{
    return ((const pkey_fp_t *) key)->lo;
}

#endif
