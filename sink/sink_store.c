/*  sink_store - the sink's durable state on a journal. See sink_store.h.

    Marks are objects of the store (a copy of what the post module holds):
    a change only flags the mark, and the commit writes each flagged mark
    once, whole - so a reply posted at once costs a MARK (synced) and, a
    turn later, one OUTCOME however many changes led to it. Pairs and
    tombstones are appended as they come.

    This file keeps the store as the sink runs; sink_store_load.c reads it
    back after a restart.
*/
#include "sink/sink_store_int.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/ptext.h"
#include "proto/proto_defs_macros.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define MIGRATE_PER_TURN 2000       //  marks rewritten per turn at most

//  --- record tables (the on-disk forms) ---------------------------------------------

#define TIME PROTO_RECORD_TIME

static const proto_field_t s_mark_fields[] = {
    U (rec_mark_t, hi, U64, "pair fingerprint"), U (rec_mark_t, lo, U64, ""),
    U (rec_mark_t, job_id, U64, ""),             U (rec_mark_t, token, U64, ""),
    S (rec_mark_t, msg_key, KEY, ""),            S (rec_mark_t, entity, KEY, ""),
    S (rec_mark_t, chat, KEY, ""),               S (rec_mark_t, chat_kind, 16, ""),
    S (rec_mark_t, text, TEXT, ""),              B (rec_mark_t, payload, TEXT, ""),
    U (rec_mark_t, priority, 99, ""),            U (rec_mark_t, created_ms, TIME, ""),
    U (rec_mark_t, expires_ms, TIME, ""),         U (rec_mark_t, llm_ms, U64, ""),
    U (rec_mark_t, tokens, U64, ""),             U (rec_mark_t, marked_at, TIME, ""),
    U (rec_mark_t, first_at, TIME, ""),
};
const proto_record_t sink_store__mark_record = RECORD ("MARK", rec_mark_t, s_mark_fields, "");

static const proto_field_t s_outcome_fields[] = {
    U (rec_outcome_t, hi, U64, ""),         U (rec_outcome_t, lo, U64, ""),
    U (rec_outcome_t, job_id, U64, ""),     U (rec_outcome_t, token, U64, ""),
    S (rec_outcome_t, entity, KEY, ""),     S (rec_outcome_t, chat, KEY, ""),
    S (rec_outcome_t, chat_kind, 16, ""),   U (rec_outcome_t, marked_at, TIME, ""),
    U (rec_outcome_t, first_at, TIME, ""),   U (rec_outcome_t, outcome, 4, ""),
    S (rec_outcome_t, reason, TEXT, ""),    U (rec_outcome_t, outcome_at, TIME, ""),
};
const proto_record_t sink_store__outcome_record =
    RECORD ("OUTCOME", rec_outcome_t, s_outcome_fields, "");

static const proto_field_t s_pair_fields[] = {
    U (rec_pair_t, hi, U64, ""), U (rec_pair_t, lo, U64, ""),
};
const proto_record_t sink_store__pair_record = RECORD ("FORGET", rec_pair_t, s_pair_fields, "");

static const proto_field_t s_posted_fields[] = {
    U (rec_posted_t, hi, U64, ""),       U (rec_posted_t, lo, U64, ""),
    U (rec_posted_t, at, TIME, ""),       S (rec_posted_t, entity, KEY, ""),
    S (rec_posted_t, chat, KEY, ""),     S (rec_posted_t, chat_kind, 16, ""),
};
const proto_record_t sink_store__posted_record =
    RECORD ("POSTED", rec_posted_t, s_posted_fields, "");

//  --- marks in memory ----------------------------------------------------------------------

static uint64_t s_pair_hash (const void *key)
{
    const pkey_fp_t *fp = key;
    return fp->lo ^ (fp->hi * 0x9E3779B97F4A7C15ull);
}

static const void *s_mark_key (const void *item)
{
    return &((const sink_store_mark_t *) item)->pair;
}

static bool s_mark_match (const void *item, const void *key)
{
    return pkey_fp_equal (((const sink_store_mark_t *) item)->pair, *(const pkey_fp_t *) key);
}

//  Copies the mark's strings into one block.
void sink_store__mark_strings (sink_store_mark_t *m, const char *msg_key, const char *entity,
                               const char *chat, const char *chat_kind, const char *text)
{
    const char *in[5] = {msg_key, entity, chat, chat_kind, text};
    size_t len[5], total = 0;
    for (int i = 0; i < 5; i++) {
        if (!in[i])
            in[i] = "";
        len[i] = strlen (in[i]) + 1;
        total += len[i];
    }
    char *block = pmalloc (total), *at = block;
    const char **out[5] = {&m->msg_key, &m->entity, &m->chat, &m->chat_kind, &m->text};
    for (int i = 0; i < 5; i++) {
        memcpy (at, in[i], len[i]);
        *out[i] = at;
        at += len[i];
    }
    free (m->strings);
    m->strings = block;
}

void sink_store__mark_payload (sink_store_mark_t *m, const void *payload, uint32_t size)
{
    free (m->payload);
    m->payload = size ? pmemdup (payload, size) : NULL;
    m->payload_size = size;
}

//  A reason as a record may carry it: text from a platform may not be UTF-8.
static char *s_reason (const char *reason)
{
    if (!reason)
        return pstrdup ("");
    size_t len = strlen (reason);
    return ptext_utf8_valid (reason, len) ? pstrdup (reason) : ptext_scrub (reason, len, NULL, NULL);
}

sink_store_mark_t *sink_store__mark_find (sink_store_t *self, pkey_fp_t pair)
{
    return ptable_lookup (self->marks, &pair);
}

sink_store_mark_t *sink_store__mark_get (sink_store_t *self, pkey_fp_t pair)
{
    sink_store_mark_t *m = sink_store__mark_find (self, pair);
    if (!m) {
        m = pcalloc (1, sizeof *m);
        m->pair = pair;
        m->outcome = SINK_NO_OUTCOME;
        ptable_insert (self->marks, m);
    }
    return m;
}

void sink_store__mark_free (sink_store_t *self, sink_store_mark_t *m)
{
    pjournal_anchor_clear (self->journal, &m->anchor);
    ptable_remove (self->marks, &m->pair);
    free (m->strings);
    free (m->payload);
    free (m->reason);
    free (m);
}

//  The next commit writes this mark (once, whatever changed meanwhile).
static void s_flag (sink_store_t *self, sink_store_mark_t *m)
{
    if (m->flagged)
        return;
    m->flagged = true;
    self->flagged = pgrow (self->flagged, &self->flagged_capacity, self->flagged_count + 1,
                           sizeof (sink_store_mark_t *));
    self->flagged[self->flagged_count++] = m;
}

//  --- writing records ---------------------------------------------------------------------

//  Appends a record; returns its segment. A record that cannot be coded
//  (never, with inputs the wire bounds the same way) fails the store.
static uint64_t s_append (sink_store_t *self, uint8_t type, const proto_record_t *rec,
                          const void *body)
{
    self->buf.size = 0;
    uint64_t seg = 0;
    if (proto_record_pack (rec, body, &self->buf) == 0)
        seg = pjournal_append (self->journal, type, self->buf.data, self->buf.size);
    if (!seg && !self->failed) {
        plog_error ("storage %s: a %s record could not be written", pjournal_path (self->journal),
                    rec->name);
        self->failed = true;
    }
    self->appended = true;
    return seg;
}

//  Writes a mark whole: its MARK, or its OUTCOME once it has one.
static void s_put_mark (sink_store_t *self, sink_store_mark_t *m)
{
    uint64_t seg;
    if (m->outcome == SINK_NO_OUTCOME) {
        rec_mark_t r = {m->pair.hi,
                        m->pair.lo,
                        m->job_id,
                        m->token,
                        m->msg_key,
                        m->entity,
                        m->chat,
                        m->chat_kind,
                        m->text,
                        {m->payload, m->payload_size},
                        (uint64_t) m->priority,
                        (uint64_t) m->created_ms,
                        (uint64_t) m->expires_ms,
                        m->llm_ms,
                        m->tokens,
                        (uint64_t) m->marked_at,
                        (uint64_t) m->first_at};
        seg = s_append (self, R_MARK, &sink_store__mark_record, &r);
    }
    else {
        rec_outcome_t r = {m->pair.hi,
                           m->pair.lo,
                           m->job_id,
                           m->token,
                           m->entity,
                           m->chat,
                           m->chat_kind,
                           (uint64_t) m->marked_at,
                           (uint64_t) m->first_at,
                           (uint64_t) m->outcome,
                           m->reason ? m->reason : "",
                           (uint64_t) m->outcome_at};
        seg = s_append (self, R_OUTCOME, &sink_store__outcome_record, &r);
    }
    if (seg)
        pjournal_anchor_set (self->journal, &m->anchor, seg);
}

//  Writes the flagged marks. Returns true when one of them must be synced.
static bool s_write_flagged (sink_store_t *self)
{
    bool sync = false;
    for (size_t i = 0; i < self->flagged_count; i++) {
        sink_store_mark_t *m = self->flagged[i];
        m->flagged = false;
        if (m->gone) {
            //  Stored before: a tombstone, or its older records bring it back.
            if (m->anchor.segment) {
                rec_pair_t r = {m->pair.hi, m->pair.lo};
                s_append (self, R_FORGET, &sink_store__pair_record, &r);
            }
            sink_store__mark_free (self, m);
            continue;
        }
        s_put_mark (self, m);
        sync |= m->sync;
        m->sync = false;
    }
    self->flagged_count = 0;
    return sync;
}

//  --- opening and closing ------------------------------------------------------------------

sink_store_t *sink_store_open (const char *dir, const char *fsync, size_t segment_bytes, char *err,
                               size_t errlen)
{
    pjournal_t *journal = pjournal_new (dir, "sink", fsync, segment_bytes, err, errlen);
    if (!journal)
        return NULL;
    sink_store_t *self = pcalloc (1, sizeof *self);
    self->journal = journal;
    msgpack_sbuffer_init (&self->buf);
    self->marks = ptable_new (s_pair_hash, s_mark_key, s_mark_match);
    pjournal_note_older_state (dir, "sink");
    return self;
}

void sink_store_close (sink_store_t **self_p)
{
    sink_store_t *self = *self_p;
    if (!self)
        return;
    s_write_flagged (self);
    pjournal_destroy (&self->journal);      //  commits what waits
    size_t cursor = 0;
    sink_store_mark_t *m;
    while ((m = ptable_next (self->marks, &cursor))) {
        free (m->strings);
        free (m->payload);
        free (m->reason);
        free (m);
    }
    ptable_destroy (&self->marks);
    msgpack_sbuffer_destroy (&self->buf);
    free (self->flagged);
    free (self->pins);
    free (self);
    *self_p = NULL;
}

//  --- marks -------------------------------------------------------------------------------

void sink_store_mark (sink_store_t *self, const sink_mark_t *m)
{
    assert (self);
    //  A newer attempt at the pair replaces what was stored for it.
    sink_store_mark_t *o = sink_store__mark_get (self, m->pair);
    o->gone = false;
    o->job_id = m->job_id;
    o->token = m->token;
    sink_store__mark_strings (o, m->msg_key, m->entity, m->chat, m->chat_kind, m->text);
    sink_store__mark_payload (o, m->payload, m->payload_size);
    o->priority = m->priority;
    o->created_ms = m->created_ms;
    o->expires_ms = m->expires_ms;
    o->llm_ms = m->llm_ms;
    o->tokens = m->tokens;
    o->marked_at = m->marked_at;
    o->first_at = m->first_at;
    o->outcome = m->outcome;
    free (o->reason);
    o->reason = m->outcome == SINK_NO_OUTCOME ? NULL : s_reason (m->reason);
    o->outcome_at = m->outcome_at;
    o->sync = true;
    s_flag (self, o);
}

//  The live mark of a pair, or NULL (not marked, or forgotten).
static sink_store_mark_t *s_live (sink_store_t *self, pkey_fp_t pair)
{
    sink_store_mark_t *m = sink_store__mark_find (self, pair);
    return m && !m->gone ? m : NULL;
}

void sink_store_retoken (sink_store_t *self, pkey_fp_t pair, uint64_t job_id, uint64_t token)
{
    assert (self);
    sink_store_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->job_id = job_id;
    m->token = token;
    s_flag (self, m);
}

void sink_store_first (sink_store_t *self, pkey_fp_t pair, int64_t at)
{
    assert (self);
    sink_store_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->first_at = at;
    s_flag (self, m);
}

void sink_store_outcome (sink_store_t *self, pkey_fp_t pair, int outcome, const char *reason,
                         int64_t at)
{
    assert (self);
    sink_store_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    //  The text and payload stay until the mark goes: a caller may still read them.
    m->outcome = outcome;
    free (m->reason);
    m->reason = s_reason (reason);
    m->outcome_at = at;
    s_flag (self, m);
}

void sink_store_forget (sink_store_t *self, pkey_fp_t pair)
{
    assert (self);
    sink_store_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->gone = true;
    m->sync = false;
    s_flag (self, m);
}

//  --- posted and doubted pairs -----------------------------------------------------------------

//  Keeps `segment` while it holds a post of the last hour.
void sink_store__pin (sink_store_t *self, uint64_t segment, int64_t at)
{
    //  Posts come in segment order: the newest pin is the one, nearly always.
    size_t i = self->pin_count;
    while (i > 0 && self->pins[i - 1].segment > segment)
        i--;
    if (i > 0 && self->pins[i - 1].segment == segment) {
        if (at > self->pins[i - 1].last_at)
            self->pins[i - 1].last_at = at;
        return;
    }
    self->pins =
        pgrow (self->pins, &self->pin_capacity, self->pin_count + 1, sizeof (sink_store_pin_t));
    memmove (&self->pins[i + 1], &self->pins[i], (self->pin_count - i) * sizeof (sink_store_pin_t));
    self->pins[i] = (sink_store_pin_t) {segment, at};
    self->pin_count++;
    pjournal_ref (self->journal, segment);
}

static bool s_pinned (sink_store_t *self, uint64_t segment)
{
    for (size_t i = 0; i < self->pin_count; i++)
        if (self->pins[i].segment == segment)
            return true;
    return false;
}

uint32_t sink_store_posted (sink_store_t *self, const sink_posted_t *p)
{
    assert (self);
    rec_posted_t r = {p->pair.hi,     p->pair.lo,
                      (uint64_t) p->at, p->entity ? p->entity : "",
                      p->chat ? p->chat : "", p->chat_kind ? p->chat_kind : ""};
    uint64_t seg = s_append (self, p->doubt ? R_DOUBTED : R_POSTED, &sink_store__posted_record, &r);
    if (!seg)
        return 0;
    pjournal_ref (self->journal, seg);
    sink_store__pin (self, seg, p->at);
    return (uint32_t) seg;
}

void sink_store_unposted (sink_store_t *self, uint32_t tag)
{
    assert (self);
    if (tag)
        pjournal_unref (self->journal, tag);
}

void sink_store_prune (sink_store_t *self, int64_t now)
{
    assert (self);
    size_t kept = 0;
    for (size_t i = 0; i < self->pin_count; i++) {
        if (self->pins[i].last_at <= now - RATE_HISTORY_MS)
            pjournal_unref (self->journal, self->pins[i].segment);
        else
            self->pins[kept++] = self->pins[i];
    }
    self->pin_count = kept;
}

//  The set forgot a pair (too old, or too many): its record is no longer needed.
static void s_forgotten (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    (void) fp, (void) at;
    sink_store_t *self = arg;
    if (tag)
        pjournal_unref (self->journal, tag);
}

void sink_store_set_pairs (sink_store_t *self, pseen_t *posted, pseen_t *doubted)
{
    assert (self);
    self->posted = posted;
    self->doubted = doubted;
    if (posted)
        pseen_on_forget (posted, s_forgotten, self);
    if (doubted)
        pseen_on_forget (doubted, s_forgotten, self);
}

//  --- migration and commit ------------------------------------------------------------------

typedef struct {
    sink_store_t *self;
    uint64_t from;
    uint8_t type;
} s_retag_t;

//  A pair's record moves to the newest segment, with fingerprint and time:
//  its rate history (if of the last hour) stays where it was, pinned.
static void s_retag (void *arg, pkey_fp_t fp, int64_t at, uint32_t *tag)
{
    s_retag_t *r = arg;
    if (*tag != r->from)
        return;
    rec_posted_t rec = {fp.hi, fp.lo, (uint64_t) at, "", "", ""};
    uint64_t seg = s_append (r->self, r->type, &sink_store__posted_record, &rec);
    if (!seg)
        return;
    pjournal_ref (r->self->journal, seg);
    pjournal_unref (r->self->journal, r->from);
    *tag = (uint32_t) seg;
}

static void s_migrate (sink_store_t *self)
{
    uint64_t seg;
    if (!pjournal_wants_migration (self->journal, &seg))
        return;
    pjournal_anchor_t *a;
    for (int n = 0; n < MIGRATE_PER_TURN && (a = pjournal_anchor_first (self->journal, seg)); n++)
        s_put_mark (self, PJOURNAL_CONTAINER (a, sink_store_mark_t, anchor));
    //  Pairs once the marks are out; not while the segment is kept for its
    //  rate history anyway (and once per segment: a set is walked whole).
    if (pjournal_anchor_first (self->journal, seg) || seg == self->retagged || s_pinned (self, seg)
        || !self->posted)
        return;
    s_retag_t r = {self, seg, R_POSTED};
    pseen_retag (self->posted, s_retag, &r);
    r.type = R_DOUBTED;
    pseen_retag (self->doubted, s_retag, &r);
    self->retagged = seg;
}

int sink_store_commit (sink_store_t *self)
{
    assert (self);
    if (s_write_flagged (self))
        pjournal_sync_needed (self->journal);
    s_migrate (self);
    self->appended = false;
    if (self->failed || pjournal_commit (self->journal)) {
        if (pjournal_error (self->journal))
            plog_error ("storage failed: %s", pjournal_error (self->journal));
        self->failed = true;
        return -1;
    }
    return 0;
}

bool sink_store_dirty (sink_store_t *self)
{
    assert (self);
    return self->flagged_count > 0 || self->appended;
}

uint64_t sink_store_syncs (sink_store_t *self)
{
    assert (self);
    pjournal_stats_t stats;
    pjournal_stats (self->journal, &stats);
    return stats.fsyncs;
}

uint64_t sink_store_quarantined (sink_store_t *self)
{
    assert (self);
    return self->quarantined;
}

const char *sink_store_path (sink_store_t *self)
{
    assert (self);
    return pjournal_path (self->journal);
}
