/*  worker_server - the worker actor.

    Connects out to the broker (DEALER) and the sink (PUSH), so a worker can
    run on any machine that reaches both. Announces itself with HEARTBEAT
    (capacity = worker.concurrency, or fewer if the backend can work on
    fewer jobs at once), takes JOB batches, has the backend
    write the replies, sends each RESULT to the sink and then RELEASEs the
    job to the broker, which returns the credit. On SIGTERM it drains: it
    tells the broker to send nothing more, finishes what it holds within
    drainTimeoutMs, and hands the rest back (RELEASE return).
*/
#include "worker/worker.h"
#include "worker/backend.h"
#include "worker/reply.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto_sock.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATS_MS     1000
#define MAX_REPLY    16384  //  longest reply kept, in bytes, whatever the platform
#define FIRST_ITEMS  256    //  poll items to start with; grows with the backend's sockets

typedef struct {
    uint64_t received, completed, failed, retried, expired, skipped, returned, malformed;
    uint64_t empty, llm_ms_total, tokens;
} wcounters_t;

typedef struct {
    const pcfg_t *config;
    zsock_t *pipe;
    zsock_t *broker;
    zsock_t *sink;
    proto_net_t net;
    backend_t *backend;
    char id[128];
    char host[64];
    int64_t now;
    wjob_t *jobs;               //  in hand
    size_t job_count;
    uint32_t capacity;
    bool draining;
    uint64_t broker_epoch;
    int64_t last_broker_seen;
    bool broker_silent;
    int64_t next_heartbeat;
    int64_t next_stats;
    proto_result_item_t *results;   //  waiting to go to the sink
    size_t result_count, result_capacity;
    char **result_texts;            //  owned texts of `results`
    wjob_t **result_jobs;           //  jobs whose results are queued (freed after sending)
    proto_release_item_t *releases; //  waiting to go to the broker
    size_t release_count, release_capacity;
    char **release_reasons;
    wcounters_t counters;
    plog_limiter_t bad_log;
} worker_t;

//  --- jobs in hand ---------------------------------------------------------------

static void s_job_free (wjob_t **job_p)
{
    wjob_t *job = *job_p;
    free (job->msg_key);
    free (job->chat);
    free ((void *) job->payload.data);
    proto_zone_free (&job->zone);
    free (job);
    *job_p = NULL;
}

static void s_link (worker_t *self, wjob_t *job)
{
    job->prev = NULL;
    job->next = self->jobs;
    if (self->jobs)
        self->jobs->prev = job;
    self->jobs = job;
    self->job_count++;
}

static void s_unlink (worker_t *self, wjob_t *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        self->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->next = job->prev = NULL;
    self->job_count--;
}

//  Queues a RELEASE item; the reason is copied.
static void s_release (worker_t *self, uint64_t job_id, uint64_t token, int status,
                       const char *reason, int64_t retry_after)
{
    if (self->release_count == self->release_capacity) {
        self->release_capacity = self->release_capacity ? self->release_capacity * 2 : 64;
        self->releases = realloc (self->releases, self->release_capacity * sizeof (proto_release_item_t));
        self->release_reasons = realloc (self->release_reasons, self->release_capacity * sizeof (char *));
    }
    char *copy = strdup (reason ? reason : "");
    if (strlen (copy) > 4000)
        copy[4000] = 0;
    self->release_reasons[self->release_count] = copy;
    self->releases[self->release_count++] = (proto_release_item_t) {
        job_id, token, (uint64_t) status, copy, retry_after > 0 ? (uint64_t) retry_after : 0};
    switch (status) {
    case PROTO_REL_DONE: self->counters.completed++; break;
    case PROTO_REL_RETRY: self->counters.retried++; break;
    case PROTO_REL_FAIL: self->counters.failed++; break;
    case PROTO_REL_EXPIRED: self->counters.expired++; break;
    case PROTO_REL_SKIP: self->counters.skipped++; break;
    default: self->counters.returned++; break;
    }
}

//  The backend finished a job.
static void s_on_done (void *ctx, wjob_t *job, int status, const char *text, uint64_t tokens,
                       int64_t retry_after)
{
    worker_t *self = ctx;
    s_unlink (self, job);
    int64_t took = self->now - job->started_at;
    self->counters.llm_ms_total += (uint64_t) (took > 0 ? took : 0);
    self->counters.tokens += tokens;
    if (status != PROTO_REL_DONE) {
        s_release (self, job->id, job->token, status, text, retry_after);
        s_job_free (&job);
        return;
    }
    const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) job->entity);
    char *reply = reply_clean (strdup (text ? text : ""), e, 0, MAX_REPLY);
    if (job->expires_ms && self->now > job->expires_ms) {
        s_release (self, job->id, job->token, PROTO_REL_EXPIRED, "reply written too late", 0);
        free (reply);
        s_job_free (&job);
        return;
    }
    if (!*reply) {
        self->counters.empty++;
        s_release (self, job->id, job->token, PROTO_REL_SKIP, "empty reply", 0);
        free (reply);
        s_job_free (&job);
        return;
    }
    if (self->result_count == self->result_capacity) {
        self->result_capacity = self->result_capacity ? self->result_capacity * 2 : 64;
        self->results = realloc (self->results, self->result_capacity * sizeof (proto_result_item_t));
        self->result_texts = realloc (self->result_texts, self->result_capacity * sizeof (char *));
        self->result_jobs = realloc (self->result_jobs, self->result_capacity * sizeof (wjob_t *));
    }
    self->result_texts[self->result_count] = reply;
    self->result_jobs[self->result_count] = job;
    self->results[self->result_count++] = (proto_result_item_t) {
        job->id,          job->token,  job->attempt, job->msg_key,          e->id,
        job->chat,        (uint64_t) job->created_ms, (uint64_t) job->expires_ms, reply,
        job->payload,     (uint64_t) (took > 0 ? took : 0), tokens};
    s_release (self, job->id, job->token, PROTO_REL_DONE, NULL, 0);
}

static void s_on_jobs (worker_t *self, const proto_jobs_t *jobs)
{
    for (size_t i = 0; i < jobs->count; i++) {
        const proto_job_t *item = &jobs->items[i];
        self->counters.received++;
        if (self->draining) {
            s_release (self, item->job_id, item->token, PROTO_REL_RETURN, "worker draining", 0);
            continue;
        }
        int entity = pcfg_entity_index (self->config, item->entity);
        if (entity < 0) {
            char why[600];
            snprintf (why, sizeof why, "unknown entity \"%s\" (is this worker's configuration current?)",
                      item->entity);
            s_release (self, item->job_id, item->token, PROTO_REL_FAIL, why, 0);
            continue;
        }
        if (item->expires_ms && (int64_t) item->expires_ms < self->now) {
            s_release (self, item->job_id, item->token, PROTO_REL_EXPIRED, "expired before writing", 0);
            continue;
        }
        wjob_t *job = calloc (1, sizeof *job);
        job->id = item->job_id;
        job->token = item->token;
        job->attempt = item->attempt;
        job->msg_key = strdup (item->msg_key);
        job->chat = strdup (item->chat);
        job->entity = entity;
        job->priority = (uint8_t) item->priority;
        job->created_ms = (int64_t) item->created_ms;
        job->expires_ms = (int64_t) item->expires_ms;
        uint8_t *payload = malloc (item->payload.size ? item->payload.size : 1);
        memcpy (payload, item->payload.data, item->payload.size);
        job->payload.data = payload;
        job->payload.size = item->payload.size;
        char why[300];
        if (proto_message_decode (payload, item->payload.size, &job->message, &job->zone, why,
                                  sizeof why)) {
            char reason[400];
            snprintf (reason, sizeof reason, "malformed message payload: %s", why);
            self->counters.malformed++;
            s_release (self, job->id, job->token, PROTO_REL_FAIL, reason, 0);
            s_job_free (&job);
            continue;
        }
        job->started_at = self->now;
        s_link (self, job);
        if (self->backend->start (self->backend, job, self->now)) {
            s_unlink (self, job);
            s_release (self, job->id, job->token, PROTO_REL_RETRY, "backend could not start the job", 0);
            s_job_free (&job);
        }
    }
}

//  --- talking to the broker and the sink ------------------------------------------

static void s_send (zsock_t *sock, proto_type_t type, const void *body)
{
    zmq_msg_t frame;
    if (proto_encode (type, body, &frame) == 0
        && zmq_msg_send (&frame, zsock_resolve (sock), ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&frame);
}

static void s_flush (worker_t *self)
{
    //  Results go first: the broker waits for the sink's COMMIT after a RELEASE.
    //  Frames stay small: a quarter batch of results, a full batch of releases.
    for (size_t done = 0; done < self->result_count; done += PROTO_BATCH / 4) {
        size_t n = self->result_count - done;
        if (n > PROTO_BATCH / 4)
            n = PROTO_BATCH / 4;
        proto_result_t body = {self->id, self->results + done, n};
        zmq_msg_t frame;
        if (proto_encode (PROTO_RESULT, &body, &frame) == 0
            && zmq_msg_send (&frame, zsock_resolve (self->sink), 0) == -1)
            zmq_msg_close (&frame);     //  only on shutdown; the broker's lease brings the jobs back
    }
    for (size_t i = 0; i < self->result_count; i++) {
        free (self->result_texts[i]);
        s_job_free (&self->result_jobs[i]);
    }
    self->result_count = 0;
    for (size_t done = 0; done < self->release_count; done += PROTO_BATCH) {
        size_t n = self->release_count - done;
        if (n > PROTO_BATCH)
            n = PROTO_BATCH;
        proto_release_t body = {self->releases + done, n};
        s_send (self->broker, PROTO_RELEASE, &body);
    }
    for (size_t i = 0; i < self->release_count; i++)
        free (self->release_reasons[i]);
    self->release_count = 0;
}

static void s_heartbeat (worker_t *self)
{
    const char *models[256];
    size_t nmodels = self->backend->models (self->backend, models, 256);
    uint32_t held = (uint32_t) self->job_count;
    proto_heartbeat_t hb = {self->id,
                            self->capacity,
                            held < self->capacity ? self->capacity - held : 0,
                            models,
                            nmodels,
                            self->host,
                            (uint64_t) getpid (),
                            self->draining ? 1 : 0};
    s_send (self->broker, PROTO_HEARTBEAT, &hb);
    self->next_heartbeat = self->now + self->config->heartbeat_ms;
}

static void s_send_stats (worker_t *self)
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
    };
    size_t count = 13;
    if (self->backend->stats)
        count += self->backend->stats (self->backend, values + count, 64 - count);
    proto_component_t me = {"worker", self->id, values, count};
    proto_stats_t stats = {(uint64_t) self->now, &me, 1};
    s_send (self->sink, PROTO_STATS, &stats);
    self->next_stats = self->now + STATS_MS;
}

static void s_read_broker (worker_t *self)
{
    for (int i = 0; i < 1000; i++) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, zsock_resolve (self->broker), ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&frame);
            return;
        }
        self->last_broker_seen = self->now;
        if (self->broker_silent) {
            plog_info ("broker is back");
            self->broker_silent = false;
        }
        proto_msg_t msg;
        char why[256];
        if (proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why)) {
            if (plog_limiter_allow (&self->bad_log, 10))
                plog_warn ("dropped malformed frame from the broker: %s", why);
        }
        else {
            if (msg.type == PROTO_JOB)
                s_on_jobs (self, &msg.body.job);
            else if (msg.type == PROTO_WELCOME && msg.body.welcome.epoch != self->broker_epoch) {
                if (self->broker_epoch)
                    plog_info ("broker restarted; %zu job(s) in hand will be judged by the new one",
                               self->job_count);
                else
                    plog_info ("registered with the broker");
                self->broker_epoch = msg.body.welcome.epoch;
            }
            proto_msg_release (&msg);
        }
        zmq_msg_close (&frame);
    }
}

//  --- the loop ----------------------------------------------------------------------

//  The backend's sockets after the worker's two; the array grows to fit them.
static int s_backend_items (worker_t *self, zmq_pollitem_t **items, int *room)
{
    for (;;) {
        int nb = self->backend->pollitems (self->backend, *items + 2, *room);
        if (nb < *room)
            return nb;
        *room *= 2;
        *items = realloc (*items, (size_t) (2 + *room) * sizeof (zmq_pollitem_t));
    }
}

static void s_run (worker_t *self)
{
    int room = FIRST_ITEMS;
    zmq_pollitem_t *items = malloc ((size_t) (2 + room) * sizeof (zmq_pollitem_t));
    int64_t drain_until = 0;
    s_heartbeat (self);
    for (;;) {
        self->now = zclock_time ();
        items[0] = (zmq_pollitem_t) {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0};
        items[1] = (zmq_pollitem_t) {zsock_resolve (self->broker), 0, ZMQ_POLLIN, 0};
        int nb = s_backend_items (self, &items, &room);
        int64_t wake = self->next_heartbeat < self->next_stats ? self->next_heartbeat : self->next_stats;
        int64_t bw = self->backend->wakeup (self->backend, self->now);
        if (bw < wake)
            wake = bw;
        if (drain_until && drain_until < wake)
            wake = drain_until;
        int64_t timeout = wake - self->now;
        if (zmq_poll (items, 2 + nb, timeout < 0 ? 0 : timeout > 60000 ? 60000 : (long) timeout) == -1) {
            if (zmq_errno () == EINTR)
                continue;   //  a signal: the pipe brings $TERM
            break;
        }
        self->now = zclock_time ();
        if (items[0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (self->pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term && !self->draining) {
                self->draining = true;
                drain_until = self->now + self->config->drain_timeout_ms;
                plog_info ("draining: finishing %zu job(s) in hand, taking no more", self->job_count);
                s_heartbeat (self);
                if (self->backend->drain)
                    self->backend->drain (self->backend);
            }
        }
        s_read_broker (self);
        self->backend->process (self->backend, self->now, items + 2, nb);
        s_flush (self);
        if (self->now >= self->next_heartbeat) {
            s_heartbeat (self);
            int64_t silence = self->now - self->last_broker_seen;
            if (!self->broker_silent && silence > 3 * self->config->heartbeat_ms) {
                plog_warn ("broker silent for %" PRId64 " ms; still trying %s", silence,
                           self->config->broker_backend);
                self->broker_silent = true;
            }
        }
        if (self->now >= self->next_stats)
            s_send_stats (self);
        if (self->draining && (self->job_count == 0 || self->now >= drain_until))
            break;
    }
    //  What is still in hand goes back to the broker for another worker.
    while (self->jobs) {
        wjob_t *job = self->jobs;
        self->backend->cancel (self->backend, job);
        s_unlink (self, job);
        s_release (self, job->id, job->token, PROTO_REL_RETURN, "worker stopped", 0);
        s_job_free (&job);
    }
    s_flush (self);
    s_send_stats (self);
    free (items);
}

//  --- life -----------------------------------------------------------------------------

static worker_t *s_worker_new (zsock_t *pipe, const pcfg_t *config)
{
    worker_t *self = calloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = config;
    gethostname (self->host, sizeof self->host - 1);
    if (*config->worker_id)
        snprintf (self->id, sizeof self->id, "%s", config->worker_id);
    else
        snprintf (self->id, sizeof self->id, "%s-%d", self->host, (int) getpid ());
    self->capacity = (uint32_t) config->worker_concurrency;
    proto_net_from_config (&self->net, config, "worker");
    return self;
}

static void s_worker_destroy (worker_t **self_p)
{
    worker_t *self = *self_p;
    backend_destroy (&self->backend);
    while (self->jobs) {
        wjob_t *job = self->jobs;
        s_unlink (self, job);
        s_job_free (&job);
    }
    free (self->results);
    free (self->result_texts);
    free (self->result_jobs);
    free (self->releases);
    free (self->release_reasons);
    zsock_destroy (&self->broker);
    zsock_destroy (&self->sink);
    free (self);
    *self_p = NULL;
}

static int s_start (worker_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    //  A routing id that survives reconnects lets the broker keep our credits
    //  across a network blip; the random part keeps two processes apart.
    char identity[200];
    snprintf (identity, sizeof identity, "W:%s:%08x", self->id, (unsigned) zclock_time () ^ (unsigned) getpid ());
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_backend, false, identity, PROTO_PORT_BACKEND);
    self->sink = proto_sock_new (&self->net, ZMQ_PUSH, c->sink_results, false, NULL, PROTO_PORT_RESULTS);
    self->backend = backend_new (c, s_on_done, self);
    if (!self->broker || !self->sink || !self->backend)
        return -1;
    //  Jobs beyond what the backend can run would only wait here; in the
    //  broker's queue they can go to another worker.
    if (self->backend->max_jobs > 0 && self->backend->max_jobs < (int64_t) self->capacity)
        self->capacity = (uint32_t) self->backend->max_jobs;
    self->last_broker_seen = zclock_time ();
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
    worker_t *self = s_worker_new (pipe, a->config);
    zsock_signal (pipe, 0);
    if (s_start (self, a->ready_file)) {
        zstr_send (pipe, "cannot start the worker");
        s_worker_destroy (&self);
        return;
    }
    s_run (self);
    plog_info ("WORKER %s STOPPED: %" PRIu64 " replies written", self->id, self->counters.completed);
    s_worker_destroy (&self);
}
