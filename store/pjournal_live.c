/*  pjournal_live - which segments are still needed: refs, anchors, and
    when copying the few live objects out of the oldest segment pays
    (migration). See pjournal.h.

    A segment is deleted (pjournal.c) once nothing here holds it.
*/
#include "store/pjournal_int.h"

#include <assert.h>

//  ---------------------------------------------------------------------------
//  Liveness

//  The segment with this id, or NULL. Binary search: ids increase but may
//  have gaps (a file removed at load).
static pjournal_segment_t *s_segment_find (pjournal_t *self, uint64_t id)
{
    if (self->nsegments && self->segments[self->nsegments - 1]->id == id)
        return self->segments[self->nsegments - 1];
    size_t lo = 0, hi = self->nsegments;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t at = self->segments[mid]->id;
        if (at == id)
            return self->segments[mid];
        if (at < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static pjournal_segment_t *s_segment_get (pjournal_t *self, uint64_t segment)
{
    pjournal_segment_t *seg = s_segment_find (self, segment);
    //  A ref on a segment that is gone means the owner's bookkeeping is
    //  wrong, and segments may already have been deleted under live data.
    assert (seg);
    return seg;
}

void pjournal_ref (pjournal_t *self, uint64_t segment)
{
    assert (self);
    s_segment_get (self, segment)->refs++;
}

void pjournal_unref (pjournal_t *self, uint64_t segment)
{
    assert (self);
    pjournal_segment_t *seg = s_segment_get (self, segment);
    assert (seg->refs > 0);
    seg->refs--;
}

void pjournal_anchor_set (pjournal_t *self, pjournal_anchor_t *anchor, uint64_t segment)
{
    assert (self);
    assert (anchor);
    if (anchor->segment == segment)
        return;
    if (segment == 0) {
        pjournal_anchor_clear (self, anchor);
        return;
    }
    pjournal_segment_t *to = s_segment_get (self, segment);
    pjournal_anchor_clear (self, anchor);
    anchor->segment = segment;
    anchor->prev = NULL;
    anchor->next = to->anchors;
    if (to->anchors)
        to->anchors->prev = anchor;
    to->anchors = anchor;
    to->refs++;
}

void pjournal_anchor_clear (pjournal_t *self, pjournal_anchor_t *anchor)
{
    assert (self);
    assert (anchor);
    if (anchor->segment == 0)
        return;
    pjournal_segment_t *from = s_segment_get (self, anchor->segment);
    if (anchor->prev)
        anchor->prev->next = anchor->next;
    else
        from->anchors = anchor->next;
    if (anchor->next)
        anchor->next->prev = anchor->prev;
    assert (from->refs > 0);
    from->refs--;
    anchor->segment = 0;
    anchor->prev = anchor->next = NULL;
}

pjournal_anchor_t *pjournal_anchor_first (pjournal_t *self, uint64_t segment)
{
    assert (self);
    pjournal_segment_t *seg = s_segment_find (self, segment);
    return seg ? seg->anchors : NULL;
}

int pjournal_oldest (pjournal_t *self, uint64_t *segment, uint64_t *refs)
{
    assert (self);
    if (self->nsegments == 0)
        return -1;
    if (segment)
        *segment = self->segments[0]->id;
    if (refs)
        *refs = self->segments[0]->refs;
    return 0;
}

//  The live bytes of a segment, estimated: its records' bytes times the
//  share of them that is referenced (the engine does not know which).
static uint64_t s_live_bytes (const pjournal_segment_t *seg)
{
    uint64_t bytes = seg->bytes + seg->pending;
    if (!seg->records || bytes <= PJOURNAL_HEADER_BYTES)
        return 0;
    uint64_t refs = seg->refs < seg->records ? seg->refs : seg->records;
    return (uint64_t) ((double) (bytes - PJOURNAL_HEADER_BYTES) * (double) refs
                       / (double) seg->records);
}

bool pjournal_wants_migration (pjournal_t *self, uint64_t *segment)
{
    assert (self);
    //  The one being written never moves; a dead oldest goes by itself.
    if (self->nsegments < 2 || self->segments[0]->refs == 0)
        return false;
    uint64_t total = 0, live = 0;
    for (size_t i = 0; i < self->nsegments; i++) {
        total += self->segments[i]->bytes + self->segments[i]->pending;
        live += s_live_bytes (self->segments[i]);
    }
    uint64_t waste = total - live;
    if (waste <= (uint64_t) PJOURNAL_MIGRATE_SLACK_SEGMENTS * self->segment_bytes || waste <= live)
        return false;
    if (segment)
        *segment = self->segments[0]->id;
    return true;
}

uint64_t pjournal_refs (pjournal_t *self, uint64_t segment)
{
    assert (self);
    pjournal_segment_t *seg = s_segment_find (self, segment);
    return seg ? seg->refs : 0;
}

bool pjournal_segment_exists (pjournal_t *self, uint64_t segment)
{
    assert (self);
    return s_segment_find (self, segment) != NULL;
}
