/*  palloc - allocation that aborts on failure. See palloc.h. */
#include "common/palloc.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void palloc_fail (const char *what, size_t size)
{
    //  No stdio buffers, no further allocation: a fixed message and abort.
    char line[200];
    int n = snprintf (line, sizeof line, "parley: out of memory (%s of %zu bytes); aborting\n",
                      what, size);
    if (n > 0) {
        ssize_t rc = write (2, line, (size_t) n < sizeof line ? (size_t) n : sizeof line - 1);
        (void) rc;
    }
    abort ();
}

void *pmalloc (size_t size)
{
    void *p = malloc (size ? size : 1);
    if (!p)
        palloc_fail ("malloc", size);
    return p;
}

void *pcalloc (size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        palloc_fail ("calloc (overflow)", SIZE_MAX);
    void *p = calloc (count ? count : 1, size ? size : 1);
    if (!p)
        palloc_fail ("calloc", count * size);
    return p;
}

#define HUGE_PAGE (2u << 20)

void *pcalloc_table (size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        palloc_fail ("calloc (overflow)", SIZE_MAX);
    size_t bytes = count * size;
    if (bytes < HUGE_PAGE)
        return pcalloc (count, size);
    bytes = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc (HUGE_PAGE, bytes);
    if (!p)
        palloc_fail ("aligned_alloc", bytes);
#ifdef MADV_HUGEPAGE
    //  Advice only: without transparent huge pages this changes nothing.
    (void) madvise (p, bytes, MADV_HUGEPAGE);
#endif
    memset (p, 0, bytes);
    return p;
}

void *prealloc (void *ptr, size_t size)
{
    void *p = realloc (ptr, size ? size : 1);
    if (!p)
        palloc_fail ("realloc", size);
    return p;
}

char *pstrdup (const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen (s);
    char *p = pmalloc (n + 1);
    memcpy (p, s, n + 1);
    return p;
}

char *pstrndup (const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen (s, n);
    char *p = pmalloc (len + 1);
    memcpy (p, s, len);
    p[len] = 0;
    return p;
}

void *pmemdup (const void *data, size_t size)
{
    void *p = pmalloc (size);
    if (size)
        memcpy (p, data, size);
    return p;
}

void *pgrow (void *items, size_t *capacity, size_t need, size_t size)
{
    if (need <= *capacity)
        return items;
    size_t cap = *capacity ? *capacity : 16;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / (size ? size : 1))
            palloc_fail ("growing array", SIZE_MAX);
        cap *= 2;
    }
    items = prealloc (items, cap * size);
    *capacity = cap;
    return items;
}

void palloc_install (void)
{
    json_set_alloc_funcs (pmalloc, free);
}
