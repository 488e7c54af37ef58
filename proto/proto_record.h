/*  proto_record - the protocol's table-driven codec, for records of your own.

    Durable state is written as records in the same form as the wire: a
    msgpack array of fields, described by a table (proto_defs.h: the RECORD
    and field macros). The decoder that guards the network then guards the
    disk too: every length and count is checked against the bytes left,
    every string is valid UTF-8 within its bound, and a damaged record is
    refused with a reason, never trusted.
*/
#ifndef PROTO_RECORD_H_INCLUDED
#define PROTO_RECORD_H_INCLUDED

#include <msgpack.h>

#include "proto/proto_defs.h"

//  The bound of a time field in a stored record (Unix ms): far past anything
//  the daemons write (PROTO_MAX_TIME_MS plus delays and ages), far below
//  where int64 arithmetic on it could overflow. A later time is damage.
#define PROTO_RECORD_TIME ((uint64_t) INT64_MAX / 4)

//  Appends the msgpack form of `body` (a struct described by `rec`) to
//  `buf`. Returns 0, or -1 when a field breaks its bound (logged).
int proto_record_pack (const proto_record_t *rec, const void *body, msgpack_sbuffer *buf);

//  Decodes `data` into `out` (a struct described by `rec`); strings and bins
//  live in *zone_p (free with proto_zone_free). Returns PROTO_OK, or
//  PROTO_MALFORMED with the reason in `why`.
int proto_record_unpack (const proto_record_t *rec, const void *data, size_t size, void *out,
                         void **zone_p, char *why, size_t whylen);

//  The same into `zone`, a msgpack_zone the caller keeps: msgpack_zone_new
//  once, msgpack_zone_clear before the next record (what `out` points to
//  goes then), msgpack_zone_free at the end. A zone costs a malloc of 8 KiB
//  or more: loading a million records, or decoding a payload per job, this
//  way allocates nothing per record once the zone has grown.
int proto_record_unpack_in (const proto_record_t *rec, const void *data, size_t size, void *out,
                            msgpack_zone *zone, char *why, size_t whylen);

#endif
