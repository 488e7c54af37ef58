/*  ledger - posted pairs, outcomes until acknowledged, recovery. See ledger.h. */
#include "sink/ledger.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/pseen.h"
#include "common/ptable.h"
#include "proto/proto.h"

#include <czmq.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#define LATENCY_SAMPLES 4096

typedef struct {
    uint64_t job_id, token;     //  adjacent: the by_ref key
    pkey_fp_t pair;
    int outcome;
    bool owns_row;              //  the store's mark for the pair is this outcome's
} s_entry_t;

struct ledger_s {
    const pcfg_t *config;
    sink_store_t *store;
    commit_t *commit;
    pseen_t *posted;
    pseen_t *doubted;
    ptable_t *by_ref;           //  (job_id, token) -> s_entry_t (owns them)
    ptable_t *by_pair;          //  pair -> s_entry_t (the latest of the pair)
    ledger_stats_t stats;
    int64_t latencies[LATENCY_SAMPLES];
    size_t latency_count, latency_head;
};

_Static_assert (offsetof (s_entry_t, token) == offsetof (s_entry_t, job_id) + 8,
                "the by_ref key is (job_id, token), adjacent");

static const void *s_ref_of (const void *item)
{
    return &((const s_entry_t *) item)->job_id;
}

static const void *s_pair_of (const void *item)
{
    return &((const s_entry_t *) item)->pair;
}

static bool s_ref_match (const void *item, const void *key)
{
    return ptable_u64x2_equal (s_ref_of (item), key);
}

static bool s_pair_match (const void *item, const void *key)
{
    return pkey_fp_equal (((const s_entry_t *) item)->pair, *(const pkey_fp_t *) key);
}

static s_entry_t *s_by_ref (ledger_t *self, uint64_t job_id, uint64_t token)
{
    ptable_u64x2_t key = {job_id, token};
    return ptable_lookup (self->by_ref, &key);
}

//  Takes an entry out of both tables and frees it.
static void s_entry_free (ledger_t *self, s_entry_t *e)
{
    if (ptable_lookup (self->by_pair, &e->pair) == e)
        ptable_remove (self->by_pair, &e->pair);
    ptable_remove (self->by_ref, &e->job_id);
    free (e);
}

//  Keeps an outcome until acknowledged: the latest for its attempt and its pair.
static void s_entry_add (ledger_t *self, uint64_t job_id, uint64_t token, pkey_fp_t pair,
                         int outcome, bool owns_row)
{
    s_entry_t *e = s_by_ref (self, job_id, token);
    if (e)
        s_entry_free (self, e);
    e = pcalloc (1, sizeof *e);
    e->job_id = job_id;
    e->token = token;
    e->pair = pair;
    e->outcome = outcome;
    e->owns_row = owns_row;
    ptable_insert (self->by_ref, e);
    ptable_remove (self->by_pair, &e->pair);
    ptable_insert (self->by_pair, e);
}

ledger_t *ledger_new (const pcfg_t *config, sink_store_t *store, commit_t *commit)
{
    ledger_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->store = store;
    self->commit = commit;
    self->posted = pseen_new ((size_t) config->dedupe_max_keys, config->dedupe_retention_s * 1000);
    self->doubted = pseen_new ((size_t) config->dedupe_max_keys, config->dedupe_retention_s * 1000);
    //  The store keeps each pair's segment in its tag, and lets go of it when the set forgets it.
    if (store)
        sink_store_set_pairs (store, self->posted, self->doubted);
    self->by_ref = ptable_new (ptable_hash_u64x2, s_ref_of, s_ref_match);
    self->by_pair = ptable_new (pkey_fp_hash, s_pair_of, s_pair_match);
    return self;
}

void ledger_destroy (ledger_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ledger_t *self = *self_p;
    if (self->store)
        sink_store_set_pairs (self->store, NULL, NULL);
    pseen_destroy (&self->posted);
    pseen_destroy (&self->doubted);
    size_t cursor = 0;
    s_entry_t *e;
    while ((e = ptable_next (self->by_ref, &cursor)))
        free (e);
    ptable_destroy (&self->by_pair);
    ptable_destroy (&self->by_ref);
    free (self);
    *self_p = NULL;
}

int ledger_pair (ledger_t *self, pkey_fp_t pair)
{
    assert (self);
    if (pseen_has (self->posted, pair))
        return LEDGER_POSTED;
    if (pseen_has (self->doubted, pair))
        return LEDGER_IN_DOUBT;
    s_entry_t *e = ptable_lookup (self->by_pair, &pair);
    if (!e)
        return LEDGER_NONE;
    switch (e->outcome) {
    case PROTO_OUT_POSTED:
    case PROTO_OUT_DUPLICATE: return LEDGER_POSTED;
    case PROTO_OUT_IN_DOUBT: return LEDGER_IN_DOUBT;
    default: return LEDGER_NOT_POSTED;
    }
}

static void s_count (ledger_t *self, int outcome)
{
    switch (outcome) {
    case PROTO_OUT_POSTED: self->stats.posted++; break;
    case PROTO_OUT_DUPLICATE: self->stats.duplicate_posts++; break;
    case PROTO_OUT_EXPIRED: self->stats.expired++; break;
    case PROTO_OUT_IN_DOUBT: self->stats.in_doubt++; break;
    default: self->stats.failed++; break;
    }
}

//  Remembers a pair as posted (or in doubt), durably when there is a store.
static void s_remember (ledger_t *self, pkey_fp_t pair, const char *entity, const char *chat,
                        const char *chat_kind, int64_t at, bool doubt)
{
    uint32_t tag;
    if (!doubt && pseen_remove (self->doubted, pair, &tag) && self->store)
        sink_store_unposted (self->store, tag);
    pseen_t *set = doubt ? self->doubted : self->posted;
    if (pseen_has (set, pair))
        return;
    tag = 0;
    if (self->store) {
        sink_posted_t p = {pair, entity, chat, chat_kind, at, doubt};
        tag = sink_store_posted (self->store, &p);
    }
    pseen_add (set, pair, at, tag);
}

void ledger_settle (ledger_t *self, const ledger_outcome_t *o, int64_t now)
{
    assert (self);
    s_count (self, o->outcome);
    if (o->outcome == PROTO_OUT_POSTED) {
        int64_t at = o->first_at ? o->first_at : now;
        self->latencies[self->latency_head] = now - o->created_ms;
        self->latency_head = (self->latency_head + 1) % LATENCY_SAMPLES;
        if (self->latency_count < LATENCY_SAMPLES)
            self->latency_count++;
        s_remember (self, o->pair, o->entity, o->chat, o->chat_kind, at, false);
    }
    else if (o->outcome == PROTO_OUT_IN_DOUBT) {
        plog_warn ("reply to job %" PRIu64 " by %s may or may not be posted: %s", o->job_id,
                   o->entity, o->reason ? o->reason : "");
        //  Never posted again; and the platform may have counted it.
        s_remember (self, o->pair, o->entity, o->chat, o->chat_kind,
                    o->first_at ? o->first_at : now, true);
    }
    else if (o->outcome == PROTO_OUT_FAILED)
        plog_warn ("reply to job %" PRIu64 " by %s not posted: %s", o->job_id, o->entity,
                   o->reason ? o->reason : "");
    if (o->marked && self->store)
        sink_store_outcome (self->store, o->pair, o->outcome, o->reason, now);
    commit_outcome (self->commit, o->job_id, o->token, o->outcome, o->reason, now);
    ledger_supersede (self, o->pair);
    s_entry_add (self, o->job_id, o->token, o->pair, o->outcome, o->marked);
}

void ledger_report (ledger_t *self, uint64_t job_id, uint64_t token, int outcome,
                    const char *reason, int64_t now)
{
    assert (self);
    s_count (self, outcome);
    commit_outcome (self->commit, job_id, token, outcome, reason, now);
}

void ledger_supersede (ledger_t *self, pkey_fp_t pair)
{
    assert (self);
    s_entry_t *e = ptable_remove (self->by_pair, &pair);
    if (e)
        e->owns_row = false;
}

bool ledger_has (ledger_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    return s_by_ref (self, job_id, token) != NULL;
}

void ledger_acked (ledger_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_entry_t *e = s_by_ref (self, job_id, token);
    if (!e)
        return;
    if (e->owns_row && self->store)
        sink_store_forget (self->store, e->pair);
    s_entry_free (self, e);
}

void ledger_prune (ledger_t *self, int64_t now)
{
    assert (self);
    pseen_prune (self->posted, now);
    pseen_prune (self->doubted, now);
    if (self->store)
        sink_store_prune (self->store, now);
}

//  --- recovery ------------------------------------------------------------------------------

typedef struct {
    ledger_t *self;
    gate_t *gate;
    dests_t *dests;
    int64_t now;
    ledger_again_fn *again;
    void *arg;
    size_t posted, rate, reported, asked, doubted;
} s_recovery_t;

//  A post of the last hour: rate history for the gate's budgets and the platforms' limits.
static void s_load_posted (void *arg, const sink_posted_t *p)
{
    s_recovery_t *rec = arg;
    rec->rate++;
    gate_restore (rec->gate, pcfg_entity_index (rec->self->config, p->entity), p->chat,
                  p->chat_kind, p->at);
    dests_restore (rec->dests, p->entity, p->chat, p->at);
}

static void s_load_mark (void *arg, const sink_mark_t *m)
{
    s_recovery_t *rec = arg;
    ledger_t *self = rec->self;
    ledger_outcome_t o = {m->pair,      m->job_id,    m->token,     m->outcome,
                          m->reason,    m->entity,    m->chat,      m->chat_kind,
                          m->created_ms, m->first_at, true};
    if (m->outcome != SINK_NO_OUTCOME) {
        //  Known, not acknowledged: report it again (counted once, before the restart).
        //  Its pair was stored with it, unless that write was cut short.
        rec->reported++;
        if (m->outcome == PROTO_OUT_POSTED || m->outcome == PROTO_OUT_IN_DOUBT)
            s_remember (self, m->pair, m->entity, m->chat, m->chat_kind,
                        m->first_at ? m->first_at : m->outcome_at,
                        m->outcome == PROTO_OUT_IN_DOUBT);
        commit_outcome (self->commit, m->job_id, m->token, m->outcome, m->reason, m->outcome_at);
        s_entry_add (self, m->job_id, m->token, m->pair, m->outcome, true);
        return;
    }
    //  The sink stopped while posting this: did it go out?
    proto_message_t message;
    void *zone = NULL;
    char why[400];
    dest_t *dest = NULL;
    if (proto_message_decode (m->payload, m->payload_size, &message, &zone, why, sizeof why) == 0)
        dest = dests_route (rec->dests, message.source);
    proto_zone_free (&zone);
    int posted = dest ? dest->was_posted (dest, m->msg_key, m->entity) : -1;
    if (posted == 1) {
        plog_info ("interrupted post of %s by %s did go out", m->msg_key, m->entity);
        int64_t at = m->first_at ? m->first_at : m->marked_at;
        gate_restore (rec->gate, pcfg_entity_index (self->config, m->entity), m->chat,
                      m->chat_kind, at);
        o.outcome = PROTO_OUT_POSTED;
        o.reason = "";
        o.first_at = at;
        ledger_settle (self, &o, rec->now);
    }
    else if (posted == 0 && !m->first_at) {
        //  Certainly not posted: the broker says post again if the job is still ours.
        rec->asked++;
        rec->again (rec->arg, m);
        sink_store_forget (self->store, m->pair);
    }
    else {
        rec->doubted++;
        snprintf (why, sizeof why,
                  "the sink stopped while posting it%s; destination %s cannot tell whether it "
                  "went out",
                  m->first_at ? " (its first part went out)" : "",
                  dest ? dest->config->name : "(none)");
        o.outcome = PROTO_OUT_IN_DOUBT;
        o.reason = why;
        ledger_settle (self, &o, rec->now);
    }
}

int ledger_recover (ledger_t *self, gate_t *gate, dests_t *dests, int64_t now,
                    ledger_again_fn *again, void *arg)
{
    assert (self);
    if (!self->store)
        return 0;
    s_recovery_t rec = {self, gate, dests, now, again, arg, 0, 0, 0, 0, 0};
    if (sink_store_load (self->store, now, self->config->dedupe_retention_s * 1000, &rec,
                         s_load_mark, s_load_posted))
        return -1;
    rec.posted = pseen_size (self->posted) + pseen_size (self->doubted);
    plog_info ("recovered %zu posted or doubted pair(s) (%zu in the last hour), %zu outcome(s) to report "
               "again, %zu interrupted post(s) to ask about again, %zu in doubt",
               rec.posted, rec.rate, rec.reported, rec.asked, rec.doubted);
    return 0;
}

//  --- stats -----------------------------------------------------------------------------------

static int s_compare_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

void ledger_stats (ledger_t *self, ledger_stats_t *stats)
{
    assert (self);
    *stats = self->stats;
    stats->posted_pairs = pseen_size (self->posted);
    stats->doubted_pairs = pseen_size (self->doubted);
    stats->unacked = ptable_size (self->by_ref);
    size_t n = self->latency_count;
    if (n) {
        int64_t *sorted = pmemdup (self->latencies, n * sizeof (int64_t));
        qsort (sorted, n, sizeof (int64_t), s_compare_i64);
        stats->latency_p50 = (double) sorted[n * 50 / 100];
        stats->latency_p95 = (double) sorted[n * 95 / 100];
        stats->latency_p99 = (double) sorted[n * 99 / 100];
        free (sorted);
    }
}
