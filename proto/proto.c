/*  proto - table-driven msgpack codec for the messages in proto_defs.c. */
#include "proto/proto_defs.h"
#include "proto/proto_record.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/palloc.h"
#include "common/plog.h"

//  --- validation of untrusted msgpack ----------------------------------------

static inline uint64_t s_be (const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

int proto_mp_check (const uint8_t *data, size_t size, const char **why)
{
    //  `pending` counts objects announced but not yet read. Each needs at least
    //  one byte, so pending may never exceed the bytes left: that bounds every
    //  allocation a later unpack makes by the frame's size.
    size_t pos = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (pos >= size) {
            *why = "truncated";
            return -1;
        }
        uint8_t b = data[pos++];
        pending--;
        uint64_t skip = 0, children = 0;
        int lenbytes = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            ;
        else if (b >= 0x80 && b <= 0x8f)
            children = 2 * (uint64_t) (b & 0x0f);
        else if (b >= 0x90 && b <= 0x9f)
            children = b & 0x0f;
        else if (b >= 0xa0 && b <= 0xbf)
            skip = b & 0x1f;
        else
            switch (b) {
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xca: case 0xce: case 0xd2: skip = 4; break;
            case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
            case 0xc4: case 0xd9: lenbytes = 1; break;
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xdc: lenbytes = 2; children = 1; break;
            case 0xdd: lenbytes = 4; children = 1; break;
            case 0xde: lenbytes = 2; children = 2; break;
            case 0xdf: lenbytes = 4; children = 2; break;
            default:
                *why = (b == 0xc1) ? "invalid byte 0xc1" : "extension types are not used";
                return -1;
            }
        if (lenbytes) {
            if (size - pos < (size_t) lenbytes) {
                *why = "truncated length";
                return -1;
            }
            uint64_t n = s_be (data + pos, lenbytes);
            pos += (size_t) lenbytes;
            if (children)
                children *= n;      //  array: n, map: 2n
            else
                skip = n;
        }
        if (skip > size - pos) {
            *why = "string or number runs past the end";
            return -1;
        }
        pos += skip;
        if (children > size - pos || pending + children > size - pos) {
            *why = "container declares more items than bytes remain";
            return -1;
        }
        pending += children;
    }
    if (pos != size) {
        *why = "trailing bytes after the message";
        return -1;
    }
    return 0;
}

//  --- encoding -------------------------------------------------------------------

static bool s_valid_utf8 (const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return false;   //  strings travel NUL-terminated
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        }
        else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        }
        else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        }
        else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        //  Overlong forms, surrogates and values past U+10FFFF are invalid.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)
            || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static int s_pack_record (msgpack_packer *pk, const proto_record_t *rec, const char *base);

static int s_pack_field (msgpack_packer *pk, const proto_field_t *f, const char *base)
{
    const char *at = base + f->offset;
    switch (f->type) {
    case PF_UINT: {
        uint64_t v = *(const uint64_t *) at;
        if (v > f->max) {
            plog_error ("proto: %s = %llu exceeds %llu", f->name, (unsigned long long) v,
                        (unsigned long long) f->max);
            return -1;
        }
        return msgpack_pack_uint64 (pk, v);
    }
    case PF_F64: return msgpack_pack_double (pk, *(const double *) at);
    case PF_STR: {
        const char *s = *(const char *const *) at;
        size_t n = s ? strlen (s) : 0;
        if (n > f->max) {
            plog_error ("proto: %s is %zu bytes, more than %llu", f->name, n,
                        (unsigned long long) f->max);
            return -1;
        }
        msgpack_pack_str (pk, n);
        return msgpack_pack_str_body (pk, s ? s : "", n);
    }
    case PF_BIN: {
        const proto_bin_t *b = (const proto_bin_t *) at;
        if (b->size > f->max) {
            plog_error ("proto: %s is %u bytes, more than %llu", f->name, b->size,
                        (unsigned long long) f->max);
            return -1;
        }
        msgpack_pack_bin (pk, b->size);
        return b->size ? msgpack_pack_bin_body (pk, b->data, b->size) : 0;
    }
    case PF_STRS: {
        const char *const *items = *(const char *const *const *) at;
        size_t n = *(const size_t *) (base + f->count_offset);
        if (n > f->max)
            return -1;
        msgpack_pack_array (pk, n);
        for (size_t i = 0; i < n; i++) {
            size_t len = items[i] ? strlen (items[i]) : 0;
            if (len > PROTO_MAX_KEY) {  //  the decoder's bound for every item
                plog_error ("proto: %s[%zu] is %zu bytes, more than %d", f->name, i, len,
                            PROTO_MAX_KEY);
                return -1;
            }
            msgpack_pack_str (pk, len);
            msgpack_pack_str_body (pk, items[i] ? items[i] : "", len);
        }
        return 0;
    }
    case PF_LIST: {
        const char *items = *(const char *const *) at;
        size_t n = *(const size_t *) (base + f->count_offset);
        if (n > f->max) {
            plog_error ("proto: %s has %zu items, more than %llu", f->name, n,
                        (unsigned long long) f->max);
            return -1;
        }
        msgpack_pack_array (pk, n);
        for (size_t i = 0; i < n; i++)
            if (s_pack_record (pk, f->record, items + i * f->record->size))
                return -1;
        return 0;
    }
    case PF_NUMS: {
        const proto_num_t *items = *(const proto_num_t *const *) at;
        size_t n = *(const size_t *) (base + f->count_offset);
        if (n > f->max)
            return -1;
        msgpack_pack_map (pk, n);
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen (items[i].key);
            msgpack_pack_str (pk, len);
            msgpack_pack_str_body (pk, items[i].key, len);
            double v = items[i].value;
            //  Whole numbers travel as integers: counters read naturally in any language.
            //  The range comes first: converting NaN or 1e300 to an integer is undefined.
            if (v > -9.0e15 && v < 9.0e15 && v == (double) (int64_t) v)
                msgpack_pack_int64 (pk, (int64_t) v);
            else
                msgpack_pack_double (pk, v);
        }
        return 0;
    }
    }
    return -1;
}

static int s_pack_record (msgpack_packer *pk, const proto_record_t *rec, const char *base)
{
    msgpack_pack_array (pk, rec->count);
    for (size_t i = 0; i < rec->count; i++)
        if (s_pack_field (pk, &rec->fields[i], base))
            return -1;
    return 0;
}

static void s_free_sbuffer_data (void *data, void *hint)
{
    (void) hint;
    free (data);
}

int proto_encode (proto_type_t type, const void *body, zmq_msg_t *frame)
{
    if (type <= 0 || type >= PROTO_TYPE_MAX || !proto_messages[type].body)
        return -1;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    const uint8_t header[PROTO_HEADER_SIZE] = {PROTO_SIG0, PROTO_SIG1, PROTO_VERSION, (uint8_t) type};
    msgpack_sbuffer_write (&sbuf, (const char *) header, sizeof header);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    if (s_pack_record (&pk, proto_messages[type].body, body)) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    size_t size = sbuf.size;
    char *data = msgpack_sbuffer_release (&sbuf);
    //  The frame takes the buffer over: no copy.
    zmq_msg_init_data (frame, data, size, s_free_sbuffer_data, NULL);
    return 0;
}

int proto_message_encode (const proto_message_t *message, uint8_t **data, size_t *size)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    if (s_pack_record (&pk, &proto_message_record, (const char *) message)) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    *size = sbuf.size;
    *data = (uint8_t *) msgpack_sbuffer_release (&sbuf);
    return 0;
}

//  --- decoding ---------------------------------------------------------------------

typedef struct {
    msgpack_zone *zone;
    char *why;
    size_t whylen;
} s_dec_t;

//  Errors are built from the inside out: the innermost level writes what is
//  wrong, each level on the way back puts its own name in front.
static int s_dec_fail (s_dec_t *d, const char *what)
{
    snprintf (d->why, d->whylen, "%s", what);
    return -1;
}

static void s_dec_prefix (s_dec_t *d, const char *name, long index)
{
    char tmp[512];
    if (index >= 0)
        snprintf (tmp, sizeof tmp, "%s[%ld].%s", name, index, d->why);
    else
        snprintf (tmp, sizeof tmp, "%s.%s", name, d->why);
    snprintf (d->why, d->whylen, "%s", tmp);
}

static int s_dec_str (s_dec_t *d, const msgpack_object *o, uint64_t max, const char **out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return s_dec_fail (d, ": expected a string");
    uint32_t n = o->via.str.size;
    if (n > max)
        return s_dec_fail (d, ": string too long");
    if (!s_valid_utf8 ((const uint8_t *) o->via.str.ptr, n))
        return s_dec_fail (d, ": not valid UTF-8 (or contains NUL)");
    char *copy = msgpack_zone_malloc (d->zone, n + 1);
    if (!copy)
        palloc_fail ("msgpack zone", n + 1);
    //  msgpack-c gives an empty string a NULL pointer: never hand that to memcpy.
    if (n)
        memcpy (copy, o->via.str.ptr, n);
    copy[n] = 0;
    *out = copy;
    return 0;
}

static int s_dec_record (s_dec_t *d, const proto_record_t *rec, char *base, const msgpack_object *o);

static int s_dec_field (s_dec_t *d, const proto_field_t *f, char *base, const msgpack_object *o)
{
    char *at = base + f->offset;
    switch (f->type) {
    case PF_UINT:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return s_dec_fail (d, ": expected an unsigned integer");
        if (o->via.u64 > f->max)
            return s_dec_fail (d, ": value out of range");
        *(uint64_t *) at = o->via.u64;
        return 0;
    case PF_F64:
        if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
            *(double *) at = o->via.f64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *(double *) at = (double) o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(double *) at = (double) o->via.i64;
        else
            return s_dec_fail (d, ": expected a number");
        return 0;
    case PF_STR: return s_dec_str (d, o, f->max, (const char **) at);
    case PF_BIN: {
        if (o->type != MSGPACK_OBJECT_BIN)
            return s_dec_fail (d, ": expected bytes (bin)");
        if (o->via.bin.size > f->max)
            return s_dec_fail (d, ": bytes too long");
        uint8_t *copy = msgpack_zone_malloc (d->zone, o->via.bin.size ? o->via.bin.size : 1);
        if (!copy)
            palloc_fail ("msgpack zone", o->via.bin.size ? o->via.bin.size : 1);
        if (o->via.bin.size)   //  empty bytes come with a NULL pointer
            memcpy (copy, o->via.bin.ptr, o->via.bin.size);
        ((proto_bin_t *) at)->data = copy;
        ((proto_bin_t *) at)->size = o->via.bin.size;
        return 0;
    }
    case PF_STRS: {
        if (o->type != MSGPACK_OBJECT_ARRAY)
            return s_dec_fail (d, ": expected an array of strings");
        size_t n = o->via.array.size;
        if (n > f->max)
            return s_dec_fail (d, ": too many items");
        const char **items = msgpack_zone_malloc (d->zone, (n ? n : 1) * sizeof (char *));
        if (!items)
            palloc_fail ("msgpack zone", (n ? n : 1) * sizeof (char *));
        for (size_t i = 0; i < n; i++)
            if (s_dec_str (d, &o->via.array.ptr[i], PROTO_MAX_KEY, &items[i])) {
                s_dec_prefix (d, "", (long) i);
                return -1;
            }
        *(const char ***) at = items;
        *(size_t *) (base + f->count_offset) = n;
        return 0;
    }
    case PF_LIST: {
        if (o->type != MSGPACK_OBJECT_ARRAY)
            return s_dec_fail (d, ": expected an array");
        size_t n = o->via.array.size;
        if (n > f->max)
            return s_dec_fail (d, ": too many items");
        size_t bytes = (n ? n : 1) * f->record->size;
        char *items = msgpack_zone_malloc (d->zone, bytes);
        if (!items)
            palloc_fail ("msgpack zone", bytes);
        memset (items, 0, bytes);
        for (size_t i = 0; i < n; i++)
            if (s_dec_record (d, f->record, items + i * f->record->size, &o->via.array.ptr[i])) {
                s_dec_prefix (d, "", (long) i);
                return -1;
            }
        *(char **) at = items;
        *(size_t *) (base + f->count_offset) = n;
        return 0;
    }
    case PF_NUMS: {
        if (o->type != MSGPACK_OBJECT_MAP)
            return s_dec_fail (d, ": expected a map");
        size_t n = o->via.map.size;
        if (n > f->max)
            return s_dec_fail (d, ": too many items");
        proto_num_t *items = msgpack_zone_malloc (d->zone, (n ? n : 1) * sizeof (proto_num_t));
        if (!items)
            palloc_fail ("msgpack zone", (n ? n : 1) * sizeof (proto_num_t));
        for (size_t i = 0; i < n; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (s_dec_str (d, &kv->key, PROTO_MAX_KEY, &items[i].key))
                return -1;
            const msgpack_object *v = &kv->val;
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                items[i].value = (double) v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                items[i].value = (double) v->via.i64;
            else if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
                items[i].value = v->via.f64;
            else
                return s_dec_fail (d, ": map values must be numbers");
        }
        *(proto_num_t **) at = items;
        *(size_t *) (base + f->count_offset) = n;
        return 0;
    }
    }
    return s_dec_fail (d, ": unknown field type");
}

static int s_dec_record (s_dec_t *d, const proto_record_t *rec, char *base, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return s_dec_fail (d, ": expected an array of fields");
    size_t n = o->via.array.size;
    for (size_t i = 0; i < rec->count; i++) {
        const proto_field_t *f = &rec->fields[i];
        if (i >= n) {
            //  A missing optional field reads as zero, or as "" for a string, so
            //  readers of an older peer's frame never meet a NULL string.
            if (f->optional) {
                if (f->type == PF_STR)
                    *(const char **) (base + f->offset) = "";
                continue;
            }
            snprintf (d->why, d->whylen, "%s: missing", f->name);
            return -1;
        }
        if (s_dec_field (d, f, base, &o->via.array.ptr[i])) {
            char tmp[512];
            snprintf (tmp, sizeof tmp, "%s%s", f->name, d->why);
            snprintf (d->why, d->whylen, "%s", tmp);
            return -1;
        }
    }
    return 0;
}

//  Into `zone`, which the caller keeps: the checked bytes are one object.
static int s_decode_in (const proto_record_t *rec, const uint8_t *bytes, size_t size, void *out,
                        msgpack_zone *zone, char *why, size_t whylen)
{
    const char *check_why = NULL;
    if (proto_mp_check (bytes, size, &check_why)) {
        snprintf (why, whylen, "%s: bad msgpack: %s", rec->name, check_why);
        return PROTO_MALFORMED;
    }
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack ((const char *) bytes, size, &off, zone, &obj);
    if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) {
        snprintf (why, whylen, "%s: msgpack could not be unpacked", rec->name);
        return PROTO_MALFORMED;
    }
    s_dec_t d = {zone, why, whylen};
    memset (out, 0, rec->size);
    if (s_dec_record (&d, rec, out, &obj)) {
        char tmp[512];
        snprintf (tmp, sizeof tmp, "%s.%s", rec->name, why);
        snprintf (why, whylen, "%s", tmp);
        return PROTO_MALFORMED;
    }
    return PROTO_OK;
}

static int s_decode_record (const proto_record_t *rec, const uint8_t *bytes, size_t size,
                            void *out, msgpack_zone **zone_p, char *why, size_t whylen)
{
    msgpack_zone *zone = msgpack_zone_new (MSGPACK_ZONE_CHUNK_SIZE);
    if (!zone)
        palloc_fail ("msgpack zone", MSGPACK_ZONE_CHUNK_SIZE);
    int rc = s_decode_in (rec, bytes, size, out, zone, why, whylen);
    if (rc != PROTO_OK) {
        msgpack_zone_free (zone);
        zone = NULL;
    }
    *zone_p = zone;
    return rc;
}

int proto_decode (const void *data, size_t size, proto_msg_t *msg, char *why, size_t whylen)
{
    const uint8_t *bytes = data;
    memset (msg, 0, sizeof *msg);
    if (size < PROTO_HEADER_SIZE) {
        snprintf (why, whylen, "frame of %zu bytes is shorter than the header", size);
        return PROTO_MALFORMED;
    }
    if (bytes[0] != PROTO_SIG0 || bytes[1] != PROTO_SIG1) {
        snprintf (why, whylen, "bad signature %02x %02x", bytes[0], bytes[1]);
        return PROTO_MALFORMED;
    }
    if (bytes[2] != PROTO_VERSION) {
        snprintf (why, whylen, "unsupported protocol version %u (this build speaks %u)", bytes[2],
                  PROTO_VERSION);
        return PROTO_MALFORMED;
    }
    uint8_t type = bytes[3];
    if (type == 0 || type >= PROTO_TYPE_MAX || !proto_messages[type].body) {
        snprintf (why, whylen, "unknown message type %u", type);
        return PROTO_MALFORMED;
    }
    msgpack_zone *zone = NULL;
    int rc = s_decode_record (proto_messages[type].body, bytes + PROTO_HEADER_SIZE,
                              size - PROTO_HEADER_SIZE, &msg->body, &zone, why, whylen);
    if (rc != PROTO_OK)
        return rc;
    msg->type = (proto_type_t) type;
    msg->zone = zone;
    return PROTO_OK;
}

void proto_msg_release (proto_msg_t *msg)
{
    if (msg && msg->zone) {
        msgpack_zone_free (msg->zone);
        msg->zone = NULL;
    }
}

int proto_record_pack (const proto_record_t *rec, const void *body, msgpack_sbuffer *buf)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, buf, msgpack_sbuffer_write);
    return s_pack_record (&pk, rec, body);
}

int proto_record_unpack (const proto_record_t *rec, const void *data, size_t size, void *out,
                         void **zone_p, char *why, size_t whylen)
{
    msgpack_zone *zone = NULL;
    int rc = s_decode_record (rec, data, size, out, &zone, why, whylen);
    *zone_p = zone;
    return rc;
}

int proto_record_unpack_in (const proto_record_t *rec, const void *data, size_t size, void *out,
                            msgpack_zone *zone, char *why, size_t whylen)
{
    return s_decode_in (rec, data, size, out, zone, why, whylen);
}

int proto_message_decode (const void *data, size_t size, proto_message_t *out, void **zone_p,
                          char *why, size_t whylen)
{
    msgpack_zone *zone = NULL;
    int rc = s_decode_record (&proto_message_record, data, size, out, &zone, why, whylen);
    *zone_p = zone;
    return rc;
}

void proto_zone_free (void **zone_p)
{
    if (zone_p && *zone_p) {
        msgpack_zone_free (*zone_p);
        *zone_p = NULL;
    }
}

const char *proto_type_name (int type)
{
    if (type > 0 && type < PROTO_TYPE_MAX && proto_messages[type].name)
        return proto_messages[type].name;
    return "?";
}

//  --- reference ----------------------------------------------------------------------

static const char *s_ftype_name (const proto_field_t *f, char *buf, size_t len)
{
    switch (f->type) {
    case PF_UINT:
        if (f->max == UINT64_MAX)
            snprintf (buf, len, "uint64");
        else if (f->max == UINT32_MAX)
            snprintf (buf, len, "uint32");
        else
            snprintf (buf, len, "uint (0..%llu)", (unsigned long long) f->max);
        break;
    case PF_F64: snprintf (buf, len, "float64"); break;
    case PF_STR: snprintf (buf, len, "str (UTF-8, <= %llu bytes)", (unsigned long long) f->max); break;
    case PF_BIN: snprintf (buf, len, "bin (<= %llu bytes)", (unsigned long long) f->max); break;
    case PF_STRS: snprintf (buf, len, "array of str (<= %llu)", (unsigned long long) f->max); break;
    case PF_LIST:
        snprintf (buf, len, "array of %s (<= %llu)", f->record->name, (unsigned long long) f->max);
        break;
    case PF_NUMS: snprintf (buf, len, "map str -> number (<= %llu)", (unsigned long long) f->max); break;
    }
    return buf;
}

static void s_write_fields (FILE *out, const proto_record_t *rec)
{
    fprintf (out, "| # | field | type | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < rec->count; i++) {
        char type[96];
        fprintf (out, "| %zu | `%s` | %s | %s%s |\n", i, rec->fields[i].name,
                 s_ftype_name (&rec->fields[i], type, sizeof type), rec->fields[i].doc,
                 rec->fields[i].optional ? " (optional)" : "");
    }
}

static void s_collect_records (const proto_record_t *rec, const proto_record_t **seen, size_t *n)
{
    for (size_t i = 0; i < rec->count; i++) {
        const proto_record_t *sub = rec->fields[i].record;
        if (!sub)
            continue;
        bool known = false;
        for (size_t j = 0; j < *n; j++)
            known |= seen[j] == sub;
        if (!known) {
            seen[(*n)++] = sub;
            s_collect_records (sub, seen, n);
        }
    }
}

void proto_write_reference (FILE *out)
{
    const proto_record_t *records[64];
    size_t nrec = 0;
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        const proto_message_def_t *m = &proto_messages[t];
        fprintf (out, "\n### %s (type %d, %s)\n\n%s\n\n", m->name, t, m->route, m->doc);
        s_write_fields (out, m->body);
        s_collect_records (m->body, records, &nrec);
    }
    records[nrec++] = &proto_message_record;
    s_collect_records (&proto_message_record, records, &nrec);
    for (size_t i = 0; i < nrec; i++) {
        fprintf (out, "\n### record %s\n\n%s\n\n", records[i]->name, records[i]->doc);
        s_write_fields (out, records[i]);
    }
}
