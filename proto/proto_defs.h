/*  proto_defs - the form of the message and record tables.

    proto_defs.c describes the wire with it; a daemon's store describes its
    durable records the same way and codes them with proto_record.h. The
    field macros (U, S, B, L, ... RECORD) are in proto_defs_macros.h. */
#ifndef PROTO_DEFS_H_INCLUDED
#define PROTO_DEFS_H_INCLUDED

#include "proto/proto.h"

typedef enum {
    PF_UINT,    //  uint64_t, msgpack positive integer, 0..max
    PF_F64,     //  double, msgpack float or integer
    PF_STR,     //  const char *, msgpack str (UTF-8, no NUL), at most max bytes
    PF_BIN,     //  proto_bin_t, msgpack bin, at most max bytes
    PF_STRS,    //  const char ** + count, msgpack array of str
    PF_LIST,    //  record * + count, msgpack array of arrays
    PF_NUMS     //  proto_num_t * + count, msgpack map of str to number
} proto_ftype_t;

typedef struct proto_record_s proto_record_t;

typedef struct {
    const char *name;
    proto_ftype_t type;
    size_t offset;                  //  of the value (or of the list pointer)
    size_t count_offset;            //  of the size_t count, for lists
    uint64_t max;                   //  bound: value, bytes or items
    const proto_record_t *record;   //  element of a PF_LIST
    bool optional;                  //  may be missing at the end of the array
    const char *doc;
} proto_field_t;

struct proto_record_s {
    const char *name;
    size_t size;
    const proto_field_t *fields;
    size_t count;
    const char *doc;
};

typedef struct {
    proto_type_t type;
    const char *name;
    const char *route;              //  who sends it to whom
    const proto_record_t *body;
    const char *doc;
} proto_message_def_t;

extern const proto_message_def_t proto_messages[PROTO_TYPE_MAX];
extern const proto_record_t proto_message_record;

#endif
