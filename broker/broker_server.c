/*  broker_server - the broker actor: its sockets, who may say what, and the loop.

    The broker runs on the shared loop (common/prt.h). Each turn it reads
    what pollers, sinks, parleyctl (frontend) and workers (backend) sent,
    then loses silent workers and settles deadlines, dispatches what may go,
    stores the turn's changes, and only then sends the answers (outbox.h).

    The modules own their data: jobs.c the jobs and their lives, workers.c
    the workers and what each holds, dead.c the dead-letter queue, hub.c the
    pollers' counters, sched.c the order and the limits, store.c what is on
    disk. This file only routes messages between them.

    Who may send what (with security on, the sender's role is its key's
    allow-list, from the ZAP User-Id "role/name"; without it, the socket
    alone decides):
        frontend    SUBMIT, STATS             pollers
                    COMMIT, OUTCOME, STATS    sinks
                    CTL                       operators
        backend     HEARTBEAT, RELEASE        workers
    Anything else is dropped, counted (malformed or refused) and logged a
    few lines a minute.
*/
#include "broker/broker.h"
#include "broker/broker_ctl.h"
#include "broker/dead.h"
#include "broker/hub.h"
#include "broker/jobs.h"
#include "broker/outbox.h"
#include "broker/sched.h"
#include "broker/store.h"
#include "broker/workers.h"
#include "common/palloc.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "common/prt.h"
#include "proto/proto_auth.h"
#include "proto/proto_sock.h"

#include <inttypes.h>
#include <sodium.h>
#include <unistd.h>

#define ACK_REJECTS_MAX 10000   //  rejects listed in one ACK; the rest are counted
#define PRUNE_MS        60000   //  how often finished keys, rate history and idle scheduler state are pruned
#define CONGESTION_LOG_MS 10000

typedef struct {
    const pcfg_t *config;
    prt_t *rt;
    zsock_t *frontend;
    zsock_t *backend;
    proto_net_t net;
    uint32_t epoch;
    sched_t *sched;
    store_t *store;             //  NULL: state in memory only
    bdlq_t *dlq;
    bjobs_t *jobs;
    bworkers_t *workers;
    bhub_t *hub;
    bout_t *out;                //  answers held until the turn is stored
    bctl_counters_t counters;
    int64_t next_prune;
    int64_t next_congestion_log;
    plog_limiter_t malformed_log;
    plog_limiter_t refused_log;
    plog_limiter_t reject_log;
} broker_t;

//  --- who may say what -------------------------------------------------------------

//  True when `peer` may speak as `role`. Without security there are no
//  identities: the socket decides.
static bool s_role (broker_t *self, const proto_peer_t *peer, proto_role_t role)
{
    return !self->config->security || proto_auth_user_is (peer->user, role);
}

static void s_refused (broker_t *self, const proto_peer_t *peer, int type, const char *roles)
{
    self->counters.refused++;
    char who[300];
    if (plog_limiter_allow (&self->refused_log, 10))
        plog_warn ("refused %s from %s: only %s may send it", proto_type_name (type),
                   proto_peer_name (peer, who, sizeof who), roles);
}

static void s_malformed (broker_t *self, const char *where, const proto_peer_t *peer, const char *why)
{
    self->counters.malformed++;
    char who[300];
    if (plog_limiter_allow (&self->malformed_log, 10))
        plog_warn ("dropped a frame on the %s from %s: %s", where, proto_peer_name (peer, who, sizeof who),
                   why);
}

static bctl_t s_ctl (broker_t *self)
{
    return (bctl_t) {self->config, self->sched, self->jobs, self->workers, self->dlq,
                     &self->counters, prt_now (self->rt)};
}

//  --- frontend ------------------------------------------------------------------------

static void s_on_submit (broker_t *self, const proto_peer_t *peer, const proto_submit_t *submit,
                         int64_t now)
{
    proto_ack_t ack = {submit->seq, 0, 0, NULL, 0, 0, 0};
    proto_reject_t *rejects = NULL;
    size_t reject_capacity = 0;
    for (size_t i = 0; i < submit->count; i++) {
        const char *why = NULL;
        bjobs_accept_t result = bjobs_accept (self->jobs, &submit->items[i], now, &why);
        if (result == BJOBS_ACCEPTED)
            ack.accepted++;
        else if (result == BJOBS_DUPLICATE)
            ack.duplicates++;
        else {
            bool busy = result == BJOBS_BUSY;
            if (!busy && plog_limiter_allow (&self->reject_log, 10))
                plog_warn ("refused job %s for %s: %s", submit->items[i].msg_key,
                           submit->items[i].entity, why);
            if (ack.rejected_count == ACK_REJECTS_MAX) {
                ack.rejected_more++;
                continue;
            }
            rejects = pgrow (rejects, &reject_capacity, ack.rejected_count + 1, sizeof (proto_reject_t));
            rejects[ack.rejected_count++] = (proto_reject_t) {
                i, busy ? "queue full (queueSettings.maxQueueSize): submit it again later" : why,
                busy ? PROTO_REJECT_BUSY : PROTO_REJECT_INVALID};
            if (busy)
                ack.retry_after_ms = (uint64_t) self->config->resend_ms;
        }
    }
    ack.rejected = rejects;
    bout_add (self->out, self->frontend, peer->route, peer->route_size, PROTO_ACK, &ack, NULL, NULL, 0);
    free (rejects);
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    int64_t threshold = self->config->congestion_threshold;
    if (threshold > 0 && counts.queued > (size_t) threshold && now >= self->next_congestion_log) {
        plog_warn ("congestion: %zu jobs queued (threshold %" PRId64 ")", counts.queued, threshold);
        self->next_congestion_log = now + CONGESTION_LOG_MS;
    }
}

//  Post verdicts are pushed with each dispatch to the sink that spoke last.
static void s_sink_spoke (broker_t *self, const proto_peer_t *peer)
{
    bworkers_push_to (self->workers, self->frontend, peer->route, peer->route_size);
}

static void s_on_commit (broker_t *self, const proto_peer_t *peer, const proto_commit_t *commit,
                         int64_t now)
{
    s_sink_spoke (self, peer);
    proto_verdict_item_t *items = pcalloc (commit->count + 1, sizeof (proto_verdict_item_t));
    for (size_t i = 0; i < commit->count; i++)
        bjobs_commit (self->jobs, &commit->items[i], self->config->stale_claim_timeout_ms, now, &items[i]);
    //  Encoded now, while the verdicts still point into the jobs.
    proto_verdicts_t answer = {commit->seq, items, commit->count,
                               (uint64_t) self->config->stale_claim_timeout_ms};
    bout_add (self->out, self->frontend, peer->route, peer->route_size, PROTO_VERDICT, &answer, NULL,
              NULL, 0);
    free (items);
}

static void s_on_outcome (broker_t *self, const proto_peer_t *peer, const proto_outcome_t *outcome,
                          int64_t now)
{
    s_sink_spoke (self, peer);
    for (size_t i = 0; i < outcome->count; i++)
        bjobs_outcome (self->jobs, &outcome->items[i], now);
    proto_outcome_ack_t ack = {outcome->seq};
    bout_add (self->out, self->frontend, peer->route, peer->route_size, PROTO_OUTCOME_ACK, &ack,
              NULL, NULL, 0);
}

//  Pollers report their counters here; a sink asks for the broker's (and the
//  pollers') by sending its own.
static void s_on_stats (broker_t *self, const proto_peer_t *peer, const proto_stats_t *stats,
                        int64_t now)
{
    bool from_sink = false;
    for (size_t i = 0; i < stats->count; i++) {
        const proto_component_t *c = &stats->components[i];
        if (streq (c->role, "poller") && s_role (self, peer, PROTO_ROLE_POLLER))
            bhub_update (self->hub, c, now);
        else if (streq (c->role, "sink") && s_role (self, peer, PROTO_ROLE_SINK))
            from_sink = true;
    }
    if (!from_sink)
        return;
    s_sink_spoke (self, peer);
    proto_num_t values[64];
    bctl_t ctx = s_ctl (self);
    size_t count = broker_stats_values (&ctx, values, 64);
    proto_component_t components[1 + HUB_MAX];
    char id[32];
    snprintf (id, sizeof id, "%u", self->epoch);
    components[0] = (proto_component_t) {"broker", id, values, count};
    size_t n = 1 + bhub_components (self->hub, now, components + 1, HUB_MAX);
    proto_stats_t answer = {(uint64_t) now, components, n};
    bout_add (self->out, self->frontend, peer->route, peer->route_size, PROTO_STATS, &answer, NULL,
              NULL, 0);
}

static void s_on_ctl (broker_t *self, const proto_peer_t *peer, const proto_ctl_t *ctl)
{
    int status = 0;
    bctl_t ctx = s_ctl (self);
    char *body = broker_ctl_handle (&ctx, ctl, &status);
    proto_ctl_reply_t reply = {ctl->req_id, (uint64_t) status, body};
    bout_add (self->out, self->frontend, peer->route, peer->route_size, PROTO_CTL_REPLY, &reply, NULL,
              NULL, 0);
    free (body);
}

static int s_read_frontend (void *arg, zsock_t *sock, int max)
{
    broker_t *self = arg;
    int64_t now = prt_now (self->rt);
    int n = 0;
    for (; n < max; n++) {
        proto_msg_t msg;
        proto_peer_t peer;
        char why[300];
        int rc = proto_recv (sock, &msg, &peer, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        if (rc != PROTO_OK) {
            s_malformed (self, "frontend", &peer, why);
            continue;
        }
        switch (msg.type) {
        case PROTO_SUBMIT:
            if (s_role (self, &peer, PROTO_ROLE_POLLER))
                s_on_submit (self, &peer, &msg.body.submit, now);
            else
                s_refused (self, &peer, msg.type, "pollers");
            break;
        case PROTO_COMMIT:
            if (s_role (self, &peer, PROTO_ROLE_SINK))
                s_on_commit (self, &peer, &msg.body.commit, now);
            else
                s_refused (self, &peer, msg.type, "sinks");
            break;
        case PROTO_OUTCOME:
            if (s_role (self, &peer, PROTO_ROLE_SINK))
                s_on_outcome (self, &peer, &msg.body.outcome, now);
            else
                s_refused (self, &peer, msg.type, "sinks");
            break;
        case PROTO_STATS:
            if (s_role (self, &peer, PROTO_ROLE_POLLER) || s_role (self, &peer, PROTO_ROLE_SINK))
                s_on_stats (self, &peer, &msg.body.stats, now);
            else
                s_refused (self, &peer, msg.type, "pollers and sinks");
            break;
        case PROTO_CTL:
            if (s_role (self, &peer, PROTO_ROLE_OPERATOR))
                s_on_ctl (self, &peer, &msg.body.ctl);
            else
                s_refused (self, &peer, msg.type, "operators");
            break;
        default: {
            char what[64];
            snprintf (what, sizeof what, "%s is not expected on the frontend", proto_type_name (msg.type));
            s_malformed (self, "frontend", &peer, what);
            break;
        }
        }
        proto_msg_release (&msg);
    }
    return n;
}

static int s_read_backend (void *arg, zsock_t *sock, int max)
{
    broker_t *self = arg;
    int64_t now = prt_now (self->rt);
    int n = 0;
    for (; n < max; n++) {
        proto_msg_t msg;
        proto_peer_t peer;
        char why[300];
        int rc = proto_recv (sock, &msg, &peer, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        if (rc != PROTO_OK) {
            s_malformed (self, "backend", &peer, why);
            continue;
        }
        if (msg.type != PROTO_HEARTBEAT && msg.type != PROTO_RELEASE) {
            char what[64];
            snprintf (what, sizeof what, "%s is not expected on the backend", proto_type_name (msg.type));
            s_malformed (self, "backend", &peer, what);
        }
        else if (!s_role (self, &peer, PROTO_ROLE_WORKER))
            s_refused (self, &peer, msg.type, "workers");
        else if (msg.type == PROTO_HEARTBEAT)
            bworkers_heartbeat (self->workers, &peer, &msg.body.heartbeat, now);
        else
            bworkers_release (self->workers, &peer, &msg.body.release, now);
        proto_msg_release (&msg);
    }
    return n;
}

//  --- the loop's phases -----------------------------------------------------------------

//  How many jobs may be dispatched now: free worker slots, and room under
//  maxPendingResults (dispatched, not yet posted), so a slow sink or
//  destination makes dispatching wait instead of burying it.
static size_t s_budget (broker_t *self)
{
    size_t budget = bworkers_free_credit (self->workers);
    size_t pending = bjobs_in_state (self->jobs, JOB_DISPATCHED)
                     + bjobs_in_state (self->jobs, JOB_HANDED_OFF)
                     + bjobs_in_state (self->jobs, JOB_COMMITTED);
    size_t cap = (size_t) self->config->max_pending_results;
    size_t room = pending < cap ? cap - pending : 0;
    return budget < room ? budget : room;
}

static void s_apply (void *arg, int64_t now)
{
    broker_t *self = arg;
    bworkers_tick (self->workers, now);
    bjobs_tick (self->jobs, now);
    if (now >= self->next_prune) {
        bjobs_prune (self->jobs, now);
        self->next_prune = now + PRUNE_MS;
    }
    bworkers_dispatch (self->workers, s_budget (self), now);
}

static int s_commit (void *arg)
{
    broker_t *self = arg;
    //  Everything this turn changed is stored before anyone hears of it.
    return self->store ? store_commit (self->store) : 0;
}

static void s_send (void *arg, int64_t now)
{
    (void) now;
    broker_t *self = arg;
    bout_flush (self->out);
}

static int64_t s_wakeup (void *arg, int64_t now)
{
    broker_t *self = arg;
    int64_t at = self->next_prune;
    int64_t w = bjobs_wakeup (self->jobs, now);
    if (w < at)
        at = w;
    w = bworkers_wakeup (self->workers, now);
    if (w < at)
        at = w;
    //  The scheduler's next moment matters only when a worker can take work
    //  (a credit coming back wakes the loop anyway); expiry runs regardless.
    int64_t wake = sched_wakeup (self->sched, now);
    if (wake < at && (wake > now || s_budget (self) > 0))
        at = wake;
    return at;
}

//  --- life -----------------------------------------------------------------------------------

static void s_destroy (broker_t **self_p)
{
    broker_t *self = *self_p;
    bworkers_destroy (&self->workers);
    bjobs_destroy (&self->jobs);
    bdlq_destroy (&self->dlq);
    bhub_destroy (&self->hub);
    bout_destroy (&self->out);
    store_close (&self->store);
    sched_destroy (&self->sched);
    prt_destroy (&self->rt);
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    free (self);
    *self_p = NULL;
}

//  Opens the store and rebuilds the state from it. Returns 0 or -1.
static int s_recover (broker_t *self)
{
    const pcfg_t *c = self->config;
    int64_t now = prt_now (self->rt);
    if (*c->data_dir) {
        char err[600];
        self->store = store_open (c->data_dir, c->fsync, err, sizeof err);
        if (!self->store) {
            plog_error ("%s", err);
            return -1;
        }
    }
    else {
        plog_info ("storage.dataDir is empty: state is kept in memory only");
        //  Without a stored run counter, a random epoch still tells runs apart.
        randombytes_buf (&self->epoch, sizeof self->epoch);
        self->epoch |= 1;
    }
    self->dlq = bdlq_new (self->store);
    self->jobs = bjobs_new (c, self->sched, self->store, self->dlq);
    int64_t start = zclock_mono ();
    if (bjobs_recover (self->jobs, now))
        return -1;
    if (self->store) {
        self->counters.quarantined = store_quarantined (self->store);
        self->epoch = store_next_epoch (self->store);
        if (store_commit (self->store))
            return -1;
    }
    if (self->store) {
        sched_counts_t counts;
        sched_counts (self->sched, &counts);
        plog_info ("recovered from %s/broker/ in %" PRId64 " ms: %zu queued, %zu committed to the"
                   " sink, %zu dead letters (run %u)",
                   c->data_dir, zclock_mono () - start, counts.queued,
                   bjobs_in_state (self->jobs, JOB_COMMITTED), bdlq_size (self->dlq), self->epoch);
    }
    return 0;
}

static int s_bind (broker_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    const char *front = *c->broker_frontend_bind ? c->broker_frontend_bind : c->broker_frontend;
    const char *back = *c->broker_backend_bind ? c->broker_backend_bind : c->broker_backend;
    self->frontend = proto_sock_new (&self->net, ZMQ_ROUTER, front, true, NULL, PROTO_PORT_FRONTEND);
    self->backend = proto_sock_new (&self->net, ZMQ_ROUTER, back, true, NULL, PROTO_PORT_BACKEND);
    if (!self->frontend || !self->backend)
        return -1;
    char *fe = proto_sock_endpoint (self->frontend);
    char *be = proto_sock_endpoint (self->backend);
    plog_info ("listening: frontend %s, backend %s; %zu entities", fe, be, c->entities.count);
    json_t *ready = json_object ();
    json_object_set_new (ready, "frontend", json_string (fe));
    json_object_set_new (ready, "backend", json_string (be));
    pdaemon_write_ready (ready_file, ready);
    zstr_free (&fe);
    zstr_free (&be);
    return 0;
}

void broker_server (zsock_t *pipe, void *args)
{
    broker_args_t *a = args;
    const pcfg_t *c = a->config;
    broker_t *self = pcalloc (1, sizeof *self);
    self->config = c;
    prt_hooks_t hooks = {s_apply, s_commit, s_send, s_wakeup, NULL};
    self->rt = prt_new (pipe, &hooks, self);
    srandom ((unsigned) (zclock_time () ^ getpid ()));
    proto_net_from_config (&self->net, c, "broker");
    self->sched = sched_new_for (c);
    self->hub = bhub_new ();
    self->out = bout_new ();
    zsock_signal (pipe, 0);
    const char *failure = NULL;
    if (s_recover (self))
        failure = "cannot open the broker's storage";
    else if (s_bind (self, a->ready_file))
        failure = "cannot bind the broker's endpoints";
    else {
        self->workers = bworkers_new (c, self->jobs, self->out, self->backend, self->epoch);
        prt_reader (self->rt, self->backend, s_read_backend, self);
        prt_reader (self->rt, self->frontend, s_read_frontend, self);
        self->next_prune = prt_now (self->rt) + PRUNE_MS;
        //  Stop rather than go on with state that is not on disk; a restart recovers.
        if (prt_run (self->rt))
            failure = "storage failed; stopping";
        else {
            sched_counts_t counts;
            sched_counts (self->sched, &counts);
            plog_info ("stopping with %zu job(s) queued and %zu in flight", counts.queued,
                       bjobs_in_state (self->jobs, JOB_DISPATCHED));
        }
    }
    if (failure)
        zstr_send (pipe, failure);
    s_destroy (&self);
}
