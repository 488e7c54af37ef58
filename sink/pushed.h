/*  pushed - post verdicts the broker pushed at dispatch, waiting for their
    results.

    With each JOB frame the broker sends the sink a VERDICT (seq 0) that
    answers, ahead of time, the COMMIT the sink would send for each job's
    result: post, with the job's fields. When the worker's RESULT for that
    (job, token) arrives, the sink takes the verdict from here and posts at
    once: the reply is two hops nearer its message.

    One verdict per job: a newer dispatch's verdict replaces an older one,
    so a result of an older attempt finds none and is asked about (and
    refused) as before. Bounded like the results waiting for a verdict
    (queueSettings.maxPendingResults; the oldest goes first) and kept for at
    most `keep_ms` (a result later than that is asked about). Losing one
    costs a COMMIT, never a post: nothing here is stored.
*/
#ifndef PUSHED_H_INCLUDED
#define PUSHED_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

typedef struct pushed_s pushed_t;

//  A verdict taken out: `item` points into the record. Free with pushed_free.
typedef struct pushed_verdict_s pushed_verdict_t;

pushed_t *pushed_new (size_t max, int64_t keep_ms);
void pushed_destroy (pushed_t **self_p);

//  Keeps a copy of a post verdict (replacing the job's older one).
void pushed_put (pushed_t *self, const proto_verdict_item_t *item, int64_t now);
//  The verdict for (job_id, token), taken out, or NULL.
pushed_verdict_t *pushed_take (pushed_t *self, uint64_t job_id, uint64_t token);
const proto_verdict_item_t *pushed_item (const pushed_verdict_t *verdict);
void pushed_free (pushed_verdict_t **verdict_p);

//  Drops what is older than keep_ms.
void pushed_expire (pushed_t *self, int64_t now);
size_t pushed_size (pushed_t *self);

#endif
