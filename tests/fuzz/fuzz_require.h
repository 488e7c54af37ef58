/*  fuzz_require - what a fuzz target's checks share. */
#ifndef FUZZ_REQUIRE_H_INCLUDED
#define FUZZ_REQUIRE_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

//  Aborts (a finding) with what was wrong.
#define FUZZ_REQUIRE(cond, what)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf (stderr, "fuzz check failed: %s (%s:%d)\n", what, __FILE__, __LINE__);         \
            abort ();                                                                              \
        }                                                                                          \
    } while (0)

#endif
