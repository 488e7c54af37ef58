/*  store - the broker's durable state on a journal. See store.h.

    This file writes; store_load.c reads the state back at start-up. The
    records they share are in store_int.h.
*/
#include "broker/store_int.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "proto/proto_defs_macros.h"
#include "proto/proto_record.h"

#include <inttypes.h>
#include <sys/stat.h>

#define MIGRATE_PER_TURN 2000       //  objects rewritten per turn at most

//  --- record tables (the on-disk forms; their structs are in store_int.h) ------------

#define KEY  PROTO_MAX_KEY
#define TEXT PROTO_MAX_STR
#define U64  0xFFFFFFFFFFFFFFFFull
#define TIME PROTO_RECORD_TIME

static const proto_field_t s_meta_fields[] = {
    U (rec_meta_t, epoch, U64, "run counter"),
    U (rec_meta_t, last_job_id, U64, "highest job id given"),
};
const proto_record_t store__rec_meta = RECORD ("META", rec_meta_t, s_meta_fields, "");

static const proto_field_t s_job_fields[] = {
    U (rec_job_t, id, U64, ""),           S (rec_job_t, entity, KEY, ""),
    S (rec_job_t, msg_key, KEY, ""),      S (rec_job_t, chat, KEY, ""),
    S (rec_job_t, chat_kind, 16, ""),     U (rec_job_t, priority, 99, ""),
    U (rec_job_t, created_ms, TIME, ""),   U (rec_job_t, enqueued_ms, TIME, ""),
    U (rec_job_t, not_before, TIME, ""),   U (rec_job_t, expires_ms, TIME, ""),
    U (rec_job_t, attempt, U64, ""),      U (rec_job_t, failures, U64, ""),
    U (rec_job_t, crashes, U64, ""),      U (rec_job_t, committed, 1, ""),
    U (rec_job_t, token, U64, ""),        B (rec_job_t, payload, TEXT, ""),
    S (rec_job_t, history, TEXT, ""),
};
const proto_record_t store__rec_job = RECORD ("JOB", rec_job_t, s_job_fields, "");

static const proto_field_t s_id_fields[] = {U (rec_id_t, id, U64, "")};
const proto_record_t store__rec_id = RECORD ("ID", rec_id_t, s_id_fields, "");

static const proto_field_t s_done_fields[] = {
    U (rec_done_t, hi, U64, ""), U (rec_done_t, lo, U64, ""), U (rec_done_t, at, TIME, ""),
};
const proto_record_t store__rec_done = RECORD ("DONE", rec_done_t, s_done_fields, "");

static const proto_field_t s_reserve_fields[] = {
    U (rec_reserve_t, job_id, U64, ""),   U (rec_reserve_t, at, TIME, ""),
    S (rec_reserve_t, entity, KEY, ""),   S (rec_reserve_t, chat, KEY, ""),
    S (rec_reserve_t, chat_kind, 16, ""),
};
const proto_record_t store__rec_reserve = RECORD ("RESERVE", rec_reserve_t, s_reserve_fields, "");

static const proto_field_t s_dead_fields[] = {
    U (rec_dead_t, id, U64, ""),            S (rec_dead_t, msg_key, KEY, ""),
    S (rec_dead_t, entity, KEY, ""),        S (rec_dead_t, chat, KEY, ""),
    S (rec_dead_t, chat_kind, 16, ""),      U (rec_dead_t, priority, 99, ""),
    U (rec_dead_t, maybe_posted, 1, ""),    U (rec_dead_t, created_ms, TIME, ""),
    U (rec_dead_t, dead_at, TIME, ""),       U (rec_dead_t, attempts, U64, ""),
    S (rec_dead_t, reason, TEXT, ""),       S (rec_dead_t, history, TEXT, ""),
    B (rec_dead_t, payload, TEXT, ""),
};
const proto_record_t store__rec_dead = RECORD ("DEAD", rec_dead_t, s_dead_fields, "");

static const proto_field_t s_pause_fields[] = {
    S (rec_pause_t, entity, KEY, ""), U (rec_pause_t, paused, 1, ""),
};
const proto_record_t store__rec_pause = RECORD ("PAUSE", rec_pause_t, s_pause_fields, "");

//  --- the store ---------------------------------------------------------------------------

static uint64_t s_append (store_t *self, uint8_t type, const proto_record_t *rec, const void *body)
{
    self->buf.size = 0;
    if (proto_record_pack (rec, body, &self->buf))
        return 0;
    return pjournal_append (self->journal, type, self->buf.data, self->buf.size);
}

static void s_put_meta (store_t *self)
{
    rec_meta_t m = {self->epoch, self->last_job_id};
    uint64_t seg = s_append (self, R_META, &store__rec_meta, &m);
    self->meta.kind = ANCHOR_META;
    pjournal_anchor_set (self->journal, &self->meta.journal, seg);
    self->stored_last_job_id = self->last_job_id;
}

store_t *store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    return store_open_sized (dir, fsync, 0, err, errlen);
}

store_t *store_open_sized (const char *dir, const char *fsync, size_t segment_bytes, char *err,
                           size_t errlen)
{
    pjournal_t *journal = pjournal_new (dir, "broker", fsync, segment_bytes, err, errlen);
    if (!journal)
        return NULL;
    store_t *self = pcalloc (1, sizeof *self);
    self->journal = journal;
    msgpack_sbuffer_init (&self->buf);
    pjournal_note_older_state (dir, "broker");
    return self;
}

void store_close (store_t **self_p)
{
    store_t *self = *self_p;
    if (!self)
        return;
    pjournal_destroy (&self->journal);
    msgpack_sbuffer_destroy (&self->buf);
    for (size_t i = 0; i < self->pause_count; i++)
        free (self->pauses[i].entity);
    free (self->pauses);
    free (self->resv);
    free (self);
    *self_p = NULL;
}

static void s_done_forgotten (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    (void) fp;
    (void) at;
    store_t *self = arg;
    if (tag)
        pjournal_unref (self->journal, tag);
}

void store_set_owner (store_t *self, store_rewrite_fn *rewrite, void *arg, pseen_t *done)
{
    self->rewrite = rewrite;
    self->owner = arg;
    self->done = done;
    pseen_on_forget (done, s_done_forgotten, self);
}

//  --- migration: empty the oldest segment into the newest ------------------------------------

typedef struct {
    store_t *self;
    uint64_t from;
} s_retag_t;

static void s_retag_done (void *arg, pkey_fp_t fp, int64_t at, uint32_t *tag)
{
    s_retag_t *r = arg;
    if (*tag != r->from)
        return;
    rec_done_t d = {fp.hi, fp.lo, (uint64_t) at};
    uint64_t seg = s_append (r->self, R_DONE, &store__rec_done, &d);
    pjournal_ref (r->self->journal, seg);
    pjournal_unref (r->self->journal, r->from);
    *tag = (uint32_t) seg;
}

static void s_put_pause (store_t *self, store_pause_t *p, bool paused)
{
    rec_pause_t r = {p->entity, paused};
    uint64_t seg = s_append (self, R_PAUSE, &store__rec_pause, &r);
    if (paused) {
        p->anchor.kind = ANCHOR_PAUSE;
        pjournal_anchor_set (self->journal, &p->anchor.journal, seg);
    }
    else
        pjournal_anchor_clear (self->journal, &p->anchor.journal);
}

static void s_migrate (store_t *self)
{
    uint64_t seg;
    if (!pjournal_wants_migration (self->journal, &seg))
        return;
    pjournal_anchor_t *a;
    for (int n = 0; n < MIGRATE_PER_TURN && (a = pjournal_anchor_first (self->journal, seg)); n++) {
        store_anchor_t *sa = PJOURNAL_CONTAINER (a, store_anchor_t, journal);
        if (sa->kind == ANCHOR_META)
            s_put_meta (self);
        else if (sa->kind == ANCHOR_PAUSE)
            s_put_pause (self, PJOURNAL_CONTAINER (sa, store_pause_t, anchor), true);
        else if (self->rewrite)
            self->rewrite (self->owner, sa);
        if (pjournal_anchor_first (self->journal, seg) == a) {
            //  The owner did not move it (should not happen): stop, do not loop.
            plog_warn ("storage: an object in segment %" PRIu64 " could not be rewritten", seg);
            break;
        }
    }
    //  Finished pairs: copied forward once per segment (a walk over the
    //  whole set); the segment may stay wanted for a while, held by rate
    //  history, and must not be walked again every turn.
    if (self->done && seg != self->retagged && !pjournal_anchor_first (self->journal, seg)) {
        s_retag_t r = {self, seg};
        pseen_retag (self->done, s_retag_done, &r);
        self->retagged = seg;
    }
    //  Rate history pins a segment for at most an hour: it is not moved.
}

int store_commit (store_t *self)
{
    //  The last job id is stored now and then; a restart skips ahead by
    //  more than that, so ids are never given twice.
    if (self->last_job_id >= self->stored_last_job_id + ID_BLOCK / 2)
        s_put_meta (self);
    s_migrate (self);
    if (pjournal_commit (self->journal)) {
        plog_error ("storage failed: %s", pjournal_error (self->journal));
        return -1;
    }
    return 0;
}

uint32_t store_next_epoch (store_t *self)
{
    self->epoch++;
    s_put_meta (self);
    pjournal_sync_needed (self->journal);
    return (uint32_t) self->epoch;
}

uint64_t store_last_job_id (store_t *self)
{
    return self->last_job_id;
}

void store_set_last_job_id (store_t *self, uint64_t id)
{
    if (id > self->last_job_id)
        self->last_job_id = id;
}

//  --- jobs and finished pairs ------------------------------------------------------------------

void store_job_put (store_t *self, store_anchor_t *anchor, const store_job_t *j, bool sync)
{
    rec_job_t r = {j->id,
                   j->entity,
                   j->msg_key,
                   j->chat,
                   j->chat_kind,
                   (uint64_t) j->priority,
                   (uint64_t) j->created_ms,
                   (uint64_t) j->enqueued_ms,
                   (uint64_t) j->not_before,
                   (uint64_t) j->expires_ms,
                   j->attempt,
                   j->failures,
                   j->crashes,
                   j->committed,
                   j->token,
                   {j->payload, j->payload_size},
                   j->history ? j->history : ""};
    uint64_t seg = s_append (self, R_JOB, &store__rec_job, &r);
    anchor->kind = STORE_ANCHOR_JOB;
    pjournal_anchor_set (self->journal, &anchor->journal, seg);
    if (sync)
        pjournal_sync_needed (self->journal);
    store_set_last_job_id (self, j->id);
}

void store_job_gone (store_t *self, store_anchor_t *anchor, uint64_t id)
{
    rec_id_t r = {id};
    s_append (self, R_JOB_GONE, &store__rec_id, &r);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

uint32_t store_done (store_t *self, pkey_fp_t fp, int64_t at)
{
    rec_done_t d = {fp.hi, fp.lo, (uint64_t) at};
    uint64_t seg = s_append (self, R_DONE, &store__rec_done, &d);
    pjournal_ref (self->journal, seg);
    return (uint32_t) seg;
}

void store_forget_done (store_t *self, pkey_fp_t fp, uint32_t tag)
{
    rec_done_t d = {fp.hi, fp.lo, 0};
    s_append (self, R_FORGET, &store__rec_done, &d);
    if (tag)
        pjournal_unref (self->journal, tag);
}

//  --- rate history ------------------------------------------------------------------------------

static store_resv_t *s_resv_at (store_t *self, size_t k)
{
    return &self->resv[(self->resv_head + k) % self->resv_capacity];
}

void store__resv_push (store_t *self, uint64_t job_id, int64_t at, uint64_t segment)
{
    if (self->resv_count == self->resv_capacity) {
        //  Grow the ring, keeping its order.
        size_t cap = self->resv_capacity ? self->resv_capacity * 2 : 256;
        store_resv_t *ring = pcalloc (cap, sizeof (store_resv_t));
        for (size_t k = 0; k < self->resv_count; k++)
            ring[k] = *s_resv_at (self, k);
        free (self->resv);
        self->resv = ring;
        self->resv_capacity = cap;
        self->resv_head = 0;
    }
    *s_resv_at (self, self->resv_count++) = (store_resv_t) {job_id, at, segment, NULL, NULL, NULL};
}

void store_reserve (store_t *self, uint64_t job_id, int64_t at, const char *entity, const char *chat,
                    const char *chat_kind)
{
    rec_reserve_t r = {job_id, (uint64_t) at, entity, chat, chat_kind};
    uint64_t seg = s_append (self, R_RESERVE, &store__rec_reserve, &r);
    pjournal_ref (self->journal, seg);
    store__resv_push (self, job_id, at, seg);
}

void store_unreserve (store_t *self, uint64_t job_id)
{
    rec_id_t r = {job_id};
    s_append (self, R_UNRESERVE, &store__rec_id, &r);
    //  Its reservation is among the recent ones: look from the newest.
    for (size_t k = self->resv_count; k-- > 0;) {
        store_resv_t *e = s_resv_at (self, k);
        if (e->job_id == job_id && e->segment) {
            pjournal_unref (self->journal, e->segment);
            e->segment = 0;
            return;
        }
    }
}

void store_prune (store_t *self, int64_t now)
{
    while (self->resv_count && s_resv_at (self, 0)->at <= now - RESERVATION_MS) {
        store_resv_t *e = s_resv_at (self, 0);
        if (e->segment)
            pjournal_unref (self->journal, e->segment);
        self->resv_head = (self->resv_head + 1) % self->resv_capacity;
        self->resv_count--;
    }
}

//  --- dead letters and pauses -----------------------------------------------------------------

void store_dead_put (store_t *self, store_anchor_t *anchor, const store_dead_t *d)
{
    rec_dead_t r = {d->id,
                    d->msg_key,
                    d->entity,
                    d->chat,
                    d->chat_kind ? d->chat_kind : "",
                    (uint64_t) d->priority,
                    d->maybe_posted,
                    (uint64_t) d->created_ms,
                    (uint64_t) d->dead_at,
                    d->attempts,
                    d->reason,
                    d->history ? d->history : "",
                    {d->payload, d->payload_size}};
    uint64_t seg = s_append (self, R_DEAD, &store__rec_dead, &r);
    anchor->kind = STORE_ANCHOR_DEAD;
    pjournal_anchor_set (self->journal, &anchor->journal, seg);
}

void store_dead_gone (store_t *self, store_anchor_t *anchor, uint64_t id)
{
    rec_id_t r = {id};
    s_append (self, R_DEAD_GONE, &store__rec_id, &r);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

store_pause_t *store__pause_entry (store_t *self, const char *entity)
{
    for (size_t i = 0; i < self->pause_count; i++)
        if (strcmp (self->pauses[i].entity, entity) == 0)
            return &self->pauses[i];
    //  Entries never move once made: their anchors are linked into the journal.
    if (self->pause_count == self->pause_capacity) {
        //  A new array would move anchors that are linked: keep the old one's anchors cleared first.
        size_t cap = self->pause_capacity ? self->pause_capacity * 2 : 16;
        store_pause_t *grown = pcalloc (cap, sizeof (store_pause_t));
        for (size_t i = 0; i < self->pause_count; i++) {
            grown[i].entity = self->pauses[i].entity;
            uint64_t seg = self->pauses[i].anchor.journal.segment;
            pjournal_anchor_clear (self->journal, &self->pauses[i].anchor.journal);
            if (seg) {
                grown[i].anchor.kind = ANCHOR_PAUSE;
                pjournal_anchor_set (self->journal, &grown[i].anchor.journal, seg);
            }
        }
        free (self->pauses);
        self->pauses = grown;
        self->pause_capacity = cap;
    }
    store_pause_t *p = &self->pauses[self->pause_count++];
    p->entity = pstrdup (entity);
    return p;
}

void store_set_paused (store_t *self, const char *entity, bool paused)
{
    s_put_pause (self, store__pause_entry (self, entity), paused);
}
