/*  pkey - (entity, message) keys and fingerprints. See pkey.h. */
#include "common/pkey.h"
#include "common/palloc.h"

#include <sodium.h>
#include <string.h>

//  A fixed key: fingerprints must be the same in every process and after
//  every restart (they are stored). They guard against accidents, not
//  against someone who chooses message ids to collide (ids come from chat
//  platforms, and a collision could only suppress one reply).
static const unsigned char s_key[crypto_shorthash_siphashx24_KEYBYTES] = "parley pair key";

size_t pkey_pair (char *out, size_t len, const char *entity, const char *msg_key)
{
    size_t e = strlen (entity), k = strlen (msg_key);
    if (len > 0) {
        size_t n = 0;
        for (size_t i = 0; i < e && n + 1 < len; i++)
            out[n++] = entity[i];
        if (n + 1 < len)
            out[n++] = PKEY_SEP;
        for (size_t i = 0; i < k && n + 1 < len; i++)
            out[n++] = msg_key[i];
        out[n] = 0;
    }
    return e + 1 + k;
}

char *pkey_pair_new (const char *entity, const char *msg_key)
{
    size_t n = strlen (entity) + strlen (msg_key) + 2;
    char *key = pmalloc (n);
    pkey_pair (key, n, entity, msg_key);
    return key;
}

const char *pkey_pair_msg (const char *pair)
{
    const char *sep = strchr (pair, PKEY_SEP);
    return sep ? sep + 1 : NULL;
}

pkey_fp_t pkey_fp (const void *data, size_t size)
{
    unsigned char out[crypto_shorthash_siphashx24_BYTES];
    crypto_shorthash_siphashx24 (out, data, size, s_key);
    pkey_fp_t fp;
    memcpy (&fp.hi, out, 8);
    memcpy (&fp.lo, out + 8, 8);
    return fp;
}

pkey_fp_t pkey_pair_fp (const char *entity, const char *msg_key)
{
    char stack[1100];
    size_t need = pkey_pair (stack, sizeof stack, entity, msg_key);
    if (need < sizeof stack)
        return pkey_fp (stack, need);
    char *key = pkey_pair_new (entity, msg_key);
    pkey_fp_t fp = pkey_fp (key, need);
    free (key);
    return fp;
}
