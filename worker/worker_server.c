/*  worker_server - the worker actor.

    Connects out to the broker (DEALER) and the sink (PUSH), so a worker can
    run on any machine that reaches both. Announces itself with HEARTBEAT
    (capacity = worker.concurrency, or fewer if the backend can work on
    fewer jobs at once), takes JOB batches, has the backend write the
    replies, hands each RESULT to the sink and then RELEASEs the job to the
    broker, which returns the credit.

    Leases: every HEARTBEAT lists the jobs the worker holds (`held`) and the
    highest JOB frame seq it knows of (`job_seq`), so the broker renews the
    held jobs and takes back at once any job it sent that never arrived.
    The broker's WELCOME sets the heartbeat pace and names jobs to drop
    (`cancel`).

    Runs on the daemon loop (common/prt.h): the broker socket is read each
    turn, the backend is a plugin, heartbeat and stats are timers, and the
    turn's `send` hook hands results and releases out (hand.c) and then
    sends the heartbeat, so a HEARTBEAT always lists what the turn left
    held. Nothing ever blocks. On SIGTERM it drains: HEARTBEAT draining=1,
    the backend hands back what it has not started, what it holds is
    finished within drainTimeoutMs, and the rest goes back (RELEASE return).
*/
#include "worker/worker.h"
#include "worker/worker_int.h"
#include "common/palloc.h"
#include "common/pdaemon.h"

#include <inttypes.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

#define STATS_MS          1000
#define HEARTBEAT_MIN_MS  50        //  WELCOME.heartbeat_ms is kept within these
#define HEARTBEAT_MAX_MS  600000
#define SILENT_BEATS      3         //  heartbeat intervals without WELCOME: the broker is silent
#define MAX_MODELS        256

//  --- the broker conversation ----------------------------------------------------------

static void s_heartbeat (worker_t *self)
{
    self->heartbeat_due = false;
    const char *models[MAX_MODELS];
    size_t nmodels = self->backend->models (self->backend, models, MAX_MODELS);
    size_t held = worker_held (self);
    proto_ref_t *refs = pmalloc ((held ? held : 1) * sizeof (proto_ref_t));
    size_t count = worker_jobs_refs (self, refs);
    count += worker_hand_refs (self, refs + count);
    proto_heartbeat_t hb = {
        .worker_id = self->id,
        .capacity = self->capacity,
        .free = held < self->capacity ? self->capacity - held : 0,
        .models = models,
        .model_count = nmodels,
        .host = self->host,
        .pid = (uint64_t) getpid (),
        .draining = self->draining ? 1 : 0,
        .job_seq = self->job_seq,
        .held = refs,
        .held_count = count,
        .epoch = self->epoch,
    };
    //  One that ZeroMQ will not take (no broker connected) is not kept: the
    //  next one, a heartbeat interval later, says the same and more.
    if (proto_send (self->broker, PROTO_HEARTBEAT, &hb))
        plog_debug ("HEARTBEAT not queued: the broker is not connected");
    free (refs);
}

static void s_on_heartbeat_timer (void *arg, int64_t now)
{
    worker_t *self = arg;
    self->heartbeat_due = true;
    int64_t silence = now - self->last_welcome;
    if (!self->broker_silent && silence >= SILENT_BEATS * self->heartbeat_ms) {
        plog_warn ("broker silent: no WELCOME for %" PRId64 " ms; still trying %s", silence,
                   self->config->broker_backend);
        self->broker_silent = true;
    }
}

static void s_on_welcome (worker_t *self, const proto_welcome_t *welcome, int64_t now)
{
    self->last_welcome = now;
    if (self->broker_silent) {
        plog_info ("broker is back");
        self->broker_silent = false;
    }
    if (welcome->epoch != self->epoch) {
        if (self->epoch)
            plog_info ("broker restarted; %zu job(s) held will be judged by the new one",
                       worker_held (self));
        else
            plog_info ("registered with the broker");
        self->epoch = welcome->epoch;
        //  A new broker numbers its JOB frames afresh.
        self->job_seq = 0;
    }
    if (welcome->job_seq > self->job_seq)
        self->job_seq = welcome->job_seq;
    if (welcome->heartbeat_ms) {
        int64_t ms = (int64_t) welcome->heartbeat_ms;
        ms = ms < HEARTBEAT_MIN_MS ? HEARTBEAT_MIN_MS : ms > HEARTBEAT_MAX_MS ? HEARTBEAT_MAX_MS : ms;
        if (ms != self->heartbeat_ms) {
            plog_info ("heartbeat every %" PRId64 " ms, as the broker asks", ms);
            self->heartbeat_ms = ms;
            prt_timer_interval (self->rt, self->heartbeat_timer, ms);
        }
    }
    if (welcome->lease_ms)
        self->lease_ms = (int64_t) welcome->lease_ms;
    //  Jobs the broker no longer counts as ours: drop them without a RELEASE
    //  (another attempt owns them, or nobody does).
    size_t dropped = 0;
    for (size_t i = 0; i < welcome->cancel_count; i++)
        if (worker_jobs_cancel (self, welcome->cancel[i]) || worker_hand_cancel (self, welcome->cancel[i]))
            dropped++;
    if (dropped) {
        self->counters.cancelled += dropped;
        plog_info ("dropped %zu job(s) the broker says are no longer this worker's", dropped);
    }
}

static int s_read_broker (void *arg, zsock_t *sock, int max)
{
    worker_t *self = arg;
    int64_t now = prt_now (self->rt);
    int count = 0;
    while (count < max) {
        proto_msg_t msg;
        char why[256];
        int rc = proto_recv (sock, &msg, NULL, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        count++;
        if (rc != PROTO_OK) {
            if (plog_limiter_allow (&self->bad_log, 10))
                plog_warn ("dropped malformed frame from the broker: %s", why);
            continue;
        }
        if (msg.type == PROTO_JOB) {
            if (msg.body.job.seq > self->job_seq)
                self->job_seq = msg.body.job.seq;
            worker_jobs_take (self, &msg.body.job, now);
        }
        else if (msg.type == PROTO_WELCOME)
            s_on_welcome (self, &msg.body.welcome, now);
        else if (plog_limiter_allow (&self->bad_log, 10))
            plog_warn ("dropped %s from the broker: not a message for a worker",
                       proto_type_name (msg.type));
        proto_msg_release (&msg);
    }
    return count;
}

//  --- stats ---------------------------------------------------------------------------------

static void s_send_stats (worker_t *self, int64_t now)
{
    const wcounters_t *c = &self->counters;
    uint64_t finished = c->completed + c->failed + c->retried + c->expired + c->skipped;
    proto_num_t values[64] = {
        {"received", (double) c->received},   {"completed", (double) c->completed},
        {"failed", (double) c->failed},       {"retried", (double) c->retried},
        {"expired", (double) c->expired},     {"skipped", (double) c->skipped},
        {"returned", (double) c->returned},   {"malformed", (double) c->malformed},
        {"empty_replies", (double) c->empty}, {"in_flight", (double) self->job_count},
        {"capacity", (double) self->capacity}, {"tokens", (double) c->tokens},
        {"avg_ms", finished ? (double) c->llm_ms_total / (double) finished : 0},
        {"held", (double) worker_held (self)},
        {"results_waiting", (double) self->result_count},
        {"releases_waiting", (double) self->release_count},
        {"sink_handed_back", (double) c->sink_handed_back},
        {"cancelled", (double) c->cancelled},
        {"over_capacity", (double) c->over_capacity},
        {"releases_dropped", (double) c->releases_dropped},
    };
    size_t count = 20;
    if (self->backend->stats)
        count += self->backend->stats (self->backend, values + count, 64 - count);
    proto_component_t me = {"worker", self->id, values, count};
    proto_stats_t stats = {(uint64_t) now, &me, 1};
    //  Stats are a gauge: one the sink cannot take now is simply skipped.
    if (self->sink_fd_up >= 0)
        proto_send (self->sink, PROTO_STATS, &stats);
}

static void s_on_stats_timer (void *arg, int64_t now)
{
    s_send_stats (arg, now);
}

//  --- the turn -------------------------------------------------------------------------------

//  The end of a drain: what is still held goes back to the broker for another worker.
static void s_finish (worker_t *self, int64_t now)
{
    if (self->job_count || self->result_count)
        plog_info ("drain over: %zu job(s) go back to the broker",
                   self->job_count + self->result_count);
    worker_jobs_return_all (self, "worker stopped");
    worker_hand_return_results (self, "worker stopped before the sink took the result");
    worker_hand_flush (self, now);
    if (self->release_count)
        plog_warn ("%zu RELEASE(s) could not be queued for the broker; it takes those jobs back "
                   "when their leases end", self->release_count);
    s_send_stats (self, now);
    prt_stop (self->rt);
}

static void s_send (void *arg, int64_t now)
{
    worker_t *self = arg;
    worker_hand_flush (self, now);
    if (self->heartbeat_due)
        s_heartbeat (self);
    if (self->draining && (worker_held (self) == 0 || now >= self->drain_until))
        s_finish (self, now);
}

static int64_t s_wakeup (void *arg, int64_t now)
{
    worker_t *self = arg;
    if (self->heartbeat_due)
        return now;
    int64_t at = worker_hand_wakeup (self, now);
    if (self->draining && self->drain_until < at)
        at = self->drain_until;
    return at;
}

static void s_term (void *arg, int64_t now)
{
    worker_t *self = arg;
    self->draining = true;
    self->drain_until = now + self->config->drain_timeout_ms;
    plog_info ("draining: finishing %zu job(s) in hand, taking no more", worker_held (self));
    //  Tell the broker now, before any RELEASE gives it credit back: it must
    //  not spend that credit on new jobs for a worker that is leaving.
    s_heartbeat (self);
    if (self->backend->drain)
        self->backend->drain (self->backend);
}

//  --- the sink's connection ---------------------------------------------------------
//
//  Whether the sink is connected decides whether a RESULT is offered to
//  ZeroMQ at all: while it is not (no sink listening, or a handshake that
//  fails), results stay in the worker, where hand.c bounds how long they may
//  wait, instead of piling up unseen in a pipe to nowhere. A socket monitor
//  tells: a connection is up from its handshake until it is disconnected.
//  (ZMQ_IMMEDIATE would say the same more simply, but it drops what a pipe
//  holds when its connection breaks: results queued the moment before a
//  reconnect would be lost. Without it the pipe outlives reconnects.)

static int s_read_sink_monitor (void *arg, zsock_t *sock, int max)
{
    worker_t *self = arg;
    int count = 0;
    while (count < max) {
        zmq_msg_t event, endpoint;
        zmq_msg_init (&event);
        if (zmq_msg_recv (&event, zsock_resolve (sock), ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&event);
            break;
        }
        count++;
        //  Two frames: event number (16 bits) and value (32 bits), then the endpoint.
        uint16_t what = 0;
        int32_t value = -1;
        if (zmq_msg_size (&event) >= 6) {
            memcpy (&what, zmq_msg_data (&event), 2);
            memcpy (&value, (uint8_t *) zmq_msg_data (&event) + 2, 4);
        }
        bool more = zmq_msg_more (&event);
        zmq_msg_close (&event);
        if (more) {
            zmq_msg_init (&endpoint);
            zmq_msg_recv (&endpoint, zsock_resolve (sock), 0);
            zmq_msg_close (&endpoint);
        }
        //  Connections are told apart by their descriptor: the handshake that
        //  succeeds is that of the latest one connected, and only its own
        //  disconnection takes the link down.
        if (what == ZMQ_EVENT_CONNECTED)
            self->sink_fd_connected = value;
        else if (what == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && self->sink_fd_connected >= 0) {
            if (self->sink_fd_up < 0)
                plog_info ("connected to the sink (%s)", self->config->sink_results);
            self->sink_fd_up = self->sink_fd_connected;
        }
        else if (what == ZMQ_EVENT_DISCONNECTED) {
            if (value == self->sink_fd_connected)
                self->sink_fd_connected = -1;
            if (value == self->sink_fd_up) {
                self->sink_fd_up = -1;
                plog_info ("the sink (%s) disconnected; results wait here until it is back",
                           self->config->sink_results);
            }
        }
    }
    return count;
}

static int s_sink_socket (worker_t *self)
{
    const char *endpoint = self->config->sink_results;
    self->sink_fd_connected = self->sink_fd_up = -1;
    self->sink = proto_sock_prepare (&self->net, ZMQ_PUSH, endpoint, false, NULL, PROTO_PORT_RESULTS);
    if (!self->sink)
        return -1;
    char address[64];
    snprintf (address, sizeof address, "inproc://worker-sink-monitor-%p", (void *) self);
    if (zmq_socket_monitor (zsock_resolve (self->sink), address,
                            ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
                                | ZMQ_EVENT_DISCONNECTED)) {
        plog_error ("cannot monitor the sink socket: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->sink_monitor = zsock_new_pair (address);
    if (!self->sink_monitor) {
        plog_error ("cannot read the sink socket's monitor: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    //  Connected only now that the monitor is listening, so it sees every
    //  connection from its start.
    if (zsock_connect (self->sink, "%s", endpoint)) {
        plog_error ("cannot connect to %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}

static void s_sink_close (worker_t *self)
{
    if (self->sink && self->sink_monitor)
        zmq_socket_monitor (zsock_resolve (self->sink), NULL, 0);
    zsock_destroy (&self->sink_monitor);
    zsock_destroy (&self->sink);
}

//  --- life -----------------------------------------------------------------------------

static worker_t *s_worker_new (const pcfg_t *config)
{
    worker_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    gethostname (self->host, sizeof self->host - 1);
    if (*config->worker_id)
        snprintf (self->id, sizeof self->id, "%s", config->worker_id);
    else
        snprintf (self->id, sizeof self->id, "%s-%d", self->host, (int) getpid ());
    self->capacity = (uint32_t) config->worker_concurrency;
    self->heartbeat_ms = config->heartbeat_ms;
    self->lease_ms = config->stale_claim_timeout_ms;
    proto_net_from_config (&self->net, config, "worker");
    return self;
}

static void s_worker_destroy (worker_t **self_p)
{
    worker_t *self = *self_p;
    backend_destroy (&self->backend);
    worker_jobs_destroy (self);
    worker_hand_destroy (self);
    zsock_destroy (&self->broker);
    s_sink_close (self);
    prt_destroy (&self->rt);
    free (self);
    *self_p = NULL;
}

static int s_start (worker_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    //  A routing id that survives reconnects lets the broker keep our jobs
    //  across a network blip. Its 64 random bits keep two processes apart and
    //  make it unguessable: a routing id is where the broker sends JOB frames,
    //  so one that another client could present would let it take them.
    uint64_t nonce;
    randombytes_buf (&nonce, sizeof nonce);
    char identity[200];
    snprintf (identity, sizeof identity, "W:%.100s:%016" PRIx64, self->id, nonce);
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_backend, false, identity,
                                   PROTO_PORT_BACKEND);
    if (!self->broker || s_sink_socket (self))
        return -1;
    self->backend = backend_new (c, worker_jobs_done, self);
    if (!self->backend)
        return -1;
    //  Jobs beyond what the backend can run would only wait here; in the
    //  broker's queue they can go to another worker.
    if (self->backend->max_jobs > 0 && self->backend->max_jobs < (int64_t) self->capacity)
        self->capacity = (uint32_t) self->backend->max_jobs;
    self->last_welcome = prt_now (self->rt);
    plog_info ("WORKER %s STARTED: backend %s, %u slots, broker %s, sink %s", self->id,
               c->worker_backend, self->capacity, c->broker_backend, c->sink_results);
    if (self->backend->banner)
        self->backend->banner (self->backend);
    json_t *ready = json_object ();
    json_object_set_new (ready, "id", json_string (self->id));
    pdaemon_write_ready (ready_file, ready);
    return 0;
}

void worker_server (zsock_t *pipe, void *args)
{
    worker_args_t *a = args;
    static const prt_hooks_t hooks = {.send = s_send, .wakeup = s_wakeup, .term = s_term};
    worker_t *self = s_worker_new (a->config);
    self->rt = prt_new (pipe, &hooks, self);
    if (s_start (self, a->ready_file)) {
        zsock_signal (pipe, 0);
        zstr_send (pipe, "cannot start the worker");
        s_worker_destroy (&self);
        return;
    }
    prt_reader (self->rt, self->broker, s_read_broker, self);
    prt_reader (self->rt, self->sink_monitor, s_read_sink_monitor, self);
    prt_add_io (self->rt, &self->backend->io);
    self->heartbeat_timer = prt_every (self->rt, self->heartbeat_ms, s_on_heartbeat_timer, self);
    prt_every (self->rt, STATS_MS, s_on_stats_timer, self);
    self->heartbeat_due = true;     //  announce ourselves in the first turn
    zsock_signal (pipe, 0);
    int rc = prt_run (self->rt);
    plog_info ("WORKER %s STOPPED: %" PRIu64 " replies written", self->id, self->counters.completed);
    if (rc)
        zstr_send (pipe, "the worker's loop failed");
    s_worker_destroy (&self);
}
