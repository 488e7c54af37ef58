/*  poller_store - the poller's durable state on a journal. See poller_store.h. */
#include "poller/poller_store.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/ptable.h"
#include "proto/proto_defs_macros.h"
#include "proto/proto_record.h"

#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#define MIGRATE_PER_TURN 2000       //  objects rewritten per turn at most
//  The largest frame a BATCH record carries: a record's payload bound, less
//  the record's own fields.
#define FRAME_MAX (PJOURNAL_RECORD_MAX - 64)

enum { R_SEEN = 1, R_CURSOR, R_BATCH, R_BATCH_GONE };

//  What an anchor in a segment's list belongs to.
enum { ANCHOR_BATCH = 1, ANCHOR_CURSOR };

//  --- record tables (the on-disk forms) ---------------------------------------------

typedef struct {
    uint64_t hi, lo, at;
} rec_seen_t;

typedef struct {
    const char *source;
    const char *cursor;
} rec_cursor_t;

typedef struct {
    uint64_t seq;
    uint64_t count;
    proto_bin_t frame;
} rec_batch_t;

typedef struct {
    uint64_t seq;
} rec_seq_t;

static const proto_field_t s_seen_fields[] = {
    U (rec_seen_t, hi, U64, "message key fingerprint, high half"),
    U (rec_seen_t, lo, U64, "message key fingerprint, low half"),
    U (rec_seen_t, at, PROTO_RECORD_TIME, "when it was read (Unix ms)"),
};
static const proto_record_t s_seen = RECORD ("SEEN", rec_seen_t, s_seen_fields, "");

static const proto_field_t s_cursor_fields[] = {
    S (rec_cursor_t, source, KEY, "the source's name"),
    S (rec_cursor_t, cursor, TEXT, "where it resumes"),
};
static const proto_record_t s_cursor = RECORD ("CURSOR", rec_cursor_t, s_cursor_fields, "");

static const proto_field_t s_batch_fields[] = {
    U (rec_batch_t, seq, U64, "the SUBMIT's seq"),
    U (rec_batch_t, count, LIST, "jobs in it"),
    B (rec_batch_t, frame, FRAME_MAX, "the SUBMIT frame as sent"),
};
static const proto_record_t s_batch = RECORD ("BATCH", rec_batch_t, s_batch_fields, "");

static const proto_field_t s_seq_fields[] = {U (rec_seq_t, seq, U64, "")};
static const proto_record_t s_seq = RECORD ("BATCH_GONE", rec_seq_t, s_seq_fields, "");

//  --- the store ---------------------------------------------------------------------------

//  A source's cursor (the store's own object: it never moves once made).
typedef struct {
    char *source;
    char *cursor;
    poller_store_anchor_t anchor;   //  its latest record
} s_cursor_t;

//  A batch while loading: the latest version of each, until it is gone.
typedef struct {
    uint64_t seq;
    size_t count;
    void *frame;
    size_t size;
    pjournal_anchor_t anchor;
} s_loaded_t;

struct poller_store_s {
    pjournal_t *journal;
    msgpack_sbuffer buf;            //  reused for every record
    ptable_t *cursors;              //  source name -> s_cursor_t
    pseen_t *seen;                  //  the intake's; tags are segments
    poller_store_rewrite_fn *rewrite;
    void *owner;
    ptable_t *loading;              //  seq -> s_loaded_t, while loading
    int64_t load_now;
    int64_t load_retention_ms;
    uint64_t quarantined;
    bool failed;                    //  a record could not be coded: sticky
};

static const void *s_cursor_key (const void *item)
{
    return ((const s_cursor_t *) item)->source;
}

static bool s_cursor_match (const void *item, const void *key)
{
    return strcmp (((const s_cursor_t *) item)->source, key) == 0;
}

static const void *s_loaded_key (const void *item)
{
    return &((const s_loaded_t *) item)->seq;
}

static bool s_loaded_match (const void *item, const void *key)
{
    return ((const s_loaded_t *) item)->seq == *(const uint64_t *) key;
}

//  Appends a record; returns its segment, or 0 when it cannot be coded
//  (then the store has failed: nothing more is acknowledged).
static uint64_t s_append (poller_store_t *self, uint8_t type, const proto_record_t *rec,
                          const void *body)
{
    self->buf.size = 0;
    uint64_t seg = 0;
    if (proto_record_pack (rec, body, &self->buf) == 0)
        seg = pjournal_append (self->journal, type, self->buf.data, self->buf.size);
    if (!seg && !self->failed) {
        plog_error ("storage: a %s record of %zu bytes could not be stored", rec->name,
                    self->buf.size);
        self->failed = true;
    }
    return seg;
}

poller_store_t *poller_store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    return poller_store_open_sized (dir, fsync, 0, err, errlen);
}

poller_store_t *poller_store_open_sized (const char *dir, const char *fsync, size_t segment_bytes,
                                         char *err, size_t errlen)
{
    pjournal_t *journal = pjournal_new (dir, "poller", fsync, segment_bytes, err, errlen);
    if (!journal)
        return NULL;
    poller_store_t *self = pcalloc (1, sizeof *self);
    self->journal = journal;
    msgpack_sbuffer_init (&self->buf);
    self->cursors = ptable_new (ptable_hash_str, s_cursor_key, s_cursor_match);
    pjournal_note_older_state (dir, "poller");
    return self;
}

void poller_store_close (poller_store_t **self_p)
{
    poller_store_t *self = *self_p;
    if (!self)
        return;
    pjournal_destroy (&self->journal);
    msgpack_sbuffer_destroy (&self->buf);
    size_t cursor = 0;
    s_cursor_t *c;
    while ((c = ptable_next (self->cursors, &cursor))) {
        free (c->source);
        free (c->cursor);
        free (c);
    }
    ptable_destroy (&self->cursors);
    free (self);
    *self_p = NULL;
}

static void s_seen_forgotten (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    (void) fp, (void) at;
    poller_store_t *self = arg;
    if (tag)
        pjournal_unref (self->journal, tag);
}

void poller_store_set_seen (poller_store_t *self, pseen_t *seen)
{
    assert (self);
    self->seen = seen;
    pseen_on_forget (seen, s_seen_forgotten, self);
}

void poller_store_set_owner (poller_store_t *self, poller_store_rewrite_fn *rewrite, void *arg)
{
    assert (self);
    self->rewrite = rewrite;
    self->owner = arg;
}

//  --- seen keys and cursors ---------------------------------------------------------------

uint32_t poller_store_mark_seen (poller_store_t *self, pkey_fp_t fp, int64_t at)
{
    assert (self);
    rec_seen_t r = {fp.hi, fp.lo, (uint64_t) at};
    uint64_t seg = s_append (self, R_SEEN, &s_seen, &r);
    if (seg)
        pjournal_ref (self->journal, seg);
    return (uint32_t) seg;
}

static s_cursor_t *s_cursor_entry (poller_store_t *self, const char *source)
{
    s_cursor_t *c = ptable_lookup (self->cursors, source);
    if (!c) {
        c = pcalloc (1, sizeof *c);
        c->source = pstrdup (source);
        c->anchor.kind = ANCHOR_CURSOR;
        ptable_insert (self->cursors, c);
    }
    return c;
}

static void s_put_cursor (poller_store_t *self, s_cursor_t *c)
{
    rec_cursor_t r = {c->source, c->cursor};
    uint64_t seg = s_append (self, R_CURSOR, &s_cursor, &r);
    if (seg)
        pjournal_anchor_set (self->journal, &c->anchor.journal, seg);
}

void poller_store_cursor (poller_store_t *self, const char *source, const char *cursor)
{
    assert (self);
    s_cursor_t *c = s_cursor_entry (self, source);
    free (c->cursor);
    c->cursor = pstrdup (cursor);
    s_put_cursor (self, c);
    //  The source confirms its messages to the platform after this commit.
    pjournal_sync_needed (self->journal);
}

char *poller_store_get_cursor (poller_store_t *self, const char *source)
{
    assert (self);
    s_cursor_t *c = ptable_lookup (self->cursors, source);
    return c && c->cursor ? pstrdup (c->cursor) : NULL;
}

//  --- batches ---------------------------------------------------------------------------------

void poller_store_batch (poller_store_t *self, poller_store_anchor_t *anchor, uint64_t seq,
                         const void *frame, size_t size, size_t count, bool sync)
{
    assert (self);
    rec_batch_t r = {seq, count, {frame, (uint32_t) size}};
    uint64_t seg = size <= FRAME_MAX ? s_append (self, R_BATCH, &s_batch, &r) : 0;
    if (!seg && !self->failed) {
        plog_error ("storage: batch %" PRIu64 " (%zu bytes) is too large to store", seq, size);
        self->failed = true;
    }
    anchor->kind = ANCHOR_BATCH;
    if (seg)
        pjournal_anchor_set (self->journal, &anchor->journal, seg);
    if (sync)
        pjournal_sync_needed (self->journal);
}

void poller_store_acked (poller_store_t *self, poller_store_anchor_t *anchor, uint64_t seq)
{
    assert (self);
    rec_seq_t r = {seq};
    s_append (self, R_BATCH_GONE, &s_seq, &r);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

//  --- the turn --------------------------------------------------------------------------------

typedef struct {
    poller_store_t *self;
    uint64_t from;
} s_retag_t;

//  A seen key whose record is in the segment being emptied is written again.
static void s_retag_seen (void *arg, pkey_fp_t fp, int64_t at, uint32_t *tag)
{
    s_retag_t *r = arg;
    if (*tag != r->from)
        return;
    rec_seen_t rec = {fp.hi, fp.lo, (uint64_t) at};
    uint64_t seg = s_append (r->self, R_SEEN, &s_seen, &rec);
    if (!seg)
        return;
    pjournal_ref (r->self->journal, seg);
    pjournal_unref (r->self->journal, r->from);
    *tag = (uint32_t) seg;
}

//  Empties the oldest segment into the newest when old segments pin too
//  much disk: batches (by their owner), cursors, then seen keys.
static void s_migrate (poller_store_t *self)
{
    uint64_t seg;
    if (!pjournal_wants_migration (self->journal, &seg))
        return;
    pjournal_anchor_t *a;
    for (int n = 0; n < MIGRATE_PER_TURN && (a = pjournal_anchor_first (self->journal, seg)); n++) {
        poller_store_anchor_t *pa = PJOURNAL_CONTAINER (a, poller_store_anchor_t, journal);
        if (pa->kind == ANCHOR_CURSOR)
            s_put_cursor (self, PJOURNAL_CONTAINER (pa, s_cursor_t, anchor));
        else if (self->rewrite)
            self->rewrite (self->owner, pa);
        if (pjournal_anchor_first (self->journal, seg) == a) {
            //  It did not move (the owner did not store it, or storing failed): stop, do not loop.
            plog_warn ("storage: an object in segment %" PRIu64 " could not be rewritten", seg);
            return;
        }
    }
    if (self->seen && !pjournal_anchor_first (self->journal, seg)) {
        s_retag_t r = {self, seg};
        pseen_retag (self->seen, s_retag_seen, &r);
    }
}

int poller_store_commit (poller_store_t *self)
{
    assert (self);
    if (!self->failed)
        s_migrate (self);
    if (self->failed) {
        //  Logged when it happened; nothing from now on can be acknowledged.
        return -1;
    }
    if (pjournal_commit (self->journal)) {
        plog_error ("storage failed: %s", pjournal_error (self->journal));
        self->failed = true;
        return -1;
    }
    return 0;
}

int64_t poller_store_sync_due (poller_store_t *self)
{
    assert (self);
    return pjournal_sync_due (self->journal);
}

//  --- loading ---------------------------------------------------------------------------------

//  A BATCH record: its frame must be the SUBMIT the broker would accept,
//  else it would be sent, dropped as malformed and sent again for ever.
static int s_load_batch (poller_store_t *self, uint64_t seg, const rec_batch_t *r, char *reason,
                         size_t rlen)
{
    proto_msg_t msg;
    char why[256];
    if (proto_decode (r->frame.data, r->frame.size, &msg, why, sizeof why) != PROTO_OK) {
        snprintf (reason, rlen, "batch %" PRIu64 ": its frame does not decode: %s", r->seq, why);
        return -1;
    }
    bool fits = msg.type == PROTO_SUBMIT && msg.body.submit.seq == r->seq
                && msg.body.submit.count == r->count && r->count > 0;
    proto_msg_release (&msg);
    if (!fits) {
        snprintf (reason, rlen, "batch %" PRIu64 ": its frame is not a SUBMIT of that seq with %" PRIu64
                  " jobs", r->seq, r->count);
        return -1;
    }
    s_loaded_t *e = ptable_lookup (self->loading, &r->seq);
    if (e)
        free (e->frame);       //  a newer copy (migrated)
    else {
        e = pcalloc (1, sizeof *e);
        e->seq = r->seq;
        ptable_insert (self->loading, e);
    }
    e->count = (size_t) r->count;
    e->frame = pmemdup (r->frame.data, r->frame.size);
    e->size = r->frame.size;
    pjournal_anchor_set (self->journal, &e->anchor, seg);
    return 0;
}

static void s_loaded_free (poller_store_t *self, s_loaded_t *e)
{
    pjournal_anchor_clear (self->journal, &e->anchor);
    free (e->frame);
    free (e);
}

static int s_replay (void *arg, uint64_t seg, uint8_t type, const void *data, size_t len,
                     char *reason, size_t rlen)
{
    poller_store_t *self = arg;
    const proto_record_t *rec = type == R_SEEN         ? &s_seen
                                : type == R_CURSOR     ? &s_cursor
                                : type == R_BATCH      ? &s_batch
                                : type == R_BATCH_GONE ? &s_seq
                                                       : NULL;
    if (!rec) {
        snprintf (reason, rlen, "unknown record type %u", type);
        return -1;
    }
    union {
        rec_seen_t seen;
        rec_cursor_t cursor;
        rec_batch_t batch;
        rec_seq_t seq;
    } r;
    void *zone = NULL;
    char why[300];
    if (proto_record_unpack (rec, data, len, &r, &zone, why, sizeof why) != PROTO_OK) {
        snprintf (reason, rlen, "%s record: %s", rec->name, why);
        proto_zone_free (&zone);
        return -1;
    }
    int rc = 0;
    switch (type) {
    case R_SEEN: {
        if ((int64_t) r.seen.at <= self->load_now - self->load_retention_ms)
            break;      //  too old to matter
        pkey_fp_t fp = {r.seen.hi, r.seen.lo};
        uint32_t old;
        if (pseen_remove (self->seen, fp, &old) && old)
            pjournal_unref (self->journal, old);     //  a newer copy (migrated)
        pjournal_ref (self->journal, seg);
        pseen_add (self->seen, fp, (int64_t) r.seen.at, (uint32_t) seg);
        break;
    }
    case R_CURSOR: {
        if (!*r.cursor.source) {
            snprintf (reason, rlen, "cursor %.100s: no source name", r.cursor.cursor);
            rc = -1;
            break;
        }
        s_cursor_t *c = s_cursor_entry (self, r.cursor.source);
        free (c->cursor);
        c->cursor = pstrdup (r.cursor.cursor);
        pjournal_anchor_set (self->journal, &c->anchor.journal, seg);
        break;
    }
    case R_BATCH: rc = s_load_batch (self, seg, &r.batch, reason, rlen); break;
    case R_BATCH_GONE: {
        s_loaded_t *e = ptable_remove (self->loading, &r.seq.seq);
        if (e)
            s_loaded_free (self, e);
        break;
    }
    default: break;
    }
    proto_zone_free (&zone);
    return rc;
}

static int s_by_seq (const void *a, const void *b)
{
    const s_loaded_t *x = *(const s_loaded_t *const *) a, *y = *(const s_loaded_t *const *) b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int poller_store_load (poller_store_t *self, int64_t now, int64_t retention_ms,
                       poller_store_batch_fn *fn, void *arg)
{
    assert (self);
    assert (self->seen);
    self->loading = ptable_new (ptable_hash_u64, s_loaded_key, s_loaded_match);
    self->load_now = now;
    self->load_retention_ms = retention_ms;
    int rc = pjournal_load (self->journal, s_replay, self);
    pjournal_stats_t stats;
    pjournal_stats (self->journal, &stats);
    self->quarantined = stats.quarantined;
    if (self->quarantined)
        plog_warn ("storage: %" PRIu64 " record(s) could not be loaded and were kept in %s/quarantine.pj",
                   self->quarantined, pjournal_path (self->journal));
    //  The batches not acknowledged, in the order they were made.
    size_t n = ptable_size (self->loading), k = 0, cursor = 0;
    s_loaded_t **list = pcalloc (n + 1, sizeof (s_loaded_t *));
    s_loaded_t *e;
    while ((e = ptable_next (self->loading, &cursor)))
        list[k++] = e;
    qsort (list, k, sizeof (s_loaded_t *), s_by_seq);
    for (size_t i = 0; i < k; i++) {
        if (rc == 0 && fn)
            fn (arg, list[i]->seq, list[i]->frame, list[i]->size, list[i]->count,
                list[i]->anchor.segment);
        s_loaded_free (self, list[i]);
    }
    free (list);
    ptable_destroy (&self->loading);
    return rc;
}

void poller_store_anchor_loaded (poller_store_t *self, poller_store_anchor_t *anchor,
                                 uint64_t segment)
{
    assert (self);
    anchor->kind = ANCHOR_BATCH;
    pjournal_anchor_set (self->journal, &anchor->journal, segment);
}

void poller_store_anchor_drop (poller_store_t *self, poller_store_anchor_t *anchor)
{
    assert (self);
    pjournal_anchor_clear (self->journal, &anchor->journal);
}

uint64_t poller_store_quarantined (poller_store_t *self)
{
    assert (self);
    return self->quarantined;
}

void poller_store_stats (poller_store_t *self, pjournal_stats_t *stats)
{
    assert (self);
    pjournal_stats (self->journal, stats);
}
