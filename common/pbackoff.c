/*  pbackoff - full-jitter backoff. See pbackoff.h. */
#include "common/pbackoff.h"

#include <stdlib.h>

int64_t pbackoff_ceiling (int64_t base_ms, int64_t cap_ms, uint32_t n)
{
    if (base_ms <= 0 || cap_ms <= 0)
        return 0;
    int64_t ceiling = base_ms;
    for (uint32_t i = 1; i < n && ceiling < cap_ms; i++)
        ceiling *= 2;
    return ceiling < cap_ms ? ceiling : cap_ms;
}

int64_t pbackoff_delay (int64_t base_ms, int64_t cap_ms, uint32_t n)
{
    int64_t ceiling = pbackoff_ceiling (base_ms, cap_ms, n);
    if (ceiling <= 0)
        return 0;
    //  random () is seeded per process at start; jitter needs spread, not secrecy.
    return (int64_t) ((uint64_t) random () % (uint64_t) (ceiling + 1));
}
