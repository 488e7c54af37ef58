/*  store_load - the broker's durable state read back at start-up. See store.h.

    The journal replays every record in the order written. Each is decoded
    by its table, as strictly as the network decodes messages; what cannot
    be used is quarantined. Jobs and dead letters go to the owner as they
    come; finished pairs within the retention go into the done set. Pauses
    and reservations are collected and handed over at the end: the entities
    still paused, and the reservations not released, oldest first, only
    the last hour's.
*/
#include "broker/store_int.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/ptable.h"

#include <inttypes.h>

//  --- loading ------------------------------------------------------------------------------------

typedef struct {
    store_t *self;
    const store_callbacks_t *fns;
    void *arg;
    int64_t now;
    int64_t retention_ms;
    ptable_t *resv;             //  job id -> store_resv_t*, while loading
    msgpack_zone *zone;         //  what a record decodes into, cleared for the next
} s_load_t;

static const void *s_resv_key (const void *item)
{
    return &((const store_resv_t *) item)->job_id;
}

static bool s_resv_match (const void *item, const void *key)
{
    return ((const store_resv_t *) item)->job_id == *(const uint64_t *) key;
}

static void s_resv_free (store_resv_t *r)
{
    free (r->entity);
    free (r->chat);
    free (r->chat_kind);
    free (r);
}

static int s_replay (void *arg, uint64_t seg, uint8_t type, const void *data, size_t len, char *reason,
                     size_t rlen)
{
    s_load_t *load = arg;
    store_t *self = load->self;
    const proto_record_t *rec = type == R_META                       ? &store__rec_meta
                                : type == R_JOB                      ? &store__rec_job
                                : type == R_DONE || type == R_FORGET ? &store__rec_done
                                : type == R_RESERVE                  ? &store__rec_reserve
                                : type == R_DEAD                     ? &store__rec_dead
                                : type == R_PAUSE                    ? &store__rec_pause
                                : type == R_JOB_GONE || type == R_UNRESERVE || type == R_DEAD_GONE
                                    ? &store__rec_id
                                    : NULL;
    if (!rec) {
        snprintf (reason, rlen, "unknown record type %u", type);
        return -1;
    }
    union {
        rec_meta_t meta;
        rec_job_t job;
        rec_id_t id;
        rec_done_t done;
        rec_reserve_t resv;
        rec_dead_t dead;
        rec_pause_t pause;
    } r;
    //  One zone for every record: a zone of its own is a malloc of 8 KiB each.
    msgpack_zone_clear (load->zone);
    char why[300];
    if (proto_record_unpack_in (rec, data, len, &r, load->zone, why, sizeof why) != PROTO_OK) {
        snprintf (reason, rlen, "%s", why);
        return -1;
    }
    int rc = 0;
    switch (type) {
    case R_META:
        if (r.meta.epoch > self->epoch)
            self->epoch = r.meta.epoch;
        store_set_last_job_id (self, r.meta.last_job_id);
        break;
    case R_JOB: {
        if (!*r.job.entity || !*r.job.msg_key || !*r.job.chat) {
            snprintf (reason, rlen, "job %" PRIu64 ": empty entity, message key or chat", r.job.id);
            rc = -1;
            break;
        }
        store_job_t j = {r.job.id,        r.job.entity,     r.job.msg_key,    r.job.chat,
                         r.job.chat_kind, (int) r.job.priority, (int64_t) r.job.created_ms,
                         (int64_t) r.job.enqueued_ms, (int64_t) r.job.not_before,
                         (int64_t) r.job.expires_ms, (uint32_t) r.job.attempt,
                         (uint32_t) r.job.failures, (uint32_t) r.job.crashes, r.job.committed != 0,
                         r.job.token, r.job.payload.data, r.job.payload.size, r.job.history};
        store_set_last_job_id (self, j.id);
        load->fns->job (load->arg, &j, seg);
        break;
    }
    case R_JOB_GONE: load->fns->job_gone (load->arg, r.id.id); break;
    case R_DONE: {
        if ((int64_t) r.done.at <= load->now - load->retention_ms)
            break;      //  too old to matter
        pkey_fp_t fp = {r.done.hi, r.done.lo};
        uint32_t old;
        if (pseen_remove (self->done, fp, &old) && old)
            pjournal_unref (self->journal, old);     //  a newer copy (migrated)
        pseen_add (self->done, fp, (int64_t) r.done.at, (uint32_t) seg);
        pjournal_ref (self->journal, seg);
        break;
    }
    case R_FORGET: {
        uint32_t old;
        pkey_fp_t fp = {r.done.hi, r.done.lo};
        if (pseen_remove (self->done, fp, &old) && old)
            pjournal_unref (self->journal, old);
        break;
    }
    case R_RESERVE: {
        if ((int64_t) r.resv.at <= load->now - RESERVATION_MS)
            break;      //  older than the rate history needs
        store_resv_t *e = ptable_lookup (load->resv, &r.resv.job_id);
        if (!e) {
            e = pcalloc (1, sizeof *e);
            e->job_id = r.resv.job_id;
            ptable_insert (load->resv, e);
        }
        else {
            free (e->entity);
            free (e->chat);
            free (e->chat_kind);
            pjournal_unref (self->journal, e->segment);
        }
        //  Referenced now, while loading: the load deletes the segments
        //  nothing references when it ends.
        pjournal_ref (self->journal, seg);
        e->at = (int64_t) r.resv.at;
        e->segment = seg;
        e->entity = pstrdup (r.resv.entity);
        e->chat = pstrdup (r.resv.chat);
        e->chat_kind = pstrdup (r.resv.chat_kind);
        break;
    }
    case R_UNRESERVE: {
        store_resv_t *e = ptable_remove (load->resv, &r.id.id);
        if (e) {
            pjournal_unref (self->journal, e->segment);
            s_resv_free (e);
        }
        break;
    }
    case R_DEAD: {
        store_dead_t d = {r.dead.id,          r.dead.msg_key,  r.dead.entity, r.dead.chat,
                          r.dead.chat_kind,   (int) r.dead.priority, r.dead.maybe_posted != 0,
                          (int64_t) r.dead.created_ms, (int64_t) r.dead.dead_at,
                          (uint32_t) r.dead.attempts, r.dead.reason, r.dead.history,
                          r.dead.payload.data, r.dead.payload.size};
        load->fns->dead (load->arg, &d, seg);
        break;
    }
    case R_DEAD_GONE: load->fns->dead_gone (load->arg, r.id.id); break;
    case R_PAUSE: {
        store_pause_t *p = store__pause_entry (self, r.pause.entity);
        if (r.pause.paused) {
            p->anchor.kind = ANCHOR_PAUSE;
            pjournal_anchor_set (self->journal, &p->anchor.journal, seg);
        }
        else
            pjournal_anchor_clear (self->journal, &p->anchor.journal);
        break;
    }
    default: break;
    }
    if (rc)
        self->quarantined++;
    return rc;
}

static int s_by_time (const void *a, const void *b)
{
    const store_resv_t *x = *(const store_resv_t *const *) a, *y = *(const store_resv_t *const *) b;
    return x->at < y->at ? -1 : x->at > y->at;
}

int store_load (store_t *self, int64_t now, int64_t retention_ms, const store_callbacks_t *fns,
                void *arg)
{
    assert (self->done);
    s_load_t load = {self, fns, arg, now, retention_ms,
                     ptable_new (ptable_hash_u64, s_resv_key, s_resv_match),
                     msgpack_zone_new (MSGPACK_ZONE_CHUNK_SIZE)};
    if (!load.zone)
        palloc_fail ("msgpack zone", MSGPACK_ZONE_CHUNK_SIZE);
    pjournal_stats_t before;
    pjournal_stats (self->journal, &before);
    int rc = pjournal_load (self->journal, s_replay, &load);
    pjournal_stats_t after;
    pjournal_stats (self->journal, &after);
    self->quarantined = after.quarantined;
    if (after.quarantined)
        plog_warn ("storage: %" PRIu64 " record(s) could not be loaded and were kept in %s/quarantine.pj",
                   after.quarantined, pjournal_path (self->journal));
    //  The last hour's rate history, oldest first (limit logs need that order).
    size_t n = ptable_size (load.resv), k = 0, cursor = 0;
    store_resv_t **list = pcalloc (n + 1, sizeof (store_resv_t *));
    store_resv_t *e;
    while ((e = ptable_next (load.resv, &cursor)))
        list[k++] = e;
    qsort (list, k, sizeof (store_resv_t *), s_by_time);
    for (size_t i = 0; i < k; i++) {
        e = list[i];
        if (e->at > now - RESERVATION_MS) {
            fns->reservation (arg, e->at, e->entity, e->chat, e->chat_kind);
            store__resv_push (self, e->job_id, e->at, e->segment);     //  keeps its reference
        }
        else
            pjournal_unref (self->journal, e->segment);
        s_resv_free (e);
    }
    free (list);
    ptable_destroy (&load.resv);
    msgpack_zone_free (load.zone);
    for (size_t i = 0; i < self->pause_count; i++)
        if (self->pauses[i].anchor.journal.segment)
            fns->paused (arg, self->pauses[i].entity, true);
    self->last_job_id += ID_BLOCK;
    return rc;
}

void store_anchor_loaded (store_t *self, store_anchor_t *anchor, store_anchor_kind_t kind,
                          uint64_t segment)
{
    anchor->kind = (uint8_t) kind;
    pjournal_anchor_set (self->journal, &anchor->journal, segment);
}

void store_anchor_drop (store_t *self, store_anchor_t *anchor)
{
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

uint64_t store_quarantined (store_t *self)
{
    return self->quarantined;
}
