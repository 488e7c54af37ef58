/*  pbackoff - exponential backoff with full jitter, the one formula every
    retry in Parley uses (jobs at the broker, posts at the sink, SUBMITs the
    broker refused as busy, reconnects of sources).

    The n-th retry (n = 1, 2, ...) waits a uniform random time in
    [0, min(cap, base * 2^(n-1))]: retries spread out instead of arriving
    together, as "full jitter" in AWS's architecture note recommends.
*/
#ifndef PBACKOFF_H_INCLUDED
#define PBACKOFF_H_INCLUDED

#include <stdint.h>

//  The ceiling for retry `n`: min(cap, base * 2^(n-1)).
int64_t pbackoff_ceiling (int64_t base_ms, int64_t cap_ms, uint32_t n);
//  A delay for retry `n`, uniform in [0, ceiling].
int64_t pbackoff_delay (int64_t base_ms, int64_t cap_ms, uint32_t n);

#endif
