/*  store - the broker's durable state on a journal. See store.h. */
#include "broker/store.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/ptable.h"
#include "proto/proto_defs_macros.h"
#include "proto/proto_record.h"

#include <inttypes.h>
#include <sys/stat.h>

#define RESERVATION_MS   3600000    //  rate history a restart needs: an hour
#define MIGRATE_PER_TURN 2000       //  objects rewritten per turn at most
#define ID_BLOCK         4096       //  job ids a restart skips (see store_commit)

enum {
    R_META = 1, R_JOB, R_JOB_GONE, R_DONE, R_FORGET, R_RESERVE, R_UNRESERVE, R_DEAD, R_DEAD_GONE,
    R_PAUSE
};

//  The store's own anchored records, besides its owner's jobs and dead letters.
enum { ANCHOR_META = 3, ANCHOR_PAUSE = 4 };

//  --- record tables (the on-disk forms) ---------------------------------------------

typedef struct {
    uint64_t epoch;
    uint64_t last_job_id;
} rec_meta_t;

typedef struct {
    uint64_t id;
    const char *entity, *msg_key, *chat, *chat_kind;
    uint64_t priority, created_ms, enqueued_ms, not_before, expires_ms;
    uint64_t attempt, failures, crashes, committed, token;
    proto_bin_t payload;
    const char *history;
} rec_job_t;

typedef struct {
    uint64_t id;
} rec_id_t;

typedef struct {
    uint64_t hi, lo, at;
} rec_done_t;

typedef struct {
    uint64_t job_id, at;
    const char *entity, *chat, *chat_kind;
} rec_reserve_t;

typedef struct {
    uint64_t id;
    const char *msg_key, *entity, *chat, *chat_kind;
    uint64_t priority, maybe_posted, created_ms, dead_at, attempts;
    const char *reason, *history;
    proto_bin_t payload;
} rec_dead_t;

typedef struct {
    const char *entity;
    uint64_t paused;
} rec_pause_t;

#define KEY  PROTO_MAX_KEY
#define TEXT PROTO_MAX_STR
#define U64  0xFFFFFFFFFFFFFFFFull
#define TIME PROTO_RECORD_TIME

static const proto_field_t s_meta_fields[] = {
    U (rec_meta_t, epoch, U64, "run counter"),
    U (rec_meta_t, last_job_id, U64, "highest job id given"),
};
static const proto_record_t s_meta = RECORD ("META", rec_meta_t, s_meta_fields, "");

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
static const proto_record_t s_job = RECORD ("JOB", rec_job_t, s_job_fields, "");

static const proto_field_t s_id_fields[] = {U (rec_id_t, id, U64, "")};
static const proto_record_t s_id = RECORD ("ID", rec_id_t, s_id_fields, "");

static const proto_field_t s_done_fields[] = {
    U (rec_done_t, hi, U64, ""), U (rec_done_t, lo, U64, ""), U (rec_done_t, at, TIME, ""),
};
static const proto_record_t s_done = RECORD ("DONE", rec_done_t, s_done_fields, "");

static const proto_field_t s_reserve_fields[] = {
    U (rec_reserve_t, job_id, U64, ""),   U (rec_reserve_t, at, TIME, ""),
    S (rec_reserve_t, entity, KEY, ""),   S (rec_reserve_t, chat, KEY, ""),
    S (rec_reserve_t, chat_kind, 16, ""),
};
static const proto_record_t s_reserve = RECORD ("RESERVE", rec_reserve_t, s_reserve_fields, "");

static const proto_field_t s_dead_fields[] = {
    U (rec_dead_t, id, U64, ""),            S (rec_dead_t, msg_key, KEY, ""),
    S (rec_dead_t, entity, KEY, ""),        S (rec_dead_t, chat, KEY, ""),
    S (rec_dead_t, chat_kind, 16, ""),      U (rec_dead_t, priority, 99, ""),
    U (rec_dead_t, maybe_posted, 1, ""),    U (rec_dead_t, created_ms, TIME, ""),
    U (rec_dead_t, dead_at, TIME, ""),       U (rec_dead_t, attempts, U64, ""),
    S (rec_dead_t, reason, TEXT, ""),       S (rec_dead_t, history, TEXT, ""),
    B (rec_dead_t, payload, TEXT, ""),
};
static const proto_record_t s_dead = RECORD ("DEAD", rec_dead_t, s_dead_fields, "");

static const proto_field_t s_pause_fields[] = {
    S (rec_pause_t, entity, KEY, ""), U (rec_pause_t, paused, 1, ""),
};
static const proto_record_t s_pause = RECORD ("PAUSE", rec_pause_t, s_pause_fields, "");

//  --- the store ---------------------------------------------------------------------------

typedef struct {
    uint64_t job_id;
    int64_t at;
    uint64_t segment;           //  0 once released
    char *entity, *chat, *chat_kind;    //  only while loading
} s_resv_t;

typedef struct {
    char *entity;
    store_anchor_t anchor;
} s_pause_t;

struct store_s {
    pjournal_t *journal;
    msgpack_sbuffer buf;        //  reused for every record
    uint64_t epoch;
    uint64_t last_job_id;
    uint64_t stored_last_job_id;
    store_anchor_t meta;        //  the latest META record
    s_pause_t *pauses;          //  paused entities ("*" = all)
    size_t pause_count, pause_capacity;
    uint64_t retagged;          //  the segment whose finished pairs were last copied forward
    s_resv_t *resv;             //  reservations of the last hour, oldest first
    size_t resv_head, resv_count, resv_capacity;
    store_rewrite_fn *rewrite;
    void *owner;
    pseen_t *done;
    uint64_t quarantined;
};

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
    uint64_t seg = s_append (self, R_META, &s_meta, &m);
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
    char old[4096];
    struct stat st;
    snprintf (old, sizeof old, "%s/broker.db", dir);
    if (stat (old, &st) == 0)
        plog_warn ("%s is from an older version and is not read; the state is now in %s/broker/",
                   old, dir);
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
    uint64_t seg = s_append (r->self, R_DONE, &s_done, &d);
    pjournal_ref (r->self->journal, seg);
    pjournal_unref (r->self->journal, r->from);
    *tag = (uint32_t) seg;
}

static void s_put_pause (store_t *self, s_pause_t *p, bool paused)
{
    rec_pause_t r = {p->entity, paused};
    uint64_t seg = s_append (self, R_PAUSE, &s_pause, &r);
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
            s_put_pause (self, PJOURNAL_CONTAINER (sa, s_pause_t, anchor), true);
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
    uint64_t seg = s_append (self, R_JOB, &s_job, &r);
    anchor->kind = STORE_ANCHOR_JOB;
    pjournal_anchor_set (self->journal, &anchor->journal, seg);
    if (sync)
        pjournal_sync_needed (self->journal);
    store_set_last_job_id (self, j->id);
}

void store_job_gone (store_t *self, store_anchor_t *anchor, uint64_t id)
{
    rec_id_t r = {id};
    s_append (self, R_JOB_GONE, &s_id, &r);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

uint32_t store_done (store_t *self, pkey_fp_t fp, int64_t at)
{
    rec_done_t d = {fp.hi, fp.lo, (uint64_t) at};
    uint64_t seg = s_append (self, R_DONE, &s_done, &d);
    pjournal_ref (self->journal, seg);
    return (uint32_t) seg;
}

void store_forget_done (store_t *self, pkey_fp_t fp, uint32_t tag)
{
    rec_done_t d = {fp.hi, fp.lo, 0};
    s_append (self, R_FORGET, &s_done, &d);
    if (tag)
        pjournal_unref (self->journal, tag);
}

//  --- rate history ------------------------------------------------------------------------------

static s_resv_t *s_resv_at (store_t *self, size_t k)
{
    return &self->resv[(self->resv_head + k) % self->resv_capacity];
}

static void s_resv_push (store_t *self, uint64_t job_id, int64_t at, uint64_t segment)
{
    if (self->resv_count == self->resv_capacity) {
        //  Grow the ring, keeping its order.
        size_t cap = self->resv_capacity ? self->resv_capacity * 2 : 256;
        s_resv_t *ring = pcalloc (cap, sizeof (s_resv_t));
        for (size_t k = 0; k < self->resv_count; k++)
            ring[k] = *s_resv_at (self, k);
        free (self->resv);
        self->resv = ring;
        self->resv_capacity = cap;
        self->resv_head = 0;
    }
    *s_resv_at (self, self->resv_count++) = (s_resv_t) {job_id, at, segment, NULL, NULL, NULL};
}

void store_reserve (store_t *self, uint64_t job_id, int64_t at, const char *entity, const char *chat,
                    const char *chat_kind)
{
    rec_reserve_t r = {job_id, (uint64_t) at, entity, chat, chat_kind};
    uint64_t seg = s_append (self, R_RESERVE, &s_reserve, &r);
    pjournal_ref (self->journal, seg);
    s_resv_push (self, job_id, at, seg);
}

void store_unreserve (store_t *self, uint64_t job_id)
{
    rec_id_t r = {job_id};
    s_append (self, R_UNRESERVE, &s_id, &r);
    //  Its reservation is among the recent ones: look from the newest.
    for (size_t k = self->resv_count; k-- > 0;) {
        s_resv_t *e = s_resv_at (self, k);
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
        s_resv_t *e = s_resv_at (self, 0);
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
    uint64_t seg = s_append (self, R_DEAD, &s_dead, &r);
    anchor->kind = STORE_ANCHOR_DEAD;
    pjournal_anchor_set (self->journal, &anchor->journal, seg);
}

void store_dead_gone (store_t *self, store_anchor_t *anchor, uint64_t id)
{
    rec_id_t r = {id};
    s_append (self, R_DEAD_GONE, &s_id, &r);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

static s_pause_t *s_pause_entry (store_t *self, const char *entity)
{
    for (size_t i = 0; i < self->pause_count; i++)
        if (strcmp (self->pauses[i].entity, entity) == 0)
            return &self->pauses[i];
    //  Entries never move once made: their anchors are linked into the journal.
    if (self->pause_count == self->pause_capacity) {
        //  A new array would move anchors that are linked: keep the old one's anchors cleared first.
        size_t cap = self->pause_capacity ? self->pause_capacity * 2 : 16;
        s_pause_t *grown = pcalloc (cap, sizeof (s_pause_t));
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
    s_pause_t *p = &self->pauses[self->pause_count++];
    p->entity = pstrdup (entity);
    return p;
}

void store_set_paused (store_t *self, const char *entity, bool paused)
{
    s_put_pause (self, s_pause_entry (self, entity), paused);
}

//  --- loading ------------------------------------------------------------------------------------

typedef struct {
    store_t *self;
    const store_callbacks_t *fns;
    void *arg;
    int64_t now;
    int64_t retention_ms;
    ptable_t *resv;             //  job id -> s_resv_t*, while loading
    msgpack_zone *zone;         //  what a record decodes into, cleared for the next
} s_load_t;

static const void *s_resv_key (const void *item)
{
    return &((const s_resv_t *) item)->job_id;
}

static bool s_resv_match (const void *item, const void *key)
{
    return ((const s_resv_t *) item)->job_id == *(const uint64_t *) key;
}

static void s_resv_free (s_resv_t *r)
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
    const proto_record_t *rec = type == R_META                                   ? &s_meta
                                : type == R_JOB                                  ? &s_job
                                : type == R_DONE || type == R_FORGET             ? &s_done
                                : type == R_RESERVE                              ? &s_reserve
                                : type == R_DEAD                                 ? &s_dead
                                : type == R_PAUSE                                ? &s_pause
                                : type == R_JOB_GONE || type == R_UNRESERVE || type == R_DEAD_GONE
                                    ? &s_id
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
        s_resv_t *e = ptable_lookup (load->resv, &r.resv.job_id);
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
        s_resv_t *e = ptable_remove (load->resv, &r.id.id);
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
        s_pause_t *p = s_pause_entry (self, r.pause.entity);
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
    const s_resv_t *x = *(const s_resv_t *const *) a, *y = *(const s_resv_t *const *) b;
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
    s_resv_t **list = pcalloc (n + 1, sizeof (s_resv_t *));
    s_resv_t *e;
    while ((e = ptable_next (load.resv, &cursor)))
        list[k++] = e;
    qsort (list, k, sizeof (s_resv_t *), s_by_time);
    for (size_t i = 0; i < k; i++) {
        e = list[i];
        if (e->at > now - RESERVATION_MS) {
            fns->reservation (arg, e->at, e->entity, e->chat, e->chat_kind);
            s_resv_push (self, e->job_id, e->at, e->segment);     //  keeps its reference
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
