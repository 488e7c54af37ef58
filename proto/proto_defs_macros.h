/*  proto_defs_macros - shorthand for writing record tables (proto_defs.h).

    U/OU an unsigned field (OU optional), S/OS a string, B/OB bytes, SL a
    list of strings, L/OL a list of records, N a map of numbers; RECORD
    makes the table. Optional fields may only come last.
*/
#ifndef PROTO_DEFS_MACROS_H_INCLUDED
#define PROTO_DEFS_MACROS_H_INCLUDED

#include <stddef.h>

#include "proto/proto_defs.h"

#define U(T, f, max, doc)     {#f, PF_UINT, offsetof (T, f), 0, max, NULL, false, doc}
#define OU(T, f, max, doc)    {#f, PF_UINT, offsetof (T, f), 0, max, NULL, true, doc}
#define S(T, f, max, doc)     {#f, PF_STR, offsetof (T, f), 0, max, NULL, false, doc}
#define OS(T, f, max, doc)    {#f, PF_STR, offsetof (T, f), 0, max, NULL, true, doc}
#define B(T, f, max, doc)     {#f, PF_BIN, offsetof (T, f), 0, max, NULL, false, doc}
#define SL(T, f, n, max, doc) {#f, PF_STRS, offsetof (T, f), offsetof (T, n), max, NULL, false, doc}
#define L(T, f, n, rec, max, doc)                                                                  \
    {#f, PF_LIST, offsetof (T, f), offsetof (T, n), max, &rec, false, doc}
#define OB(T, f, max, doc)    {#f, PF_BIN, offsetof (T, f), 0, max, NULL, true, doc}
#define OL(T, f, n, rec, max, doc)                                                                 \
    {#f, PF_LIST, offsetof (T, f), offsetof (T, n), max, &rec, true, doc}
#define N(T, f, n, max, doc)  {#f, PF_NUMS, offsetof (T, f), offsetof (T, n), max, NULL, false, doc}
#define RECORD(name, T, fields, doc) {name, sizeof (T), fields, sizeof (fields) / sizeof (fields[0]), doc}

#define U32   0xFFFFFFFFull
#define U64   0xFFFFFFFFFFFFFFFFull
#define KEY   PROTO_MAX_KEY
#define TEXT  PROTO_MAX_STR
#define LIST  PROTO_MAX_LIST

#endif
