/*  palloc - memory allocation with one out-of-memory policy for all of Parley.

    Parley's daemons cannot do anything sensible without memory: a half-made
    job record or a dropped acknowledgement would break the guarantees that
    durability exists for. So, as redis's zmalloc does, every allocation goes
    through these wrappers, which abort the process with a message naming the
    size when the allocator fails. Everything is durable before it is
    acknowledged, so a restart recovers cleanly from an abort.

    Nothing here returns NULL; callers never check. (czmq's own allocations
    already follow the same policy.)
*/
#ifndef PALLOC_H_INCLUDED
#define PALLOC_H_INCLUDED

#include <stddef.h>
#include <stdlib.h>     //  free ()

void *pmalloc (size_t size);
//  Zeroed memory for `count` items of `size` bytes (overflow-checked).
void *pcalloc (size_t count, size_t size);
//  Like realloc, but never returns NULL: use it as `p = prealloc (p, n)`.
void *prealloc (void *ptr, size_t size);
//  Copies of a string (NULL gives NULL), of at most `n` bytes of it, and of memory.
char *pstrdup (const char *s);
char *pstrndup (const char *s, size_t n);
void *pmemdup (const void *data, size_t size);

//  Makes room for `need` items of `size` bytes in a growing array whose
//  capacity is *capacity (grown by doubling). Returns the array.
void *pgrow (void *items, size_t *capacity, size_t need, size_t size);

//  Zeroed memory for a large table probed at random (hash slots, heaps):
//  from 2 MiB up, it is aligned and advised onto huge pages where the
//  kernel offers them, so a probe costs a cache miss but rarely also a
//  page walk. Freed with free ().
void *pcalloc_table (size_t count, size_t size);

//  Makes the libraries that let the caller choose an allocator use these
//  (jansson), so their allocations follow the same policy. Call once at
//  start, before they allocate.
void palloc_install (void);

//  The abort, for other allocators' failures (msgpack, jansson, sqlite):
//  logs what could not be allocated and where, then aborts.
void palloc_fail (const char *what, size_t size) __attribute__ ((noreturn));

#endif
