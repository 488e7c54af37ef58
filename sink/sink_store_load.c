/*  sink_store_load - the sink's state read back from its journal after a
    restart. See sink_store.h.

    Every record is replayed in the order it was written: the latest
    record of a mark is the one that counts, a FORGET voids it, and the
    posts of the last hour are gathered to be handed over oldest first.
*/
#include "sink/sink_store_int.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --- loading ------------------------------------------------------------------------------

//  A post of the last hour, kept while loading to be replayed in time order.
typedef struct {
    int64_t at;
    bool doubt;
    char *chat, *chat_kind;     //  one block with the entity
    char entity[];
} s_recent_t;

typedef struct {
    sink_store_t *self;
    int64_t now;
    int64_t retention_ms;
    uint64_t order;
    s_recent_t **recent;
    size_t recent_count, recent_capacity;
} s_load_t;

static void s_load_pair (s_load_t *load, uint64_t seg, uint8_t type, const rec_posted_t *r)
{
    sink_store_t *self = load->self;
    int64_t at = (int64_t) r->at;
    pkey_fp_t fp = {r->hi, r->lo};
    bool doubt = type == R_DOUBTED;
    if (*r->entity && at > load->now - RATE_HISTORY_MS) {
        size_t le = strlen (r->entity) + 1, lc = strlen (r->chat) + 1,
               lk = strlen (r->chat_kind) + 1;
        s_recent_t *e = pmalloc (sizeof *e + le + lc + lk);
        e->at = at;
        e->doubt = doubt;
        memcpy (e->entity, r->entity, le);
        e->chat = e->entity + le;
        memcpy (e->chat, r->chat, lc);
        e->chat_kind = e->chat + lc;
        memcpy (e->chat_kind, r->chat_kind, lk);
        load->recent = pgrow (load->recent, &load->recent_capacity, load->recent_count + 1,
                              sizeof (s_recent_t *));
        load->recent[load->recent_count++] = e;
        sink_store__pin (self, seg, at);
    }
    if (at <= load->now - load->retention_ms)
        return;     //  too old to matter
    //  As the ledger does: a posted pair is no longer in doubt; a newer copy replaces an older.
    uint32_t old;
    if (!doubt && pseen_remove (self->doubted, fp, &old) && old)
        pjournal_unref (self->journal, old);
    pseen_t *set = doubt ? self->doubted : self->posted;
    if (pseen_remove (set, fp, &old) && old)
        pjournal_unref (self->journal, old);
    pjournal_ref (self->journal, seg);
    pseen_add (set, fp, at, (uint32_t) seg);
}

static int s_replay (void *arg, uint64_t seg, uint8_t type, const void *data, size_t len,
                     char *reason, size_t rlen)
{
    s_load_t *load = arg;
    sink_store_t *self = load->self;
    const proto_record_t *rec = type == R_MARK      ? &sink_store__mark_record
                                : type == R_OUTCOME ? &sink_store__outcome_record
                                : type == R_FORGET  ? &sink_store__pair_record
                                : type == R_POSTED || type == R_DOUBTED ? &sink_store__posted_record
                                                                        : NULL;
    if (!rec) {
        snprintf (reason, rlen, "unknown record type %u", type);
        return -1;
    }
    union {
        rec_mark_t mark;
        rec_outcome_t outcome;
        rec_pair_t pair;
        rec_posted_t posted;
    } r;
    void *zone = NULL;
    char why[300];
    if (proto_record_unpack (rec, data, len, &r, &zone, why, sizeof why) != PROTO_OK) {
        snprintf (reason, rlen, "%s record: %s", rec->name, why);
        return -1;
    }
    //  Every record of this store starts with the pair.
    pkey_fp_t pair = {r.pair.hi, r.pair.lo};
    int rc = 0;
    switch (type) {
    case R_MARK: {
        const rec_mark_t *k = &r.mark;
        if (!*k->msg_key || !*k->entity || !*k->chat
            || !pkey_fp_equal (pair, pkey_pair_fp (k->entity, k->msg_key))) {
            snprintf (reason, rlen,
                      "mark of pair %016" PRIx64 "%016" PRIx64 " (job %" PRIu64 "): its entity "
                      "and message key are empty or do not make its pair",
                      pair.hi, pair.lo, k->job_id);
            rc = -1;
            break;
        }
        sink_store_mark_t *m = sink_store__mark_get (self, pair);
        m->job_id = k->job_id;
        m->token = k->token;
        sink_store__mark_strings (m, k->msg_key, k->entity, k->chat, k->chat_kind, k->text);
        sink_store__mark_payload (m, k->payload.data, k->payload.size);
        m->priority = (int) k->priority;
        m->created_ms = (int64_t) k->created_ms;
        m->expires_ms = (int64_t) k->expires_ms;
        m->llm_ms = k->llm_ms;
        m->tokens = k->tokens;
        m->marked_at = (int64_t) k->marked_at;
        m->first_at = (int64_t) k->first_at;
        m->outcome = SINK_NO_OUTCOME;
        free (m->reason);
        m->reason = NULL;
        m->outcome_at = 0;
        m->order = ++load->order;
        pjournal_anchor_set (self->journal, &m->anchor, seg);
        break;
    }
    case R_OUTCOME: {
        const rec_outcome_t *o = &r.outcome;
        sink_store_mark_t *m = sink_store__mark_get (self, pair);
        m->job_id = o->job_id;
        m->token = o->token;
        sink_store__mark_strings (m, "", o->entity, o->chat, o->chat_kind, "");
        sink_store__mark_payload (m, NULL, 0);
        m->priority = 0;
        m->created_ms = m->expires_ms = 0;
        m->llm_ms = m->tokens = 0;
        m->marked_at = (int64_t) o->marked_at;
        m->first_at = (int64_t) o->first_at;
        m->outcome = (int) o->outcome;
        free (m->reason);
        m->reason = pstrdup (o->reason);
        m->outcome_at = (int64_t) o->outcome_at;
        m->order = ++load->order;
        pjournal_anchor_set (self->journal, &m->anchor, seg);
        break;
    }
    case R_FORGET: {
        sink_store_mark_t *m = sink_store__mark_find (self, pair);
        if (m)
            sink_store__mark_free (self, m);
        break;
    }
    default: s_load_pair (load, seg, type, &r.posted); break;
    }
    proto_zone_free (&zone);
    return rc;
}

static int s_recent_by_time (const void *a, const void *b)
{
    const s_recent_t *x = *(const s_recent_t *const *) a, *y = *(const s_recent_t *const *) b;
    return x->at < y->at ? -1 : x->at > y->at;
}

static int s_mark_by_time (const void *a, const void *b)
{
    const sink_store_mark_t *x = *(const sink_store_mark_t *const *) a,
                            *y = *(const sink_store_mark_t *const *) b;
    if (x->marked_at != y->marked_at)
        return x->marked_at < y->marked_at ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

int sink_store_load (sink_store_t *self, int64_t now, int64_t retention_ms, void *arg,
                     sink_store_mark_fn *mark_fn, sink_store_posted_fn *posted_fn)
{
    assert (self);
    assert (self->posted && self->doubted);
    s_load_t load = {self, now, retention_ms, 0, NULL, 0, 0};
    int rc = pjournal_load (self->journal, s_replay, &load);
    pjournal_stats_t stats;
    pjournal_stats (self->journal, &stats);
    self->quarantined = stats.quarantined;
    if (self->quarantined)
        plog_warn ("storage: %" PRIu64 " record(s) could not be loaded and were kept in "
                   "%s/quarantine.pj",
                   self->quarantined, pjournal_path (self->journal));
    //  The rate history, oldest first (limit logs need that order).
    if (load.recent_count)
        qsort (load.recent, load.recent_count, sizeof (s_recent_t *), s_recent_by_time);
    for (size_t i = 0; i < load.recent_count; i++) {
        s_recent_t *e = load.recent[i];
        if (rc == 0) {
            sink_posted_t p = {{0, 0}, e->entity, e->chat, e->chat_kind, e->at, e->doubt};
            posted_fn (arg, &p);
        }
        free (e);
    }
    free (load.recent);
    if (rc)
        return -1;
    //  Marks, in the order they were marked. The callbacks may flag or
    //  forget them, never free them: that waits for the commit.
    size_t n = ptable_size (self->marks), k = 0, cursor = 0;
    sink_store_mark_t **list = pcalloc (n + 1, sizeof (sink_store_mark_t *));
    sink_store_mark_t *m;
    while ((m = ptable_next (self->marks, &cursor)))
        list[k++] = m;
    qsort (list, k, sizeof (sink_store_mark_t *), s_mark_by_time);
    for (size_t i = 0; i < k; i++) {
        m = list[i];
        sink_mark_t view = {m->pair,       m->job_id,     m->token,      m->msg_key,
                            m->entity,     m->chat,       m->chat_kind,  m->text,
                            m->payload,    m->payload_size, m->priority, m->created_ms,
                            m->expires_ms, m->llm_ms,     m->tokens,     m->marked_at,
                            m->first_at,   m->outcome,    m->reason ? m->reason : "",
                            m->outcome_at};
        mark_fn (arg, &view);
    }
    free (list);
    return 0;
}
