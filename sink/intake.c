/*  intake - results waiting for the broker's verdict. See intake.h. */
#include "sink/intake.h"
#include "common/palloc.h"
#include "common/ptable.h"

#include <assert.h>
#include <stddef.h>

_Static_assert (offsetof (intake_result_t, token) == offsetof (intake_result_t, job_id) + 8,
                "the table's key is (job_id, token), adjacent");

struct intake_s {
    size_t max;
    ptable_t *results;          //  (job_id, token) -> intake_result_t (owns them)
};

//  The table's key is the result's own (job_id, token), two adjacent fields.
static const void *s_key_of (const void *item)
{
    return &((const intake_result_t *) item)->job_id;
}

static bool s_match (const void *item, const void *key)
{
    return ptable_u64x2_equal (s_key_of (item), key);
}

void intake_result_free (intake_result_t **result_p)
{
    intake_result_t *r = *result_p;
    if (!r)
        return;
    free (r->text);
    free (r);
    *result_p = NULL;
}

intake_t *intake_new (size_t max)
{
    intake_t *self = pcalloc (1, sizeof *self);
    self->max = max;
    self->results = ptable_new (ptable_hash_u64x2, s_key_of, s_match);
    return self;
}

void intake_destroy (intake_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    intake_t *self = *self_p;
    size_t cursor = 0;
    intake_result_t *r;
    while ((r = ptable_next (self->results, &cursor)))
        intake_result_free (&r);
    ptable_destroy (&self->results);
    free (self);
    *self_p = NULL;
}

static intake_result_t *s_find (intake_t *self, uint64_t job_id, uint64_t token)
{
    ptable_u64x2_t key = {job_id, token};
    return ptable_lookup (self->results, &key);
}

int intake_put (intake_t *self, intake_result_t *r)
{
    assert (self);
    int rc = INTAKE_ADDED;
    if (s_find (self, r->job_id, r->token))
        rc = INTAKE_REPEATED;
    else if (ptable_size (self->results) >= self->max)
        rc = INTAKE_OVERFLOW;
    if (rc != INTAKE_ADDED)
        intake_result_free (&r);
    else
        ptable_insert (self->results, r);
    return rc;
}

int intake_add (intake_t *self, const proto_result_item_t *item, int64_t now)
{
    assert (self);
    if (s_find (self, item->job_id, item->token))
        return INTAKE_REPEATED;
    if (ptable_size (self->results) >= self->max)
        return INTAKE_OVERFLOW;
    intake_result_t *r = pcalloc (1, sizeof *r);
    r->job_id = item->job_id;
    r->token = item->token;
    r->text = pstrdup (item->text);
    r->llm_ms = item->llm_ms;
    r->tokens = item->tokens;
    r->received_at = now;
    ptable_insert (self->results, r);
    return INTAKE_ADDED;
}

intake_result_t *intake_take (intake_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    ptable_u64x2_t key = {job_id, token};
    return ptable_remove (self->results, &key);
}

bool intake_has (intake_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    return s_find (self, job_id, token) != NULL;
}

size_t intake_size (intake_t *self)
{
    assert (self);
    return ptable_size (self->results);
}
