/*  intake - results waiting for the broker's verdict. See intake.h. */
#include "sink/intake.h"
#include "common/palloc.h"

#include <czmq.h>
#include <inttypes.h>

struct intake_s {
    size_t max;
    zhashx_t *results;          //  "job_id:token" -> intake_result_t
};

static void s_key (char *key, size_t len, uint64_t job_id, uint64_t token)
{
    snprintf (key, len, "%" PRIu64 ":%" PRIx64, job_id, token);
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
    self->results = zhashx_new ();     //  no destructor: taking a result out keeps it
    return self;
}

void intake_destroy (intake_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    intake_t *self = *self_p;
    for (intake_result_t *r = zhashx_first (self->results); r; r = zhashx_next (self->results))
        intake_result_free (&r);
    zhashx_destroy (&self->results);
    free (self);
    *self_p = NULL;
}

int intake_put (intake_t *self, intake_result_t *r)
{
    assert (self);
    char key[48];
    s_key (key, sizeof key, r->job_id, r->token);
    int rc = INTAKE_ADDED;
    if (zhashx_lookup (self->results, key))
        rc = INTAKE_REPEATED;
    else if (zhashx_size (self->results) >= self->max)
        rc = INTAKE_OVERFLOW;
    if (rc != INTAKE_ADDED)
        intake_result_free (&r);
    else
        zhashx_insert (self->results, key, r);
    return rc;
}

int intake_add (intake_t *self, const proto_result_item_t *item, int64_t now)
{
    assert (self);
    char key[48];
    s_key (key, sizeof key, item->job_id, item->token);
    if (zhashx_lookup (self->results, key))
        return INTAKE_REPEATED;
    if (zhashx_size (self->results) >= self->max)
        return INTAKE_OVERFLOW;
    intake_result_t *r = pcalloc (1, sizeof *r);
    r->job_id = item->job_id;
    r->token = item->token;
    r->text = pstrdup (item->text);
    r->llm_ms = item->llm_ms;
    r->tokens = item->tokens;
    r->received_at = now;
    zhashx_insert (self->results, key, r);
    return INTAKE_ADDED;
}

intake_result_t *intake_take (intake_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    char key[48];
    s_key (key, sizeof key, job_id, token);
    intake_result_t *r = zhashx_lookup (self->results, key);
    if (r)
        zhashx_delete (self->results, key);
    return r;
}

bool intake_has (intake_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    char key[48];
    s_key (key, sizeof key, job_id, token);
    return zhashx_lookup (self->results, key) != NULL;
}

size_t intake_size (intake_t *self)
{
    assert (self);
    return zhashx_size (self->results);
}
