/*  sink_store - the sink's durable state on a journal. See sink_store.h.

    Marks are objects of the store (a copy of what the post module holds):
    a change only flags the mark, and the commit writes each flagged mark
    once, whole - so a reply posted at once costs a MARK (synced) and, a
    turn later, one OUTCOME however many changes led to it. Pairs and
    tombstones are appended as they come.
*/
#include "sink/sink_store.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/ptable.h"
#include "net/ptext.h"
#include "proto/proto_defs_macros.h"
#include "proto/proto_record.h"
#include "store/pjournal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define RATE_HISTORY_MS  3600000    //  the longest limit window: what a restart replays
#define MIGRATE_PER_TURN 2000       //  marks rewritten per turn at most

enum { R_MARK = 1, R_OUTCOME, R_FORGET, R_POSTED, R_DOUBTED };

//  --- record tables (the on-disk forms) ---------------------------------------------

typedef struct {
    uint64_t hi, lo;            //  the pair
    uint64_t job_id, token;
    const char *msg_key, *entity, *chat, *chat_kind, *text;
    proto_bin_t payload;
    uint64_t priority, created_ms, expires_ms, llm_ms, tokens, marked_at, first_at;
} rec_mark_t;

typedef struct {
    uint64_t hi, lo;
    uint64_t job_id, token;
    const char *entity, *chat, *chat_kind;
    uint64_t marked_at, first_at, outcome;
    const char *reason;
    uint64_t outcome_at;
} rec_outcome_t;

typedef struct {
    uint64_t hi, lo;
} rec_pair_t;

typedef struct {
    uint64_t hi, lo, at;
    const char *entity, *chat, *chat_kind;     //  "" in a copy made by migration
} rec_posted_t;

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
static const proto_record_t s_mark = RECORD ("MARK", rec_mark_t, s_mark_fields, "");

static const proto_field_t s_outcome_fields[] = {
    U (rec_outcome_t, hi, U64, ""),         U (rec_outcome_t, lo, U64, ""),
    U (rec_outcome_t, job_id, U64, ""),     U (rec_outcome_t, token, U64, ""),
    S (rec_outcome_t, entity, KEY, ""),     S (rec_outcome_t, chat, KEY, ""),
    S (rec_outcome_t, chat_kind, 16, ""),   U (rec_outcome_t, marked_at, TIME, ""),
    U (rec_outcome_t, first_at, TIME, ""),   U (rec_outcome_t, outcome, 4, ""),
    S (rec_outcome_t, reason, TEXT, ""),    U (rec_outcome_t, outcome_at, TIME, ""),
};
static const proto_record_t s_outcome = RECORD ("OUTCOME", rec_outcome_t, s_outcome_fields, "");

static const proto_field_t s_pair_fields[] = {
    U (rec_pair_t, hi, U64, ""), U (rec_pair_t, lo, U64, ""),
};
static const proto_record_t s_pair = RECORD ("FORGET", rec_pair_t, s_pair_fields, "");

static const proto_field_t s_posted_fields[] = {
    U (rec_posted_t, hi, U64, ""),       U (rec_posted_t, lo, U64, ""),
    U (rec_posted_t, at, TIME, ""),       S (rec_posted_t, entity, KEY, ""),
    S (rec_posted_t, chat, KEY, ""),     S (rec_posted_t, chat_kind, 16, ""),
};
static const proto_record_t s_posted = RECORD ("POSTED", rec_posted_t, s_posted_fields, "");

//  --- the store ---------------------------------------------------------------------------

typedef struct {
    pkey_fp_t pair;
    uint64_t job_id, token;
    char *strings;              //  one block: msg_key, entity, chat, chat_kind, text
    const char *msg_key, *entity, *chat, *chat_kind, *text;
    uint8_t *payload;
    uint32_t payload_size;
    int priority;
    int64_t created_ms, expires_ms;
    uint64_t llm_ms, tokens;
    int64_t marked_at, first_at;
    int outcome;                //  SINK_NO_OUTCOME until known
    char *reason;
    int64_t outcome_at;
    pjournal_anchor_t anchor;   //  the segment of its latest record
    bool flagged;               //  in the list the commit writes
    bool gone;                  //  forgotten: a tombstone, then freed
    bool sync;                  //  new: the commit that writes it is synced
    uint64_t order;             //  at load: the order its latest record came in
} s_mark_t;

//  A segment kept for the rate history it holds: until an hour after its latest post.
typedef struct {
    uint64_t segment;
    int64_t last_at;
} s_pin_t;

struct sink_store_s {
    pjournal_t *journal;
    msgpack_sbuffer buf;        //  reused for every record
    ptable_t *marks;            //  pair -> s_mark_t
    s_mark_t **flagged;         //  marks the next commit writes, in the order they changed
    size_t flagged_count, flagged_capacity;
    bool appended;              //  records wait in the journal's turn
    pseen_t *posted, *doubted;  //  the ledger's sets; tags are segments
    s_pin_t *pins;              //  by segment, ascending
    size_t pin_count, pin_capacity;
    uint64_t retagged;          //  the last segment whose pairs were copied forward
    bool failed;                //  a record could not be written: nothing may go
    uint64_t quarantined;
};

//  --- marks in memory ----------------------------------------------------------------------

static uint64_t s_pair_hash (const void *key)
{
    const pkey_fp_t *fp = key;
    return fp->lo ^ (fp->hi * 0x9E3779B97F4A7C15ull);
}

static const void *s_mark_key (const void *item)
{
    return &((const s_mark_t *) item)->pair;
}

static bool s_mark_match (const void *item, const void *key)
{
    return pkey_fp_equal (((const s_mark_t *) item)->pair, *(const pkey_fp_t *) key);
}

//  Copies the mark's strings into one block.
static void s_mark_strings (s_mark_t *m, const char *msg_key, const char *entity, const char *chat,
                            const char *chat_kind, const char *text)
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

static void s_mark_payload (s_mark_t *m, const void *payload, uint32_t size)
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

static s_mark_t *s_mark_find (sink_store_t *self, pkey_fp_t pair)
{
    return ptable_lookup (self->marks, &pair);
}

static s_mark_t *s_mark_get (sink_store_t *self, pkey_fp_t pair)
{
    s_mark_t *m = s_mark_find (self, pair);
    if (!m) {
        m = pcalloc (1, sizeof *m);
        m->pair = pair;
        m->outcome = SINK_NO_OUTCOME;
        ptable_insert (self->marks, m);
    }
    return m;
}

static void s_mark_free (sink_store_t *self, s_mark_t *m)
{
    pjournal_anchor_clear (self->journal, &m->anchor);
    ptable_remove (self->marks, &m->pair);
    free (m->strings);
    free (m->payload);
    free (m->reason);
    free (m);
}

//  The next commit writes this mark (once, whatever changed meanwhile).
static void s_flag (sink_store_t *self, s_mark_t *m)
{
    if (m->flagged)
        return;
    m->flagged = true;
    self->flagged = pgrow (self->flagged, &self->flagged_capacity, self->flagged_count + 1,
                           sizeof (s_mark_t *));
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
static void s_put_mark (sink_store_t *self, s_mark_t *m)
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
        seg = s_append (self, R_MARK, &s_mark, &r);
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
        seg = s_append (self, R_OUTCOME, &s_outcome, &r);
    }
    if (seg)
        pjournal_anchor_set (self->journal, &m->anchor, seg);
}

//  Writes the flagged marks. Returns true when one of them must be synced.
static bool s_write_flagged (sink_store_t *self)
{
    bool sync = false;
    for (size_t i = 0; i < self->flagged_count; i++) {
        s_mark_t *m = self->flagged[i];
        m->flagged = false;
        if (m->gone) {
            //  Stored before: a tombstone, or its older records bring it back.
            if (m->anchor.segment) {
                rec_pair_t r = {m->pair.hi, m->pair.lo};
                s_append (self, R_FORGET, &s_pair, &r);
            }
            s_mark_free (self, m);
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
    char old[4096];
    struct stat st;
    snprintf (old, sizeof old, "%s/sink.db", dir);
    if (stat (old, &st) == 0)
        plog_warn ("%s is from an older version and is not read; the state is now in %s/sink/",
                   old, dir);
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
    s_mark_t *m;
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
    s_mark_t *o = s_mark_get (self, m->pair);
    o->gone = false;
    o->job_id = m->job_id;
    o->token = m->token;
    s_mark_strings (o, m->msg_key, m->entity, m->chat, m->chat_kind, m->text);
    s_mark_payload (o, m->payload, m->payload_size);
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
static s_mark_t *s_live (sink_store_t *self, pkey_fp_t pair)
{
    s_mark_t *m = s_mark_find (self, pair);
    return m && !m->gone ? m : NULL;
}

void sink_store_retoken (sink_store_t *self, pkey_fp_t pair, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->job_id = job_id;
    m->token = token;
    s_flag (self, m);
}

void sink_store_first (sink_store_t *self, pkey_fp_t pair, int64_t at)
{
    assert (self);
    s_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->first_at = at;
    s_flag (self, m);
}

void sink_store_outcome (sink_store_t *self, pkey_fp_t pair, int outcome, const char *reason,
                         int64_t at)
{
    assert (self);
    s_mark_t *m = s_live (self, pair);
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
    s_mark_t *m = s_live (self, pair);
    if (!m)
        return;
    m->gone = true;
    m->sync = false;
    s_flag (self, m);
}

//  --- posted and doubted pairs -----------------------------------------------------------------

//  Keeps `segment` while it holds a post of the last hour.
static void s_pin (sink_store_t *self, uint64_t segment, int64_t at)
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
    self->pins = pgrow (self->pins, &self->pin_capacity, self->pin_count + 1, sizeof (s_pin_t));
    memmove (&self->pins[i + 1], &self->pins[i], (self->pin_count - i) * sizeof (s_pin_t));
    self->pins[i] = (s_pin_t) {segment, at};
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
    uint64_t seg = s_append (self, p->doubt ? R_DOUBTED : R_POSTED, &s_posted, &r);
    if (!seg)
        return 0;
    pjournal_ref (self->journal, seg);
    s_pin (self, seg, p->at);
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
    uint64_t seg = s_append (r->self, r->type, &s_posted, &rec);
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
        s_put_mark (self, PJOURNAL_CONTAINER (a, s_mark_t, anchor));
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
        size_t le = strlen (r->entity) + 1, lc = strlen (r->chat) + 1, lk = strlen (r->chat_kind) + 1;
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
        s_pin (self, seg, at);
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
    const proto_record_t *rec = type == R_MARK                          ? &s_mark
                                : type == R_OUTCOME                     ? &s_outcome
                                : type == R_FORGET                      ? &s_pair
                                : type == R_POSTED || type == R_DOUBTED ? &s_posted
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
        s_mark_t *m = s_mark_get (self, pair);
        m->job_id = k->job_id;
        m->token = k->token;
        s_mark_strings (m, k->msg_key, k->entity, k->chat, k->chat_kind, k->text);
        s_mark_payload (m, k->payload.data, k->payload.size);
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
        s_mark_t *m = s_mark_get (self, pair);
        m->job_id = o->job_id;
        m->token = o->token;
        s_mark_strings (m, "", o->entity, o->chat, o->chat_kind, "");
        s_mark_payload (m, NULL, 0);
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
        s_mark_t *m = s_mark_find (self, pair);
        if (m)
            s_mark_free (self, m);
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
    const s_mark_t *x = *(const s_mark_t *const *) a, *y = *(const s_mark_t *const *) b;
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
    s_mark_t **list = pcalloc (n + 1, sizeof (s_mark_t *));
    s_mark_t *m;
    while ((m = ptable_next (self->marks, &cursor)))
        list[k++] = m;
    qsort (list, k, sizeof (s_mark_t *), s_mark_by_time);
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
