/*  poller_server - the poller actor. See poller.h.

    It runs on the shared loop (common/prt.h). One turn:
      read     ACKs from the broker (submit.c); each source that is due
               reads messages within the room left in the submit window,
               and intake.c turns them into jobs;
      apply    the jobs are cut into batches and stored, with their
               messages' seen marks and the sources' cursors;
      commit   the poller store commits all of it at once;
      send     the batches go to the broker (new ones, busy ones whose wait
               is over, unanswered ones again), then each source hears that
               its cursor is stored: only now may it confirm the messages to
               its platform (a Telegram offset). Sources are paused while
               the window is full (taken off the loop) and resumed when
               there is room.
*/
#include "poller/poller.h"
#include "poller/intake.h"
#include "poller/poller_store.h"
#include "poller/source.h"
#include "poller/submit.h"
#include "common/palloc.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "common/prt.h"
#include "proto/proto.h"
#include "proto/proto_sock.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define STATS_MS        1000
#define PRUNE_MS        60000
#define DRAIN_MS        5000    //  on stop without storage, wait this long for outstanding ACKs
#define MAX_BUDGET      10000   //  messages one source reads in one turn at most

typedef struct {
    source_t *source;
    bool attached;              //  on the loop (not paused, not finished)
    size_t need;                //  room its next message needs (it was refused for less)
    char *stored_cursor;        //  the cursor last given to the store
} s_source_t;

typedef struct {
    const pcfg_t *config;
    zsock_t *pipe;
    prt_t *rt;
    zsock_t *broker;
    proto_net_t net;
    char id[128];
    poller_store_t *store;      //  durable state; NULL keeps everything in memory
    submit_t *submit;
    intake_t *intake;
    s_source_t *sources;
    size_t source_count;
    int64_t stop_at;            //  draining: stop by then at the latest (0 = not draining)
    uint64_t malformed;         //  frames from the broker that could not be decoded
    plog_limiter_t malformed_log;
} poller_t;

//  --- the sources ----------------------------------------------------------------------

//  Messages a source may read now: the window's room (a message makes one
//  job or more; intake refuses one whose jobs do not fit).
static int s_budget (void *ctx)
{
    poller_t *self = ctx;
    if (self->stop_at)
        return 0;
    size_t room = submit_room (self->submit);
    return room > MAX_BUDGET ? MAX_BUDGET : (int) room;
}

static bool s_emit (void *ctx, source_t *source, const chat_msg_t *msg)
{
    poller_t *self = ctx;
    bool taken = intake_message (self->intake, source, msg);
    for (size_t i = 0; i < self->source_count; i++)
        if (self->sources[i].source == source)
            self->sources[i].need = taken ? 0 : intake_refused_need (self->intake);
    return taken;
}

//  Puts each source on the loop or takes it off: paused while the window
//  has no room (for its next message, if that was refused) or the poller
//  drains, gone once finished. Only between turns' reads (the loop's items
//  are built from the list).
static void s_schedule_sources (poller_t *self)
{
    size_t room = self->stop_at ? 0 : submit_room (self->submit);
    bool idle = submit_outstanding (self->submit) == 0;
    for (size_t i = 0; i < self->source_count; i++) {
        s_source_t *s = &self->sources[i];
        //  With nothing outstanding, a message larger than the window goes alone.
        bool want = room > 0 && (room >= s->need || idle) && !s->source->finished (s->source);
        if (want && !s->attached)
            prt_add_io (self->rt, &s->source->io);
        else if (!want && s->attached)
            prt_remove_io (self->rt, &s->source->io);
        s->attached = want;
    }
}

//  Stores each source's cursor that moved (with the turn's jobs).
static void s_store_cursors (poller_t *self)
{
    for (size_t i = 0; i < self->source_count && self->store; i++) {
        s_source_t *s = &self->sources[i];
        const char *cursor = s->source->cursor (s->source);
        if (cursor && (!s->stored_cursor || strcmp (cursor, s->stored_cursor) != 0)) {
            poller_store_cursor (self->store, s->source->config->name, cursor);
            free (s->stored_cursor);
            s->stored_cursor = pstrdup (cursor);
        }
    }
}

//  Tells each source its cursor is stored: it may now confirm what it read.
static void s_confirm_cursors (poller_t *self)
{
    for (size_t i = 0; i < self->source_count; i++) {
        source_t *src = self->sources[i].source;
        const char *cursor = src->cursor (src);
        if (cursor)
            src->committed (src, cursor);
    }
}

//  --- the broker ------------------------------------------------------------------------

static int s_read_broker (void *arg, zsock_t *sock, int max)
{
    poller_t *self = arg;
    int n = 0;
    for (; n < max; n++) {
        proto_msg_t msg;
        char why[256];
        int rc = proto_recv (sock, &msg, NULL, why, sizeof why);
        if (rc == PROTO_NONE)
            break;
        if (rc != PROTO_OK) {
            self->malformed++;
            if (plog_limiter_allow (&self->malformed_log, 20))
                plog_warn ("dropped malformed frame from the broker: %s", why);
            continue;
        }
        if (msg.type == PROTO_ACK)
            submit_on_ack (self->submit, &msg.body.ack, prt_now (self->rt));
        else {
            //  Well formed, but not for a poller: said, as the other daemons do.
            self->malformed++;
            if (plog_limiter_allow (&self->malformed_log, 20))
                plog_warn ("dropped %s from the broker: not a message for a poller",
                           proto_type_name (msg.type));
        }
        proto_msg_release (&msg);
    }
    return n;
}

static void s_send_stats (void *arg, int64_t now)
{
    poller_t *self = arg;
    uint64_t source_errors = 0, finished = 0;
    for (size_t i = 0; i < self->source_count; i++) {
        source_t *src = self->sources[i].source;
        source_errors += src->errors;
        finished += src->finished (src);
    }
    const intake_counters_t *in = intake_counters (self->intake);
    const submit_counters_t *out = submit_counters (self->submit);
    //  Jobs that could not be made or checked are bad input too.
    source_errors += in->invalid + out->invalid;
    proto_num_t values[] = {
        {"messages", (double) in->messages},
        {"duplicates", (double) in->duplicates},
        {"selected", (double) in->selected},
        {"unanswered", (double) in->unanswered},
        {"skipped", (double) in->skipped},
        {"from_bots", (double) in->from_bots},
        {"jobs", (double) in->jobs},
        {"submitted", (double) out->submitted},
        {"acked", (double) out->acked},
        {"accepted", (double) out->accepted},
        {"broker_duplicates", (double) out->broker_duplicates},
        {"rejected", (double) out->rejected},
        {"busy", (double) out->busy},
        {"resubmitted", (double) out->resubmitted},
        {"resent", (double) out->resent},
        {"source_errors", (double) source_errors},
        {"malformed", (double) self->malformed},
        {"unacked", (double) submit_outstanding (self->submit)},
        {"waiting", (double) submit_waiting (self->submit)},
        {"seen", (double) intake_seen (self->intake)},
        {"sources", (double) self->source_count},
        {"sources_finished", (double) finished},
        {"quarantined", (double) (self->store ? poller_store_quarantined (self->store) : 0)},
    };
    proto_component_t me = {"poller", self->id, values, sizeof values / sizeof values[0]};
    proto_stats_t stats = {(uint64_t) now, &me, 1};
    proto_send (self->broker, PROTO_STATS, &stats);
}

static void s_prune (void *arg, int64_t now)
{
    poller_t *self = arg;
    intake_prune (self->intake, now);
}

//  --- the turn ---------------------------------------------------------------------------

static void s_apply (void *arg, int64_t now)
{
    poller_t *self = arg;
    submit_flush (self->submit, now);
    s_store_cursors (self);
}

static int s_commit (void *arg)
{
    poller_t *self = arg;
    return self->store ? poller_store_commit (self->store) : 0;
}

static void s_send (void *arg, int64_t now)
{
    poller_t *self = arg;
    submit_send (self->submit, self->broker, now);
    s_confirm_cursors (self);
    s_schedule_sources (self);
    //  With storage, what is not acknowledged goes again at the next start.
    if (self->stop_at
        && (self->store || submit_outstanding (self->submit) == 0 || now >= self->stop_at))
        prt_stop (self->rt);
}

static int64_t s_wakeup (void *arg, int64_t now)
{
    poller_t *self = arg;
    int64_t at = submit_wakeup (self->submit, now);
    //  Records that ride along are synced by a commit within their time.
    int64_t due = self->store ? poller_store_sync_due (self->store) : -1;
    if (due >= 0 && now + due < at)
        at = now + due;
    return self->stop_at && self->stop_at < at ? self->stop_at : at;
}

static void s_term (void *arg, int64_t now)
{
    poller_t *self = arg;
    //  Stop reading; without storage, give outstanding batches a moment to be acknowledged.
    self->stop_at = now + (self->store ? 0 : DRAIN_MS);
    if (!self->store && submit_outstanding (self->submit))
        plog_info ("stopping: waiting up to %d ms for %zu unacknowledged jobs", DRAIN_MS,
                   submit_outstanding (self->submit));
}

//  --- life -------------------------------------------------------------------------------

static poller_t *s_poller_new (zsock_t *pipe, const pcfg_t *config)
{
    poller_t *self = pcalloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = config;
    char host[64] = "host";
    gethostname (host, sizeof host - 1);
    snprintf (self->id, sizeof self->id, "%s/%d", host, (int) getpid ());
    proto_net_from_config (&self->net, config, "poller");
    static const prt_hooks_t hooks = {s_apply, s_commit, s_send, s_wakeup, s_term};
    self->rt = prt_new (pipe, &hooks, self);
    return self;
}

static void s_poller_destroy (poller_t **self_p)
{
    poller_t *self = *self_p;
    for (size_t i = 0; i < self->source_count; i++) {
        source_destroy (&self->sources[i].source);
        free (self->sources[i].stored_cursor);
    }
    free (self->sources);
    intake_destroy (&self->intake);
    submit_destroy (&self->submit);
    poller_store_close (&self->store);
    prt_destroy (&self->rt);
    zsock_destroy (&self->broker);
    free (self);
    *self_p = NULL;
}

//  A stored, unacknowledged batch: it goes again first thing.
static void s_load_batch (void *arg, uint64_t seq, const void *frame, size_t size, size_t count,
                          uint64_t segment)
{
    poller_t *self = arg;
    submit_restore (self->submit, seq, frame, size, count, segment);
}

static int s_start_sources (poller_t *self)
{
    const pcfg_t *c = self->config;
    const pcfg_source_t *configs = c->sources.items;
    self->sources = pcalloc (c->sources.count + 1, sizeof (s_source_t));
    for (size_t i = 0; i < c->sources.count; i++) {
        if (!configs[i].enabled)
            continue;
        source_t *src = source_new (&configs[i], c, (uint64_t) c->poller_seed + i);
        if (!src)
            return -1;
        source_attach (src, &(source_host_t) {s_emit, s_budget, self});
        self->sources[self->source_count++] = (s_source_t) {src, false, 0, NULL};
        char *cursor = self->store ? poller_store_get_cursor (self->store, configs[i].name) : NULL;
        if (cursor) {
            src->restore (src, cursor);
            plog_info ("source %s (%s) resumes at %s", configs[i].name, configs[i].type, cursor);
            self->sources[self->source_count - 1].stored_cursor = cursor;
        }
        else
            plog_info ("source %s (%s) ready", configs[i].name, configs[i].type);
    }
    if (self->source_count == 0)
        plog_warn ("no enabled sources: nothing to do");
    return 0;
}

static int s_start (poller_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    if (*c->data_dir) {
        char err[600];
        self->store = poller_store_open (c->data_dir, c->fsync, err, sizeof err);
        if (!self->store) {
            plog_error ("%s", err);
            return -1;
        }
    }
    self->submit = submit_new (c, self->store);
    self->intake = intake_new (c, self->rt, self->submit, self->store);
    if (self->store) {
        int64_t now = prt_now (self->rt);
        if (poller_store_load (self->store, now, c->dedupe_retention_s * 1000, s_load_batch, self))
            return -1;
        intake_prune (self->intake, now);
        if (intake_seen (self->intake))
            plog_info ("%zu message keys remembered from before the restart",
                       intake_seen (self->intake));
        if (submit_outstanding (self->submit))
            plog_info ("%zu unacknowledged jobs from before the restart go again",
                       submit_outstanding (self->submit));
    }
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_frontend, false, NULL, PROTO_PORT_FRONTEND);
    if (!self->broker)
        return -1;
    if (s_start_sources (self))
        return -1;
    prt_reader (self->rt, self->broker, s_read_broker, self);
    prt_every (self->rt, STATS_MS, s_send_stats, self);
    prt_every (self->rt, PRUNE_MS, s_prune, self);
    s_schedule_sources (self);
    plog_info ("submitting to %s; %zu entities", c->broker_frontend, c->entities.count);
    json_t *ready = json_object ();
    json_object_set_new (ready, "broker", json_string (c->broker_frontend));
    pdaemon_write_ready (ready_file, ready);
    return 0;
}

void poller_server (zsock_t *pipe, void *args)
{
    poller_args_t *a = args;
    poller_t *self = s_poller_new (pipe, a->config);
    zsock_signal (pipe, 0);
    if (s_start (self, a->ready_file)) {
        zstr_send (pipe, "cannot start the poller");
        s_poller_destroy (&self);
        return;
    }
    int rc = prt_run (self->rt);
    size_t left = submit_outstanding (self->submit);
    if (rc) {
        zstr_send (pipe, "storage failed; stopping");
        s_poller_destroy (&self);
        return;
    }
    if (self->store && left)
        plog_info ("stopped with %zu jobs not yet acknowledged; stored, they go again at the next start",
                   left);
    else if (left)
        plog_warn ("stopped with %zu jobs not acknowledged by the broker", left);
    s_poller_destroy (&self);
}
