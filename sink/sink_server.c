/*  sink_server - the sink actor. See sink.h.

    A result moves through these states (sentry_t.state):

        RECEIVED --COMMIT--> COMMITTING --VERDICT post--> TO_POST --> POSTING
                                  |                                     |
                          VERDICT stale/unknown:              ok / fail / expired /
                          dropped, counted                    duplicate: REPORTING
                                                                    |
                                                     OUTCOME_ACK: forgotten
*/
#include "sink/sink.h"
#include "sink/dest.h"
#include "sink/sink_store.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto.h"
#include "proto/proto_sock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_READ      512
#define POSTED_MAX      500000  //  (message, entity) keys remembered in memory
#define SNAPSHOT_MAX_MS 10000   //  component stats older than this are not published
#define LATENCY_SAMPLES 4096
#define POST_ATTEMPTS   10      //  tries of one post before it is dead-lettered
#define MAX_DEST_FDS    1024

typedef enum {
    E_RECEIVED = 1,
    E_COMMITTING,
    E_TO_POST,
    E_POSTING,
    E_WAIT_RETRY,
    E_REPORTING
} sentry_state_t;

typedef struct {
    char key[48];               //  "job_id:token"
    uint64_t job_id, token, attempt;
    char *msg_key, *entity, *chat, *text;
    int64_t created_ms, expires_ms;
    proto_bin_t payload;
    proto_message_t message;    //  decoded payload: where to post
    void *zone;
    uint8_t state;
    int64_t sent_at;            //  COMMITTING / REPORTING: last send
    int64_t not_before;         //  WAIT_RETRY
    uint32_t post_attempts;
    uint8_t outcome;            //  proto_outcome_status_t, once known
    char *reason;
    int64_t outcome_at;
    uint64_t llm_ms;
    bool marked;                //  stored as "being posted"
    zlistx_t *list;             //  the list it is in, and where
    void *handle;
} sentry_t;

typedef struct {
    uint64_t seq;
    int64_t sent_at;
    sentry_t **entries;
    size_t count;
} obatch_t;

typedef struct {
    uint64_t received, repeated, malformed, committed, stale, posted, duplicate_posts, expired;
    uint64_t failed, in_doubt, post_retries;
} scounters_t;

typedef struct {
    const pcfg_t *config;
    zsock_t *pipe;
    zsock_t *results;
    zsock_t *broker;
    zsock_t *publisher;
    proto_net_t net;
    char id[128];
    int64_t now;
    dest_t **dests;
    size_t dest_count;
    zhashx_t *entries;          //  key -> sentry_t
    zlistx_t *received;         //  waiting to be committed
    zlistx_t *committing;       //  committed, waiting for a verdict, oldest first
    zlistx_t *to_post;
    zlistx_t *marked;           //  marked as being posted; posted once that is stored
    zlistx_t *waiting;          //  waiting to retry a post
    zlistx_t *reported;         //  outcome known, not sent yet
    zlistx_t *obatches;         //  obatch_t sent, waiting for OUTCOME_ACK, oldest first
    zhashx_t *posted;           //  "entity \x1f msg_key" already posted
    zlistx_t *posted_order;
    zhashx_t *snapshots;        //  "role/id" -> json snapshot of other components
    uint64_t next_seq;
    int64_t next_stats;
    int64_t next_log;
    scounters_t counters;
    uint64_t last_posted;       //  for the per-interval rate
    uint64_t log_posted;        //  posted at the last log line
    int64_t last_rate_at;
    double posted_per_s;
    int64_t latencies[LATENCY_SAMPLES];
    size_t latency_count;
    size_t latency_head;
    plog_limiter_t bad_log;
    sink_store_t *store;        //  durable state; NULL keeps everything in memory
    int64_t next_prune;
} sink_t;

//  --- entries ---------------------------------------------------------------------

static void s_move (sentry_t *e, zlistx_t *to, int state)
{
    if (e->list)
        zlistx_detach (e->list, e->handle);
    e->list = to;
    e->handle = to ? zlistx_add_end (to, e) : NULL;
    e->state = (uint8_t) state;
}

static void s_entry_free (sink_t *self, sentry_t *e)
{
    s_move (e, NULL, 0);
    zhashx_delete (self->entries, e->key);
    free (e->msg_key);
    free (e->entity);
    free (e->chat);
    free (e->text);
    free (e->reason);
    free ((void *) e->payload.data);
    proto_zone_free (&e->zone);
    free (e);
}

static void s_posted_key (const sentry_t *e, char *key, size_t len)
{
    snprintf (key, len, "%s\x1f%s", e->entity, e->msg_key);
}

static void s_remember_posted (sink_t *self, const char *key)
{
    if (zhashx_insert (self->posted, key, (void *) 1) != 0)
        return;
    zlistx_add_end (self->posted_order, strdup (key));
    while (zlistx_size (self->posted_order) > POSTED_MAX) {
        char *oldest = zlistx_detach (self->posted_order, NULL);
        zhashx_delete (self->posted, oldest);
        free (oldest);
    }
}

//  The post is settled: report it.
static void s_settle (sink_t *self, sentry_t *e, int outcome, const char *reason)
{
    e->outcome = (uint8_t) outcome;
    free (e->reason);
    e->reason = strdup (reason ? reason : "");
    e->outcome_at = self->now;
    switch (outcome) {
    case PROTO_OUT_POSTED: {
        self->counters.posted++;
        char key[1200];
        s_posted_key (e, key, sizeof key);
        s_remember_posted (self, key);
        int64_t latency = self->now - e->created_ms;
        self->latencies[self->latency_head] = latency;
        self->latency_head = (self->latency_head + 1) % LATENCY_SAMPLES;
        if (self->latency_count < LATENCY_SAMPLES)
            self->latency_count++;
        break;
    }
    case PROTO_OUT_DUPLICATE: self->counters.duplicate_posts++; break;
    case PROTO_OUT_EXPIRED: self->counters.expired++; break;
    case PROTO_OUT_IN_DOUBT: self->counters.in_doubt++; break;
    default:
        self->counters.failed++;
        plog_warn ("reply to %s by %s not posted: %s", e->msg_key, e->entity, e->reason);
        break;
    }
    if (self->store) {
        char pair[1200];
        s_posted_key (e, pair, sizeof pair);
        sink_pair_t pair_do = outcome == PROTO_OUT_POSTED                                   ? SINK_PAIR_POSTED
                              : outcome == PROTO_OUT_FAILED || outcome == PROTO_OUT_EXPIRED ? SINK_PAIR_CLEAR
                                                                                          : SINK_PAIR_KEEP;
        sink_store_outcome (self->store, e->key, pair, pair_do, outcome, e->reason, e->outcome_at);
    }
    e->marked = false;
    s_move (e, self->reported, E_REPORTING);
}

//  --- results from workers ----------------------------------------------------------

static void s_on_results (sink_t *self, const proto_result_t *result)
{
    for (size_t i = 0; i < result->count; i++) {
        const proto_result_item_t *item = &result->items[i];
        sentry_t *e = calloc (1, sizeof *e);
        snprintf (e->key, sizeof e->key, "%" PRIu64 ":%" PRIx64, item->job_id, item->token);
        if (zhashx_lookup (self->entries, e->key)) {
            self->counters.repeated++;
            free (e);
            continue;
        }
        uint8_t *payload = malloc (item->payload.size ? item->payload.size : 1);
        memcpy (payload, item->payload.data, item->payload.size);
        e->payload = (proto_bin_t) {payload, item->payload.size};
        char why[300];
        if (proto_message_decode (payload, item->payload.size, &e->message, &e->zone, why, sizeof why)) {
            self->counters.malformed++;
            if (plog_limiter_allow (&self->bad_log, 10))
                plog_warn ("result for job %" PRIu64 " from %s has a malformed payload: %s",
                           item->job_id, result->worker_id, why);
            free (payload);
            free (e);
            continue;   //  never committed: the broker's lease brings the job back
        }
        e->job_id = item->job_id;
        e->token = item->token;
        e->attempt = item->attempt;
        e->msg_key = strdup (item->msg_key);
        e->entity = strdup (item->entity);
        e->chat = strdup (item->chat);
        e->text = strdup (item->text);
        e->created_ms = (int64_t) item->created_ms;
        e->expires_ms = (int64_t) item->expires_ms;
        e->llm_ms = item->llm_ms;
        zhashx_insert (self->entries, e->key, e);
        s_move (e, self->received, E_RECEIVED);
        if (self->store) {
            sink_row_t row = {e->key,        e->job_id,        e->token,       e->attempt,
                              e->msg_key,    e->entity,        e->chat,        e->created_ms,
                              e->expires_ms, e->text,          e->payload.data, e->payload.size,
                              e->llm_ms,     SINK_ROW_RECEIVED, 0,             "",
                              0};
            sink_store_received (self->store, &row);
        }
        self->counters.received++;
    }
}

static void s_store_snapshot (sink_t *self, const proto_component_t *c)
{
    json_t *snap = json_object ();
    json_object_set_new (snap, "role", json_string (c->role));
    json_object_set_new (snap, "id", json_string (c->id));
    json_object_set_new (snap, "at", json_integer (self->now));
    json_t *values = json_object ();
    for (size_t j = 0; j < c->count; j++)
        json_object_set_new (values, c->values[j].key, json_real (c->values[j].value));
    json_object_set_new (snap, "values", values);
    char key[600];
    snprintf (key, sizeof key, "%s/%s", c->role, c->id);
    zhashx_update (self->snapshots, key, snap);
}

//  --- the broker conversation ----------------------------------------------------------

static void s_send_broker (sink_t *self, proto_type_t type, const void *body)
{
    zmq_msg_t frame;
    if (proto_encode (type, body, &frame) == 0
        && zmq_msg_send (&frame, zsock_resolve (self->broker), ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&frame);     //  the resend timer tries again
}

//  Sends COMMIT for new results and again for those without a verdict, in
//  frames of at most PROTO_BATCH items.
static void s_commit (sink_t *self)
{
    proto_commit_item_t refs[PROTO_BATCH];
    for (;;) {
        size_t k = 0;
        sentry_t *e;
        while (k < PROTO_BATCH && (e = zlistx_first (self->committing))
               && self->now - e->sent_at >= self->config->resend_ms) {
            refs[k++] = (proto_commit_item_t) {e->job_id, e->token, 0};
            e->sent_at = self->now;
            s_move (e, self->committing, E_COMMITTING);     //  to the end: newest send
        }
        while (k < PROTO_BATCH && (e = zlistx_first (self->received))) {
            refs[k++] = (proto_commit_item_t) {e->job_id, e->token, 0};
            e->sent_at = self->now;
            s_move (e, self->committing, E_COMMITTING);
        }
        if (!k)
            return;
        proto_commit_t commit = {++self->next_seq, refs, k};
        s_send_broker (self, PROTO_COMMIT, &commit);
    }
}

static void s_on_verdict (sink_t *self, const proto_verdicts_t *verdicts)
{
    for (size_t i = 0; i < verdicts->count; i++) {
        const proto_verdict_item_t *v = &verdicts->items[i];
        char key[48];
        snprintf (key, sizeof key, "%" PRIu64 ":%" PRIx64, v->job_id, v->token);
        sentry_t *e = zhashx_lookup (self->entries, key);
        if (!e || e->state != E_COMMITTING)
            continue;   //  an answer to a repeated COMMIT
        if (v->verdict == PROTO_VERDICT_POST) {
            self->counters.committed++;
            s_move (e, self->to_post, E_TO_POST);
        }
        else {
            //  Another attempt owns this job (or it is finished): drop this copy.
            self->counters.stale++;
            plog_debug ("result %s for %s dropped: verdict %" PRIu64, e->key, e->msg_key, v->verdict);
            if (self->store)
                sink_store_delete (self->store, e->key);
            s_entry_free (self, e);
        }
    }
}

//  Sends OUTCOME for newly settled posts and again for unacknowledged ones.
static void s_report (sink_t *self)
{
    obatch_t *b;
    for (b = zlistx_first (self->obatches); b && self->now - b->sent_at >= self->config->resend_ms;
         b = zlistx_first (self->obatches)) {
        proto_outcome_item_t *items = calloc (b->count, sizeof *items);
        for (size_t i = 0; i < b->count; i++) {
            sentry_t *e = b->entries[i];
            items[i] = (proto_outcome_item_t) {e->job_id, e->token, e->outcome, e->reason,
                                               (uint64_t) e->outcome_at};
        }
        proto_outcome_t outcome = {b->seq, items, b->count};
        s_send_broker (self, PROTO_OUTCOME, &outcome);
        free (items);
        b->sent_at = self->now;
        zlistx_detach_cur (self->obatches);
        zlistx_add_end (self->obatches, b);
        if (zlistx_first (self->obatches) == b)
            break;
    }
    //  New outcomes, in frames of at most PROTO_BATCH items.
    while (zlistx_size (self->reported)) {
        size_t n = zlistx_size (self->reported);
        if (n > PROTO_BATCH)
            n = PROTO_BATCH;
        b = calloc (1, sizeof *b);
        b->seq = ++self->next_seq;
        b->sent_at = self->now;
        b->entries = calloc (n, sizeof (sentry_t *));
        proto_outcome_item_t *items = calloc (n, sizeof *items);
        sentry_t *e;
        while (b->count < n && (e = zlistx_first (self->reported))) {
            s_move (e, NULL, E_REPORTING);
            items[b->count] = (proto_outcome_item_t) {e->job_id, e->token, e->outcome, e->reason,
                                                      (uint64_t) e->outcome_at};
            b->entries[b->count++] = e;
        }
        proto_outcome_t outcome = {b->seq, items, b->count};
        s_send_broker (self, PROTO_OUTCOME, &outcome);
        free (items);
        zlistx_add_end (self->obatches, b);
    }
}

static void s_on_outcome_ack (sink_t *self, uint64_t seq)
{
    for (obatch_t *b = zlistx_first (self->obatches); b; b = zlistx_next (self->obatches)) {
        if (b->seq != seq)
            continue;
        zlistx_detach_cur (self->obatches);
        for (size_t i = 0; i < b->count; i++) {
            if (self->store)
                sink_store_delete (self->store, b->entries[i]->key);
            s_entry_free (self, b->entries[i]);
        }
        free (b->entries);
        free (b);
        return;
    }
}

//  --- posting ------------------------------------------------------------------------------

static dest_t *s_route (sink_t *self, const char *source)
{
    for (size_t i = 0; i < self->dest_count; i++) {
        const char *want = self->dests[i]->config->source;
        if (strcmp (want, "*") == 0 || strcmp (want, source) == 0)
            return self->dests[i];
    }
    return NULL;
}

static void s_on_posted (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    sink_t *self = ctx;
    sentry_t *e = tag;
    if (status == DEST_OK)
        s_settle (self, e, PROTO_OUT_POSTED, NULL);
    else if (status == DEST_FAIL)
        s_settle (self, e, PROTO_OUT_FAILED, reason);
    else if (status == DEST_IN_DOUBT)
        s_settle (self, e, PROTO_OUT_IN_DOUBT, reason);
    else if (e->post_attempts >= POST_ATTEMPTS) {
        char why[600];
        snprintf (why, sizeof why, "gave up after %u tries: %s", e->post_attempts, reason ? reason : "");
        s_settle (self, e, PROTO_OUT_FAILED, why);
    }
    else {
        //  Certainly not posted: drop the mark, and try again after exponential
        //  backoff with full jitter, or when the platform asked.
        if (self->store && e->marked) {
            char pair[1200];
            s_posted_key (e, pair, sizeof pair);
            sink_store_unmark (self->store, e->key, pair);
        }
        e->marked = false;
        int64_t ceiling = 500LL << (e->post_attempts < 7 ? e->post_attempts : 7);
        int64_t delay = (int64_t) (random () % (ceiling + 1));
        if (retry_after > delay)
            delay = retry_after;
        e->not_before = self->now + delay;
        self->counters.post_retries++;
        plog_info ("post of %s by %s will be retried in %" PRId64 " ms: %s", e->msg_key, e->entity,
                   delay, reason ? reason : "");
        s_move (e, self->waiting, E_WAIT_RETRY);
    }
}

//  A destination that holds posts tells us one is leaving: store the mark
//  now, before a byte goes out, so a crash cannot make us post it twice.
static int s_on_sending (void *ctx, void *tag)
{
    sink_t *self = ctx;
    sentry_t *e = tag;
    if (!self->store || e->marked)
        return 0;
    char pair[1200];
    s_posted_key (e, pair, sizeof pair);
    sink_store_mark (self->store, e->key, pair, self->now);
    if (sink_store_commit (self->store))
        return -1;
    e->marked = true;
    return 0;
}

//  Has this (message, entity) been posted already?
static bool s_already_posted (sink_t *self, const char *pair)
{
    if (self->store)
        return sink_store_posted (self->store, pair) == 1;
    return zhashx_lookup (self->posted, pair) != NULL;
}

static void s_start_post (sink_t *self, sentry_t *e, dest_t *dest)
{
    int entity = pcfg_entity_index (self->config, e->entity);
    dest_post_t post = {e->msg_key,
                        e->entity,
                        entity >= 0 ? pcfg_entity (self->config, (size_t) entity)->name : e->entity,
                        e->chat,
                        e->message.source,
                        e->message.chat_ref,
                        e->message.msg_ref,
                        e->message.author,
                        e->text,
                        e->created_ms,
                        e->job_id,
                        e->attempt};
    e->post_attempts++;
    s_move (e, NULL, E_POSTING);
    if (dest->post (dest, &post, e, self->now))
        s_on_posted (self, e, DEST_RETRY, "destination could not start the post", 0);
}

//  Decides what to do with a result the broker said to post: settle it at
//  once (posted before, too late, nowhere to go), hand it to a destination
//  that holds posts (it asks s_on_sending before sending), or mark it and
//  post it once the mark is stored (destinations that write at once).
static void s_prepare_post (sink_t *self, sentry_t *e)
{
    char pair[1200];
    s_posted_key (e, pair, sizeof pair);
    if (s_already_posted (self, pair)) {
        s_settle (self, e, PROTO_OUT_DUPLICATE, "already posted");
        return;
    }
    if (e->expires_ms && self->now > e->expires_ms) {
        s_settle (self, e, PROTO_OUT_EXPIRED, "too late to post");
        return;
    }
    dest_t *dest = s_route (self, e->message.source);
    if (!dest) {
        char why[300];
        snprintf (why, sizeof why, "no destination takes replies for source \"%s\"", e->message.source);
        s_settle (self, e, PROTO_OUT_FAILED, why);
        return;
    }
    if (dest->holds)
        s_start_post (self, e, dest);
    else {
        if (self->store) {
            sink_store_mark (self->store, e->key, pair, self->now);
            e->marked = true;
        }
        s_move (e, self->marked, E_POSTING);
    }
}

static void s_prepare_posts (sink_t *self)
{
    sentry_t *e;
    while ((e = zlistx_first (self->to_post)))
        s_prepare_post (self, e);
    //  Visit each waiting entry once: due ones go, the rest rotate.
    for (size_t n = zlistx_size (self->waiting); n > 0; n--) {
        e = zlistx_first (self->waiting);
        if (e->not_before <= self->now)
            s_prepare_post (self, e);
        else
            s_move (e, self->waiting, E_WAIT_RETRY);
    }
}

//  Posts what was marked; their marks are stored by now.
static void s_post_marked (sink_t *self)
{
    sentry_t *e;
    while ((e = zlistx_first (self->marked)))
        s_start_post (self, e, s_route (self, e->message.source));
}

//  --- stats ---------------------------------------------------------------------------------

static int s_compare_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double p50, p95, p99;
} latency_t;

static latency_t s_latency (sink_t *self)
{
    latency_t l = {0, 0, 0};
    if (self->latency_count) {
        int64_t sorted[LATENCY_SAMPLES];
        memcpy (sorted, self->latencies, self->latency_count * sizeof (int64_t));
        qsort (sorted, self->latency_count, sizeof (int64_t), s_compare_i64);
        l.p50 = (double) sorted[self->latency_count * 50 / 100];
        l.p95 = (double) sorted[self->latency_count * 95 / 100];
        l.p99 = (double) sorted[self->latency_count * 99 / 100];
    }
    return l;
}

static void s_own_values (sink_t *self, const latency_t *l, proto_num_t *values, size_t *count)
{
    const scounters_t *c = &self->counters;
    const proto_num_t all[] = {
        {"received", (double) c->received},     {"repeated", (double) c->repeated},
        {"malformed", (double) c->malformed},   {"committed", (double) c->committed},
        {"stale", (double) c->stale},           {"posted", (double) c->posted},
        {"duplicate_posts", (double) c->duplicate_posts},
        {"expired", (double) c->expired},       {"failed", (double) c->failed},
        {"in_doubt", (double) c->in_doubt},     {"post_retries", (double) c->post_retries},
        {"outbox", (double) zhashx_size (self->entries)},
        {"posted_per_s", self->posted_per_s},   {"latency_p50_ms", l->p50},
        {"latency_p95_ms", l->p95},             {"latency_p99_ms", l->p99},
    };
    memcpy (values, all, sizeof all);
    *count = sizeof all / sizeof all[0];
}

static double s_snapshot_value (sink_t *self, const char *role, const char *name)
{
    double total = 0;
    for (json_t *snap = zhashx_first (self->snapshots); snap; snap = zhashx_next (self->snapshots))
        if (streq (json_string_value (json_object_get (snap, "role")), role)
            && self->now - json_integer_value (json_object_get (snap, "at")) <= SNAPSHOT_MAX_MS)
            total += json_number_value (json_object_get (json_object_get (snap, "values"), name));
    return total;
}

static void s_publish (sink_t *self)
{
    //  Rate over the last interval.
    if (self->last_rate_at) {
        double secs = (double) (self->now - self->last_rate_at) / 1000.0;
        if (secs > 0)
            self->posted_per_s = (double) (self->counters.posted - self->last_posted) / secs;
    }
    self->last_rate_at = self->now;
    self->last_posted = self->counters.posted;

    latency_t latency = s_latency (self);
    proto_num_t own[32];
    size_t own_count;
    s_own_values (self, &latency, own, &own_count);
    //  Ask the broker for its counters (and the pollers'); they come back as STATS.
    proto_component_t me = {"sink", self->id, own, own_count};
    proto_stats_t mine = {(uint64_t) self->now, &me, 1};
    s_send_broker (self, PROTO_STATS, &mine);

    size_t n = zhashx_size (self->snapshots) + 1;
    proto_component_t *components = calloc (n, sizeof *components);
    proto_num_t **owned = calloc (n, sizeof *owned);
    size_t k = 0;
    components[k++] = me;
    for (json_t *snap = zhashx_first (self->snapshots); snap; snap = zhashx_next (self->snapshots)) {
        if (self->now - json_integer_value (json_object_get (snap, "at")) > SNAPSHOT_MAX_MS)
            continue;
        json_t *values = json_object_get (snap, "values");
        proto_num_t *v = calloc (json_object_size (values) + 1, sizeof *v);
        size_t m = 0;
        const char *name;
        json_t *value;
        json_object_foreach (values, name, value) {
            v[m].key = name;
            v[m++].value = json_number_value (value);
        }
        owned[k] = v;
        components[k++] = (proto_component_t) {json_string_value (json_object_get (snap, "role")),
                                               json_string_value (json_object_get (snap, "id")), v, m};
    }
    proto_stats_t stats = {(uint64_t) self->now, components, k};
    zmq_msg_t frame;
    if (proto_encode (PROTO_STATS, &stats, &frame) == 0
        && zmq_msg_send (&frame, zsock_resolve (self->publisher), ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&frame);
    for (size_t i = 0; i < k; i++)
        free (owned[i]);
    free (owned);
    free (components);

    if (self->config->stats_log_interval_ms > 0 && self->now >= self->next_log) {
        double rate = (double) (self->counters.posted - self->log_posted) * 1000.0
                      / (double) self->config->stats_log_interval_ms;
        self->log_posted = self->counters.posted;
        self->next_log = self->now + self->config->stats_log_interval_ms;
        plog_info ("stats: posted %" PRIu64 " (%.1f/s) | queued %.0f | in flight %.0f | workers %.0f"
                   " | expired %.0f | dead %.0f | p50 %.0f ms p95 %.0f ms",
                   self->counters.posted, rate, s_snapshot_value (self, "broker", "queued"),
                   s_snapshot_value (self, "broker", "in_flight"),
                   s_snapshot_value (self, "broker", "workers"),
                   s_snapshot_value (self, "broker", "expired"),
                   s_snapshot_value (self, "broker", "dlq"), latency.p50, latency.p95);
    }
}

//  --- reading ---------------------------------------------------------------------------------

static bool s_read (sink_t *self, zsock_t *sock)
{
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    if (zmq_msg_recv (&frame, zsock_resolve (sock), ZMQ_DONTWAIT) == -1) {
        zmq_msg_close (&frame);
        return false;
    }
    proto_msg_t msg;
    char why[256];
    if (proto_sock_admit (sock, NULL, 0, &frame, NULL, why, sizeof why)
        || proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why)) {
        self->counters.malformed++;
        if (plog_limiter_allow (&self->bad_log, 10))
            plog_warn ("dropped malformed frame from the %s: %s",
                       sock == self->broker ? "broker" : "results socket", why);
    }
    else {
        switch (msg.type) {
        case PROTO_RESULT: s_on_results (self, &msg.body.result); break;
        case PROTO_VERDICT: s_on_verdict (self, &msg.body.verdict); break;
        case PROTO_OUTCOME_ACK: s_on_outcome_ack (self, msg.body.outcome_ack.seq); break;
        case PROTO_STATS:
            for (size_t i = 0; i < msg.body.stats.count; i++)
                s_store_snapshot (self, &msg.body.stats.components[i]);
            break;
        default: break;
        }
        proto_msg_release (&msg);
    }
    zmq_msg_close (&frame);
    return true;
}

static int64_t s_next_wake (sink_t *self, int64_t wake)
{
    sentry_t *e = zlistx_first (self->committing);
    if (e && e->sent_at + self->config->resend_ms < wake)
        wake = e->sent_at + self->config->resend_ms;
    obatch_t *b = zlistx_first (self->obatches);
    if (b && b->sent_at + self->config->resend_ms < wake)
        wake = b->sent_at + self->config->resend_ms;
    for (e = zlistx_first (self->waiting); e; e = zlistx_next (self->waiting))
        if (e->not_before < wake)
            wake = e->not_before;
    for (size_t i = 0; i < self->dest_count; i++) {
        int64_t w = self->dests[i]->wakeup (self->dests[i], self->now);
        if (w < wake)
            wake = w;
    }
    return wake;
}

//  Returns -1 when the sink's state could not be stored.
static int s_run (sink_t *self)
{
    zmq_pollitem_t items[3 + MAX_DEST_FDS];
    int owner[3 + MAX_DEST_FDS];
    for (;;) {
        self->now = zclock_time ();
        int n = 0;
        items[n++] = (zmq_pollitem_t) {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t) {zsock_resolve (self->results), 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t) {zsock_resolve (self->broker), 0, ZMQ_POLLIN, 0};
        for (size_t d = 0; d < self->dest_count; d++) {
            int k = self->dests[d]->pollitems (self->dests[d], items + n, 3 + MAX_DEST_FDS - n);
            for (int i = 0; i < k; i++)
                owner[n + i] = (int) d;
            n += k;
        }
        int64_t timeout = s_next_wake (self, self->next_stats) - self->now;
        if (zmq_poll (items, n, timeout < 0 ? 0 : timeout > 60000 ? 60000 : (long) timeout) == -1) {
            if (zmq_errno () == EINTR)
                continue;
            break;
        }
        self->now = zclock_time ();
        if (items[0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (self->pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        for (int i = 0; i < BATCH_READ && s_read (self, self->broker); i++)
            ;
        for (int i = 0; i < BATCH_READ && s_read (self, self->results); i++)
            ;
        for (size_t d = 0; d < self->dest_count; d++) {
            int first = -1, count = 0;
            for (int i = 3; i < n; i++)
                if (owner[i] == (int) d) {
                    if (first < 0)
                        first = i;
                    count++;
                }
            self->dests[d]->process (self->dests[d], self->now, first < 0 ? NULL : items + first, count);
        }
        s_prepare_posts (self);
        //  Results, marks and outcomes are stored before anyone hears of them.
        if (self->store && sink_store_commit (self->store))
            return -1;
        s_commit (self);
        s_post_marked (self);
        if (self->store && sink_store_commit (self->store))
            return -1;
        s_report (self);
        if (self->now >= self->next_stats) {
            self->next_stats = self->now + self->config->stats_interval_ms;
            s_publish (self);
        }
        if (self->store && self->now >= self->next_prune) {
            sink_store_prune (self->store, self->now, self->config->dedupe_retention_s * 1000);
            self->next_prune = self->now + 60000;
        }
    }
    return 0;
}

//  --- life ----------------------------------------------------------------------------------------

static void s_obatch_free (void **item)
{
    obatch_t *b = *item;
    free (b->entries);
    free (b);
    *item = NULL;
}

static void s_json_destructor (void **item)
{
    json_decref (*item);
    *item = NULL;
}

static sink_t *s_sink_new (zsock_t *pipe, const pcfg_t *config)
{
    sink_t *self = calloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = config;
    char host[64] = "host";
    gethostname (host, sizeof host - 1);
    snprintf (self->id, sizeof self->id, "%s/%d", host, (int) getpid ());
    srandom ((unsigned) (zclock_time () ^ getpid ()));
    proto_net_from_config (&self->net, config, "sink");
    self->entries = zhashx_new ();
    zhashx_set_key_duplicator (self->entries, NULL);
    zhashx_set_key_destructor (self->entries, NULL);
    self->received = zlistx_new ();
    self->committing = zlistx_new ();
    self->to_post = zlistx_new ();
    self->marked = zlistx_new ();
    self->waiting = zlistx_new ();
    self->reported = zlistx_new ();
    self->obatches = zlistx_new ();
    zlistx_set_destructor (self->obatches, s_obatch_free);
    self->posted = zhashx_new ();
    self->posted_order = zlistx_new ();
    zlistx_set_destructor (self->posted_order, (zlistx_destructor_fn *) zstr_free);
    self->snapshots = zhashx_new ();
    zhashx_set_destructor (self->snapshots, s_json_destructor);
    return self;
}

static void s_sink_destroy (sink_t **self_p)
{
    sink_t *self = *self_p;
    sentry_t *e = zhashx_first (self->entries);
    while (e) {
        sentry_t *next = zhashx_next (self->entries);
        s_entry_free (self, e);
        e = next;
    }
    zhashx_destroy (&self->entries);
    zlistx_destroy (&self->received);
    zlistx_destroy (&self->committing);
    zlistx_destroy (&self->to_post);
    zlistx_destroy (&self->marked);
    zlistx_destroy (&self->waiting);
    zlistx_destroy (&self->reported);
    zlistx_destroy (&self->obatches);
    zhashx_destroy (&self->posted);
    zlistx_destroy (&self->posted_order);
    zhashx_destroy (&self->snapshots);
    for (size_t i = 0; i < self->dest_count; i++)
        dest_destroy (&self->dests[i]);
    free (self->dests);
    zsock_destroy (&self->results);
    zsock_destroy (&self->broker);
    zsock_destroy (&self->publisher);
    sink_store_close (&self->store);
    free (self);
    *self_p = NULL;
}

//  --- recovery -------------------------------------------------------------------------------

//  One stored result back in memory, in the state it was stored in.
static void s_load_row (void *arg, const sink_row_t *row)
{
    sink_t *self = arg;
    sentry_t *e = calloc (1, sizeof *e);
    snprintf (e->key, sizeof e->key, "%s", row->key);
    uint8_t *payload = malloc (row->payload_size ? row->payload_size : 1);
    memcpy (payload, row->payload, row->payload_size);
    e->payload = (proto_bin_t) {payload, row->payload_size};
    char why[300];
    if (proto_message_decode (payload, row->payload_size, &e->message, &e->zone, why, sizeof why)) {
        plog_error ("stored result %s cannot be read (%s); dropped", row->key, why);
        sink_store_delete (self->store, row->key);
        free (payload);
        free (e);
        return;
    }
    e->job_id = row->job_id;
    e->token = row->token;
    e->attempt = row->attempt;
    e->msg_key = strdup (row->msg_key);
    e->entity = strdup (row->entity);
    e->chat = strdup (row->chat);
    e->text = strdup (row->text);
    e->created_ms = row->created_ms;
    e->expires_ms = row->expires_ms;
    e->llm_ms = row->llm_ms;
    zhashx_insert (self->entries, e->key, e);
    if (row->state == SINK_ROW_REPORTED) {
        //  Known outcome, not yet acknowledged: report it again.
        e->outcome = (uint8_t) row->outcome;
        e->reason = strdup (row->reason);
        e->outcome_at = row->outcome_at;
        s_move (e, self->reported, E_REPORTING);
        return;
    }
    if (row->state == SINK_ROW_POSTING) {
        //  The sink stopped while posting this: did it go out?
        e->marked = true;
        dest_t *dest = s_route (self, e->message.source);
        int posted = dest ? dest->was_posted (dest, e->msg_key, e->entity) : -1;
        if (posted == 1) {
            plog_info ("interrupted post of %s by %s did go out", e->msg_key, e->entity);
            s_settle (self, e, PROTO_OUT_POSTED, NULL);
            return;
        }
        if (posted == -1) {
            char reason[300];
            snprintf (reason, sizeof reason,
                      "the sink stopped while posting; destination %s cannot tell whether it went out",
                      dest ? dest->config->name : "(none)");
            s_settle (self, e, PROTO_OUT_IN_DOUBT, reason);
            return;
        }
        char pair[1200];
        s_posted_key (e, pair, sizeof pair);
        sink_store_unmark (self->store, e->key, pair);
        e->marked = false;
    }
    //  Ask the broker again; it answers "post" again if this attempt still owns the job.
    s_move (e, self->received, E_RECEIVED);
}

static int s_recover (sink_t *self)
{
    const pcfg_t *c = self->config;
    if (!*c->data_dir)
        return 0;
    char err[600];
    self->store = sink_store_open (c->data_dir, c->fsync, err, sizeof err);
    if (!self->store) {
        plog_error ("%s", err);
        return -1;
    }
    int64_t start = zclock_mono ();
    sink_store_load (self->store, self, s_load_row);
    if (sink_store_commit (self->store))
        return -1;
    plog_info ("recovered from %s/sink.db in %" PRId64 " ms: %zu result(s) to commit, %zu outcome(s)"
               " to report",
               c->data_dir, zclock_mono () - start, zlistx_size (self->received),
               zlistx_size (self->reported));
    return 0;
}

static int s_start (sink_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    const char *results = *c->sink_results_bind ? c->sink_results_bind : c->sink_results;
    const char *stats = *c->stats_publish_bind ? c->stats_publish_bind : c->stats_publish;
    self->results = proto_sock_new (&self->net, ZMQ_PULL, results, true, NULL, PROTO_PORT_RESULTS);
    self->publisher = proto_sock_new (&self->net, ZMQ_PUB, stats, true, NULL, PROTO_PORT_STATS);
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_frontend, false, NULL, PROTO_PORT_FRONTEND);
    if (!self->results || !self->publisher || !self->broker)
        return -1;
    const pcfg_destination_t *configs = c->destinations.items;
    self->dests = calloc (c->destinations.count + 1, sizeof (dest_t *));
    for (size_t i = 0; i < c->destinations.count; i++) {
        if (!configs[i].enabled)
            continue;
        dest_t *dest = dest_new (&configs[i], c, s_on_posted, s_on_sending, self);
        if (!dest)
            return -1;
        self->dests[self->dest_count++] = dest;
    }
    char *re = proto_sock_endpoint (self->results);
    char *se = proto_sock_endpoint (self->publisher);
    plog_info ("results on %s, stats on %s, broker %s, %zu destination(s)", re, se,
               c->broker_frontend, self->dest_count);
    json_t *ready = json_object ();
    json_object_set_new (ready, "results", json_string (re));
    json_object_set_new (ready, "stats", json_string (se));
    pdaemon_write_ready (ready_file, ready);
    zstr_free (&re);
    zstr_free (&se);
    return 0;
}

void sink_server (zsock_t *pipe, void *args)
{
    sink_args_t *a = args;
    sink_t *self = s_sink_new (pipe, a->config);
    zsock_signal (pipe, 0);
    if (s_start (self, a->ready_file)) {
        zstr_send (pipe, "cannot start the sink");
        s_sink_destroy (&self);
        return;
    }
    //  Destinations first: recovery asks them about interrupted posts.
    if (s_recover (self)) {
        zstr_send (pipe, "cannot open the sink's storage");
        s_sink_destroy (&self);
        return;
    }
    if (s_run (self)) {
        zstr_send (pipe, "storage failed; stopping");
        s_sink_destroy (&self);
        return;
    }
    //  Without storage, outcomes not yet acknowledged go with this process;
    //  the broker's committed jobs then wait for their outcome.
    s_report (self);
    s_sink_destroy (&self);
}
