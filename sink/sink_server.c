/*  sink_server - the sink actor: its sockets, its modules, and the loop
    (common/prt) that runs them. See sink.h.

        results (PULL)   workers' RESULT and STATS           -> intake, hub
        broker (DEALER)  VERDICT, OUTCOME_ACK and STATS      -> commit, pushed, post, ledger, hub
        stats (XPUB)     the live feed                       <- hub

    A result whose verdict the broker pushed at dispatch (pushed.h) goes
    straight to post; any other is asked about (intake, commit).

    A turn: read the sockets and the destinations; apply (the gate lets
    replies go); commit (the sink's store: one sync if a mark was stored);
    send (COMMITs, renewals and OUTCOMEs; writes to local destinations).

    Each socket takes only what its peers may send: the results socket
    RESULT and STATS, the broker socket VERDICT, OUTCOME_ACK and STATS.
    Anything else is dropped and counted as malformed. With
    network.security.enabled, results and stats must come from a worker
    (ZAP User-Id "worker/NAME"), or they are dropped and counted as refused.
    Warnings one peer causes are rate-limited per peer.
*/
#include "sink/sink.h"
#include "common/palloc.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "common/prt.h"
#include "proto/proto_auth.h"
#include "proto/proto_sock.h"
#include "sink/commit.h"
#include "sink/gate.h"
#include "sink/hub.h"
#include "sink/intake.h"
#include "sink/ledger.h"
#include "sink/post.h"
#include "sink/pushed.h"
#include "sink/sink_store.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define PRUNE_MS        60000       //  posted pairs past their retention are forgotten this often
#define DRAIN_MS        5000        //  longest wait for posts under way when stopping
#define PEER_LIMITERS   256         //  peers whose warnings are limited one by one
#define PEER_BURST      10          //  warnings per peer per minute

typedef struct {
    uint64_t received, repeated, overflow, malformed, refused, stale;
    uint64_t pushed, pushed_used;   //  post verdicts pushed at dispatch; taken by a result
} s_counters_t;

typedef struct {
    const pcfg_t *config;
    prt_t *rt;
    proto_net_t net;
    char id[128];
    zsock_t *results, *broker, *publisher;
    sink_store_t *store;        //  NULL keeps everything in memory
    intake_t *intake;
    pushed_t *pushed;
    commit_t *commit;
    gate_t *gate;
    ledger_t *ledger;
    post_t *post;
    hub_t *hub;
    int commit_timer;
    int64_t commit_tick;
    zhashx_t *limiters;         //  peer name -> plog_limiter_t
    s_counters_t counters;
    uint64_t rate_posted;       //  posted at the last stats
    int64_t rate_at;
    double posted_per_s;
    uint64_t log_posted;
    int64_t next_log;
    int64_t drain_until;        //  0 while running
} sink_t;

//  --- warnings, limited per peer ---------------------------------------------------------

static bool s_may_warn (sink_t *self, const char *peer)
{
    plog_limiter_t *limiter = zhashx_lookup (self->limiters, peer);
    if (!limiter) {
        if (zhashx_size (self->limiters) >= PEER_LIMITERS)
            zhashx_purge (self->limiters);
        limiter = pcalloc (1, sizeof *limiter);
        zhashx_insert (self->limiters, peer, limiter);
    }
    return plog_limiter_allow (limiter, PEER_BURST);
}

static const char *s_peer (const proto_peer_t *peer, const char *otherwise, char *buf, size_t len)
{
    proto_peer_name (peer, buf, len);
    return *buf ? buf : otherwise;
}

//  --- results --------------------------------------------------------------------------------

//  A verdict for a result the sink has: post it, or drop the result.
static void s_accept (sink_t *self, const proto_verdict_item_t *v, const char *text,
                      uint64_t llm_ms, uint64_t tokens)
{
    if (v->verdict == PROTO_VERDICT_POST && (!*v->msg_key || !*v->entity || !*v->chat)) {
        //  The broker must name what to post; the worker's word is not taken
        //  for it. Not held, the job comes back after the broker's lease.
        self->counters.malformed++;
        if (s_may_warn (self, "verdict"))
            plog_warn ("post verdict for job %" PRIu64 " without the job's message key, entity or "
                       "chat (a broker fault): not posted; the broker takes the job back after "
                       "its lease",
                       v->job_id);
    }
    else if (v->verdict == PROTO_VERDICT_POST) {
        post_job_t job = {v->msg_key,    v->entity,     v->chat,         v->chat_kind,
                          (int) v->priority, (int64_t) v->created_ms, (int64_t) v->expires_ms,
                          v->payload.data, v->payload.size, (int64_t) v->slot_ms};
        post_accept (self->post, v->job_id, v->token, &job, text, llm_ms, tokens,
                     prt_now (self->rt));
    }
    else {
        //  Another attempt owns the job (or it is finished): drop this one.
        self->counters.stale++;
        plog_debug ("result for job %" PRIu64 " token %" PRIx64 " dropped: verdict %" PRIu64,
                    v->job_id, v->token, v->verdict);
    }
}

static void s_on_result (sink_t *self, const proto_result_t *result, const char *peer)
{
    int64_t now = prt_now (self->rt);
    for (size_t i = 0; i < result->count; i++) {
        const proto_result_item_t *item = &result->items[i];
        if (post_has (self->post, item->job_id, item->token)) {
            self->counters.repeated++;
            continue;
        }
        pushed_verdict_t *pushed = pushed_take (self->pushed, item->job_id, item->token);
        if (pushed) {
            //  Answered before it was asked: post, and tell the broker the
            //  job is the sink's now (unless its outcome says so first).
            self->counters.received++;
            self->counters.pushed_used++;
            s_accept (self, pushed_item (pushed), item->text, item->llm_ms, item->tokens);
            commit_claim (self->commit, item->job_id, item->token);
            pushed_free (&pushed);
            continue;
        }
        switch (intake_add (self->intake, item, now)) {
        case INTAKE_ADDED:
            self->counters.received++;
            commit_ask (self->commit, item->job_id, item->token);
            break;
        case INTAKE_REPEATED: self->counters.repeated++; break;
        default:
            //  No COMMIT for it: the broker dispatches the job again after its lease.
            self->counters.overflow++;
            if (s_may_warn (self, "overflow"))
                plog_warn ("result for job %" PRIu64 " from %s dropped: %zu results already wait "
                           "for a verdict (queueSettings.maxPendingResults)",
                           item->job_id, peer, intake_size (self->intake));
            break;
        }
    }
}

static int s_read_results (void *arg, zsock_t *sock, int max)
{
    sink_t *self = arg;
    int n = 0;
    for (; n < max; n++) {
        proto_msg_t msg;
        proto_peer_t peer;
        char why[256], name[300];
        int rc = proto_recv (sock, &msg, &peer, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        const char *who = s_peer (&peer, "a worker", name, sizeof name);
        if (rc == PROTO_MALFORMED) {
            self->counters.malformed++;
            if (s_may_warn (self, who))
                plog_warn ("dropped a malformed frame from %s on the results socket: %s", who, why);
            continue;
        }
        if (msg.type != PROTO_RESULT && msg.type != PROTO_STATS) {
            self->counters.malformed++;
            if (s_may_warn (self, who))
                plog_warn ("dropped %s from %s: the results socket takes only RESULT and STATS",
                           proto_type_name (msg.type), who);
        }
        else if (self->config->security && !proto_auth_user_is (peer.user, PROTO_ROLE_WORKER)) {
            self->counters.refused++;
            if (s_may_warn (self, who))
                plog_warn ("refused %s from %s: only workers may send it", proto_type_name (msg.type),
                           who);
        }
        else if (msg.type == PROTO_RESULT)
            s_on_result (self, &msg.body.result, who);
        else
            hub_take (self->hub, &msg.body.stats, prt_now (self->rt));
        proto_msg_release (&msg);
    }
    return n;
}

//  --- the broker -------------------------------------------------------------------------------

static void s_on_verdict (void *ctx, const proto_verdict_item_t *v, bool renewal)
{
    sink_t *self = ctx;
    if (renewal) {
        //  stale, unknown or done: the job is no longer the sink's.
        post_lost (self->post, v->job_id, v->token);
        return;
    }
    intake_result_t *r = intake_take (self->intake, v->job_id, v->token);
    if (!r)
        return;
    s_accept (self, v, r->text, r->llm_ms, r->tokens);
    intake_result_free (&r);
}

//  Verdicts the broker sent with a dispatch. Those for results already
//  here answer their COMMIT; the rest wait for their results.
static void s_on_pushed (sink_t *self, const proto_verdicts_t *verdicts)
{
    int64_t now = prt_now (self->rt);
    for (size_t i = 0; i < verdicts->count; i++) {
        const proto_verdict_item_t *v = &verdicts->items[i];
        self->counters.pushed++;
        if (v->verdict == PROTO_VERDICT_POST && !intake_has (self->intake, v->job_id, v->token)
            && !post_has (self->post, v->job_id, v->token))
            pushed_put (self->pushed, v, now);
    }
    commit_on_verdict (self->commit, verdicts);
}

static void s_on_acked (void *ctx, uint64_t job_id, uint64_t token)
{
    sink_t *self = ctx;
    ledger_acked (self->ledger, job_id, token);
}

static int s_read_broker (void *arg, zsock_t *sock, int max)
{
    sink_t *self = arg;
    int n = 0;
    for (; n < max; n++) {
        proto_msg_t msg;
        proto_peer_t peer;
        char why[256], name[300];
        int rc = proto_recv (sock, &msg, &peer, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        const char *who = s_peer (&peer, "the broker", name, sizeof name);
        if (rc == PROTO_MALFORMED) {
            self->counters.malformed++;
            if (s_may_warn (self, who))
                plog_warn ("dropped a malformed frame from %s: %s", who, why);
            continue;
        }
        switch (msg.type) {
        case PROTO_VERDICT:
            if (msg.body.verdict.seq == PROTO_VERDICT_PUSHED)
                s_on_pushed (self, &msg.body.verdict);
            else
                commit_on_verdict (self->commit, &msg.body.verdict);
            break;
        case PROTO_OUTCOME_ACK: commit_on_outcome_ack (self->commit, msg.body.outcome_ack.seq); break;
        case PROTO_STATS: hub_take (self->hub, &msg.body.stats, prt_now (self->rt)); break;
        default:
            self->counters.malformed++;
            if (s_may_warn (self, who))
                plog_warn ("dropped %s from %s: the broker socket takes only VERDICT, OUTCOME_ACK "
                           "and STATS",
                           proto_type_name (msg.type), who);
            break;
        }
        proto_msg_release (&msg);
    }
    //  The lease sets how often renewals go.
    int64_t tick = commit_tick (self->commit);
    if (tick != self->commit_tick) {
        self->commit_tick = tick;
        prt_timer_interval (self->rt, self->commit_timer, tick);
    }
    return n;
}

//  --- stats -------------------------------------------------------------------------------------

#define OWN_VALUES 40

static size_t s_own_values (sink_t *self, proto_num_t *v)
{
    post_stats_t p;
    ledger_stats_t l;
    commit_stats_t c;
    hub_stats_t h;
    post_stats (self->post, &p);
    ledger_stats (self->ledger, &l);
    commit_stats (self->commit, &c);
    hub_stats (self->hub, &h);
    const s_counters_t *k = &self->counters;
    size_t held = intake_size (self->intake) + p.replies + l.unacked;
    const proto_num_t all[] = {
        {"received", (double) k->received},
        {"repeated", (double) k->repeated},
        {"overflow", (double) k->overflow},
        {"malformed", (double) k->malformed},
        {"refused", (double) k->refused},
        {"committed", (double) p.committed},
        {"stale", (double) k->stale},
        {"posted", (double) l.posted},
        {"duplicate_posts", (double) l.duplicate_posts},
        {"expired", (double) l.expired},
        {"failed", (double) l.failed},
        {"in_doubt", (double) l.in_doubt},
        {"post_retries", (double) p.post_retries},
        {"replaced", (double) p.replaced},
        {"lost", (double) p.lost},
        {"renewals", (double) c.renewals},
        {"claims", (double) c.claims},
        {"verdicts_pushed", (double) k->pushed},
        {"verdicts_pushed_used", (double) k->pushed_used},
        {"verdicts_pushed_waiting", (double) pushed_size (self->pushed)},
        {"commit_resends", (double) c.resent},
        {"held", (double) c.held},
        {"asking", (double) c.asking},
        {"waiting", (double) p.waiting},
        {"posting", (double) (p.replies - p.waiting)},
        {"unacked", (double) l.unacked},
        {"outbox", (double) held},
        {"posted_pairs", (double) l.posted_pairs},
        {"doubted_pairs", (double) l.doubted_pairs},
        {"syncs", (double) (self->store ? sink_store_syncs (self->store) : 0)},
        {"quarantined", (double) (self->store ? sink_store_quarantined (self->store) : 0)},
        {"stats_components", (double) h.components},
        {"stats_dropped", (double) h.dropped},
        {"posted_per_s", self->posted_per_s},
        {"latency_p50_ms", l.latency_p50},
        {"latency_p95_ms", l.latency_p95},
        {"latency_p99_ms", l.latency_p99},
    };
    size_t n = sizeof all / sizeof all[0];
    assert (n <= OWN_VALUES);
    memcpy (v, all, sizeof all);
    return n;
}

static void s_on_stats_timer (void *arg, int64_t now)
{
    sink_t *self = arg;
    ledger_stats_t l;
    ledger_stats (self->ledger, &l);
    post_stats_t p;
    post_stats (self->post, &p);
    if (self->rate_at && now > self->rate_at)
        self->posted_per_s = (double) (l.posted - self->rate_posted) * 1000.0
                             / (double) (now - self->rate_at);
    self->rate_at = now;
    self->rate_posted = l.posted;
    proto_num_t values[OWN_VALUES];
    size_t count = s_own_values (self, values);
    proto_component_t me = {"sink", self->id, values, count};
    //  The broker answers with its counters (and its pollers'): they come back as STATS.
    proto_stats_t mine = {(uint64_t) now, &me, 1};
    proto_send (self->broker, PROTO_STATS, &mine);
    hub_publish (self->hub, &me, now);
    int64_t every = self->config->stats_log_interval_ms;
    if (every > 0 && now >= self->next_log) {
        double rate = (double) (l.posted - self->log_posted) * 1000.0 / (double) every;
        self->log_posted = l.posted;
        self->next_log = now + every;
        plog_info ("stats: posted %" PRIu64 " (%.1f/s) | waiting %zu | queued %.0f | in flight %.0f"
                   " | workers %.0f | expired %.0f | dead %.0f | p50 %.0f ms p95 %.0f ms",
                   l.posted, rate, p.waiting,
                   hub_sum (self->hub, "broker", "queued", now),
                   hub_sum (self->hub, "broker", "in_flight", now),
                   hub_sum (self->hub, "broker", "workers", now),
                   hub_sum (self->hub, "broker", "expired", now),
                   hub_sum (self->hub, "broker", "dlq", now), l.latency_p50, l.latency_p95);
    }
}

static void s_on_prune_timer (void *arg, int64_t now)
{
    sink_t *self = arg;
    ledger_prune (self->ledger, now);
}

static void s_on_commit_timer (void *arg, int64_t now)
{
    //  Resends and renewals go in the send phase; this only makes the turn
    //  happen, and forgets pushed verdicts no result came for.
    sink_t *self = arg;
    pushed_expire (self->pushed, now);
}

//  --- the turn ------------------------------------------------------------------------------------

static bool s_drained (sink_t *self)
{
    commit_stats_t c;
    commit_stats (self->commit, &c);
    return !post_busy (self->post) && c.unacked == 0;
}

static void s_apply (void *arg, int64_t now)
{
    sink_t *self = arg;
    post_apply (self->post, now);
    if (self->drain_until && (now >= self->drain_until || s_drained (self)))
        prt_stop (self->rt);
}

static int s_commit (void *arg)
{
    sink_t *self = arg;
    if (self->store && sink_store_commit (self->store))
        return -1;
    //  Marks are stored: the posts that waited for them may go, next turn.
    if (post_committed (self->post))
        prt_again (self->rt);
    return 0;
}

static void s_send (void *arg, int64_t now)
{
    sink_t *self = arg;
    post_send (self->post, now);
    commit_send (self->commit, now);
}

static int64_t s_wakeup (void *arg, int64_t now)
{
    sink_t *self = arg;
    int64_t wake = post_wakeup (self->post, now);
    if (self->drain_until && self->drain_until < wake)
        wake = self->drain_until;
    return wake;
}

static void s_term (void *arg, int64_t now)
{
    sink_t *self = arg;
    //  Let nothing new go; wait a little for posts under way and their outcomes.
    post_drain (self->post);
    self->drain_until = now + DRAIN_MS;
}

//  --- life -----------------------------------------------------------------------------------------

//  A post recovered as certainly not made: ask the broker about it again
//  (its verdict names the job again; the mark contributes the text).
static void s_ask_again (void *arg, const sink_mark_t *m)
{
    sink_t *self = arg;
    intake_result_t *r = pcalloc (1, sizeof *r);
    r->job_id = m->job_id;
    r->token = m->token;
    r->text = pstrdup (m->text);
    r->llm_ms = m->llm_ms;
    r->tokens = m->tokens;
    r->received_at = prt_now (self->rt);
    if (intake_put (self->intake, r) == INTAKE_ADDED)
        commit_ask (self->commit, m->job_id, m->token);
}

static void s_free_item (void **item)
{
    free (*item);
    *item = NULL;
}

static void s_sink_destroy (sink_t **self_p)
{
    sink_t *self = *self_p;
    //  The posts first: their destinations hold replies as tags.
    post_destroy (&self->post);
    ledger_destroy (&self->ledger);
    gate_destroy (&self->gate);
    commit_destroy (&self->commit);
    intake_destroy (&self->intake);
    pushed_destroy (&self->pushed);
    hub_destroy (&self->hub);
    sink_store_close (&self->store);
    zhashx_destroy (&self->limiters);
    prt_destroy (&self->rt);
    zsock_destroy (&self->results);
    zsock_destroy (&self->broker);
    zsock_destroy (&self->publisher);
    free (self);
    *self_p = NULL;
}

//  Returns NULL (why in `err`) when the sink cannot start.
static sink_t *s_sink_new (zsock_t *pipe, const pcfg_t *c, const char *ready_file, const char **err)
{
    sink_t *self = pcalloc (1, sizeof *self);
    self->config = c;
    char host[64] = "host";
    gethostname (host, sizeof host - 1);
    snprintf (self->id, sizeof self->id, "%s/%d", host, (int) getpid ());
    proto_net_from_config (&self->net, c, "sink");
    static const prt_hooks_t hooks = {s_apply, s_commit, s_send, s_wakeup, s_term};
    self->rt = prt_new (pipe, &hooks, self);
    self->limiters = zhashx_new ();
    zhashx_set_destructor (self->limiters, s_free_item);
    const char *results = *c->sink_results_bind ? c->sink_results_bind : c->sink_results;
    const char *stats = *c->stats_publish_bind ? c->stats_publish_bind : c->stats_publish;
    self->results = proto_sock_new (&self->net, ZMQ_PULL, results, true, NULL, PROTO_PORT_RESULTS);
    self->publisher = proto_sock_new (&self->net, ZMQ_XPUB, stats, true, NULL, PROTO_PORT_STATS);
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_frontend, false, NULL,
                                   PROTO_PORT_FRONTEND);
    *err = "cannot start the sink";
    if (!self->results || !self->publisher || !self->broker)
        return self;
    self->hub = hub_new (self->publisher);
    char why[600];
    if (*c->data_dir
        && !(self->store = sink_store_open (c->data_dir, c->fsync, 0, why, sizeof why))) {
        plog_error ("%s", why);
        *err = "cannot open the sink's storage";
        return self;
    }
    self->intake = intake_new ((size_t) c->max_pending_results);
    //  A result may come as late as a worker may hold its job.
    self->pushed = pushed_new ((size_t) c->max_pending_results,
                               c->max_hold_ms + c->stale_claim_timeout_ms);
    commit_events_t events = {s_on_verdict, s_on_acked, self};
    self->commit = commit_new (self->broker, c->resend_ms, c->stale_claim_timeout_ms, &events);
    self->gate = gate_new_for (c);
    self->ledger = ledger_new (c, self->store, self->commit);
    self->post = post_new (c, self->gate, self->ledger, self->commit, self->store);
    if (!self->post)
        return self;
    //  Destinations exist: recovery asks them about interrupted posts.
    int64_t start = zclock_mono ();
    if (ledger_recover (self->ledger, self->gate, post_dests (self->post), prt_now (self->rt),
                        s_ask_again, self)) {
        *err = "cannot read the sink's storage";
        return self;
    }
    if (self->store && sink_store_commit (self->store)) {
        *err = "cannot store the sink's recovered state";
        return self;
    }
    if (self->store)
        plog_info ("recovered from %s in %" PRId64 " ms", sink_store_path (self->store),
                   zclock_mono () - start);
    //  The broker's socket first: a pushed verdict and its result that are
    //  both waiting are then read in that order, and the result posts
    //  without being asked about.
    prt_reader (self->rt, self->broker, s_read_broker, self);
    prt_reader (self->rt, self->results, s_read_results, self);
    prt_reader (self->rt, self->publisher, hub_read, self->hub);
    dests_t *dests = post_dests (self->post);
    for (size_t i = 0; i < dests_count (dests); i++)
        prt_add_io (self->rt, &dests_get (dests, i)->io);
    prt_every (self->rt, c->stats_interval_ms, s_on_stats_timer, self);
    prt_every (self->rt, PRUNE_MS, s_on_prune_timer, self);
    self->commit_tick = commit_tick (self->commit);
    self->commit_timer = prt_every (self->rt, self->commit_tick, s_on_commit_timer, self);
    char *re = proto_sock_endpoint (self->results);
    char *se = proto_sock_endpoint (self->publisher);
    plog_info ("results on %s, stats on %s, broker %s, %zu destination(s)", re, se,
               c->broker_frontend, dests_count (dests));
    json_t *ready = json_object ();
    json_object_set_new (ready, "results", json_string (re));
    json_object_set_new (ready, "stats", json_string (se));
    pdaemon_write_ready (ready_file, ready);
    zstr_free (&re);
    zstr_free (&se);
    *err = NULL;
    return self;
}

void sink_server (zsock_t *pipe, void *args)
{
    sink_args_t *a = args;
    zsock_signal (pipe, 0);
    const char *err;
    sink_t *self = s_sink_new (pipe, a->config, a->ready_file, &err);
    if (err) {
        zstr_send (pipe, err);
        s_sink_destroy (&self);
        return;
    }
    if (prt_run (self->rt)) {
        zstr_send (pipe, "storage failed; stopping");
        s_sink_destroy (&self);
        return;
    }
    //  What is known goes out before the sink does; what is not acknowledged
    //  is in the store (or, without storage, the broker's leases bring it back).
    int64_t now = prt_clock (self->rt);
    commit_send (self->commit, now);
    post_stop (self->post);
    if (self->store)
        sink_store_commit (self->store);
    s_sink_destroy (&self);
}
